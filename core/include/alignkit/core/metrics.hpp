// Metric sinks of a stage: metrics.jsonl (one JSON object a line), TensorBoard
// event files, and the progress line on the terminal.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "alignkit/core/tfevents.hpp"
#include "alignkit/training.hpp"

namespace alignkit::core {

// Appends lines such as
//   {"stage":"dpo","step":20,"split":"train","loss":0.68,"rewards/chosen":0.01}
// to a file, flushed after each line so a crash loses at most the line being
// written; a resumed run appends to the same file. Non-finite values are
// written as null (JSON has no NaN). Errors throw std::runtime_error naming
// the file; a metric named stage, step or split, or named twice, throws
// std::invalid_argument.
class MetricsJsonlWriter {
 public:
  explicit MetricsJsonlWriter(std::string path);
  ~MetricsJsonlWriter();
  MetricsJsonlWriter(const MetricsJsonlWriter&) = delete;
  MetricsJsonlWriter& operator=(const MetricsJsonlWriter&) = delete;

  void write(const std::string& stage, int64_t step, Split split, const Metrics& metrics);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// The TensorBoard tag of a metric: "<split>/<name>" ("train/loss",
// "eval/rewards/chosen"), as Hugging Face's TensorBoard callback names them.
std::string tensorboard_tag(Split split, const std::string& metric_name);

// Both file sinks of one stage: <stage_dir>/metrics.jsonl and an event file in
// <stage_dir>. Either may be turned off.
class MetricSinks {
 public:
  struct Options {
    bool jsonl = true;
    bool tensorboard = true;
  };
  MetricSinks(const std::string& stage_dir, std::string stage_name, Options options);
  MetricSinks(const std::string& stage_dir, std::string stage_name)
      : MetricSinks(stage_dir, std::move(stage_name), Options{}) {}

  void log(int64_t step, Split split, const Metrics& metrics);

  const MetricsJsonlWriter* jsonl() const { return jsonl_.get(); }
  const TfEventsWriter* tensorboard() const { return tensorboard_.get(); }

 private:
  std::string stage_name_;
  std::unique_ptr<MetricsJsonlWriter> jsonl_;
  std::unique_ptr<TfEventsWriter> tensorboard_;
};

// What one progress line shows.
struct ProgressLine {
  std::string stage;               // "" to leave out
  int64_t step = 0;                // optimizer steps done
  int64_t total_steps = 0;         // 0 when unknown
  double loss = 0.0;
  Metrics shown;                   // the algorithm's progress metrics, in its order
  double tokens_per_second = 0.0;  // <= 0 to leave out
  double eta_seconds = -1.0;       // < 0 when unknown
};

// "[dpo] step 12/100 (12%) | loss 0.6931 | rewards/accuracies 0.75 | 1234 tok/s | ETA 3m05s"
std::string format_progress_line(const ProgressLine& line);

// "45s", "3m05s", "2h03m", "3d04h".
std::string format_duration(double seconds);

// Remaining time at the rate seen so far in this run: `steps_done` steps took
// `elapsed_seconds`, `steps_left` remain. -1 while nothing was measured yet.
double estimate_eta_seconds(double elapsed_seconds, int64_t steps_done, int64_t steps_left);

// The metrics of `all` whose names are in `names`, in the order of `names`.
Metrics select_metrics(const Metrics& all, const std::vector<std::string>& names);

// Prints progress lines to a stream (stderr by default). On a terminal each
// line overwrites the last (carriage return, cut to the terminal's width);
// otherwise (a log file, CI) each is a plain line.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(std::FILE* stream = stderr);
  ProgressPrinter(std::FILE* stream, bool interactive);
  ~ProgressPrinter();
  ProgressPrinter(const ProgressPrinter&) = delete;
  ProgressPrinter& operator=(const ProgressPrinter&) = delete;

  void update(const std::string& line);
  // A message on its own line; an in-place progress line is ended first.
  void message(const std::string& text);
  // Ends an in-place progress line so later output starts on a fresh line.
  void finish();

  bool interactive() const { return interactive_; }

 private:
  std::FILE* stream_;
  bool interactive_;
  size_t shown_width_ = 0;  // characters of the in-place line now on screen; 0 when none
};

}  // namespace alignkit::core
