// The `rlhf` algorithm plugin: classic RLHF (TRL's RewardTrainer, then its
// PPOTrainer) as one stage. Both phases are the installed `reward` and `ppo`
// algorithms, created through the registry:
//   1. reward: trains a reward model from the stage's `model` on the
//      preference data of [stages.X.reward] (its own data, trainer and reward
//      settings), with the stage's backend, into <stage>/reward/final. A
//      finished phase (its DONE marker) is not trained again.
//   2. ppo: the stage's own training loop runs the ppo algorithm on the
//      stage's prompt `data` with that reward model as `reward_model` (and
//      initial value model); [stages.X.ppo] holds PPO's settings, the stage's
//      top-level trainer settings (learning_rate, max_steps, batch sizes) its loop.
// The stage saves what PPO saves: the tuned policy, its value model beside it.
#include <filesystem>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/core/atomic_file.hpp"
#include "alignkit/core/config_check.hpp"
#include "alignkit/core/metrics.hpp"
#include "alignkit/core/trainer.hpp"
#include "alignkit/plugin.hpp"
#include "alignkit/registry.hpp"
#include "alignkit/training.hpp"
#include "stage_context_overlay.hpp"

namespace fs = std::filesystem;

namespace alignkit::rlhf {
namespace {

const char* const kRewardPhase = "reward";
const char* const kPpoPhase = "ppo";

std::set<std::string> trainer_keys() {
  std::set<std::string> names;
  for (const SettingSpec& spec : core::trainer_setting_specs()) names.insert(spec.name);
  return names;
}

// Appends the specs of `from` whose names `specs` does not hold yet (the first declaration wins).
void add_specs(std::vector<SettingSpec>& specs, const std::vector<SettingSpec>& from, const std::set<std::string>& skip = {}) {
  for (const SettingSpec& spec : from) {
    if (skip.count(spec.name)) continue;
    bool known = false;
    for (const SettingSpec& have : specs) known = known || have.name == spec.name;
    if (!known) specs.push_back(spec);
  }
}

const ComponentInfo& required_algorithm(const Registry& registry, const char* name) {
  const ComponentInfo* info = registry.info(ComponentKind::Algorithm, name);
  if (!info)
    throw std::runtime_error(std::string("the rlhf plugin composes the `") + name +
                             "` algorithm plugin, which is not loaded yet; install it in the same plugin folder");
  return *info;
}

// The [stages.X.reward] table: the reward algorithm's settings, a trainer of its own and its preference data.
SettingSpec reward_phase_spec(const Registry& registry) {
  std::vector<SettingSpec> fields = required_algorithm(registry, kRewardPhase).settings;
  add_specs(fields, core::trainer_setting_specs());
  std::vector<SettingSpec> data = {setting::text("format", "jsonl", "the dataset plugin that reads `path`")};
  if (const ComponentInfo* jsonl = registry.info(ComponentKind::Dataset, "jsonl")) add_specs(data, jsonl->settings);
  fields.push_back(setting::table("data", std::move(data), "the preference data of the reward model"));
  return setting::table(kRewardPhase, std::move(fields),
                        "phase 1, the reward model: the reward algorithm's settings, its trainer settings "
                        "(learning_rate, num_train_epochs, ...) and its preference `data`",
                        /*required=*/true);
}

// The [stages.X.ppo] table: PPO's own settings; its loop's trainer settings are the stage's.
SettingSpec ppo_phase_spec(const Registry& registry) {
  std::vector<SettingSpec> fields;
  add_specs(fields, required_algorithm(registry, kPpoPhase).settings, trainer_keys());
  return setting::table(kPpoPhase, std::move(fields),
                        "phase 2, PPO: the ppo algorithm's settings (response_length, kl_coef, ...)");
}

std::vector<SettingSpec> rlhf_settings(const Registry& registry) {
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 3e-6, "peak learning rate of the PPO phase (TRL's PPOConfig default)", 0.0),
      reward_phase_spec(registry),
      ppo_phase_spec(registry),
  };
  return settings;
}

// The stage table less both phase tables, with `phase`'s keys laid over it and
// the defaults of `phase_settings` for keys neither names (the host fills a
// phase table's defaults only when the stage writes the table).
ConfigValue phase_table(const ConfigView& stage, const char* phase, const std::vector<SettingSpec>& phase_settings) {
  ConfigValue table = ConfigValue::empty_table();
  table.where = stage.where();
  for (const auto& [key, value] : stage.node()->table)
    if (key != kRewardPhase && key != kPpoPhase) table.set(key, value);
  if (const ConfigValue* own = stage.node()->find(phase); own && own->type == ValueType::Table)
    for (const auto& [key, value] : own->table) table.set(key, value);
  for (const SettingSpec& spec : phase_settings)
    if (!table.find(spec.name) && spec.default_value.type != ValueType::Null) table.set(spec.name, spec.default_value);
  return table;
}

