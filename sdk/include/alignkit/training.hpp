// The contract between host, backend and algorithm for one pipeline stage.
//
// The host builds a StageContext (settings, resolved model folders, loaders,
// metric sinks), the backend drives the loop (devices, optimizer, accumulation,
// clipping, checkpoints) and the algorithm turns example indices into a loss.
// An algorithm never knows whether it runs on one CPU or many GPUs.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "alignkit/config.hpp"
#include "alignkit/dataset.hpp"
#include "alignkit/model.hpp"
#include "alignkit/tokenizer.hpp"

namespace alignkit {

class Registry;

enum class Split { Train, Eval };

inline const char* split_name(Split split) { return split == Split::Train ? "train" : "eval"; }

struct Metric {
  std::string name;
  double value = 0.0;
};
using Metrics = std::vector<Metric>;

struct StepOutput {
  at::Tensor loss;      // scalar; carries the graph when training
  Metrics metrics;      // detached values, named as TRL names them
  int64_t num_tokens = 0;
};

// The collective operations an algorithm may use when it splits work over
// the ranks of a data-parallel run (for example precomputing reference
// log-probs shard by shard). With one process they are identities.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Every rank's `local` (a CPU tensor) concatenated along dim 0 in rank
  // order; the sizes along dim 0 may differ between ranks, the others may not.
  virtual at::Tensor all_gather(const at::Tensor& local) = 0;
  // Returns once every rank has called it.
  virtual void barrier() = 0;
};

// What the backend decided, handed to the algorithm at setup.
struct TrainEnv {
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;
  int rank = 0;
  int world_size = 1;
  uint64_t seed = 0;
  // The ranks of this run; set by the training loop before setup(), valid
  // until the stage ends. Every rank must make the same calls in the same order.
  Communicator* communicator = nullptr;
};

// Host services for one stage.
class StageContext {
 public:
  virtual ~StageContext() = default;
  virtual const std::string& stage_name() const = 0;
  virtual const std::string& stage_dir() const = 0;  // <run.output_dir>/<stage>
  virtual const ConfigView& settings() const = 0;    // the stage table, defaults filled in
  // The folder a model role of the stage resolves to ("model", "reference", ...); "" when not set.
  virtual std::string model_dir(const std::string& role) const = 0;
  virtual std::shared_ptr<CausalLM> load_model(const std::string& dir, const ModelOptions& options) = 0;
  // The tokenizer file in a model folder; nullptr when the folder has none.
  virtual std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) = 0;
  virtual std::unique_ptr<Dataset> load_dataset(const ConfigView& data, const std::string& path,
                                                const Tokenizer* tokenizer) = 0;
  // Metric sinks: metrics.jsonl, TensorBoard events and the progress line.
  virtual void log_metrics(int64_t step, Split split, const Metrics& metrics) = 0;
  virtual void log(const std::string& message) = 0;
  // True once SIGINT or SIGTERM arrived: finish the step, save, return Preempted.
  virtual bool stop_requested() const = 0;
  // `alignkit run --resume`: a committed checkpoint must exist.
  virtual bool resume_required() const = 0;
  virtual Registry& registry() = 0;
};

class OnlineAlgorithm;
class DataProducer;

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  // Loads models and data and checks them; throws ConfigError for bad input.
  virtual void setup(StageContext& context, const TrainEnv& env) = 0;
  virtual std::vector<NamedTensor> trainable_parameters() = 0;
  virtual int64_t num_examples(Split split) const = 0;
  // Loss and metrics on the examples at `indices` of `split`. Under Eval the
  // backend has disabled gradients.
  virtual StepOutput step(const std::vector<int64_t>& indices, Split split) = 0;
  virtual void set_training(bool training) = 0;
  // The metrics the progress line shows beside the loss.
  virtual std::vector<std::string> progress_metrics() const = 0;
  // Writes the trained model (Hugging Face layout, tokenizer included) into `dir`.
  virtual void save(const std::string& dir) = 0;
  // Online algorithms (PPO, GRPO, RLOO) return their OnlineAlgorithm side;
  // offline ones learn from dataset examples through step() alone.
  virtual OnlineAlgorithm* online() { return nullptr; }
  // Algorithms that write a dataset instead of training a model (synthesize)
  // return their DataProducer side; the backend then runs setup() and
  // produce() once, with no optimizer and no training loop.
  virtual DataProducer* producer() { return nullptr; }
};

// The data-producing side of an algorithm. Its output folder (the stage's
// `final`, "stages.X.output") holds `data.jsonl`, which a later stage reads
// with `data = { path = "stages.X.output" }`.
class DataProducer {
 public:
  virtual ~DataProducer() = default;
  // Writes the output files into `dir` (an empty folder the backend renames
  // into place afterwards). Returns false when a stop was requested first;
  // nothing is kept then and the stage runs again from its start.
  virtual bool produce(const std::string& dir) = 0;
};

// One optimizer update: the micro-batches (rows of the rollout buffer) whose
// gradients are accumulated before the optimizer steps once.
using Update = std::vector<std::vector<int64_t>>;

struct Rollout {
  std::vector<Update> updates;  // made in order, each with clipping and the skip check
  Metrics metrics;              // of the generation and scoring (rewards, lengths, KL)
  int64_t num_tokens = 0;       // tokens generated
};

// An algorithm that learns from samples it generates. Each training step of
// the loop takes the step's prompts (the indices the data schedule gives this
// rank), lets the algorithm collect a rollout from them under no-grad, then
// makes the rollout's updates, calling learn() on each micro-batch. Every rank
// must return the same number of updates and micro-batches.
class OnlineAlgorithm {
 public:
  virtual ~OnlineAlgorithm() = default;
  // Generates and scores completions for `prompt_indices` (training prompts),
  // replacing the rollout buffer.
  virtual Rollout collect(const std::vector<int64_t>& prompt_indices) = 0;
  // Loss and metrics on rows of the current rollout buffer.
  virtual StepOutput learn(const std::vector<int64_t>& rows) = 0;
};

enum class TrainOutcome { Completed, Preempted };

class Backend {
 public:
  virtual ~Backend() = default;
  // Runs the stage. Throws ConfigError for bad settings, std::runtime_error on failure.
  virtual TrainOutcome train(Algorithm& algorithm, StageContext& context) = 0;
};

class AlgorithmProvider {
 public:
  virtual ~AlgorithmProvider() = default;
  virtual std::unique_ptr<Algorithm> create() const = 0;
};

class BackendProvider {
 public:
  virtual ~BackendProvider() = default;
  virtual std::unique_ptr<Backend> create() const = 0;
};

}  // namespace alignkit
