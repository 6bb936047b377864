// DPO loss family (TRL HEAD's DPOTrainer._compute_loss, loss by loss) and the
// token-level SFT helpers, as pure tensor functions.
#include "losses.hpp"

#include <ATen/TensorOperators.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>

#include <cmath>
#include <stdexcept>

namespace alignkit::dpo {
namespace {

struct NamedLoss {
  LossType type;
  const char* name;
};

constexpr NamedLoss kLosses[] = {
    {LossType::Sigmoid, "sigmoid"},    {LossType::Hinge, "hinge"},         {LossType::Ipo, "ipo"},
    {LossType::Robust, "robust"},      {LossType::BcoPair, "bco_pair"},    {LossType::SppoHard, "sppo_hard"},
    {LossType::NcaPair, "nca_pair"},   {LossType::ApoZero, "apo_zero"},    {LossType::ApoDown, "apo_down"},
    {LossType::Sft, "sft"},
};

std::string shape_of(const at::Tensor& tensor) {
  std::string text = "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) text += (d ? ", " : "") + std::to_string(tensor.size(d));
  return text + "]";
}

// Checks one (B,) input against the batch size and device of policy_chosen.
void check_sequence_tensor(const at::Tensor& tensor, const char* name, const at::Tensor& like,
                           const char* needed_for) {
  if (!tensor.defined())
    throw std::invalid_argument(std::string("dpo loss: ") + name + " is missing; it is needed " + needed_for);
  if (tensor.dim() != 1 || tensor.size(0) != like.size(0))
    throw std::invalid_argument(std::string("dpo loss: ") + name + " has shape " + shape_of(tensor) +
                                ", expected [" + std::to_string(like.size(0)) + "] like policy_chosen");
  if (!tensor.is_floating_point())
    throw std::invalid_argument(std::string("dpo loss: ") + name + " must hold floating-point log-probs");
  if (tensor.device() != like.device())
    throw std::invalid_argument(std::string("dpo loss: ") + name + " is on " + tensor.device().str() +
                                " but policy_chosen is on " + like.device().str());
}

void require_absent(const at::Tensor& tensor, const char* name) {
  if (tensor.defined())
    throw std::invalid_argument(std::string("dpo loss: reference-free mode takes no reference log-probs, but ") +
                                name + " was given");
}

// The reference log-probs to use: detached, or zeros without a reference model.
at::Tensor reference_or_zero(const at::Tensor& reference, const char* name, const at::Tensor& policy,
                             bool reference_free, const char* needed_for) {
  if (reference_free) {
    require_absent(reference, name);
    return at::zeros_like(policy.detach());
  }
  check_sequence_tensor(reference, name, policy, needed_for);
  return reference.detach().to(policy.scalar_type());
}

bool has_term(const LossSettings& settings, LossType type) {
  for (const LossTerm& term : settings.terms)
    if (term.type == type) return true;
  return false;
}

void check_token_inputs(const at::Tensor& labels, const at::Tensor& loss_mask, const char* function) {
  if (!labels.defined() || !loss_mask.defined())
    throw std::invalid_argument(std::string(function) + ": labels and loss_mask are required");
  if (labels.dim() != 2)
    throw std::invalid_argument(std::string(function) + ": labels have shape " + shape_of(labels) +
                                ", expected (B, T)");
  if (loss_mask.sizes() != labels.sizes())
    throw std::invalid_argument(std::string(function) + ": loss_mask has shape " + shape_of(loss_mask) +
                                " but labels have shape " + shape_of(labels));
}

void check_logits(const at::Tensor& logits, const at::Tensor& labels, const char* function) {
  if (!logits.defined() || logits.dim() != 3 || logits.size(0) != labels.size(0) ||
      logits.size(1) != labels.size(1))
    throw std::invalid_argument(std::string(function) + ": logits have shape " +
                                (logits.defined() ? shape_of(logits) : std::string("(undefined)")) +
                                ", expected (B, T, V) with (B, T) = " + shape_of(labels) + " of labels");
  if (!logits.is_floating_point())
    throw std::invalid_argument(std::string(function) + ": logits must be floating point");
}

}  // namespace

const char* loss_type_name(LossType type) {
  for (const NamedLoss& loss : kLosses)
    if (loss.type == type) return loss.name;
  return "?";
}

std::vector<std::string> loss_type_names() {
  std::vector<std::string> names;
  for (const NamedLoss& loss : kLosses) names.emplace_back(loss.name);
  return names;
}

LossType parse_loss_type(const std::string& name) {
  for (const NamedLoss& loss : kLosses)
    if (name == loss.name) return loss.type;
  std::string known;
  for (const NamedLoss& loss : kLosses) known += (known.empty() ? "" : ", ") + std::string(loss.name);
  throw std::invalid_argument("unknown DPO loss type '" + name + "' (known: " + known + ")");
}

bool allows_reference_free(LossType type) {
  switch (type) {
    case LossType::Sigmoid:
    case LossType::Hinge:
    case LossType::Ipo:
    case LossType::Robust:
    case LossType::Sft:
      return true;
    default:
      return false;
  }
}

std::vector<LossTerm> make_loss_terms(const std::vector<std::string>& names, const std::vector<double>& weights) {
  if (names.empty()) throw std::invalid_argument("loss_type lists no loss");
  if (!weights.empty() && weights.size() != names.size())
    throw std::invalid_argument("loss_weights has " + std::to_string(weights.size()) + " values but loss_type has " +
                                std::to_string(names.size()));
  std::vector<LossTerm> terms;
  for (size_t i = 0; i < names.size(); ++i)
    terms.push_back({parse_loss_type(names[i]), weights.empty() ? 1.0 : weights[i]});
  return terms;
}

void validate(const LossSettings& settings) {
  if (!(settings.beta > 0) || !std::isfinite(settings.beta))
    throw std::invalid_argument("beta must be a positive number, got " + std::to_string(settings.beta));
  if (settings.terms.empty()) throw std::invalid_argument("loss_type lists no loss");
  for (const LossTerm& term : settings.terms) {
    if (!std::isfinite(term.weight))
      throw std::invalid_argument(std::string("the weight of loss '") + loss_type_name(term.type) +
                                  "' is not a finite number");
    if (settings.reference_free && !allows_reference_free(term.type))
      throw std::invalid_argument(std::string("loss '") + loss_type_name(term.type) +
                                  "' needs a reference model: it anchors each response's log-ratio to the "
                                  "reference, so it cannot run reference-free");
  }
  if (has_term(settings, LossType::Robust) && !(settings.label_smoothing >= 0 && settings.label_smoothing < 0.5))
    throw std::invalid_argument("label_smoothing must lie in [0, 0.5) for loss 'robust', got " +
                                std::to_string(settings.label_smoothing));
}

LossOutput preference_loss(const PreferenceLogps& in, const LossSettings& settings) {
  validate(settings);
  if (!in.policy_chosen.defined()) throw std::invalid_argument("dpo loss: policy_chosen is missing");
  if (in.policy_chosen.dim() != 1 || in.policy_chosen.size(0) == 0)
    throw std::invalid_argument("dpo loss: policy_chosen has shape " + shape_of(in.policy_chosen) +
                                ", expected (B,) with B >= 1");
  const at::Tensor& like = in.policy_chosen;
  const bool reference_free = settings.reference_free;
  const double beta = settings.beta;
  check_sequence_tensor(in.policy_chosen, "policy_chosen", like, "by every loss");
  check_sequence_tensor(in.policy_rejected, "policy_rejected", like, "by every loss");
  const at::Tensor& policy_chosen = in.policy_chosen;                            // (B,)
  const at::Tensor policy_rejected = in.policy_rejected.to(like.scalar_type());  // (B,)
  at::Tensor reference_chosen =
      reference_or_zero(in.reference_chosen, "reference_chosen", like, reference_free, "by every loss");
  at::Tensor reference_rejected =
      reference_or_zero(in.reference_rejected, "reference_rejected", like, reference_free, "by every loss");

  at::Tensor chosen_logratios = policy_chosen - reference_chosen;        // (B,)
  at::Tensor rejected_logratios = policy_rejected - reference_rejected;  // (B,)
  at::Tensor delta = chosen_logratios - rejected_logratios;              // (B,)

  at::Tensor total;
  for (const LossTerm& term : settings.terms) {
    at::Tensor per_pair;  // (B,), or () for sft
    switch (term.type) {
      case LossType::Sigmoid:
        per_pair = -at::log_sigmoid(delta * beta);
        break;
      case LossType::Hinge:
        per_pair = (1.0 - delta * beta).relu();
        break;
      case LossType::Ipo: {
        const char* why = "by loss 'ipo' (per-token averaged log-probs)";
        check_sequence_tensor(in.policy_chosen_mean, "policy_chosen_mean", like, why);
        check_sequence_tensor(in.policy_rejected_mean, "policy_rejected_mean", like, why);
        at::Tensor ref_chosen_mean =
            reference_or_zero(in.reference_chosen_mean, "reference_chosen_mean", like, reference_free, why);
        at::Tensor ref_rejected_mean =
            reference_or_zero(in.reference_rejected_mean, "reference_rejected_mean", like, reference_free, why);
        at::Tensor ipo_delta = (in.policy_chosen_mean.to(like.scalar_type()) - ref_chosen_mean) -
                               (in.policy_rejected_mean.to(like.scalar_type()) - ref_rejected_mean);
        per_pair = (ipo_delta - 1.0 / (2.0 * beta)).pow(2);
        break;
      }
      case LossType::Robust: {
        const double smoothing = settings.label_smoothing;
        per_pair = (-(1.0 - smoothing) * at::log_sigmoid(delta * beta) + smoothing * at::log_sigmoid(delta * -beta)) /
                   (1.0 - 2.0 * smoothing);
        break;
      }
      case LossType::BcoPair:
        per_pair = -at::log_sigmoid(chosen_logratios * beta) - at::log_sigmoid(rejected_logratios * -beta);
        break;
      case LossType::SppoHard:
        per_pair = (chosen_logratios - 0.5 / beta).pow(2) + (rejected_logratios + 0.5 / beta).pow(2);
        break;
      case LossType::NcaPair:
        per_pair = -at::log_sigmoid(chosen_logratios * beta) - 0.5 * at::log_sigmoid(chosen_logratios * -beta) -
                   0.5 * at::log_sigmoid(rejected_logratios * -beta);
        break;
      case LossType::ApoZero:
        per_pair = (1.0 - (chosen_logratios * beta).sigmoid()) + (rejected_logratios * beta).sigmoid();
        break;
      case LossType::ApoDown:
        per_pair = (chosen_logratios * beta).sigmoid() + (1.0 - (delta * beta).sigmoid());
        break;
      case LossType::Sft:
        if (!in.chosen_nll.defined() || in.chosen_nll.dim() != 0 || !in.chosen_nll.is_floating_point())
          throw std::invalid_argument("dpo loss: chosen_nll (a floating-point scalar) is needed by loss 'sft'");
        per_pair = in.chosen_nll.to(like.scalar_type());
        break;
    }
    at::Tensor weighted = per_pair.mean() * term.weight;  // ()
    total = total.defined() ? total + weighted : weighted;
  }

  LossOutput out;
  out.loss = total;
  out.chosen_rewards = (chosen_logratios * beta).detach();
  out.rejected_rewards = (rejected_logratios * beta).detach();
  auto mean_of = [](const at::Tensor& t) { return t.detach().to(at::kDouble).mean().item<double>(); };
  out.metrics = {
      {"rewards/chosen", mean_of(out.chosen_rewards)},
      {"rewards/rejected", mean_of(out.rejected_rewards)},
      {"rewards/accuracies", mean_of(out.chosen_rewards > out.rejected_rewards)},
      {"rewards/margins", mean_of(out.chosen_rewards - out.rejected_rewards)},
      {"logps/chosen", mean_of(policy_chosen)},
      {"logps/rejected", mean_of(policy_rejected)},
  };
  if (has_term(settings, LossType::Sft)) out.metrics.push_back({"nll_loss", in.chosen_nll.detach().item<double>()});
  return out;
}

at::Tensor token_logps(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& loss_mask) {
  check_token_inputs(labels, loss_mask, "token_logps");
  check_logits(logits, labels, "token_logps");
  if (labels.scalar_type() != at::kLong) throw std::invalid_argument("token_logps: labels must be int64");
  at::Tensor in_mask = loss_mask.to(at::kBool);                                 // (B, T)
  at::Tensor safe_labels = at::where(in_mask, labels, at::zeros_like(labels));  // (B, T)
  const int64_t vocab = logits.size(2);
  if (safe_labels.numel() > 0) {
    int64_t lowest = safe_labels.min().item<int64_t>();
    int64_t highest = safe_labels.max().item<int64_t>();
    if (lowest < 0 || highest >= vocab)
      throw std::invalid_argument("token_logps: a label inside the loss mask is " +
                                  std::to_string(lowest < 0 ? lowest : highest) + ", outside the vocabulary [0, " +
                                  std::to_string(vocab) + ") of the logits");
  }
  // Half-precision log-softmax loses too much; compute it in at least float32.
  at::Tensor wide = logits.scalar_type() == at::kDouble ? logits : logits.to(at::kFloat);  // (B, T, V)
  at::Tensor picked = wide.log_softmax(-1).gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1);  // (B, T)
  return picked.masked_fill(in_mask.logical_not(), 0.0);
}