class RlhfAlgorithm : public Algorithm {
 public:
  void setup(StageContext& context, const TrainEnv& env) override {
    const ConfigView& stage = context.settings();
    const std::string reward_dir = (fs::path(context.stage_dir()) / kRewardPhase).string();
    const std::string reward_model = (fs::path(reward_dir) / "final").string();
    train_reward_model(context, reward_dir, reward_model);

    // Named as the stage: most of what PPO reads (roles, data, trainer settings) is the stage's own.
    ppo_context_ = std::make_unique<ppo::StageContextOverlay>(
        context, phase_table(stage, kPpoPhase, phase_settings(context, kPpoPhase)), stage.path());
    ppo_context_->set_model_dir("reward_model", reward_model);
    ppo_ = create(context, kPpoPhase);
    ppo_->setup(*ppo_context_, env);
  }

  std::vector<NamedTensor> trainable_parameters() override { return ppo_->trainable_parameters(); }
  int64_t num_examples(Split split) const override { return ppo_->num_examples(split); }
  StepOutput step(const std::vector<int64_t>& indices, Split split) override { return ppo_->step(indices, split); }
  void set_training(bool training) override { ppo_->set_training(training); }
  std::vector<std::string> progress_metrics() const override { return ppo_->progress_metrics(); }
  void save(const std::string& dir) override { ppo_->save(dir); }
  OnlineAlgorithm* online() override { return ppo_->online(); }

 private:
  static std::vector<SettingSpec> phase_settings(StageContext& context, const char* name) {
    const ComponentInfo* info = context.registry().info(ComponentKind::Algorithm, name);
    return info ? info->settings : std::vector<SettingSpec>{};
  }

  static std::unique_ptr<Algorithm> create(StageContext& context, const char* name) {
    const AlgorithmProvider* provider = context.registry().algorithm(name);
    if (!provider) throw ConfigError(context.settings().locate("algorithm") + ": rlhf needs the `" + name + "` algorithm plugin");
    return provider->create();
  }

  // Phase 1 on the stage's backend, with its own folder and metric files; skipped once finished.
  void train_reward_model(StageContext& context, const std::string& dir, const std::string& output) {
    const fs::path done = fs::path(dir) / "DONE";
    if (fs::exists(done) && fs::exists(output)) {
      context.log("reward phase already finished; scoring with " + output);
      return;
    }
    const ConfigView& stage = context.settings();
    ppo::StageContextOverlay reward_context(
        context, phase_table(stage, kRewardPhase, phase_settings(context, kRewardPhase)), stage.path() + "." + kRewardPhase);
    reward_context.set_stage(context.stage_name() + "/" + kRewardPhase, dir);
    reward_context.set_model_dir("reward_model", "");
    fs::create_directories(dir);
    core::MetricSinks sinks(dir, context.stage_name() + "/" + kRewardPhase);
    reward_context.set_metric_sink([&](int64_t step, Split split, const Metrics& metrics) { sinks.log(step, split, metrics); });

    const std::string backend_name = stage.get_string("backend");
    const BackendProvider* backend = context.registry().backend(backend_name);
    if (!backend) throw ConfigError(stage.locate("backend") + ": no backend plugin named '" + backend_name + "'");
    std::unique_ptr<Algorithm> reward = create(context, kRewardPhase);
    context.log("phase 1: training the reward model in " + dir);
    if (backend->create()->train(*reward, reward_context) == TrainOutcome::Preempted)
      throw std::runtime_error("stopped by a signal during the reward phase after saving its checkpoint in " + dir +
                               "; run again to resume it");
    core::write_file_atomic(done.string(), "reward\n");
    context.log("phase 2: PPO against " + output);
  }

  std::unique_ptr<ppo::StageContextOverlay> ppo_context_;  // outlives ppo_, which keeps a pointer to it
  std::unique_ptr<Algorithm> ppo_;
};

struct RlhfProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<RlhfAlgorithm>(); }
};

void register_rlhf(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "rlhf", ALIGNKIT_VERSION_STRING,
                          "classic RLHF in one stage: a reward model on preference data, then PPO against it",
                          rlhf_settings(registry)},
                         std::make_shared<RlhfProvider>());
}

}  // namespace
}  // namespace alignkit::rlhf

ALIGNKIT_PLUGIN("rlhf", ALIGNKIT_VERSION_STRING, "classic RLHF: reward model then PPO, composed from both plugins",
                alignkit::rlhf::register_rlhf)
