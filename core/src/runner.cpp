// Pipeline execution: stage folders, DONE markers, signals, and the host
// services (StageContext) a backend and an algorithm use. See runner.hpp.
#include "alignkit/core/runner.hpp"

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "alignkit/core/atomic_file.hpp"
#include "alignkit/core/metrics.hpp"
#include "alignkit/core/pipeline.hpp"
#include "alignkit/core/plugin_host.hpp"
#include "alignkit/training.hpp"

namespace fs = std::filesystem;

namespace alignkit::core {
namespace {

std::atomic<bool> g_stop_requested{false};

extern "C" void on_stop_signal(int signal_number) {
  g_stop_requested.store(true);
  // A second signal ends the process at once.
  std::signal(signal_number, SIG_DFL);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class StageContextImpl : public StageContext {
 public:
  StageContextImpl(const Pipeline& pipeline, const StagePlan& plan, PluginHost& host, const RunOptions& options)
      : plan_(plan),
        settings_(pipeline.stage_settings(plan.name)),
        host_(host),
        options_(options) {}

  const std::string& stage_name() const override { return plan_.name; }
  const std::string& stage_dir() const override { return plan_.dir; }
  const ConfigView& settings() const override { return settings_; }
  std::string model_dir(const std::string& role) const override {
    auto it = plan_.model_dirs.find(role);
    return it == plan_.model_dirs.end() ? "" : it->second;
  }
  std::shared_ptr<CausalLM> load_model(const std::string& dir, const ModelOptions& options) override {
    // One line per model in memory: tests count them (a LoRA reference loads none).
    log("loading model " + dir + (options.lora.r > 0 ? " with LoRA adapters (r " + std::to_string(options.lora.r) + ")" : ""));
    return core::load_model(host_.registry(), dir, options);
  }
  std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) override {
    return core::load_tokenizer(host_.registry(), dir);
  }
  std::unique_ptr<Dataset> load_dataset(const ConfigView& data, const std::string& path,
                                        const Tokenizer* tokenizer) override {
    std::string format = data.has("format") ? data.get_string("format") : "jsonl";
    const DatasetProvider* provider = host_.registry().dataset(format);
    if (!provider) throw ConfigError(data.locate("format") + ": no dataset plugin named '" + format + "'");
    DataRequest request;
    request.path = path;
    request.options = data;
    request.tokenizer = tokenizer;
    return provider->load(request);
  }
  void log_metrics(int64_t step, Split split, const Metrics& metrics) override {
    // Opened on first use, so a stage that fails in setup leaves no empty files.
    if (!metrics_) metrics_ = std::make_unique<MetricSinks>(plan_.dir, plan_.name);
    metrics_->log(step, split, metrics);
  }
  void log(const std::string& message) override { std::cerr << "[" << plan_.name << "] " << message << std::endl; }
  bool stop_requested() const override { return g_stop_requested.load(); }
  bool resume_required() const override { return options_.resume; }
  Registry& registry() override { return host_.registry(); }

 private:
  const StagePlan& plan_;
  ConfigView settings_;
  PluginHost& host_;
  const RunOptions& options_;
  std::unique_ptr<MetricSinks> metrics_;
};

// A tokenizer with more ids than config.json's vocab_size produces ids the
// model has no embedding for; refuse the folder before any text is encoded.
// (A larger model vocabulary is normal: checkpoints round it up.)
void check_tokenizer_fits_model(const Tokenizer& tokenizer, const fs::path& tokenizer_file, const std::string& dir) {
  const fs::path config_path = fs::path(dir) / "config.json";
  if (!fs::exists(config_path)) return;
  // load_model reports a malformed config.json with its own message.
  const nlohmann::json config = nlohmann::json::parse(read_text(config_path), nullptr, false);
  if (!config.is_object() || !config.contains("vocab_size") || !config["vocab_size"].is_number_integer()) return;
  const int64_t model_vocab = config["vocab_size"].get<int64_t>();
  if (tokenizer.vocab_size() > model_vocab)
    throw std::runtime_error(tokenizer_file.string() + ": the tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                             " tokens but " + config_path.string() + " has vocab_size " + std::to_string(model_vocab) +
                             ", so ids from " + std::to_string(model_vocab) +
                             " up have no embedding (use the model's own tokenizer or resize the model)");
}

}  // namespace

std::shared_ptr<CausalLM> load_model(const Registry& registry, const std::string& dir, const ModelOptions& options) {
  fs::path config_path = fs::path(dir) / "config.json";
  const fs::path adapter_config = fs::path(dir) / "adapter_config.json";
  if (!fs::exists(config_path) && fs::exists(adapter_config)) {
    // A PEFT adapter folder (a LoRA stage's final/ without merge_on_save): its
    // base model with the adapter merged in.
    nlohmann::json adapter;
    try {
      adapter = nlohmann::json::parse(read_text(adapter_config));
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(adapter_config.string() + ": not valid JSON (" + e.what() + ")");
    }
    if (!adapter.is_object() || !adapter.contains("base_model_name_or_path") ||
        !adapter["base_model_name_or_path"].is_string())
      throw std::runtime_error(adapter_config.string() + ": missing string key 'base_model_name_or_path'");
    fs::path base = adapter["base_model_name_or_path"].get<std::string>();
    if (base.is_relative()) base = fs::path(dir) / base;
    if (!fs::exists(base))
      throw std::runtime_error(adapter_config.string() + ": base_model_name_or_path " + base.string() +
                               " is not a folder here (alignkit loads base models from local folders)");
    ModelOptions with_adapter = options;
    with_adapter.merge_adapters.insert(with_adapter.merge_adapters.begin(), dir);
    return load_model(registry, base.string(), with_adapter);
  }
  if (!fs::exists(config_path))
    throw std::runtime_error(dir + ": no config.json here (expected a Hugging Face model folder)");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_text(config_path));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(config_path.string() + ": not valid JSON (" + e.what() + ")");
  }
  if (!config.is_object() || !config.contains("model_type") || !config["model_type"].is_string())
    throw std::runtime_error(config_path.string() + ": missing string key 'model_type'");
  std::string model_type = config["model_type"].get<std::string>();
  std::string supported;
  for (const std::string& name : registry.names(ComponentKind::Model)) {
    const ModelProvider* provider = registry.model(name);
    for (const std::string& type : provider->model_types()) {
      if (type == model_type) return provider->load(dir, options);
      supported += (supported.empty() ? "" : ", ") + type;
    }
  }
  throw std::runtime_error(config_path.string() + ": model_type '" + model_type +
                           "' is not supported (supported: " + (supported.empty() ? "none" : supported) + ")");
}

