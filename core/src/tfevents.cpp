// TensorBoard event files: hand-written protobuf wire encoding (varints,
// fixed64/fixed32, length-delimited fields) inside TFRecord framing.
#include "alignkit/core/tfevents.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

#include "alignkit/core/crc32c.hpp"

namespace alignkit::core {
namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (uint64_t{field} << 3) | type); }

void put_little_endian(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

void put_double(std::string& out, uint32_t field, double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, kFixed64);
  put_little_endian(out, bits, 8);
}

void put_float(std::string& out, uint32_t field, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, kFixed32);
  put_little_endian(out, bits, 4);
}

// int64 fields are varints of the two's-complement value (10 bytes when negative).
void put_int64(std::string& out, uint32_t field, int64_t value) {
  put_key(out, field, kVarint);
  put_varint(out, static_cast<uint64_t>(value));
}

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

// Field numbers from tensorflow/core/util/event.proto and framework/summary.proto.
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5;
constexpr uint32_t kSummaryValue = 1;
constexpr uint32_t kValueTag = 1, kValueSimpleValue = 2;

std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0') return "localhost";
  std::string name(buffer);
  // A host name never holds '/', but the file name must not either.
  for (char& c : name)
    if (c == '/') c = '_';
  return name;
}

}  // namespace

std::string frame_tfrecord(std::string_view data) {
  std::string record;
  record.reserve(data.size() + 16);
  put_little_endian(record, data.size(), 8);
  put_little_endian(record, mask_crc32c(crc32c(record.data(), 8)), 4);
  record.append(data.data(), data.size());
  put_little_endian(record, mask_crc32c(crc32c(data)), 4);
  return record;
}

std::string encode_file_version_event(double wall_time) {
  std::string event;
  put_double(event, kEventWallTime, wall_time);
  put_bytes(event, kEventFileVersion, "brain.Event:2");
  return event;
}

std::string encode_scalar_event(double wall_time, int64_t step, std::string_view tag, float value) {
  std::string summary_value;
  put_bytes(summary_value, kValueTag, tag);
  put_float(summary_value, kValueSimpleValue, value);
  std::string summary;
  put_bytes(summary, kSummaryValue, summary_value);
  std::string event;
  put_double(event, kEventWallTime, wall_time);
  put_int64(event, kEventStep, step);
  put_bytes(event, kEventSummary, summary);
  return event;
}

double wall_time_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

TfEventsWriter::TfEventsWriter(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw std::runtime_error("cannot create folder '" + dir + "': " + error.message());

  double now = wall_time_now();
  std::string base = (std::filesystem::path(dir) / ("events.out.tfevents." +
                                                    std::to_string(static_cast<int64_t>(now)) + "." + host_name()))
                         .string();
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    path_ = attempt == 0 ? base : base + "." + std::to_string(attempt);
    fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST)
      throw std::runtime_error("cannot create event file '" + path_ + "': " + std::strerror(errno));
  }
  file_ = ::fdopen(fd, "wb");
  if (!file_) {
    int saved = errno;
    ::close(fd);
    throw std::runtime_error("cannot open event file '" + path_ + "': " + std::strerror(saved));
  }
  write_record(encode_file_version_event(now));
  flush();
}

TfEventsWriter::~TfEventsWriter() {
  if (file_) std::fclose(file_);
}

void TfEventsWriter::add_scalar(std::string_view tag, double value, int64_t step, double wall_time) {
  write_record(encode_scalar_event(wall_time, step, tag, static_cast<float>(value)));
}

void TfEventsWriter::write_record(std::string_view data) {
  std::string record = frame_tfrecord(data);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size())
    throw std::runtime_error("cannot write event file '" + path_ + "': " + std::strerror(errno));
}

void TfEventsWriter::flush() {
  if (std::fflush(file_) != 0)
    throw std::runtime_error("cannot write event file '" + path_ + "': " + std::strerror(errno));
}

}  // namespace alignkit::core
