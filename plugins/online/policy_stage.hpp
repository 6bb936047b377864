// What every online recipe that samples from its policy and scores the
// samples with reward plugins (grpo, rloo) sets up the same way: the policy
// and its tokenizer, prompt data (prompt-only or prompt + answer records,
// train and held-out splits), the stage's rewards, an optional frozen
// reference, the generation settings, and scored rollouts of any split.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "alignkit/config.hpp"
#include "alignkit/model.hpp"
#include "alignkit/tokenizer.hpp"
#include "alignkit/training.hpp"
#include "recipe_support.hpp"
#include "reward_set.hpp"
#include "rollout.hpp"

namespace alignkit::online {

// max_prompt_length, max_completion_length, temperature, top_k, top_p,
// eval_do_sample and the `rewards` array, with TRL's GRPO defaults unless
// given here.
std::vector<SettingSpec> generation_settings(int64_t default_max_completion_length, double default_temperature);

struct PolicyStageOptions {
  std::string algorithm;      // "GRPO", for messages
  bool with_reference = false;  // load `reference` (default: a frozen copy of `model`)
};

// One scored rollout: the prompts it continued, the completions and their rewards.
struct ScoredRollout {
  std::vector<const Example*> prompts;
  RolloutBatch batch;
  RewardScores scores;
};

class PolicyStage {
 public:
  // Throws ConfigError for a missing model, bad data, an unknown or
  // misconfigured reward, or a reference that does not fit the policy.
  void setup(StageContext& context, const TrainEnv& env, const PolicyStageOptions& options);

  CausalLM& policy() { return *policy_; }
  CausalLM* reference() { return reference_.get(); }  // null unless asked for
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const recipe::SplitData& split(Split split) const { return split == Split::Train ? data_.train : data_.eval; }
  RewardSet& rewards() { return rewards_; }
  StageContext& context() { return *context_; }
  const TrainEnv& env() const { return env_; }
  int64_t max_completion_length() const { return max_completion_length_; }
  double temperature() const { return temperature_; }

  // Sampled (training) or, for evaluation without eval_do_sample, greedy
  // generation settings. The sampling seed is drawn from LibTorch's default
  // CPU generator, which the trainer checkpoints, so a resumed run samples
  // what an uninterrupted one would.
  RolloutSettings rollout_settings(int64_t num_generations, bool sample) const;
  // Generates and scores completions for examples `indices` of `split`.
  ScoredRollout rollout(Split split, const std::vector<int64_t>& indices, const RolloutSettings& settings);
  // Held-out evaluation of one batch: one completion per prompt (greedy
  // unless eval_do_sample): reward, rewards/<label>/mean|std|failures and
  // the completion metrics.
  StepOutput evaluate(const std::vector<int64_t>& indices);
  // The policy as a complete Hugging Face folder (tokenizer files copied).
  void save(const std::string& dir);

 private:
  StageContext* context_ = nullptr;
  TrainEnv env_;
  std::string model_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<CausalLM> policy_;
  std::shared_ptr<CausalLM> reference_;
  recipe::StageData data_;
  RewardSet rewards_;
  int32_t pad_id_ = 0;
  int64_t max_prompt_length_ = 0;
  int64_t max_completion_length_ = 0;
  double temperature_ = 1.0;
  int64_t top_k_ = 0;
  double top_p_ = 1.0;
  bool eval_do_sample_ = false;
};

}  // namespace alignkit::online
