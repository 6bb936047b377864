// The `rloo` algorithm plugin: REINFORCE Leave-One-Out as TRL's RLOOTrainer.
// Each training step samples num_generations completions per prompt, scores
// them with the stage's rewards, subtracts beta times each completion's
// sequence-level KL to a frozen reference from its reward, takes the mean
// reward of the other completions of its group as the baseline, and makes
// num_iterations updates with the clipped loss on sequence-level ratios.
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/plugin.hpp"
#include "alignkit/training.hpp"
#include "policy_stage.hpp"
#include "recipe_support.hpp"
#include "rl_math.hpp"
#include "rloo_loss.hpp"
#include "rollout.hpp"

namespace alignkit::rloo {
namespace {

std::vector<SettingSpec> rloo_settings() {
  SettingSpec epsilon_high{"epsilon_high", ValueType::Float, ConfigValue{},
                           "upper clipping bound 1 + epsilon_high (default: epsilon)", false, {}, {}, 0.0};
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 1e-6, "peak learning rate of AdamW (TRL's RLOO default)", 0.0),
      setting::integer("num_generations", 2, "completions sampled per prompt (at least 2: each is the others' baseline)",
                       1.0),
      setting::number("beta", 0.05,
                      "weight of the sequence-level KL to a frozen reference, subtracted from the reward (0: none)",
                      0.0),
      setting::number("epsilon", 0.2, "clipping of the sequence-level ratio: [1 - epsilon, 1 + epsilon_high]", 0.0),
      epsilon_high,
      setting::boolean("normalize_advantages", false, "whiten the advantages over the batch"),
      setting::integer("num_iterations", 1, "optimizer updates per rollout", 1.0),
      setting::boolean("mask_truncated_completions", false,
                       "leave completions that hit max_completion_length without an EOS out of the loss"),
  };
  for (SettingSpec& spec : online::generation_settings(256, 1.0)) settings.push_back(std::move(spec));
  return settings;
}

class RlooAlgorithm : public Algorithm, public OnlineAlgorithm {
 public:
  void setup(StageContext& context, const TrainEnv& env) override {
    const ConfigView& settings = context.settings();
    num_generations_ = settings.get_int("num_generations");
    if (num_generations_ < 2)
      throw ConfigError(settings.locate("num_generations") + ": RLOO needs at least 2 completions per prompt, found " +
                        std::to_string(num_generations_) +
                        ": each completion's baseline is the mean reward of the other completions of its prompt");
    beta_ = settings.get_float("beta");
    epsilon_low_ = settings.get_float("epsilon");
    epsilon_high_ = settings.has("epsilon_high") ? settings.get_float("epsilon_high") : epsilon_low_;
    normalize_ = settings.get_bool("normalize_advantages");
    num_iterations_ = settings.get_int("num_iterations");
    mask_truncated_ = settings.get_bool("mask_truncated_completions");
    micro_batches_ = settings.has("gradient_accumulation_steps") ? settings.get_int("gradient_accumulation_steps") : 1;
    online::PolicyStageOptions options;
    options.algorithm = "RLOO";
    options.with_reference = beta_ != 0.0;
    stage_.setup(context, env, options);
  }

  std::vector<NamedTensor> trainable_parameters() override { return stage_.policy().trainable_parameters(); }
  int64_t num_examples(Split split) const override { return stage_.split(split).size(); }
  OnlineAlgorithm* online() override { return this; }

  StepOutput step(const std::vector<int64_t>& indices, Split split) override {
    if (split == Split::Train) throw std::logic_error("rloo trains through collect() and learn()");
    return recipe::guarded("rloo evaluation", [&] { return stage_.evaluate(indices); });
  }

  Rollout collect(const std::vector<int64_t>& prompt_indices) override {
    return recipe::guarded("rloo rollout", [&] { return collect_rollout(prompt_indices); });
  }

  StepOutput learn(const std::vector<int64_t>& rows) override {
    return recipe::guarded("rloo update", [&] { return learn_rows(rows); });
  }

