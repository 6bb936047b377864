// GRPO's maths as pure functions over tensors (TRL's GRPOTrainer): group-
// normalised advantages, and the clipped surrogate loss with its KL term and
// four ways of averaging tokens (loss_type). Both return detached metrics
// named as TRL logs them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "alignkit/training.hpp"

namespace alignkit::grpo {

enum class ScaleRewards { Group, Batch, None };
// "group", "batch" or "none"; throws std::invalid_argument otherwise.
ScaleRewards parse_scale_rewards(const std::string& name);

struct Advantages {
  at::Tensor advantages;  // (N) float32
  Metrics metrics;        // reward, reward_std, frac_reward_zero_std
};

// rewards (N) of N = groups x num_generations rows, group-major (rows
// g*G .. g*G+G-1 share a prompt). A = r - mean(group); divided by
// (std + 1e-4) unless `none`, where std is the group's (unbiased) std for
// `group` and the whole batch's for `batch`. reward = mean reward,
// reward_std = mean of that std, frac_reward_zero_std = share of rows whose
// std is 0 (their group teaches nothing). Throws std::invalid_argument when
// N is not a multiple of num_generations or num_generations < 2.
Advantages group_advantages(const at::Tensor& rewards, int64_t num_generations, ScaleRewards scale);

enum class LossType { Grpo, Bnpo, DrGrpo, Dapo };
// "grpo", "bnpo", "dr_grpo" or "dapo"; throws std::invalid_argument otherwise.
LossType parse_loss_type(const std::string& name);

struct PolicyLossSettings {
  LossType loss_type = LossType::Dapo;
  double epsilon_low = 0.2;   // ratio clipped below at 1 - epsilon_low
  double epsilon_high = 0.2;  // and above at 1 + epsilon_high
  double beta = 0.0;          // weight of the k3 KL to the reference (0: none)
  int64_t max_completion_length = 0;  // dr_grpo's normaliser: rows x this
  // dapo's normaliser: the active tokens of the whole optimizer update divided
  // by its number of micro-batches (the trainer averages micro-batch losses),
  // so the update's loss is its token sum over all its tokens. <= 0: this
  // micro-batch's own token count.
  double dapo_tokens = 0.0;
};

struct PolicyLossInput {
  at::Tensor logps;       // (N, C) policy log-probs of the completion tokens (with grad)
  at::Tensor old_logps;   // (N, C) the policy's at generation time (detached)
  at::Tensor ref_logps;   // (N, C) the reference's; undefined when beta = 0
  at::Tensor advantages;  // (N)
  at::Tensor mask;        // (N, C) completion tokens (bool or 0/1)
};

struct PolicyLossOutput {
  at::Tensor loss;  // scalar, with grad
  Metrics metrics;  // kl (when beta > 0), clip_ratio/{low_mean,low_min,high_mean,high_max,region_mean}
};

// ratio = exp(logps - old_logps); per token
//   -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + beta * k3(logps, ref_logps)
// averaged by loss_type: grpo per sequence then over rows; bnpo over this
// micro-batch's tokens; dr_grpo over rows x max_completion_length; dapo over
// dapo_tokens. Clip metrics are token means of the clipped indicators
// (low: ratio < 1 - eps_low with A < 0; high: ratio > 1 + eps_high with A > 0);
// within one micro-batch min and max equal the mean.
PolicyLossOutput policy_loss(const PolicyLossInput& in, const PolicyLossSettings& settings);

}  // namespace alignkit::grpo
