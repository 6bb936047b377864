// ORPO's odds-ratio loss and the metrics every reference-free pair loss logs.
#include "pair_losses.hpp"

#include <ATen/TensorOperators.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/expm1.h>
#include <ATen/ops/log.h>
#include <ATen/ops/log1p.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/where.h>

#include <cmath>
#include <stdexcept>
#include <string>

namespace alignkit::pairs {

namespace {

double mean_of(const at::Tensor& t) { return t.detach().to(at::kDouble).mean().item<double>(); }

}  // namespace

void check_pair_inputs(const char* where, const at::Tensor& chosen, const at::Tensor& rejected,
                       const at::Tensor& chosen_nll) {
  auto check = [&](const at::Tensor& t, const char* name) {
    if (!t.defined()) throw std::invalid_argument(std::string(where) + ": " + name + " is missing");
    if (!t.is_floating_point())
      throw std::invalid_argument(std::string(where) + ": " + name + " must be a floating-point tensor");
  };
  check(chosen, "chosen log-probs");
  check(rejected, "rejected log-probs");
  check(chosen_nll, "chosen_nll");
  if (chosen.dim() != 1 || rejected.dim() != 1 || chosen.size(0) != rejected.size(0) || chosen.size(0) == 0)
    throw std::invalid_argument(std::string(where) + ": chosen and rejected log-probs must be (B,) of one size B > 0");
  if (chosen_nll.dim() != 0) throw std::invalid_argument(std::string(where) + ": chosen_nll must be a scalar");
}

Metrics reward_metrics(const at::Tensor& chosen_rewards, const at::Tensor& rejected_rewards,
                       const at::Tensor& chosen_logps, const at::Tensor& rejected_logps) {
  return {{"rewards/chosen", mean_of(chosen_rewards)},
          {"rewards/rejected", mean_of(rejected_rewards)},
          {"rewards/accuracies", mean_of(chosen_rewards.gt(rejected_rewards))},
          {"rewards/margins", mean_of(chosen_rewards - rejected_rewards)},
          {"logps/chosen", mean_of(chosen_logps)},
          {"logps/rejected", mean_of(rejected_logps)}};
}

at::Tensor log1mexp(const at::Tensor& x) {
  at::Tensor negative = x.clamp_max(-1e-6);
  // Both branches are evaluated; each is finite on the whole clamped range.
  return at::where(negative > -std::log(2.0), at::log(-at::expm1(negative)), at::log1p(-at::exp(negative)));
}

PairLossOutput orpo_loss(const at::Tensor& chosen_mean_logps, const at::Tensor& rejected_mean_logps,
                         const at::Tensor& chosen_nll, double beta) {
  check_pair_inputs("orpo_loss", chosen_mean_logps, rejected_mean_logps, chosen_nll);
  if (!(beta > 0)) throw std::invalid_argument("orpo_loss: beta must be greater than 0");
  at::Tensor log_odds = (chosen_mean_logps - rejected_mean_logps) -
                        (log1mexp(chosen_mean_logps) - log1mexp(rejected_mean_logps));  // (B,)
  at::Tensor ratio = at::log_sigmoid(log_odds);                                         // (B,)
  PairLossOutput out;
  out.loss = chosen_nll - beta * ratio.mean();
  out.chosen_rewards = beta * chosen_mean_logps.detach();
  out.rejected_rewards = beta * rejected_mean_logps.detach();
  out.metrics = reward_metrics(out.chosen_rewards, out.rejected_rewards, chosen_mean_logps, rejected_mean_logps);
  out.metrics.push_back({"nll_loss", chosen_nll.detach().item<double>()});
  out.metrics.push_back({"log_odds_ratio", mean_of(ratio)});
  out.metrics.push_back({"log_odds_chosen", mean_of(log_odds)});
  return out;
}

}  // namespace alignkit::pairs
