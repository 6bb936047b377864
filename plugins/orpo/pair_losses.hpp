// Reference-free preference losses as pure functions over per-pair log-probs
// (no models, no data): what ORPO and CPO/SimPO share (the DPO-style reward
// metrics) and ORPO's odds-ratio loss, following TRL's ORPOTrainer
// (trl/experimental/orpo/orpo_trainer.py, `odds_ratio_loss` and
// `get_batch_loss_metrics`).
#pragma once

#include <ATen/core/Tensor.h>

#include "alignkit/training.hpp"

namespace alignkit::pairs {

struct PairLossOutput {
  at::Tensor loss;              // () carries the graph
  at::Tensor chosen_rewards;    // (B,) beta * chosen log-probs, detached
  at::Tensor rejected_rewards;  // (B,) beta * rejected log-probs, detached
  // rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
  // logps/chosen, logps/rejected, nll_loss, then the loss's own metrics.
  Metrics metrics;
};

// The DPO metric set of a reference-free loss, batch means as TRL logs them:
// rewards are beta * log-probs (the implicit reward with no reference).
Metrics reward_metrics(const at::Tensor& chosen_rewards, const at::Tensor& rejected_rewards,
                       const at::Tensor& chosen_logps, const at::Tensor& rejected_logps);

// log(1 - exp(x)) for x < 0, stable at both ends: log(-expm1(x)) near 0,
// log1p(-exp(x)) far below (Mächler's switch at -ln 2). x is clamped to at
// most -1e-6 first: a sequence whose average log-prob rounds to 0 in float32
// would otherwise give -inf and NaN gradients (TRL's log1p(-exp(x)) does).
at::Tensor log1mexp(const at::Tensor& x);

// ORPO (Hong et al. 2024) as TRL computes it:
//   log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
//   loss     = chosen_nll - beta * mean(logsigmoid(log_odds))
// `chosen_mean_logps` / `rejected_mean_logps`: (B,) log-probs AVERAGED over
// each completion's tokens, with grad. `chosen_nll`: () the mean token NLL of
// the chosen rows (TRL: prompt and completion). Extra metrics: log_odds_ratio
// (mean logsigmoid(log_odds), TRL's name) and log_odds_chosen (mean log_odds).
// Throws std::invalid_argument naming a missing or misshapen tensor, or beta <= 0.
PairLossOutput orpo_loss(const at::Tensor& chosen_mean_logps, const at::Tensor& rejected_mean_logps,
                         const at::Tensor& chosen_nll, double beta);

// Checks that `chosen` and `rejected` are defined, floating, (B,) of one size,
// and `chosen_nll` a defined scalar; `where` prefixes the message.
void check_pair_inputs(const char* where, const at::Tensor& chosen, const at::Tensor& rejected,
                       const at::Tensor& chosen_nll);

}  // namespace alignkit::pairs
