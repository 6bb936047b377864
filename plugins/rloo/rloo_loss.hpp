// RLOO's maths as pure functions over tensors (TRL's RLOOTrainer): the
// sequence-level KL penalty folded into the reward, the leave-one-out
// baseline, and the clipped loss on sequence-level importance ratios.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "alignkit/training.hpp"

namespace alignkit::rloo {

struct RlooAdvantages {
  at::Tensor rewards;     // (N) scores - beta * sequence_kl
  at::Tensor advantages;  // (N)
  Metrics metrics;        // reward, reward_std, frac_reward_zero_std (of the penalised rewards)
};

// scores (N) of N = groups x num_generations rows, group-major; sequence_kl
// (N) = sum over completion tokens of (old_logp - ref_logp), undefined when
// beta = 0. reward = score - beta * kl; baseline = mean of the other rewards
// of the group; A = reward - baseline, whitened over the batch ((A - mean) /
// (std + 1e-4)) when `normalize`. Throws std::invalid_argument when N is not a
// multiple of num_generations or num_generations < 2.
RlooAdvantages rloo_advantages(const at::Tensor& scores, const at::Tensor& sequence_kl, double beta,
                               int64_t num_generations, bool normalize);

struct SequenceLossOutput {
  at::Tensor loss;  // scalar, with grad
  Metrics metrics;  // clip_ratio/region_mean (and low/high), over sequences
};

// ratio = exp(sum over the completion of (logps - old_logps)) per sequence;
// loss = mean over rows of -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A).
// logps, old_logps, mask (N, C); advantages (N).
SequenceLossOutput rloo_loss(const at::Tensor& logps, const at::Tensor& old_logps, const at::Tensor& advantages,
                             const at::Tensor& mask, double epsilon_low, double epsilon_high);

}  // namespace alignkit::rloo