SequenceLogps sequence_logps(const at::Tensor& token_logps, const at::Tensor& loss_mask) {
  check_token_inputs(token_logps, loss_mask, "sequence_logps");
  at::Tensor mask = loss_mask.to(token_logps.scalar_type());  // (B, T)
  SequenceLogps out;
  out.sum = (token_logps * mask).sum(1);            // (B,)
  out.mean = out.sum / mask.sum(1).clamp_min(1.0);  // (B,)
  return out;
}

at::Tensor masked_mean_nll(const at::Tensor& token_logps, const at::Tensor& loss_mask) {
  check_token_inputs(token_logps, loss_mask, "masked_mean_nll");
  at::Tensor mask = loss_mask.to(token_logps.scalar_type());  // (B, T)
  return -(token_logps * mask).sum() / mask.sum().clamp_min(1.0);
}

at::Tensor sft_loss(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& loss_mask) {
  return masked_mean_nll(token_logps(logits, labels, loss_mask), loss_mask);
}

double mean_token_accuracy(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& loss_mask) {
  check_token_inputs(labels, loss_mask, "mean_token_accuracy");
  check_logits(logits, labels, "mean_token_accuracy");
  at::Tensor in_mask = loss_mask.to(at::kBool);                                      // (B, T)
  at::Tensor correct = logits.detach().argmax(-1).eq(labels).logical_and(in_mask);  // (B, T)
  int64_t total = in_mask.sum().item<int64_t>();
  return total > 0 ? static_cast<double>(correct.sum().item<int64_t>()) / static_cast<double>(total) : 0.0;
}

}  // namespace alignkit::dpo
