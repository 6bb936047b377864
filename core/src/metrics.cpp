// metrics.jsonl writer, the two file sinks of a stage together, and the
// terminal progress line.
#include "alignkit/core/metrics.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <system_error>

namespace alignkit::core {
namespace {

void check_metric_names(const Metrics& metrics) {
  std::set<std::string> seen;
  for (const Metric& metric : metrics) {
    if (metric.name == "stage" || metric.name == "step" || metric.name == "split")
      throw std::invalid_argument("metric name '" + metric.name + "' is reserved for the record's own field");
    if (metric.name.empty()) throw std::invalid_argument("a metric has an empty name");
    if (!seen.insert(metric.name).second)
      throw std::invalid_argument("metric '" + metric.name + "' is given twice in one record");
  }
}

std::string format_number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.4g", value);
  return buffer;
}

// Columns of the terminal behind `stream`; 0 when unknown.
size_t terminal_width(std::FILE* stream) {
  winsize size{};
  if (::ioctl(::fileno(stream), TIOCGWINSZ, &size) == 0) return size.ws_col;
  return 0;
}

}  // namespace

MetricsJsonlWriter::MetricsJsonlWriter(std::string path) : path_(std::move(path)) {
  std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  std::error_code error;
  if (!parent.empty()) std::filesystem::create_directories(parent, error);
  if (error) throw std::runtime_error("cannot create folder '" + parent.string() + "': " + error.message());
  file_ = std::fopen(path_.c_str(), "ab");
  if (!file_) throw std::runtime_error("cannot open '" + path_ + "' for appending: " + std::strerror(errno));
}

MetricsJsonlWriter::~MetricsJsonlWriter() {
  if (file_) std::fclose(file_);
}

void MetricsJsonlWriter::write(const std::string& stage, int64_t step, Split split, const Metrics& metrics) {
  check_metric_names(metrics);
  nlohmann::ordered_json record;
  record["stage"] = stage;
  record["step"] = step;
  record["split"] = split_name(split);
  for (const Metric& metric : metrics) {
    if (std::isfinite(metric.value)) record[metric.name] = metric.value;
    else record[metric.name] = nullptr;
  }
  std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw std::runtime_error("cannot write '" + path_ + "': " + std::strerror(errno));
}

std::string tensorboard_tag(Split split, const std::string& metric_name) {
  return std::string(split_name(split)) + "/" + metric_name;
}

MetricSinks::MetricSinks(const std::string& stage_dir, std::string stage_name, Options options)
    : stage_name_(std::move(stage_name)) {
  if (options.jsonl)
    jsonl_ = std::make_unique<MetricsJsonlWriter>((std::filesystem::path(stage_dir) / "metrics.jsonl").string());
  if (options.tensorboard) tensorboard_ = std::make_unique<TfEventsWriter>(stage_dir);
}

void MetricSinks::log(int64_t step, Split split, const Metrics& metrics) {
  check_metric_names(metrics);
  if (jsonl_) jsonl_->write(stage_name_, step, split, metrics);
  if (tensorboard_) {
    double now = wall_time_now();
    for (const Metric& metric : metrics) tensorboard_->add_scalar(tensorboard_tag(split, metric.name), metric.value, step, now);
    tensorboard_->flush();
  }
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto total = static_cast<int64_t>(std::llround(seconds));
  char buffer[48];
  if (total < 60) std::snprintf(buffer, sizeof buffer, "%llds", static_cast<long long>(total));
  else if (total < 3600)
    std::snprintf(buffer, sizeof buffer, "%lldm%02llds", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  else if (total < 86400)
    std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", static_cast<long long>(total / 3600),
                  static_cast<long long>(total % 3600 / 60));
  else
    std::snprintf(buffer, sizeof buffer, "%lldd%02lldh", static_cast<long long>(total / 86400),
                  static_cast<long long>(total % 86400 / 3600));
  return buffer;
}

double estimate_eta_seconds(double elapsed_seconds, int64_t steps_done, int64_t steps_left) {
  if (steps_done <= 0 || steps_left < 0 || !(elapsed_seconds >= 0)) return -1.0;
  return elapsed_seconds / static_cast<double>(steps_done) * static_cast<double>(steps_left);
}

Metrics select_metrics(const Metrics& all, const std::vector<std::string>& names) {
  Metrics chosen;
  for (const std::string& name : names)
    for (const Metric& metric : all)
      if (metric.name == name) {
        chosen.push_back(metric);
        break;
      }
  return chosen;
}

std::string format_progress_line(const ProgressLine& line) {
  std::string text;
  if (!line.stage.empty()) text += "[" + line.stage + "] ";
  text += "step " + std::to_string(line.step);
  if (line.total_steps > 0) {
    text += "/" + std::to_string(line.total_steps);
    text += " (" + std::to_string(line.step * 100 / line.total_steps) + "%)";
  }
  text += " | loss " + format_number(line.loss);
  for (const Metric& metric : line.shown) text += " | " + metric.name + " " + format_number(metric.value);
  if (line.tokens_per_second > 0) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.0f", line.tokens_per_second);
    text += std::string(" | ") + buffer + " tok/s";
  }
  if (line.eta_seconds >= 0) text += " | ETA " + format_duration(line.eta_seconds);
  return text;
}

ProgressPrinter::ProgressPrinter(std::FILE* stream) : ProgressPrinter(stream, ::isatty(::fileno(stream)) == 1) {}

ProgressPrinter::ProgressPrinter(std::FILE* stream, bool interactive) : stream_(stream), interactive_(interactive) {}

ProgressPrinter::~ProgressPrinter() { finish(); }

void ProgressPrinter::update(const std::string& line) {
  if (!interactive_) {
    std::fprintf(stream_, "%s\n", line.c_str());
    std::fflush(stream_);
    return;
  }
  // A line longer than the terminal would wrap, and '\r' only returns to the
  // start of its last row: cut it to fit instead.
  std::string shown = line;
  size_t width = terminal_width(stream_);
  if (width > 1 && shown.size() > width - 1) shown.resize(width - 1);
  size_t padding = shown_width_ > shown.size() ? shown_width_ - shown.size() : 0;
  std::fprintf(stream_, "\r%s%s", shown.c_str(), std::string(padding, ' ').c_str());
  std::fflush(stream_);
  shown_width_ = shown.size();
}

void ProgressPrinter::message(const std::string& text) {
  finish();
  std::fprintf(stream_, "%s\n", text.c_str());
  std::fflush(stream_);
}

void ProgressPrinter::finish() {
  if (shown_width_ == 0) return;
  std::fputc('\n', stream_);
  std::fflush(stream_);
  shown_width_ = 0;
}

}  // namespace alignkit::core
