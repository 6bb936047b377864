// metrics.jsonl records, TensorBoard event files (re-parsed here by a small
// independent TFRecord + protobuf reader that verifies every CRC), and the
// progress line.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "alignkit/core/crc32c.hpp"
#include "alignkit/core/metrics.hpp"
#include "alignkit/core/tfevents.hpp"
#include "test_support.hpp"

using namespace alignkit;
using namespace alignkit::core;
using alignkit::test::read_file;
using alignkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

// ---- a minimal reader for what the writer produces ----

uint64_t read_le(const std::string& bytes, size_t at, int width) {
  uint64_t value = 0;
  for (int i = 0; i < width; ++i) value |= uint64_t(static_cast<unsigned char>(bytes.at(at + i))) << (8 * i);
  return value;
}

// The payloads of every TFRecord in `file`; fails the test on a bad length or CRC.
std::vector<std::string> read_tfrecords(const std::string& file) {
  std::vector<std::string> records;
  size_t at = 0;
  while (at < file.size()) {
    REQUIRE(at + 12 <= file.size());
    uint64_t length = read_le(file, at, 8);
    uint32_t length_crc = static_cast<uint32_t>(read_le(file, at + 8, 4));
    REQUIRE(length_crc == mask_crc32c(crc32c(file.data() + at, 8)));
    REQUIRE(at + 12 + length + 4 <= file.size());
    std::string data = file.substr(at + 12, length);
    uint32_t data_crc = static_cast<uint32_t>(read_le(file, at + 12 + length, 4));
    REQUIRE(data_crc == mask_crc32c(crc32c(data)));
    records.push_back(data);
    at += 12 + length + 4;
  }
  return records;
}

struct Field {
  uint32_t wire_type = 0;
  uint64_t number = 0;  // varint, fixed32 or fixed64 bits
  std::string bytes;    // length-delimited
};

