// AdamW with decoupled weight decay and the learning-rate schedules of
// Hugging Face's Trainer (constant, linear, cosine, with warmup).
//
// Our own AdamW rather than torch::optim::AdamW: its state is plain named
// tensors we can write to safetensors and read back exactly (so a resumed run
// continues bit for bit), and its layout does not change between LibTorch 1.x
// and 2.x. The update is torch.optim.AdamW's (amsgrad off).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "alignkit/model.hpp"

namespace alignkit::core {

struct AdamWOptions {
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double weight_decay = 0.0;
};

// True for parameters that get no weight decay: biases and normalisation
// weights (by name), and any one-dimensional tensor.
bool skips_weight_decay(const std::string& name, const at::Tensor& parameter);

class AdamW {
 public:
  AdamW(std::vector<NamedTensor> parameters, AdamWOptions options);

  // Sets the learning rate of the next step (the schedule's value).
  void set_learning_rate(double learning_rate) { options_.learning_rate = learning_rate; }
  double learning_rate() const { return options_.learning_rate; }
  void zero_grad();
  // One update of every parameter that has a gradient.
  void step();

  const std::vector<NamedTensor>& parameters() const { return parameters_; }
  // "exp_avg.<name>", "exp_avg_sq.<name>" and "step.<name>" tensors.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  // Restores what state() returned. Throws std::runtime_error naming a missing
  // or mis-shaped entry.
  void load_state(const std::map<std::string, at::Tensor>& state);

 private:
  struct ParamState {
    at::Tensor exp_avg;
    at::Tensor exp_avg_sq;
    int64_t step = 0;
  };
  std::vector<NamedTensor> parameters_;
  std::vector<bool> decay_;
  std::vector<ParamState> state_;
  AdamWOptions options_;
};

enum class LrSchedule { Constant, Linear, Cosine };

// Parses "constant", "linear", "cosine"; throws std::invalid_argument otherwise.
LrSchedule parse_lr_schedule(const std::string& name);

// The multiplier of the base learning rate for the update at `step` (0-based),
// as transformers' get_*_schedule_with_warmup: a linear ramp over
// `warmup_steps`, then constant, linear decay to 0, or half a cosine to 0 at
// `total_steps`.
double lr_multiplier(LrSchedule schedule, int64_t step, int64_t warmup_steps, int64_t total_steps);

}  // namespace alignkit::core
