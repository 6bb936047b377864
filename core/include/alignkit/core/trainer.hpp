// The training loop every backend shares: data order and sharding, gradient
// accumulation, clipping, AdamW with a schedule, non-finite step skipping,
// evaluation, metrics, checkpoints and exact resume, and clean stops on
// signals. A backend supplies the device and a Collective (one process, or
// many over c10d); the algorithm supplies the loss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "alignkit/config.hpp"
#include "alignkit/training.hpp"

namespace alignkit::core {

// The settings of the loop, named as in Hugging Face's TrainingArguments.
struct TrainerSettings {
  double learning_rate = 5e-5;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  std::string lr_scheduler_type = "linear";
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;
  int64_t per_device_train_batch_size = 8;
  int64_t per_device_eval_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double num_train_epochs = 3.0;
  int64_t max_steps = -1;
  double max_grad_norm = 1.0;
  int64_t logging_steps = 10;
  int64_t eval_steps = 0;
  int64_t save_steps = 500;
  int64_t save_total_limit = 0;
  int64_t max_bad_steps = 10;
  bool shuffle = true;
  uint64_t seed = 42;
  // Resume a checkpoint saved with another number of ranks (the data order
  // then continues at the same step of the new world size's schedule).
  bool allow_world_size_change = false;

  static TrainerSettings from(const ConfigView& settings);
};

// The SettingSpecs of TrainerSettings, for a backend's ComponentInfo.
std::vector<SettingSpec> trainer_setting_specs();

// What differs between one process and many. This base class is the single
// process; the distributed backend implements it over c10d. Every rank makes
// the same calls in the same order. A failed collective throws; the loop then
// stops without saving.
class Collective : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  at::Tensor all_gather(const at::Tensor& local) override { return local; }
  // Makes every rank start from rank 0's weights.
  virtual void broadcast_parameters(const std::vector<NamedTensor>& parameters) {}
  // Averages gradients over ranks (after the local accumulation).
  virtual void average_gradients(const std::vector<NamedTensor>& parameters) {}
  // Averages metric values over ranks (every rank passes the same names).
  virtual std::vector<double> average(const std::vector<double>& values) { return values; }
  // True on every rank when `flag` is true on any: shared decisions (skip, stop).
  virtual bool any(bool flag) { return flag; }
  void barrier() override {}
};

// How examples are ordered and split into steps.
struct DataSchedule {
  int64_t num_examples = 0;
  int64_t micro_batch_size = 1;       // per rank
  int64_t accumulation = 1;
  int world_size = 1;
  int64_t micro_batches_per_epoch = 0;
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;

  static DataSchedule make(int64_t num_examples, const TrainerSettings& settings, int world_size);
  // The example indices rank `rank` uses in micro-batch `micro` (counted from
  // the start of training). The order depends only on the seed, the epoch and
  // `shuffle`, so a resumed run sees the same batches.
  std::vector<int64_t> micro_batch(int64_t micro, int rank, uint64_t seed, bool shuffle) const;
};

// Runs training to the end, or until a signal (then saves and returns Preempted).
TrainOutcome run_training(Algorithm& algorithm, StageContext& context, const TrainEnv& env, Collective& collective);

}  // namespace alignkit::core