  void set_training(bool training) override { stage_.policy().set_training(training); }
  std::vector<std::string> progress_metrics() const override { return {"reward", "reward_std", "kl"}; }
  void save(const std::string& dir) override {
    recipe::guarded("rloo save", [&] { stage_.save(dir); });
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
    // The KL uses the policy's log-probs at generation time, so they are
    // needed whenever beta != 0, not only for several iterations.
    old_logps_ = beta_ != 0.0 || num_iterations_ > 1
                     ? online::completion_logprobs(stage_.policy(), batch_, stage_.temperature(), false).logps
                     : at::Tensor();
    at::Tensor sequence_kl;  // (N)
    Rollout rollout;
    if (beta_ != 0.0) {
      at::Tensor ref = online::completion_logprobs(*stage_.reference(), batch_, stage_.temperature(), false).logps;
      sequence_kl = ((old_logps_ - ref) * batch_.completion_mask.to(ref.scalar_type())).sum(1).cpu();
      rollout.metrics.push_back({"kl", sequence_kl.to(at::kDouble).mean().item<double>()});
    }
    RlooAdvantages advantages =
        rloo_advantages(scored.scores.total, sequence_kl, beta_, num_generations_, normalize_);
    advantages_ = advantages.advantages.to(batch_.completion_ids.device());  // (N)

    for (Metric& m : advantages.metrics) rollout.metrics.push_back(std::move(m));
    for (Metric& m : scored.scores.metrics()) rollout.metrics.push_back(std::move(m));
    for (Metric& m : online::completion_metrics(batch_)) rollout.metrics.push_back(std::move(m));
    rollout.num_tokens = batch_.attention_mask().sum().item<int64_t>();

    const int64_t groups = batch_.rows() / num_generations_;
    const int64_t pieces = std::max<int64_t>(1, std::min(micro_batches_, groups));
    Update update;
    for (int64_t piece = 0; piece < pieces; ++piece) {
      std::vector<int64_t> micro;
      for (int64_t g = groups * piece / pieces; g < groups * (piece + 1) / pieces; ++g)
        for (int64_t k = 0; k < num_generations_; ++k) micro.push_back(g * num_generations_ + k);
      update.push_back(std::move(micro));
    }
    for (int64_t i = 0; i < num_iterations_; ++i) rollout.updates.push_back(update);
    return rollout;
  }

  StepOutput learn_rows(const std::vector<int64_t>& rows) {
    const online::RolloutBatch micro = batch_.select(rows);
    at::Tensor index = at::tensor(rows, at::kLong).to(batch_.completion_ids.device());  // (n)
    online::CompletionScores scores = online::completion_logprobs(stage_.policy(), micro, stage_.temperature(), true);
    at::Tensor old = old_logps_.defined() ? old_logps_.index_select(0, index) : scores.logps.detach();
    SequenceLossOutput loss = rloo_loss(scores.logps, old, advantages_.index_select(0, index), micro.completion_mask,
                                        epsilon_low_, epsilon_high_);
    StepOutput out;
    out.loss = loss.loss;
    out.metrics = std::move(loss.metrics);
    // Every completion of the micro-batch may be masked out (mask_truncated_completions).
    if (micro.completion_mask.sum().item<int64_t>() > 0)
      out.metrics.push_back({"entropy", online::masked_mean(scores.entropy, micro.completion_mask).item<double>()});
    return out;
  }

  online::PolicyStage stage_;
  int64_t num_generations_ = 2;
  double beta_ = 0.05;
  double epsilon_low_ = 0.2;
  double epsilon_high_ = 0.2;
  bool normalize_ = false;
  int64_t num_iterations_ = 1;
  int64_t micro_batches_ = 1;
  bool mask_truncated_ = false;
  online::RolloutBatch batch_;
  at::Tensor advantages_;  // (N)
  at::Tensor old_logps_;   // (N, C); undefined when beta = 0 with one iteration
};

struct RlooProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<RlooAlgorithm>(); }
};

void register_rloo(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "rloo", ALIGNKIT_VERSION_STRING,
                          "REINFORCE Leave-One-Out with reward plugins (TRL's RLOOTrainer)", rloo_settings()},
                         std::make_shared<RlooProvider>());
}

}  // namespace
}  // namespace alignkit::rloo

ALIGNKIT_PLUGIN("rloo", ALIGNKIT_VERSION_STRING, "RLOO online RL (leave-one-out baseline, sequence-level KL)",
                alignkit::rloo::register_rloo)
