// The `grpo` algorithm plugin: TRL's GRPOTrainer as an online recipe. Each
// training step samples num_generations completions for each of the step's
// prompts, scores them with the stage's rewards, turns the rewards into
// group-normalised advantages, and makes num_iterations optimizer updates on
// that rollout with the clipped surrogate loss (plus beta * k3 KL to a frozen
// reference when beta > 0). Evaluation scores one completion per held-out
// prompt (greedy unless eval_do_sample).
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/plugin.hpp"
#include "alignkit/training.hpp"
#include "grpo_loss.hpp"
#include "policy_stage.hpp"
#include "recipe_support.hpp"
#include "rl_math.hpp"
#include "rollout.hpp"

namespace alignkit::grpo {
namespace {

std::vector<SettingSpec> grpo_settings() {
  SettingSpec epsilon_high{"epsilon_high", ValueType::Float, ConfigValue{},
                           "upper clipping bound 1 + epsilon_high (DAPO's clip-higher; default: epsilon)", false,
                           {}, {}, 0.0};
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 1e-6, "peak learning rate of AdamW (TRL's GRPO default)", 0.0),
      setting::integer("num_generations", 8, "completions sampled per prompt: one group (at least 2)", 1.0),
      setting::text("scale_rewards", "group",
                    "divide advantages by the group's reward std (group), the batch's (batch) or not at all (none)",
                    {"group", "batch", "none"}),
      setting::text("loss_type", "dapo",
                    "token averaging: grpo (per sequence), bnpo (micro-batch tokens), dr_grpo (rows x "
                    "max_completion_length), dapo (all tokens of the update)",
                    {"grpo", "bnpo", "dr_grpo", "dapo"}),
      setting::number("beta", 0.0, "weight of the k3 KL to a frozen reference (0: no reference is loaded)", 0.0),
      setting::number("epsilon", 0.2, "clipping: the ratio stays within [1 - epsilon, 1 + epsilon_high]", 0.0),
      epsilon_high,
      setting::integer("num_iterations", 1, "optimizer updates per rollout (TRL's mu)", 1.0),
      setting::boolean("mask_truncated_completions", false,
                       "leave completions that hit max_completion_length without an EOS out of the loss"),
  };
  for (SettingSpec& spec : online::generation_settings(256, 1.0)) settings.push_back(std::move(spec));
  return settings;
}

class GrpoAlgorithm : public Algorithm, public OnlineAlgorithm {
 public:
  void setup(StageContext& context, const TrainEnv& env) override {
    const ConfigView& settings = context.settings();
    num_generations_ = settings.get_int("num_generations");
    if (num_generations_ < 2)
      throw ConfigError(settings.locate("num_generations") + ": GRPO needs at least 2 completions per prompt, found " +
                        std::to_string(num_generations_) +
                        ": the advantage is a completion's reward minus its group's mean, so a group of one always "
                        "has advantage 0 and nothing is learned");
    scale_rewards_ = parse_scale_rewards(settings.get_string("scale_rewards"));
    loss_.loss_type = parse_loss_type(settings.get_string("loss_type"));
    loss_.beta = settings.get_float("beta");
    loss_.epsilon_low = settings.get_float("epsilon");
    loss_.epsilon_high = settings.has("epsilon_high") ? settings.get_float("epsilon_high") : loss_.epsilon_low;
    loss_.max_completion_length = settings.get_int("max_completion_length");
    num_iterations_ = settings.get_int("num_iterations");
    mask_truncated_ = settings.get_bool("mask_truncated_completions");
    micro_batches_ = settings.has("gradient_accumulation_steps") ? settings.get_int("gradient_accumulation_steps") : 1;

    online::PolicyStageOptions options;
    options.algorithm = "GRPO";
    options.with_reference = loss_.beta > 0;
    stage_.setup(context, env, options);
    if (loss_.beta == 0 && !context.model_dir("reference").empty())
      context.log("beta = 0: the named reference is not loaded (TRL's default: no KL term)");
  }

  std::vector<NamedTensor> trainable_parameters() override { return stage_.policy().trainable_parameters(); }
  int64_t num_examples(Split split) const override { return stage_.split(split).size(); }
  OnlineAlgorithm* online() override { return this; }

  StepOutput step(const std::vector<int64_t>& indices, Split split) override {
    if (split == Split::Train) throw std::logic_error("grpo trains through collect() and learn()");
    return recipe::guarded("grpo evaluation", [&] { return stage_.evaluate(indices); });
  }

  Rollout collect(const std::vector<int64_t>& prompt_indices) override {
    return recipe::guarded("grpo rollout", [&] { return collect_rollout(prompt_indices); });
  }

  StepOutput learn(const std::vector<int64_t>& rows) override {
    return recipe::guarded("grpo update", [&] { return learn_rows(rows); });
  }

  void set_training(bool training) override { stage_.policy().set_training(training); }

  std::vector<std::string> progress_metrics() const override { return {"reward", "reward_std", "kl"}; }

