// TensorBoard event files written by our own code: TFRecord framing with
// masked CRC32C, and the few protobuf messages a scalar needs (Event,
// Summary, Summary.Value) encoded by hand, so no TensorFlow or protobuf
// library is needed to produce files TensorBoard reads.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace alignkit::core {

// One TFRecord: uint64 length, masked CRC32C of those 8 bytes, the data,
// masked CRC32C of the data (all little-endian).
std::string frame_tfrecord(std::string_view data);

// Serialized Event{wall_time = 1, file_version = 3: "brain.Event:2"}: the
// first record of every event file.
std::string encode_file_version_event(double wall_time);

// Serialized Event{wall_time = 1, step = 2, summary = 5: Summary{value = 1:
// Value{tag = 1, simple_value = 2}}}.
std::string encode_scalar_event(double wall_time, int64_t step, std::string_view tag, float value);

// Seconds since the Unix epoch, as TensorBoard's wall_time.
double wall_time_now();

// Appends scalar events to a new file events.out.tfevents.<unix seconds>.<host>
// in a folder (created when missing). A second writer in the same folder and
// second gets a ".1", ".2", ... suffix rather than sharing a file. Errors throw
// std::runtime_error naming the file.
class TfEventsWriter {
 public:
  explicit TfEventsWriter(const std::string& dir);
  ~TfEventsWriter();
  TfEventsWriter(const TfEventsWriter&) = delete;
  TfEventsWriter& operator=(const TfEventsWriter&) = delete;

  // One Event per scalar. TensorBoard stores floats, so `value` is narrowed.
  void add_scalar(std::string_view tag, double value, int64_t step, double wall_time);
  void add_scalar(std::string_view tag, double value, int64_t step) {
    add_scalar(tag, value, step, wall_time_now());
  }
  // Hands buffered records to the OS, so a running TensorBoard sees them.
  void flush();

  const std::string& path() const { return path_; }

 private:
  void write_record(std::string_view data);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace alignkit::core
