// GRPO advantages and loss (see grpo_loss.hpp).
#include "grpo_loss.hpp"

#include <ATen/ATen.h>

#include <stdexcept>

#include "rl_math.hpp"

namespace alignkit::grpo {

ScaleRewards parse_scale_rewards(const std::string& name) {
  if (name == "group") return ScaleRewards::Group;
  if (name == "batch") return ScaleRewards::Batch;
  if (name == "none") return ScaleRewards::None;
  throw std::invalid_argument("scale_rewards: expected \"group\", \"batch\" or \"none\", found \"" + name + "\"");
}

LossType parse_loss_type(const std::string& name) {
  if (name == "grpo") return LossType::Grpo;
  if (name == "bnpo") return LossType::Bnpo;
  if (name == "dr_grpo") return LossType::DrGrpo;
  if (name == "dapo") return LossType::Dapo;
  throw std::invalid_argument("loss_type: expected grpo, bnpo, dr_grpo or dapo, found \"" + name + "\"");
}

Advantages group_advantages(const at::Tensor& rewards, int64_t num_generations, ScaleRewards scale) {
  if (num_generations < 2)
    throw std::invalid_argument("group_advantages: a group needs at least 2 completions, found " +
                                std::to_string(num_generations));
  if (rewards.dim() != 1 || rewards.size(0) % num_generations != 0)
    throw std::invalid_argument("group_advantages: " + std::to_string(rewards.numel()) +
                                " rewards do not split into groups of " + std::to_string(num_generations));
  at::Tensor values = rewards.to(at::kFloat);
  at::Tensor grouped = values.view({-1, num_generations});                                 // (G_count, G)
  at::Tensor group_mean = grouped.mean(1).repeat_interleave(num_generations);              // (N)
  at::Tensor spread = scale == ScaleRewards::Batch ? values.std().expand_as(values)           // (N)
                                                : grouped.std(1).repeat_interleave(num_generations);
  at::Tensor advantages = values - group_mean;  // (N)
  if (scale != ScaleRewards::None) advantages = advantages / (spread + 1e-4);
  at::Tensor zero_std = at::isclose(spread, at::zeros_like(spread));  // (N)
  Advantages out;
  out.advantages = advantages;
  out.metrics = {
      {"reward", group_mean.mean().item<double>()},
      {"reward_std", spread.mean().item<double>()},
      {"frac_reward_zero_std", zero_std.to(at::kFloat).mean().item<double>()},
  };
  return out;
}

PolicyLossOutput policy_loss(const PolicyLossInput& in, const PolicyLossSettings& settings) {
  at::Tensor mask = in.mask.to(in.logps.scalar_type());       // (N, C)
  at::Tensor advantages = in.advantages.to(in.logps.scalar_type()).unsqueeze(1);  // (N, 1)
  at::Tensor ratio = at::exp(in.logps - in.old_logps);        // (N, C)
  at::Tensor clipped = ratio.clamp(1 - settings.epsilon_low, 1 + settings.epsilon_high);  // (N, C)
  at::Tensor per_token = -at::min(ratio * advantages, clipped * advantages);             // (N, C)
  at::Tensor kl;
  if (settings.beta != 0.0) {
    if (!in.ref_logps.defined()) throw std::invalid_argument("policy_loss: beta > 0 needs the reference's log-probs");
    kl = online::kl_penalty(in.logps, in.ref_logps, online::KlEstimator::K3);  // (N, C)
    per_token = per_token + settings.beta * kl;
  }

  const double rows = static_cast<double>(in.logps.size(0));
  at::Tensor masked_sum = (per_token * mask).sum();
  at::Tensor loss;
  switch (settings.loss_type) {
    case LossType::Grpo: loss = ((per_token * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean(); break;
    case LossType::Bnpo: loss = masked_sum / mask.sum().clamp_min(1.0); break;
    case LossType::DrGrpo:
      if (settings.max_completion_length <= 0)
        throw std::invalid_argument("policy_loss: dr_grpo needs max_completion_length > 0");
      loss = masked_sum / (rows * static_cast<double>(settings.max_completion_length));
      break;
    case LossType::Dapo:
      loss = settings.dapo_tokens > 0 ? masked_sum / settings.dapo_tokens : masked_sum / mask.sum().clamp_min(1.0);
      break;
  }

  PolicyLossOutput out;
  out.loss = loss;
  at::NoGradGuard no_grad;
  at::Tensor r = ratio.detach();
  at::Tensor low = (r < 1 - settings.epsilon_low).logical_and(advantages < 0);   // (N, C)
  at::Tensor high = (r > 1 + settings.epsilon_high).logical_and(advantages > 0);  // (N, C)
  auto token_mean = [&](const at::Tensor& x) {
    return online::masked_mean(x.to(at::kFloat), in.mask).item<double>();
  };
  if (kl.defined()) out.metrics.push_back({"kl", token_mean(kl.detach())});
  const double low_mean = token_mean(low);
  const double high_mean = token_mean(high);
  out.metrics.push_back({"clip_ratio/low_mean", low_mean});
  out.metrics.push_back({"clip_ratio/low_min", low_mean});
  out.metrics.push_back({"clip_ratio/high_mean", high_mean});
  out.metrics.push_back({"clip_ratio/high_max", high_mean});
  out.metrics.push_back({"clip_ratio/region_mean", token_mean(low.logical_or(high))});
  return out;
}

}  // namespace alignkit::grpo
