// A StageContext that answers as another one does, except for what it is
// given: its own settings table, stage folder, model roles and metric sink.
// PPO uses it to name its implicit reward-model reward; the rlhf algorithm to
// give each of its two phases (reward, ppo) the context of a stage of its own.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "alignkit/training.hpp"

namespace alignkit::ppo {

class StageContextOverlay : public StageContext {
 public:
  using MetricSink = std::function<void(int64_t, Split, const Metrics&)>;

  // `settings` is owned by the overlay; `path` names it in messages ("stages.rlhf.reward").
  StageContextOverlay(StageContext& base, ConfigValue settings, std::string path)
      : base_(base),
        settings_(std::make_unique<ConfigValue>(std::move(settings))),
        view_(settings_.get(), std::move(path)),
        name_(base.stage_name()),
        dir_(base.stage_dir()) {}

  void set_stage(std::string name, std::string dir) {
    name_ = std::move(name);
    dir_ = std::move(dir);
  }
  // `dir` "" hides the role; roles never set answer as the base context does.
  void set_model_dir(const std::string& role, std::string dir) { roles_[role] = std::move(dir); }
  void set_metric_sink(MetricSink sink) { sink_ = std::move(sink); }

  const std::string& stage_name() const override { return name_; }
  const std::string& stage_dir() const override { return dir_; }
  const ConfigView& settings() const override { return view_; }
  std::string model_dir(const std::string& role) const override {
    auto it = roles_.find(role);
    return it == roles_.end() ? base_.model_dir(role) : it->second;
  }
  std::shared_ptr<CausalLM> load_model(const std::string& dir, const ModelOptions& options) override {
    return base_.load_model(dir, options);
  }
  std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) override {
    return base_.load_tokenizer(model_dir);
  }
  std::unique_ptr<Dataset> load_dataset(const ConfigView& data, const std::string& path,
                                        const Tokenizer* tokenizer) override {
    return base_.load_dataset(data, path, tokenizer);
  }
  void log_metrics(int64_t step, Split split, const Metrics& metrics) override {
    if (sink_) sink_(step, split, metrics);
    else base_.log_metrics(step, split, metrics);
  }
  void log(const std::string& message) override {
    base_.log(name_ == base_.stage_name() ? message : "(" + name_ + ") " + message);
  }
  bool stop_requested() const override { return base_.stop_requested(); }
  bool resume_required() const override { return base_.resume_required(); }
  Registry& registry() override { return base_.registry(); }

 private:
  StageContext& base_;
  std::unique_ptr<ConfigValue> settings_;  // on the heap: view_ points into it
  ConfigView view_;
  std::string name_;
  std::string dir_;
  std::map<std::string, std::string> roles_;
  MetricSink sink_;
};

}  // namespace alignkit::ppo
