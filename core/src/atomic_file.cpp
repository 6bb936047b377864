// Crash-safe file writes (tmp -> fsync -> rename -> fsync folder) and the
// COMMITTED-marker protocol for checkpoint folders.
#include "alignkit/core/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

namespace fs = std::filesystem;

namespace alignkit::core {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int error) {
  throw std::runtime_error(what + " '" + path + "': " + std::strerror(error));
}

std::string parent_folder(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// A name no other writer (thread or process) picks: hidden, so folder
// listings and globs skip it, and in the target's folder, so rename() is atomic.
std::string temporary_name_for(const std::string& target) {
  static std::atomic<uint64_t> counter{0};
  fs::path path(target);
  std::string name = "." + path.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                     std::to_string(counter.fetch_add(1));
  return (path.parent_path() / name).string();
}

void close_or_throw(int fd, const std::string& target) {
  if (::close(fd) != 0) fail("cannot close", target, errno);
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string target) : target_(std::move(target)) {
  if (target_.empty()) throw std::runtime_error("cannot write a file with an empty path");
  temporary_ = temporary_name_for(target_);
  fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot create a temporary file for", target_, errno);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) discard();
}

void AtomicFileWriter::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temporary_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t size) {
  if (fd_ < 0) throw std::runtime_error("write to '" + target_ + "' after it was committed or failed");
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t written = ::write(fd_, bytes, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      int error = errno;
      discard();
      fail("cannot write", target_, error);
    }
    bytes += written;
    size -= static_cast<size_t>(written);
  }
}

void AtomicFileWriter::commit() {
  if (fd_ < 0) throw std::runtime_error("commit of '" + target_ + "' after it was committed or failed");
  if (::fsync(fd_) != 0) {
    int error = errno;
    discard();
    fail("cannot sync", target_, error);
  }
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    int error = errno;
    discard();
    fail("cannot close", target_, error);
  }
  if (::rename(temporary_.c_str(), target_.c_str()) != 0) {
    int error = errno;
    discard();
    fail("cannot rename a temporary file over", target_, error);
  }
  committed_ = true;
  fsync_directory(parent_folder(target_));
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  AtomicFileWriter writer(path);
  writer.write(contents);
  writer.commit();
}

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open folder", dir, errno);
  if (::fsync(fd) != 0 && errno != EINVAL) {
    int error = errno;
    ::close(fd);
    fail("cannot sync folder", dir, error);
  }
  close_or_throw(fd, dir);
}

void fsync_tree(const std::string& dir) {
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_directory()) {
      fsync_directory(entry.path().string());
    } else if (entry.is_regular_file()) {
      int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) fail("cannot open", entry.path().string(), errno);
      if (::fsync(fd) != 0) {
        int error = errno;
        ::close(fd);
        fail("cannot sync", entry.path().string(), error);
      }
      close_or_throw(fd, entry.path().string());
    }
  }
  fsync_directory(dir);
}

void write_commit_marker(const std::string& dir, std::string_view contents) {
  write_file_atomic((fs::path(dir) / kCommitMarkerName).string(), contents);
  fs::path folder = fs::path(dir).lexically_normal();
  if (!folder.has_filename()) folder = folder.parent_path();  // "a/b/" names folder b too
  fsync_directory(parent_folder(folder.string()));
}

bool is_committed(const std::string& dir) {
  struct stat info {};
  return ::stat((fs::path(dir) / kCommitMarkerName).c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

std::string checkpoint_dir_name(int64_t step) {
  if (step < 0) throw std::invalid_argument("checkpoint step must not be negative, got " + std::to_string(step));
  std::string digits = std::to_string(step);
  if (digits.size() < 6) digits.insert(0, 6 - digits.size(), '0');
  return "checkpoint-" + digits;
}

namespace {

// The step of a "checkpoint-<digits>" name; -1 for any other name.
int64_t parse_checkpoint_step(const std::string& name) {
  static const std::string prefix = "checkpoint-";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t step = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    char c = name[i];
    if (c < '0' || c > '9') return -1;
    if (step > (INT64_MAX - (c - '0')) / 10) return -1;
    step = step * 10 + (c - '0');
  }
  return step;
}

std::vector<CheckpointDir> list_checkpoints(const std::string& parent, bool committed) {
  std::vector<CheckpointDir> found;
  std::error_code error;
  if (!fs::exists(parent, error)) {
    if (error) throw std::runtime_error("cannot read folder '" + parent + "': " + error.message());
    return found;
  }
  fs::directory_iterator it(parent, error);
  if (error) throw std::runtime_error("cannot read folder '" + parent + "': " + error.message());
  for (; it != fs::directory_iterator(); it.increment(error)) {
    int64_t step = parse_checkpoint_step(it->path().filename().string());
    std::error_code type_error;
    if (step < 0 || !it->is_directory(type_error)) continue;
    if (is_committed(it->path().string()) == committed) found.push_back({it->path().string(), step});
  }
  if (error) throw std::runtime_error("cannot read folder '" + parent + "': " + error.message());
  std::sort(found.begin(), found.end(), [](const CheckpointDir& a, const CheckpointDir& b) {
    return a.step != b.step ? a.step > b.step : a.path > b.path;
  });
  return found;
}

}  // namespace

std::vector<CheckpointDir> list_committed_checkpoints(const std::string& parent) {
  return list_checkpoints(parent, true);
}

std::vector<CheckpointDir> list_uncommitted_checkpoints(const std::string& parent) {
  return list_checkpoints(parent, false);
}

}  // namespace alignkit::core
