// TRL's reward-model loss and metrics (see reward_loss.hpp).
#include "reward_loss.hpp"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/log_sigmoid.h>

#include <stdexcept>
#include <string>

namespace alignkit::reward {
namespace {

std::string shape_text(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "(";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + ")";
}

}  // namespace

RewardLossOutput reward_loss(const at::Tensor& chosen, const at::Tensor& rejected, const at::Tensor& margin,
                             double center_rewards_coefficient) {
  if (!chosen.defined() || chosen.dim() != 1 || chosen.size(0) == 0 || !rejected.defined() ||
      rejected.sizes() != chosen.sizes())
    throw std::invalid_argument("reward_loss: chosen " + shape_text(chosen) + " and rejected " +
                                shape_text(rejected) + " must both be (B,) with B > 0");
  if (margin.defined() && margin.sizes() != chosen.sizes())
    throw std::invalid_argument("reward_loss: margin " + shape_text(margin) + " does not match the rewards " +
                                shape_text(chosen));

  const at::Tensor difference = chosen - rejected;  // (B)
  const at::Tensor logits = margin.defined() ? difference - margin.to(difference.scalar_type()) : difference;
  RewardLossOutput out;
  out.loss = -at::log_sigmoid(logits).mean();
  if (center_rewards_coefficient > 0) out.loss = out.loss + center_rewards_coefficient * (chosen + rejected).pow(2).mean();

  const at::Tensor all = at::cat({chosen, rejected}).detach().to(at::kDouble);  // (2B)
  const at::Tensor gap = difference.detach().to(at::kDouble);                   // (B)
  out.metrics = {
      {"accuracy", gap.gt(0).to(at::kDouble).mean().item<double>()},
      {"margin", gap.mean().item<double>()},
      {"min_reward", all.min().item<double>()},
      {"mean_reward", all.mean().item<double>()},
      {"max_reward", all.max().item<double>()},
  };
  return out;
}

}  // namespace alignkit::reward
