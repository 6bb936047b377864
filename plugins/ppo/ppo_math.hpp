// PPO's loss maths as pure functions over rollout tensors, following TRL's
// PPOTrainer (trl/experimental/ppo/ppo_trainer.py, `train`, HEAD):
//   per-token rewards  r_t = -kl_coef * KL_t, plus the score at the last completion token
//   GAE                delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}
//   returns            R_t = A_t + V_t; advantages whitened over the completion tokens
//   policy loss        masked_mean(max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)))
//   value loss         0.5 masked_mean(max((V - R)^2, (clip(V, V_old +- eps_v) - R)^2))
// One deliberate difference: TRL adds the score one position after the last
// token (its `sequence_lengths_p1`) and extends the value mask by one; here the
// score lands on the last completion token (the EOS, or the last token of a
// truncated completion) and every tensor uses the one completion mask.
#pragma once

#include <ATen/core/Tensor.h>

#include "alignkit/training.hpp"
#include "rl_math.hpp"

namespace alignkit::ppo {

struct TokenRewards {
  at::Tensor rewards;           // (B, T) -kl_coef * kl, plus the score at each row's last completion token
  at::Tensor kl;                // (B, T) the estimator's per-token KL, 0 outside the mask
  at::Tensor non_score_reward;  // (B, T) -kl_coef * kl
  at::Tensor scores;            // (B) after the missing-EOS penalty
};

// `logprobs` and `ref_logprobs` (B, T) are the sampled tokens' log-probs under
// the policy and the reference; `mask` (B, T) marks completion tokens (a
// prefix of each row, at least one token); `scores` (B) the reward of each
// completion; `contains_eos` (B) whether it ended with the stop token. Rows
// without one lose `missing_eos_penalty` (0: off, TRL's None).
TokenRewards per_token_rewards(const at::Tensor& logprobs, const at::Tensor& ref_logprobs, const at::Tensor& mask,
                               const at::Tensor& scores, const at::Tensor& contains_eos, double kl_coef,
                               online::KlEstimator estimator, double missing_eos_penalty);

struct Advantages {
  at::Tensor advantages;  // (B, T) whitened over the mask, 0 outside it
  at::Tensor returns;     // (B, T) raw advantages + values, 0 outside the mask
};

// Generalised advantage estimation over right-padded rows: `rewards` and
// `values` (B, T) are taken as 0 outside `mask`, so each row ends where its
// completion does (V after the last token is 0).
Advantages gae_advantages(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma,
                          double lam);

struct PpoLossSettings {
  double cliprange = 0.2;
  double cliprange_value = 0.2;
  double vf_coef = 0.1;
};

struct PpoLossOutput {
  at::Tensor loss;         // scalar: policy loss + vf_coef * value loss; carries the graph
  at::Tensor policy_loss;  // scalar
  at::Tensor value_loss;   // scalar
  Metrics metrics;         // loss/policy_avg, loss/value_avg, policy/approxkl_avg, policy/clipfrac_avg, val/clipfrac_avg
};

// The clipped PPO objective on one micro-batch. `new_logprobs` and
// `new_values` (B, T) come from the models being trained; `old_logprobs`,
// `old_values`, `advantages` and `returns` (B, T) from the rollout; `mask`
// (B, T) marks completion tokens. approxkl is 0.5 * masked_mean((logp - logp_old)^2).
PpoLossOutput ppo_loss(const at::Tensor& new_logprobs, const at::Tensor& old_logprobs, const at::Tensor& advantages,
                       const at::Tensor& new_values, const at::Tensor& old_values, const at::Tensor& returns,
                       const at::Tensor& mask, const PpoLossSettings& settings);

}  // namespace alignkit::ppo