// Field number -> occurrences, for one protobuf message.
std::multimap<uint32_t, Field> parse_message(const std::string& message) {
  std::multimap<uint32_t, Field> fields;
  size_t at = 0;
  auto varint = [&]() {
    uint64_t value = 0;
    for (int shift = 0;; shift += 7) {
      REQUIRE(at < message.size());
      REQUIRE(shift < 64);
      auto byte = static_cast<unsigned char>(message[at++]);
      value |= uint64_t(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return value;
    }
  };
  while (at < message.size()) {
    uint64_t key = varint();
    Field field;
    field.wire_type = key & 7;
    switch (field.wire_type) {
      case 0: field.number = varint(); break;
      case 1: field.number = read_le(message, at, 8); at += 8; break;
      case 5: field.number = read_le(message, at, 4); at += 4; break;
      case 2: {
        uint64_t length = varint();
        REQUIRE(at + length <= message.size());
        field.bytes = message.substr(at, length);
        at += length;
        break;
      }
      default: FAIL("unexpected wire type " << field.wire_type);
    }
    fields.emplace(static_cast<uint32_t>(key >> 3), field);
  }
  return fields;
}

const Field& only(const std::multimap<uint32_t, Field>& fields, uint32_t number, uint32_t wire_type) {
  REQUIRE(fields.count(number) == 1);
  const Field& field = fields.find(number)->second;
  REQUIRE(field.wire_type == wire_type);
  return field;
}

double as_double(uint64_t bits) {
  double value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

float as_float(uint64_t bits) {
  auto narrow = static_cast<uint32_t>(bits);
  float value;
  std::memcpy(&value, &narrow, sizeof value);
  return value;
}

struct Scalar {
  double wall_time;
  int64_t step;
  std::string tag;
  float value;
};

// Checks the file_version event and returns the scalar events after it.
std::vector<Scalar> read_event_file(const std::string& path) {
  std::vector<std::string> records = read_tfrecords(read_file(path));
  REQUIRE(!records.empty());
  auto first = parse_message(records[0]);
  CHECK(only(first, 3, 2).bytes == "brain.Event:2");
  CHECK(as_double(only(first, 1, 1).number) > 1.6e9);
  std::vector<Scalar> scalars;
  for (size_t i = 1; i < records.size(); ++i) {
    auto event = parse_message(records[i]);
    auto summary = parse_message(only(event, 5, 2).bytes);
    auto value = parse_message(only(summary, 1, 2).bytes);
    scalars.push_back({as_double(only(event, 1, 1).number), static_cast<int64_t>(only(event, 2, 0).number),
                       only(value, 1, 2).bytes, as_float(only(value, 2, 5).number)});
  }
  return scalars;
}

std::vector<std::string> event_files_in(const fs::path& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<nlohmann::ordered_json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::ordered_json> records;
  std::istringstream lines(read_file(path));
  for (std::string line; std::getline(lines, line);) records.push_back(nlohmann::ordered_json::parse(line));
  return records;
}

std::string host_name() {
  char buffer[256] = {};
  ::gethostname(buffer, sizeof buffer - 1);
  return buffer;
}

// Everything a ProgressPrinter wrote to a temporary stream.
std::string captured(std::FILE* stream) {
  std::fflush(stream);
  std::rewind(stream);
  std::string text;
  for (int c; (c = std::fgetc(stream)) != EOF;) text.push_back(static_cast<char>(c));
  return text;
}

}  // namespace

TEST_CASE("an event file starts with TensorFlow's usual first record") {
  // Every event file begins with a 24-byte file_version event (9 bytes of
  // wall_time, 15 of "brain.Event:2"), so its first 12 bytes are the same in
  // every file TensorFlow, PyTorch or TensorBoardX writes.
  std::string record = frame_tfrecord(encode_file_version_event(1700000000.5));
  const unsigned char expected[12] = {0x18, 0, 0, 0, 0, 0, 0, 0, 0xa3, 0x7f, 0x4b, 0x22};
  REQUIRE(record.size() == 12 + 24 + 4);
  CHECK(std::memcmp(record.data(), expected, 12) == 0);
  // Field 1 (wall_time, fixed64) then field 3 (file_version, length-delimited).
  CHECK(static_cast<unsigned char>(record[12]) == 0x09);
  CHECK(static_cast<unsigned char>(record[21]) == 0x1a);
  CHECK(record.substr(23, 13) == "brain.Event:2");
}

TEST_CASE("scalar events encode step, tag and value as TensorBoard's protos") {
  auto event = parse_message(encode_scalar_event(1.25, 300, "train/loss", 0.5f));
  CHECK(as_double(only(event, 1, 1).number) == 1.25);
  CHECK(only(event, 2, 0).number == 300);
  auto value = parse_message(only(parse_message(only(event, 5, 2).bytes), 1, 2).bytes);
  CHECK(only(value, 1, 2).bytes == "train/loss");
  CHECK(as_float(only(value, 2, 5).number) == 0.5f);

  // int64 steps are two's-complement varints: a negative step takes 10 bytes and reads back.
  auto negative = parse_message(encode_scalar_event(0, -3, "t", 1.0f));
  CHECK(static_cast<int64_t>(only(negative, 2, 0).number) == -3);
}

TEST_CASE("TfEventsWriter writes a named event file that re-parses with valid CRCs") {
  TempDir dir;
  std::string path;
  {
    TfEventsWriter writer(dir / "tb");
    path = writer.path();
    writer.add_scalar("train/loss", 0.6931, 1, 1700000001.0);
    writer.add_scalar("train/rewards/accuracies", 0.75, 1, 1700000001.0);
    writer.add_scalar("eval/loss", 0.5, 20, 1700000002.5);
    writer.flush();
    // Flushed records are readable while the writer is still open.
    CHECK(read_event_file(path).size() == 3);
    writer.add_scalar("train/loss", 1e-3, 1234567890123LL);
  }
  std::string name = fs::path(path).filename().string();
  std::string prefix = "events.out.tfevents.";
  REQUIRE(name.rfind(prefix, 0) == 0);
  std::string rest = name.substr(prefix.size());
  size_t dot = rest.find('.');
  REQUIRE(dot != std::string::npos);
  CHECK(std::stoll(rest.substr(0, dot)) > 1600000000LL);
  CHECK(rest.substr(dot + 1) == host_name());

  auto scalars = read_event_file(path);
  REQUIRE(scalars.size() == 4);
  CHECK(scalars[0].tag == "train/loss");
  CHECK(scalars[0].step == 1);
  CHECK(scalars[0].value == 0.6931f);
  CHECK(scalars[0].wall_time == 1700000001.0);
  CHECK(scalars[1].tag == "train/rewards/accuracies");
  CHECK(scalars[1].value == 0.75f);
  CHECK(scalars[2].tag == "eval/loss");
  CHECK(scalars[2].step == 20);
  CHECK(scalars[2].wall_time == 1700000002.5);
  CHECK(scalars[3].step == 1234567890123LL);
  CHECK(scalars[3].value == 1e-3f);
}

TEST_CASE("two event writers in one folder never share a file") {
  TempDir dir;
  TfEventsWriter first(dir.path().string());
  TfEventsWriter second(dir.path().string());
  CHECK(first.path() != second.path());
  CHECK(event_files_in(dir.path()).size() == 2);
}

TEST_CASE("an event writer in a folder that cannot be created names it") {
  TempDir dir;
  alignkit::test::write_plain_file(dir / "blocker", "x");
  try {
    TfEventsWriter writer(dir / "blocker/tb");
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find(dir / "blocker/tb") != std::string::npos);
  }
}

TEST_CASE("metrics.jsonl: one ordered JSON object per line, appended across writers") {
  TempDir dir;
  std::string path = dir / "stage/metrics.jsonl";
  {
    MetricsJsonlWriter writer(path);
    writer.write("dpo", 10, Split::Train, {{"loss", 0.69}, {"rewards/chosen", 0.01}});
    // Flushed per line: visible before the writer closes.
    CHECK(read_jsonl(path).size() == 1);
    writer.write("dpo", 20, Split::Eval, {{"loss", std::numeric_limits<double>::quiet_NaN()}});
  }
  MetricsJsonlWriter resumed(path);
  resumed.write("dpo", 30, Split::Train, {});

  auto records = read_jsonl(path);
  REQUIRE(records.size() == 3);
  CHECK(records[0].dump() == R"({"stage":"dpo","step":10,"split":"train","loss":0.69,"rewards/chosen":0.01})");
  CHECK(records[1]["split"] == "eval");
  CHECK(records[1]["loss"].is_null());
  CHECK(records[2].dump() == R"({"stage":"dpo","step":30,"split":"train"})");
}