std::unique_ptr<Tokenizer> load_tokenizer(const Registry& registry, const std::string& dir) {
  for (const std::string& name : registry.names(ComponentKind::Tokenizer)) {
    const TokenizerProvider* provider = registry.tokenizer(name);
    fs::path file = fs::path(dir) / provider->file_name();
    if (!fs::exists(file)) continue;
    std::unique_ptr<Tokenizer> tokenizer = provider->open(file.string());
    check_tokenizer_fits_model(*tokenizer, file, dir);
    return tokenizer;
  }
  return nullptr;
}

RunOutcome run_pipeline(const Pipeline& pipeline, PluginHost& host, const RunOptions& options) {
  fs::create_directories(pipeline.output_dir());
  write_file_atomic((fs::path(pipeline.output_dir()) / "pipeline.resolved.toml").string(), pipeline.resolved_toml());

  g_stop_requested.store(false);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);

  for (const StagePlan& plan : pipeline.stages()) {
    const std::string fingerprint = pipeline.stage_fingerprint(plan.name);
    const fs::path done = fs::path(plan.dir) / kStageDoneMarker;
    if (fs::exists(done)) {
      if (read_text(done) == fingerprint && fs::exists(Pipeline::stage_output_dir(plan.dir))) {
        std::cerr << "[" << plan.name << "] already finished with these settings; skipping (" << plan.dir << ")\n";
        continue;
      }
      // Its checkpoints and final model belong to the old settings: keep them
      // out of the way, never delete them.
      fs::path kept;
      for (int n = 1; kept.empty() || fs::exists(kept); ++n) kept = plan.dir + ".old-" + std::to_string(n);
      fs::rename(plan.dir, kept);
      std::cerr << "[" << plan.name << "] settings changed since it finished; running it again (the old folder is kept as "
                << kept.string() << ")\n";
    }
    fs::create_directories(plan.dir);
    std::cerr << "[" << plan.name << "] " << plan.algorithm << " on " << plan.backend << " -> " << plan.dir << '\n';

    StageContextImpl context(pipeline, plan, host, options);
    std::unique_ptr<Algorithm> algorithm = host.registry().algorithm(plan.algorithm)->create();
    std::unique_ptr<Backend> backend = host.registry().backend(plan.backend)->create();
    TrainOutcome outcome = backend->train(*algorithm, context);
    if (outcome == TrainOutcome::Preempted) {
      std::cerr << "[" << plan.name << "] stopped by a signal after saving a checkpoint; run again to resume\n";
      return RunOutcome::Preempted;
    }
    if (!fs::exists(Pipeline::stage_output_dir(plan.dir)))
      throw std::runtime_error("stage " + plan.name + " finished without writing " + Pipeline::stage_output_dir(plan.dir));
    write_file_atomic(done.string(), fingerprint);
  }
  return RunOutcome::Completed;
}

}  // namespace alignkit::core
