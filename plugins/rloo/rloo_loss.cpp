// RLOO advantages and loss (see rloo_loss.hpp).
#include "rloo_loss.hpp"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace alignkit::rloo {

RlooAdvantages rloo_advantages(const at::Tensor& scores, const at::Tensor& sequence_kl, double beta,
                               int64_t num_generations, bool normalize) {
  if (num_generations < 2)
    throw std::invalid_argument("rloo_advantages: a leave-one-out baseline needs at least 2 completions per prompt, "
                                "found " + std::to_string(num_generations));
  if (scores.dim() != 1 || scores.size(0) % num_generations != 0)
    throw std::invalid_argument("rloo_advantages: " + std::to_string(scores.numel()) +
                                " rewards do not split into groups of " + std::to_string(num_generations));
  at::Tensor rewards = scores.to(at::kFloat);  // (N)
  if (beta != 0.0) rewards = rewards - beta * sequence_kl.to(at::kFloat);
  at::Tensor grouped = rewards.view({-1, num_generations});  // (groups, G)
  at::Tensor baselines = ((grouped.sum(1, /*keepdim=*/true) - grouped) / static_cast<double>(num_generations - 1))
                             .reshape({-1});  // (N)
  at::Tensor advantages = rewards - baselines;  // (N)
  if (normalize) advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-4);
  at::Tensor spread = grouped.std(1);  // (groups)
  RlooAdvantages out;
  out.rewards = rewards;
  out.advantages = advantages;
  out.metrics = {
      {"reward", grouped.mean(1).mean().item<double>()},
      {"reward_std", spread.mean().item<double>()},
      {"frac_reward_zero_std", at::isclose(spread, at::zeros_like(spread)).to(at::kFloat).mean().item<double>()},
  };
  return out;
}

SequenceLossOutput rloo_loss(const at::Tensor& logps, const at::Tensor& old_logps, const at::Tensor& advantages,
                             const at::Tensor& mask, double epsilon_low, double epsilon_high) {
  at::Tensor weights = mask.to(logps.scalar_type());                          // (N, C)
  at::Tensor ratio = at::exp(((logps - old_logps) * weights).sum(1));        // (N)
  at::Tensor clipped = ratio.clamp(1 - epsilon_low, 1 + epsilon_high);       // (N)
  at::Tensor a = advantages.to(logps.scalar_type());                         // (N)
  SequenceLossOutput out;
  out.loss = (-at::min(ratio * a, clipped * a)).mean();
  at::NoGradGuard no_grad;
  at::Tensor r = ratio.detach();
  at::Tensor low = (r < 1 - epsilon_low).logical_and(a < 0);
  at::Tensor high = (r > 1 + epsilon_high).logical_and(a > 0);
  out.metrics = {
      {"clip_ratio/low_mean", low.to(at::kDouble).mean().item<double>()},
      {"clip_ratio/high_mean", high.to(at::kDouble).mean().item<double>()},
      {"clip_ratio/region_mean", low.logical_or(high).to(at::kDouble).mean().item<double>()},
  };
  return out;
}

}  // namespace alignkit::rloo