TEST_CASE("metrics.jsonl refuses reserved and repeated metric names") {
  TempDir dir;
  MetricsJsonlWriter writer(dir / "metrics.jsonl");
  CHECK_THROWS_WITH_AS(writer.write("sft", 1, Split::Train, {{"step", 1.0}}),
                       doctest::Contains("'step' is reserved"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(writer.write("sft", 1, Split::Train, {{"loss", 1.0}, {"loss", 2.0}}),
                       doctest::Contains("'loss' is given twice"), std::invalid_argument);
  CHECK(read_file(dir / "metrics.jsonl").empty());
}

TEST_CASE("MetricSinks writes both files of a stage with split-prefixed TensorBoard tags") {
  TempDir dir;
  {
    MetricSinks sinks(dir.path().string(), "sft");
    sinks.log(5, Split::Train, {{"loss", 2.5}, {"mean_token_accuracy", 0.25}});
    sinks.log(5, Split::Eval, {{"loss", 2.75}});
  }
  auto records = read_jsonl(dir / "metrics.jsonl");
  REQUIRE(records.size() == 2);
  CHECK(records[0]["stage"] == "sft");
  CHECK(records[1]["loss"] == 2.75);

  auto files = event_files_in(dir.path());
  REQUIRE(files.size() == 1);
  auto scalars = read_event_file(files[0]);
  REQUIRE(scalars.size() == 3);
  CHECK(scalars[0].tag == "train/loss");
  CHECK(scalars[1].tag == "train/mean_token_accuracy");
  CHECK(scalars[2].tag == "eval/loss");
  CHECK(scalars[2].step == 5);

  TempDir quiet;
  MetricSinks jsonl_only(quiet.path().string(), "sft", {true, false});
  jsonl_only.log(1, Split::Train, {{"loss", 1.0}});
  CHECK(jsonl_only.tensorboard() == nullptr);
  CHECK(event_files_in(quiet.path()).empty());
}

TEST_CASE("durations and ETA") {
  CHECK(format_duration(0) == "0s");
  CHECK(format_duration(45.4) == "45s");
  CHECK(format_duration(185) == "3m05s");
  CHECK(format_duration(7380) == "2h03m");
  CHECK(format_duration(3 * 86400 + 4 * 3600 + 59) == "3d04h");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(std::numeric_limits<double>::infinity()) == "?");
  CHECK(estimate_eta_seconds(10.0, 5, 20) == doctest::Approx(40.0));
  CHECK(estimate_eta_seconds(10.0, 0, 20) < 0);
}

TEST_CASE("the progress line shows step, loss, chosen metrics, throughput and ETA") {
  Metrics all = {{"rewards/chosen", 0.1}, {"rewards/accuracies", 0.75}, {"logps/chosen", -20.0}};
  ProgressLine line;
  line.stage = "dpo";
  line.step = 12;
  line.total_steps = 100;
  line.loss = 0.693147;
  line.shown = select_metrics(all, {"rewards/accuracies", "missing", "rewards/chosen"});
  line.tokens_per_second = 1234.4;
  line.eta_seconds = 185;
  CHECK(format_progress_line(line) ==
        "[dpo] step 12/100 (12%) | loss 0.6931 | rewards/accuracies 0.75 | rewards/chosen 0.1 | 1234 tok/s | ETA 3m05s");

  ProgressLine bare;
  bare.step = 3;
  bare.loss = 2.5e-5;
  CHECK(format_progress_line(bare) == "step 3 | loss 2.5e-05");
}

TEST_CASE("ProgressPrinter writes plain lines when not on a terminal") {
  std::FILE* stream = std::tmpfile();
  REQUIRE(stream);
  {
    ProgressPrinter printer(stream);
    CHECK_FALSE(printer.interactive());
    printer.update("step 1/2 | loss 1");
    printer.message("saved checkpoint-000001");
    printer.update("step 2/2 | loss 0.5");
  }
  CHECK(captured(stream) == "step 1/2 | loss 1\nsaved checkpoint-000001\nstep 2/2 | loss 0.5\n");
  std::fclose(stream);
}

TEST_CASE("ProgressPrinter rewrites one line in place on a terminal") {
  std::FILE* stream = std::tmpfile();
  REQUIRE(stream);
  {
    ProgressPrinter printer(stream, true);
    printer.update("step 1/20 | loss 10");
    printer.update("step 2/20 | loss 9");  // shorter: padded over the old text
    printer.message("eval done");          // ends the progress line first
    printer.update("step 3/20 | loss 8");
  }  // the destructor ends the line
  CHECK(captured(stream) == "\rstep 1/20 | loss 10\rstep 2/20 | loss 9 \neval done\n\rstep 3/20 | loss 8\n");
  std::fclose(stream);
}