  void save(const std::string& dir) override {
    recipe::guarded("grpo save", [&] { stage_.save(dir); });
  }

 private:
  Rollout collect_rollout(const std::vector<int64_t>& prompt_indices) {
    online::ScoredRollout scored =
        stage_.rollout(Split::Train, prompt_indices, stage_.rollout_settings(num_generations_, true));
    batch_ = std::move(scored.batch);
    if (mask_truncated_) {
      std::vector<int64_t> kept;
      for (bool truncated : batch_.truncated) kept.push_back(truncated ? 0 : 1);
      at::Tensor keep = at::tensor(kept, at::kLong).to(batch_.completion_mask.device()).unsqueeze(1);  // (N, 1)
      batch_.completion_mask = batch_.completion_mask * keep;
    }
    Advantages advantages = group_advantages(scored.scores.total, num_generations_, scale_rewards_);
    advantages_ = advantages.advantages.to(batch_.completion_ids.device());  // (N)
    // The policy has not moved before the first update: with one iteration
    // the old log-probs equal the current ones detached, as in TRL.
    old_logps_ = num_iterations_ > 1
                     ? online::completion_logprobs(stage_.policy(), batch_, stage_.temperature(), false).logps
                     : at::Tensor();
    ref_logps_ = stage_.reference()
                     ? online::completion_logprobs(*stage_.reference(), batch_, stage_.temperature(), false).logps
                     : at::Tensor();

    Rollout rollout;
    rollout.metrics = std::move(advantages.metrics);
    for (Metric& m : scored.scores.metrics()) rollout.metrics.push_back(std::move(m));
    for (Metric& m : online::completion_metrics(batch_)) rollout.metrics.push_back(std::move(m));
    rollout.num_tokens = batch_.attention_mask().sum().item<int64_t>();

    // Each update covers every row in gradient_accumulation_steps micro-batches
    // of whole groups; dapo divides by all active tokens of the update.
    const int64_t rows = batch_.rows();
    const int64_t groups = rows / num_generations_;
    const int64_t pieces = std::max<int64_t>(1, std::min(micro_batches_, groups));
    Update update;
    for (int64_t piece = 0; piece < pieces; ++piece) {
      std::vector<int64_t> micro;
      for (int64_t g = groups * piece / pieces; g < groups * (piece + 1) / pieces; ++g)
        for (int64_t k = 0; k < num_generations_; ++k) micro.push_back(g * num_generations_ + k);
      update.push_back(std::move(micro));
    }
    loss_.dapo_tokens = batch_.completion_mask.sum().item<double>() / static_cast<double>(update.size());
    for (int64_t i = 0; i < num_iterations_; ++i) rollout.updates.push_back(update);
    return rollout;
  }

  StepOutput learn_rows(const std::vector<int64_t>& rows) {
    const online::RolloutBatch micro = batch_.select(rows);
    at::Tensor index = at::tensor(rows, at::kLong).to(batch_.completion_ids.device());  // (n)
    online::CompletionScores scores = online::completion_logprobs(stage_.policy(), micro, stage_.temperature(), true);
    PolicyLossInput in;
    in.logps = scores.logps;
    in.old_logps = old_logps_.defined() ? old_logps_.index_select(0, index) : scores.logps.detach();
    if (ref_logps_.defined()) in.ref_logps = ref_logps_.index_select(0, index);
    in.advantages = advantages_.index_select(0, index);
    in.mask = micro.completion_mask;
    PolicyLossOutput loss = policy_loss(in, loss_);
    StepOutput out;
    out.loss = loss.loss;
    out.metrics = std::move(loss.metrics);
    // Every completion of the micro-batch may be masked out (mask_truncated_completions).
    if (micro.completion_mask.sum().item<int64_t>() > 0)
      out.metrics.push_back({"entropy", online::masked_mean(scores.entropy, micro.completion_mask).item<double>()});
    return out;
  }

  online::PolicyStage stage_;
  int64_t num_generations_ = 8;
  int64_t num_iterations_ = 1;
  int64_t micro_batches_ = 1;
  bool mask_truncated_ = false;
  ScaleRewards scale_rewards_ = ScaleRewards::Group;
  PolicyLossSettings loss_;
  // The rollout buffer of the current step.
  online::RolloutBatch batch_;
  at::Tensor advantages_;  // (N)
  at::Tensor old_logps_;   // (N, C); undefined with one iteration
  at::Tensor ref_logps_;   // (N, C); undefined when beta = 0
};

struct GrpoProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<GrpoAlgorithm>(); }
};

void register_grpo(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "grpo", ALIGNKIT_VERSION_STRING,
                          "Group Relative Policy Optimization with reward plugins (TRL's GRPOTrainer)",
                          grpo_settings()},
                         std::make_shared<GrpoProvider>());
}

}  // namespace
}  // namespace alignkit::grpo

ALIGNKIT_PLUGIN("grpo", ALIGNKIT_VERSION_STRING, "GRPO online RL (group-normalised advantages, dapo/grpo/dr_grpo losses)",
                alignkit::grpo::register_grpo)
