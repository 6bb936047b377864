// The KTO loss as pure functions (see kto_losses.hpp), following TRL's
// KTOTrainer (`kto_loss` with loss_type "kto").
#include "kto_losses.hpp"

#include <ATen/TensorOperators.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/where.h>

#include <cmath>
#include <iomanip>
#include <sstream>
#include <stdexcept>

namespace alignkit::kto {
namespace {

void require_vector(const at::Tensor& tensor, const char* name, int64_t rows, bool floating) {
  if (!tensor.defined()) throw std::invalid_argument(std::string("kto_loss: ") + name + " is missing");
  if (tensor.dim() != 1 || (rows >= 0 && tensor.size(0) != rows))
    throw std::invalid_argument(std::string("kto_loss: ") + name + " must be (N,) with N = " + std::to_string(rows) +
                                ", found " + std::to_string(tensor.dim()) + " dimension(s) of " +
                                (tensor.dim() > 0 ? std::to_string(tensor.size(0)) : std::string("-")));
  if (floating && !tensor.is_floating_point())
    throw std::invalid_argument(std::string("kto_loss: ") + name + " must be floating point");
}

// Mean of `values` over the rows where `mask` is set, as a double.
double masked_mean(const at::Tensor& values, const at::Tensor& mask) {
  return values.masked_select(mask).to(at::kDouble).mean().item<double>();
}

std::string two_decimals(double value) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << value;
  return out.str();
}

}  // namespace

void validate(const KtoSettings& settings) {
  if (!(settings.beta > 0)) throw std::invalid_argument("beta must be greater than 0");
  if (!(settings.desirable_weight >= 0)) throw std::invalid_argument("desirable_weight must be at least 0");
  if (!(settings.undesirable_weight >= 0)) throw std::invalid_argument("undesirable_weight must be at least 0");
}

at::Tensor kl_estimate(const at::Tensor& policy_kl, const at::Tensor& reference_kl) {
  require_vector(policy_kl, "policy_kl", -1, true);
  require_vector(reference_kl, "reference_kl", policy_kl.size(0), true);
  if (policy_kl.size(0) == 0) throw std::invalid_argument("kto_loss: the KL estimate needs at least one row");
  return (policy_kl.detach() - reference_kl.detach()).mean().clamp_min(0);
}

KtoLossOutput kto_loss(const KtoLogps& logps, const KtoSettings& settings) {
  validate(settings);
  require_vector(logps.policy, "policy", -1, true);
  const int64_t rows = logps.policy.size(0);
  if (rows == 0) throw std::invalid_argument("kto_loss: the batch has no rows");
  require_vector(logps.reference, "reference", rows, true);
  require_vector(logps.desirable, "desirable", rows, false);
  if (logps.desirable.scalar_type() != at::kBool) throw std::invalid_argument("kto_loss: desirable must be bool");
  require_vector(logps.policy_kl, "policy_kl", rows, true);
  require_vector(logps.reference_kl, "reference_kl", rows, true);

  KtoLossOutput out;
  out.kl = kl_estimate(logps.policy_kl, logps.reference_kl);  // ()
  at::Tensor logratios = logps.policy - logps.reference.detach();  // (N)
  const double beta = settings.beta;
  at::Tensor desirable_losses = 1 - at::sigmoid(beta * (logratios - out.kl));    // (N)
  at::Tensor undesirable_losses = 1 - at::sigmoid(beta * (out.kl - logratios));  // (N)
  at::Tensor losses = at::where(logps.desirable, settings.desirable_weight * desirable_losses,
                                settings.undesirable_weight * undesirable_losses);  // (N)
  out.loss = losses.mean();
  out.rewards = (beta * logratios).detach();  // (N)

  const at::Tensor undesirable = logps.desirable.logical_not();
  const int64_t num_desirable = logps.desirable.sum().item<int64_t>();
  const at::Tensor policy = logps.policy.detach();
  out.metrics.push_back({"kl", out.kl.item<double>()});
  double chosen_reward = 0.0, rejected_reward = 0.0;
  if (num_desirable > 0) {
    chosen_reward = masked_mean(out.rewards, logps.desirable);
    out.metrics.push_back({"rewards/chosen", chosen_reward});
    out.metrics.push_back({"logps/chosen", masked_mean(policy, logps.desirable)});
  }
  if (num_desirable < rows) {
    rejected_reward = masked_mean(out.rewards, undesirable);
    out.metrics.push_back({"rewards/rejected", rejected_reward});
    out.metrics.push_back({"logps/rejected", masked_mean(policy, undesirable)});
  }
  if (num_desirable > 0 && num_desirable < rows)
    out.metrics.push_back({"rewards/margins", chosen_reward - rejected_reward});
  return out;
}

std::string class_weight_warning(int64_t num_desirable, int64_t num_undesirable, const KtoSettings& settings) {
  if (num_desirable <= 0 || num_undesirable <= 0) return "";
  const double desirable = settings.desirable_weight * static_cast<double>(num_desirable);
  const double undesirable = settings.undesirable_weight * static_cast<double>(num_undesirable);
  if (desirable >= undesirable && desirable <= undesirable * 4.0 / 3.0) return "";
  const double nd = static_cast<double>(num_desirable), nu = static_cast<double>(num_undesirable);
  return "the data has " + std::to_string(num_desirable) + " desirable and " + std::to_string(num_undesirable) +
         " undesirable rows, so desirable_weight * num_desirable / (undesirable_weight * num_undesirable) = " +
         two_decimals(desirable / undesirable) + ", outside TRL's recommended [1, 1.33]; set EITHER desirable_weight in [" +
         two_decimals(undesirable / nd) + ", " + two_decimals(undesirable / nd * 4.0 / 3.0) +
         "] OR undesirable_weight in [" + two_decimals(desirable / nu * 3.0 / 4.0) + ", " +
         two_decimals(desirable / nu) + "] (not both)";
}

}  // namespace alignkit::kto
