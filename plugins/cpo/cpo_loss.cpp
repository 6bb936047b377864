// CPO/SimPO losses (TRL's CPOTrainer.cpo_loss) over per-pair log-probs.
#include "cpo_loss.hpp"

#include <ATen/TensorOperators.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/relu.h>

#include <stdexcept>

namespace alignkit::cpo {

namespace {

struct Named {
  const char* name;
  CpoLossType type;
};
constexpr Named kLossTypes[] = {{"sigmoid", CpoLossType::Sigmoid},
                                {"hinge", CpoLossType::Hinge},
                                {"ipo", CpoLossType::Ipo},
                                {"simpo", CpoLossType::Simpo}};

}  // namespace

std::vector<std::string> cpo_loss_type_names() {
  std::vector<std::string> names;
  for (const Named& entry : kLossTypes) names.emplace_back(entry.name);
  return names;
}

CpoLossType parse_cpo_loss_type(const std::string& name) {
  std::string known;
  for (const Named& entry : kLossTypes) {
    if (name == entry.name) return entry.type;
    known += std::string(known.empty() ? "" : ", ") + entry.name;
  }
  throw std::invalid_argument("unknown loss_type \"" + name + "\" (known: " + known + ")");
}

bool averages_logps(CpoLossType type) { return type == CpoLossType::Ipo || type == CpoLossType::Simpo; }

bool uses_label_smoothing(CpoLossType type) { return type == CpoLossType::Sigmoid || type == CpoLossType::Simpo; }

void validate(const CpoSettings& settings) {
  if (!(settings.beta > 0)) throw std::invalid_argument("beta must be greater than 0 (ipo and simpo divide by it)");
  if (!(settings.label_smoothing >= 0 && settings.label_smoothing <= 0.5))
    throw std::invalid_argument("label_smoothing must lie in [0, 0.5]");
  if (!(settings.cpo_alpha >= 0)) throw std::invalid_argument("cpo_alpha must be at least 0");
}

pairs::PairLossOutput cpo_loss(const at::Tensor& chosen_logps, const at::Tensor& rejected_logps,
                               const at::Tensor& chosen_nll, const CpoSettings& settings) {
  pairs::check_pair_inputs("cpo_loss", chosen_logps, rejected_logps, chosen_nll);
  validate(settings);
  const double beta = settings.beta;
  const double smoothing = settings.label_smoothing;
  at::Tensor logits = chosen_logps - rejected_logps;  // (B,)
  at::Tensor losses;                                  // (B,)
  switch (settings.loss_type) {
    case CpoLossType::Simpo:
      logits = logits - settings.simpo_gamma / beta;
      [[fallthrough]];
    case CpoLossType::Sigmoid:
      losses = -at::log_sigmoid(beta * logits) * (1 - smoothing) - at::log_sigmoid(-beta * logits) * smoothing;
      break;
    case CpoLossType::Hinge:
      losses = at::relu(1 - beta * logits);
      break;
    case CpoLossType::Ipo:
      losses = at::pow(logits - 1 / (2 * beta), 2);
      break;
  }
  pairs::PairLossOutput out;
  out.loss = losses.mean() + settings.cpo_alpha * chosen_nll;
  out.chosen_rewards = beta * chosen_logps.detach();
  out.rejected_rewards = beta * rejected_logps.detach();
  out.metrics = pairs::reward_metrics(out.chosen_rewards, out.rejected_rewards, chosen_logps, rejected_logps);
  out.metrics.push_back({"nll_loss", chosen_nll.detach().item<double>()});
  return out;
}

}  // namespace alignkit::cpo
