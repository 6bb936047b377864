// The KTO loss (TRL's KTOTrainer, `kto_loss`, loss_type "kto") as pure
// functions over per-sequence log-prob tensors: no models, no data.
//
// Contract for inputs (N rows of unpaired data, each desirable or not):
//   * `policy` / `reference` hold each row's completion log-probs SUMMED over
//     its completion tokens (TRL: per_token_logps.sum(-1)).
//   * `policy_kl` / `reference_kl` hold the same sums for the mismatched rows
//     of the batch (prompt i with the completion of row i-1), the material of
//     the KL estimate. They carry no gradient (the estimate is detached).
//   * Reference tensors are detached here: no gradient flows into them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "alignkit/training.hpp"

namespace alignkit::kto {

struct KtoSettings {
  double beta = 0.1;                // > 0
  double desirable_weight = 1.0;    // >= 0
  double undesirable_weight = 1.0;  // >= 0
};

// Throws std::invalid_argument naming the bad setting.
void validate(const KtoSettings& settings);

struct KtoLogps {
  at::Tensor policy;        // (N,) summed, with grad
  at::Tensor reference;     // (N,) summed
  at::Tensor desirable;     // (N,) bool: the row's label
  at::Tensor policy_kl;     // (N,) mismatched rows under the policy
  at::Tensor reference_kl;  // (N,) mismatched rows under the reference
};

// TRL's KL estimate: mean(policy_kl - reference_kl), detached, clamped at 0. () tensor.
at::Tensor kl_estimate(const at::Tensor& policy_kl, const at::Tensor& reference_kl);

struct KtoLossOutput {
  at::Tensor loss;     // () mean over the N rows of the weighted per-row losses; carries the graph
  at::Tensor kl;       // () the estimate used
  at::Tensor rewards;  // (N,) beta * (policy - reference), detached
  // kl always; rewards/chosen and logps/chosen when the batch has a desirable
  // row, rewards/rejected and logps/rejected when it has an undesirable one,
  // rewards/margins when it has both (batch means over each class).
  Metrics metrics;
};

// Desirable rows: desirable_weight * (1 - sigmoid(beta * (logratio - kl)));
// undesirable rows: undesirable_weight * (1 - sigmoid(beta * (kl - logratio))),
// with logratio = policy - reference. Throws std::invalid_argument naming a
// missing, misshapen or non-floating tensor, or a bad setting.
KtoLossOutput kto_loss(const KtoLogps& logps, const KtoSettings& settings);

// TRL's check of the class weights against the data: the weighted ratio
// desirable_weight * num_desirable / (undesirable_weight * num_undesirable)
// should lie in [1, 4/3]. Returns a warning with the recommended ranges of
// either weight, or "" when the ratio is inside (or a class is empty).
std::string class_weight_warning(int64_t num_desirable, int64_t num_undesirable, const KtoSettings& settings);

}  // namespace alignkit::kto
