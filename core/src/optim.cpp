// AdamW and learning-rate schedules (see optim.hpp).
#include "alignkit/core/optim.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

namespace alignkit::core {

bool skips_weight_decay(const std::string& name, const at::Tensor& parameter) {
  if (parameter.dim() < 2) return true;
  return name.find("bias") != std::string::npos || name.find("norm") != std::string::npos;
}

AdamW::AdamW(std::vector<NamedTensor> parameters, AdamWOptions options)
    : parameters_(std::move(parameters)), options_(options) {
  for (const NamedTensor& p : parameters_) {
    decay_.push_back(!skips_weight_decay(p.name, p.tensor));
    state_.push_back({at::zeros_like(p.tensor, at::MemoryFormat::Preserve),
                      at::zeros_like(p.tensor, at::MemoryFormat::Preserve), 0});
  }
}

void AdamW::zero_grad() {
  for (NamedTensor& p : parameters_) {
    at::Tensor grad = p.tensor.mutable_grad();
    if (grad.defined()) grad.zero_();
  }
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  const double lr = options_.learning_rate;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    at::Tensor& param = parameters_[i].tensor;
    const at::Tensor& grad = param.grad();
    if (!grad.defined()) continue;
    ParamState& s = state_[i];
    s.step += 1;
    if (decay_[i] && options_.weight_decay != 0.0) param.mul_(1.0 - lr * options_.weight_decay);
    s.exp_avg.mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
    s.exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    const double bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(s.step));
    const double bias_correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(s.step));
    at::Tensor denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options_.epsilon);
    param.addcdiv_(s.exp_avg, denom, -lr / bias_correction1);
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const std::string& name = parameters_[i].name;
    out.emplace_back("exp_avg." + name, state_[i].exp_avg);
    out.emplace_back("exp_avg_sq." + name, state_[i].exp_avg_sq);
    out.emplace_back("step." + name, at::full({1}, state_[i].step, at::kLong));
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& state) {
  auto fetch = [&](const std::string& key, const at::Tensor& like) {
    auto it = state.find(key);
    if (it == state.end()) throw std::runtime_error("optimizer state has no '" + key + "'");
    if (like.defined() && it->second.sizes() != like.sizes())
      throw std::runtime_error("optimizer state '" + key + "' has the wrong shape for this model");
    return it->second;
  };
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const std::string& name = parameters_[i].name;
    state_[i].exp_avg.copy_(fetch("exp_avg." + name, state_[i].exp_avg));
    state_[i].exp_avg_sq.copy_(fetch("exp_avg_sq." + name, state_[i].exp_avg_sq));
    state_[i].step = fetch("step." + name, at::Tensor()).item<int64_t>();
  }
}

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "linear") return LrSchedule::Linear;
  if (name == "cosine") return LrSchedule::Cosine;
  throw std::invalid_argument("unknown lr_scheduler_type '" + name + "' (constant, linear, cosine)");
}

double lr_multiplier(LrSchedule schedule, int64_t step, int64_t warmup_steps, int64_t total_steps) {
  if (step < warmup_steps) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  if (schedule == LrSchedule::Constant) return 1.0;
  const double progress = static_cast<double>(step - warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  if (schedule == LrSchedule::Linear) return std::max(0.0, 1.0 - progress);
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace alignkit::core
