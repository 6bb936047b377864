// The reward-model (Bradley-Terry) loss as a pure function over the rewards of
// chosen and rejected sequences, following TRL's RewardTrainer
// (trl/trainer/reward_trainer.py, `compute_loss`, HEAD):
//   loss = -mean(logsigmoid(r_chosen - r_rejected - margin))
//        + center_rewards_coefficient * mean((r_chosen + r_rejected)^2)   (when the coefficient > 0)
// and its metrics under TRL's names.
#pragma once

#include <ATen/core/Tensor.h>

#include "alignkit/training.hpp"

namespace alignkit::reward {

struct RewardLossOutput {
  at::Tensor loss;  // scalar; carries the graph of the rewards
  Metrics metrics;  // accuracy, margin, min_reward, mean_reward, max_reward
};

// `chosen` and `rejected` are (B,) rewards of each pair, `margin` (B,) or
// undefined (taken as 0). The centring term is added only when
// `center_rewards_coefficient` > 0 (TRL's default None: off). Metrics:
//   accuracy    mean(r_chosen > r_rejected)
//   margin      mean(r_chosen - r_rejected)  (the margin field is not subtracted)
//   min/mean/max_reward over all 2B rewards.
// Throws std::invalid_argument for shapes that differ or are not (B,) with B > 0.
RewardLossOutput reward_loss(const at::Tensor& chosen, const at::Tensor& rejected, const at::Tensor& margin,
                             double center_rewards_coefficient);

}  // namespace alignkit::reward
