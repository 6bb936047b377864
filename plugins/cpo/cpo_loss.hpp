// CPO and SimPO losses as pure functions over per-pair log-probs, following
// TRL's CPOTrainer (trl/experimental/cpo/cpo_trainer.py, `cpo_loss` and
// `get_batch_loss_metrics`). No reference model: the logits are c - r.
//   sigmoid: -logsigmoid(beta * (c - r)) (1 - ls) - logsigmoid(-beta * (c - r)) ls
//   hinge:   relu(1 - beta * (c - r))
//   ipo:     ((c - r) - 1 / (2 beta))^2
//   simpo:   the sigmoid form on (c - r) - simpo_gamma / beta
//   loss = mean(losses) + cpo_alpha * chosen_nll
// c and r are SUMMED completion log-probs for sigmoid and hinge, AVERAGED per
// completion token for ipo and simpo (TRL's average_log_prob); rewards are
// beta * c and beta * r.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "pair_losses.hpp"

namespace alignkit::cpo {

enum class CpoLossType { Sigmoid, Hinge, Ipo, Simpo };

// TRL's names: "sigmoid", "hinge", "ipo", "simpo".
std::vector<std::string> cpo_loss_type_names();
// Throws std::invalid_argument naming `name` and listing the known ones.
CpoLossType parse_cpo_loss_type(const std::string& name);
// True for ipo and simpo (length-averaged log-probs).
bool averages_logps(CpoLossType type);
// True where label_smoothing enters the loss (sigmoid, simpo).
bool uses_label_smoothing(CpoLossType type);

struct CpoSettings {
  CpoLossType loss_type = CpoLossType::Sigmoid;
  double beta = 0.1;             // > 0
  double label_smoothing = 0.0;  // in [0, 0.5]
  double simpo_gamma = 0.5;      // target reward margin of simpo
  double cpo_alpha = 1.0;        // weight of the chosen NLL; 0 for pure SimPO
};

// Throws std::invalid_argument naming the bad setting.
void validate(const CpoSettings& settings);

// chosen_logps / rejected_logps: (B,) with grad, summed or averaged as
// averages_logps(loss_type) says; chosen_nll: () mean token NLL of the chosen
// rows. Metrics: the DPO set, then nll_loss (the NLL itself, also when
// cpo_alpha is 0). Throws std::invalid_argument for bad inputs or settings.
pairs::PairLossOutput cpo_loss(const at::Tensor& chosen_logps, const at::Tensor& rejected_logps,
                               const at::Tensor& chosen_nll, const CpoSettings& settings);

}  // namespace alignkit::cpo
