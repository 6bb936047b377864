// The DPO loss family and SFT helpers as pure functions over log-prob tensors
// (no models, no data), following TRL's formulas (trl/trainer/dpo_trainer.py,
// `_compute_loss`, v1 HEAD) with torchtune-style inputs: per-sequence
// log-probs of policy and reference, (B,) each.
//
// Contract for inputs:
//   * `*_chosen` / `*_rejected` hold, for each pair, the log-probs of the
//     completion tokens SUMMED (TRL: per_token_logps.sum(1) over the
//     completion mask).
//   * `*_chosen_mean` / `*_rejected_mean` hold the same log-probs AVERAGED per
//     completion token (the sum divided by the completion length, at least 1).
//     Only `ipo` reads them (TRL normalises IPO's scores per token); leave them
//     undefined otherwise. sequence_logps() returns both forms.
//   * `chosen_nll` is the mean token NLL of the chosen completions over the
//     whole batch (masked_mean_nll()); only the `sft` term reads it.
//   * Reference tensors are detached here: no gradient flows into them.
//   * Reference-free mode: every reference tensor must be left undefined and is
//     taken as zero. Allowed only for losses that compare chosen with rejected
//     (sigmoid, hinge, ipo, robust) and for sft; the others anchor each
//     response to the reference and are refused.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "alignkit/training.hpp"

namespace alignkit::dpo {

enum class LossType { Sigmoid, Hinge, Ipo, Robust, BcoPair, SppoHard, NcaPair, ApoZero, ApoDown, Sft };

// TRL's names: "sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard",
// "nca_pair", "apo_zero", "apo_down", "sft".
const char* loss_type_name(LossType type);
std::vector<std::string> loss_type_names();
// Throws std::invalid_argument naming `name` and listing the known ones.
LossType parse_loss_type(const std::string& name);
// True for losses that can run without a reference model (see above).
bool allows_reference_free(LossType type);

struct LossTerm {
  LossType type = LossType::Sigmoid;
  double weight = 1.0;
};

// TRL's `loss_type` list with `loss_weights` (empty: 1.0 each). Throws
// std::invalid_argument for an unknown name or a length mismatch.
std::vector<LossTerm> make_loss_terms(const std::vector<std::string>& names, const std::vector<double>& weights);

struct LossSettings {
  double beta = 0.1;             // > 0
  double label_smoothing = 0.0;  // robust only (HEAD's sigmoid ignores it); in [0, 0.5)
  std::vector<LossTerm> terms = {{LossType::Sigmoid, 1.0}};
  bool reference_free = false;
};

// Throws std::invalid_argument naming the bad setting.
void validate(const LossSettings& settings);

struct PreferenceLogps {
  at::Tensor policy_chosen;            // (B,) summed, with grad
  at::Tensor policy_rejected;          // (B,)
  at::Tensor reference_chosen;         // (B,) summed; undefined when reference-free
  at::Tensor reference_rejected;       // (B,)
  at::Tensor policy_chosen_mean;       // (B,) per-token average; ipo only
  at::Tensor policy_rejected_mean;     // (B,)
  at::Tensor reference_chosen_mean;    // (B,); undefined when reference-free
  at::Tensor reference_rejected_mean;  // (B,)
  at::Tensor chosen_nll;               // () mean token NLL of chosen; sft only
};

struct LossOutput {
  at::Tensor loss;              // () sum over terms of weight * mean per-pair loss; carries the graph
  at::Tensor chosen_rewards;    // (B,) beta * (policy_chosen - reference_chosen), detached
  at::Tensor rejected_rewards;  // (B,) beta * (policy_rejected - reference_rejected), detached
  // rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
  // logps/chosen, logps/rejected (batch means, as TRL logs them), and
  // nll_loss when an sft term is present.
  Metrics metrics;
};

// Throws std::invalid_argument naming a missing, misshapen or non-floating
// tensor, or a bad setting.
LossOutput preference_loss(const PreferenceLogps& logps, const LossSettings& settings);

// ---- token-level helpers (inputs aligned: logits[b, t] predicts labels[b, t]) ----

// log softmax(logits)[b, t, labels[b, t]]: (B, T, V), (B, T) int64 -> (B, T).
// Labels where `loss_mask` is 0 may be any id (e.g. -100): they are not read.
at::Tensor token_logps(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& loss_mask);

struct SequenceLogps {
  at::Tensor sum;   // (B,) sum over masked tokens
  at::Tensor mean;  // (B,) sum / max(1, number of masked tokens)
};
// (B, T) token log-probs and (B, T) 0/1 mask -> per-sequence sums and means.
SequenceLogps sequence_logps(const at::Tensor& token_logps, const at::Tensor& loss_mask);

// -sum(token_logps * mask) / sum(mask): the mean token NLL over the batch's
// masked tokens, as F.cross_entropy(logits[mask], labels[mask]). An empty mask
// gives 0 (where PyTorch would give NaN).
at::Tensor masked_mean_nll(const at::Tensor& token_logps, const at::Tensor& loss_mask);

// SFT loss: masked_mean_nll(token_logps(logits, labels, mask), mask).
at::Tensor sft_loss(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& loss_mask);

// Fraction of masked tokens whose argmax logit is the label (0 for an empty mask).
double mean_token_accuracy(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& loss_mask);

}  // namespace alignkit::dpo
