// PPO's rewards, advantages and clipped losses (see ppo_math.hpp).
#include "ppo_math.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace alignkit::ppo {
namespace {

std::string shape_text(at::IntArrayRef sizes) {
  std::string s = "(";
  for (size_t d = 0; d < sizes.size(); ++d) s += (d ? ", " : "") + std::to_string(sizes[d]);
  return s + ")";
}

std::string shape_text(const at::Tensor& t) { return t.defined() ? shape_text(t.sizes()) : "undefined"; }

void require_shape(const char* function, const char* name, const at::Tensor& t, at::IntArrayRef sizes) {
  if (!t.defined() || t.sizes() != sizes)
    throw std::invalid_argument(std::string(function) + ": " + name + " is " + shape_text(t) + ", expected " +
                                shape_text(sizes));
}

void require_rows(const char* function, const at::Tensor& mask) {
  if (!mask.defined() || mask.dim() != 2 || mask.size(0) == 0 || mask.size(1) == 0)
    throw std::invalid_argument(std::string(function) + ": mask is " + shape_text(mask) + ", expected (B, T) with B, T > 0");
}

double scalar(const at::Tensor& t) { return t.detach().to(at::kDouble).item<double>(); }

}  // namespace

TokenRewards per_token_rewards(const at::Tensor& logprobs, const at::Tensor& ref_logprobs, const at::Tensor& mask,
                               const at::Tensor& scores, const at::Tensor& contains_eos, double kl_coef,
                               online::KlEstimator estimator, double missing_eos_penalty) {
  require_rows("per_token_rewards", mask);
  const int64_t rows = mask.size(0);
  require_shape("per_token_rewards", "logprobs", logprobs, mask.sizes());
  require_shape("per_token_rewards", "ref_logprobs", ref_logprobs, mask.sizes());
  require_shape("per_token_rewards", "scores", scores, {rows});
  require_shape("per_token_rewards", "contains_eos", contains_eos, {rows});
  const at::Tensor valid = mask.to(at::kBool);                                      // (B, T)
  const at::Tensor lengths = valid.sum(1);                                          // (B)
  if (lengths.eq(0).any().item<bool>())
    throw std::invalid_argument("per_token_rewards: every row needs at least one completion token");

  TokenRewards out;
  // Outside the mask both log-probs count as equal, so the KL there is 0 (TRL fills them with one value).
  out.kl = online::kl_penalty(logprobs, ref_logprobs, estimator).masked_fill(valid.logical_not(), 0.0);  // (B, T)
  out.non_score_reward = -kl_coef * out.kl;                                                              // (B, T)
  out.scores = scores.to(out.kl.scalar_type());
  if (missing_eos_penalty != 0.0)
    out.scores = out.scores - missing_eos_penalty * contains_eos.to(at::kBool).logical_not().to(out.scores.scalar_type());
  const at::Tensor last = (lengths - 1).unsqueeze(1);                                          // (B, 1)
  out.rewards = out.non_score_reward.scatter_add(1, last, out.scores.unsqueeze(1));            // (B, T)
  return out;
}

Advantages gae_advantages(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma,
                          double lam) {
  require_rows("gae_advantages", mask);
  require_shape("gae_advantages", "rewards", rewards, mask.sizes());
  require_shape("gae_advantages", "values", values, mask.sizes());
  const at::Tensor valid = mask.to(at::kBool);
  const at::Tensor kept_rewards = rewards.masked_fill(valid.logical_not(), 0.0);  // (B, T)
  const at::Tensor kept_values = values.masked_fill(valid.logical_not(), 0.0);    // (B, T)
  const int64_t length = mask.size(1);
  std::vector<at::Tensor> reversed;
  at::Tensor last_gae = at::zeros({mask.size(0)}, kept_values.options());  // (B)
  for (int64_t t = length - 1; t >= 0; --t) {
    const at::Tensor next_values = t + 1 < length ? kept_values.select(1, t + 1) : at::zeros_like(last_gae);
    const at::Tensor delta = kept_rewards.select(1, t) + gamma * next_values - kept_values.select(1, t);
    last_gae = delta + gamma * lam * last_gae;
    reversed.push_back(last_gae);
  }
  std::reverse(reversed.begin(), reversed.end());
  const at::Tensor raw = at::stack(reversed, 1);  // (B, T)
  Advantages out;
  out.returns = (raw + kept_values).masked_fill(valid.logical_not(), 0.0);
  out.advantages = online::masked_whiten(raw, valid).masked_fill(valid.logical_not(), 0.0);
  return out;
}

PpoLossOutput ppo_loss(const at::Tensor& new_logprobs, const at::Tensor& old_logprobs, const at::Tensor& advantages,
                       const at::Tensor& new_values, const at::Tensor& old_values, const at::Tensor& returns,
                       const at::Tensor& mask, const PpoLossSettings& settings) {
  require_rows("ppo_loss", mask);
  const std::pair<const char*, const at::Tensor*> inputs[] = {
      {"new_logprobs", &new_logprobs}, {"old_logprobs", &old_logprobs}, {"advantages", &advantages},
      {"new_values", &new_values},     {"old_values", &old_values},     {"returns", &returns}};
  for (const auto& [name, tensor] : inputs) require_shape("ppo_loss", name, *tensor, mask.sizes());
  const at::Tensor valid = mask.to(at::kBool);
  const at::Tensor invalid = valid.logical_not();

  // Policy: the ratio is 1 outside the mask, where the log-probs are made equal.
  const at::Tensor log_ratio = (new_logprobs - old_logprobs).masked_fill(invalid, 0.0);  // (B, T)
  const at::Tensor ratio = log_ratio.exp();                                              // (B, T)
  const at::Tensor pg_losses = -advantages * ratio;
  const at::Tensor pg_losses_clipped = -advantages * ratio.clamp(1.0 - settings.cliprange, 1.0 + settings.cliprange);
  const at::Tensor policy_loss = online::masked_mean(at::maximum(pg_losses, pg_losses_clipped), valid);
  const at::Tensor policy_clipfrac = online::masked_mean(pg_losses_clipped.gt(pg_losses).to(log_ratio.scalar_type()), valid);
  const at::Tensor approxkl = 0.5 * online::masked_mean(log_ratio.detach().pow(2), valid);

  // Value: predictions may move at most cliprange_value from the rollout's values.
  const at::Tensor values = new_values.masked_fill(invalid, 0.0);  // (B, T)
  // clamp, as TRL: at a bound the gradient still reaches the prediction (a min/max pair would halve it on ties).
  const at::Tensor values_clipped =
      at::clamp(values, old_values - settings.cliprange_value, old_values + settings.cliprange_value);
  const at::Tensor vf_losses = (values - returns).pow(2);
  const at::Tensor vf_losses_clipped = (values_clipped - returns).pow(2);
  const at::Tensor value_loss = 0.5 * online::masked_mean(at::maximum(vf_losses, vf_losses_clipped), valid);
  const at::Tensor value_clipfrac = online::masked_mean(vf_losses_clipped.gt(vf_losses).to(values.scalar_type()), valid);

  PpoLossOutput out;
  out.policy_loss = policy_loss;
  out.value_loss = value_loss;
  out.loss = policy_loss + settings.vf_coef * value_loss;
  out.metrics = {
      {"loss/policy_avg", scalar(policy_loss)},
      {"loss/value_avg", scalar(value_loss)},
      {"policy/approxkl_avg", scalar(approxkl)},
      {"policy/clipfrac_avg", scalar(policy_clipfrac)},
      {"val/clipfrac_avg", scalar(value_clipfrac)},
  };
  return out;
}

}  // namespace alignkit::ppo
