// The shared training loop (see trainer.hpp and docs/training.md).
#include "alignkit/core/trainer.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "alignkit/core/atomic_file.hpp"
#include "alignkit/core/metrics.hpp"
#include "alignkit/core/optim.hpp"
#include "alignkit/core/safetensors.hpp"
#include "alignkit/core/toml_config.hpp"

namespace fs = std::filesystem;

namespace alignkit::core {

TrainerSettings TrainerSettings::from(const ConfigView& s) {
  TrainerSettings t;
  t.learning_rate = s.get_float("learning_rate");
  t.weight_decay = s.get_float("weight_decay");
  t.adam_beta1 = s.get_float("adam_beta1");
  t.adam_beta2 = s.get_float("adam_beta2");
  t.adam_epsilon = s.get_float("adam_epsilon");
  t.lr_scheduler_type = s.get_string("lr_scheduler_type");
  t.warmup_ratio = s.get_float("warmup_ratio");
  t.warmup_steps = s.get_int("warmup_steps");
  t.per_device_train_batch_size = s.get_int("per_device_train_batch_size");
  t.per_device_eval_batch_size = s.get_int("per_device_eval_batch_size");
  t.gradient_accumulation_steps = s.get_int("gradient_accumulation_steps");
  t.num_train_epochs = s.get_float("num_train_epochs");
  t.max_steps = s.get_int("max_steps");
  t.max_grad_norm = s.get_float("max_grad_norm");
  t.logging_steps = s.get_int("logging_steps");
  t.eval_steps = s.get_int("eval_steps");
  t.save_steps = s.get_int("save_steps");
  t.save_total_limit = s.get_int("save_total_limit");
  t.max_bad_steps = s.get_int("max_bad_steps");
  t.shuffle = s.get_bool("shuffle");
  t.seed = static_cast<uint64_t>(s.get_int("seed"));
  t.allow_world_size_change = s.get_bool("allow_world_size_change");
  return t;
}

std::vector<SettingSpec> trainer_setting_specs() {
  TrainerSettings d;
  return {
      setting::number("learning_rate", d.learning_rate, "peak learning rate of AdamW", 0.0),
      setting::number("weight_decay", d.weight_decay, "decoupled weight decay (not on biases and norms)", 0.0),
      setting::number("adam_beta1", d.adam_beta1, "AdamW beta1", 0.0),
      setting::number("adam_beta2", d.adam_beta2, "AdamW beta2", 0.0),
      setting::number("adam_epsilon", d.adam_epsilon, "AdamW epsilon", 0.0),
      setting::text("lr_scheduler_type", d.lr_scheduler_type, "learning-rate schedule after warmup",
                    {"constant", "linear", "cosine"}),
      setting::number("warmup_ratio", d.warmup_ratio, "fraction of the steps used for linear warmup", 0.0),
      setting::integer("warmup_steps", d.warmup_steps, "warmup steps (overrides warmup_ratio when > 0)", 0),
      setting::integer("per_device_train_batch_size", d.per_device_train_batch_size, "examples per micro-batch and device", 1),
      setting::integer("per_device_eval_batch_size", d.per_device_eval_batch_size, "examples per evaluation batch and device", 1),
      setting::integer("gradient_accumulation_steps", d.gradient_accumulation_steps, "micro-batches per optimizer step", 1),
      setting::number("num_train_epochs", d.num_train_epochs, "passes over the training data (when max_steps <= 0)", 0.0),
      setting::integer("max_steps", d.max_steps, "optimizer steps; overrides num_train_epochs when > 0"),
      setting::number("max_grad_norm", d.max_grad_norm, "clip the global gradient norm to this (0: no clipping)", 0.0),
      setting::integer("logging_steps", d.logging_steps, "log metrics every N steps (the first step is always logged)", 1),
      setting::integer("eval_steps", d.eval_steps, "evaluate every N steps (0: only at the end)", 0),
      setting::integer("save_steps", d.save_steps, "save a checkpoint every N steps (0: never)", 0),
      setting::integer("save_total_limit", d.save_total_limit, "keep only the newest N checkpoints (0: keep all)", 0),
      setting::integer("max_bad_steps", d.max_bad_steps, "stop after this many non-finite steps in a row", 1),
      setting::boolean("shuffle", d.shuffle, "shuffle the training data each epoch (false keeps file order)"),
      setting::boolean("allow_world_size_change", d.allow_world_size_change,
                       "resume a checkpoint saved with another number of processes (otherwise an error)"),
  };
}

DataSchedule DataSchedule::make(int64_t num_examples, const TrainerSettings& settings, int world_size) {
  DataSchedule d;
  d.num_examples = num_examples;
  d.micro_batch_size = settings.per_device_train_batch_size;
  d.accumulation = settings.gradient_accumulation_steps;
  d.world_size = world_size;
  const int64_t global_micro = d.micro_batch_size * world_size;
  d.micro_batches_per_epoch = (num_examples + global_micro - 1) / global_micro;
  d.steps_per_epoch = std::max<int64_t>(1, d.micro_batches_per_epoch / d.accumulation);
  d.total_steps = settings.max_steps > 0
                      ? settings.max_steps
                      : static_cast<int64_t>(std::ceil(settings.num_train_epochs * static_cast<double>(d.steps_per_epoch)));
  return d;
}

std::vector<int64_t> DataSchedule::micro_batch(int64_t micro, int rank, uint64_t seed, bool shuffle) const {
  const int64_t epoch = micro / micro_batches_per_epoch;
  const int64_t position = micro % micro_batches_per_epoch;
  at::Tensor order;
  if (shuffle) {
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed + static_cast<uint64_t>(epoch));
    order = at::randperm(num_examples, generator, at::kLong);
  }
  std::vector<int64_t> indices;
  const int64_t start = position * micro_batch_size * world_size + rank * micro_batch_size;
  for (int64_t k = start; k < start + micro_batch_size; ++k) {
    // One process: the last micro-batch of an epoch may be short. Many: wrap
    // around so every rank has the same number of examples, as DistributedSampler does.
    if (k >= num_examples && world_size == 1) break;
    const int64_t slot = k % num_examples;
    indices.push_back(shuffle ? order[slot].item<int64_t>() : slot);
  }
  return indices;
}

namespace {

// Running means of named metrics over a logging window.
class MetricWindow {
 public:
  void add(const Metrics& metrics) {
    for (const Metric& m : metrics) {
      auto it = index_.find(m.name);
      if (it == index_.end()) {
        index_[m.name] = names_.size();
        names_.push_back(m.name);
        sums_.push_back(0.0);
        counts_.push_back(0);
        it = index_.find(m.name);
      }
      sums_[it->second] += m.value;
      counts_[it->second] += 1;
    }
  }
  Metrics means() const {
    Metrics out;
    for (size_t i = 0; i < names_.size(); ++i) out.push_back({names_[i], sums_[i] / static_cast<double>(counts_[i])});
    return out;
  }
  bool empty() const { return names_.empty(); }
  void clear() { *this = MetricWindow(); }
  nlohmann::json to_json() const {
    nlohmann::json j = nlohmann::json::array();
    for (size_t i = 0; i < names_.size(); ++i) j.push_back({names_[i], sums_[i], counts_[i]});
    return j;
  }
  void from_json(const nlohmann::json& j) {
    clear();
    for (const auto& item : j) {
      index_[item[0].get<std::string>()] = names_.size();
      names_.push_back(item[0].get<std::string>());
      sums_.push_back(item[1].get<double>());
      counts_.push_back(item[2].get<int64_t>());
    }
  }

 private:
  std::vector<std::string> names_;
  std::vector<double> sums_;
  std::vector<int64_t> counts_;
  std::map<std::string, size_t> index_;
};

// Averages StepOutputs of micro-batches, weighting each by its example count.
struct StepAccumulator {
  std::vector<std::string> names;
  std::vector<double> sums;
  double weight = 0.0;
  int64_t tokens = 0;
  bool finite = true;

  void add(const StepOutput& out, double examples) {
    double loss = out.loss.defined() ? out.loss.item<double>() : 0.0;
    if (!std::isfinite(loss)) finite = false;
    add_value("loss", loss, examples);
    for (const Metric& m : out.metrics)
      if (m.name != "loss") add_value(m.name, m.value, examples);
    weight += examples;
    tokens += out.num_tokens;
  }
  void merge(const StepAccumulator& other) {
    for (size_t i = 0; i < other.names.size(); ++i) add_value(other.names[i], other.sums[i], 1.0);
    weight += other.weight;
    tokens += other.tokens;
    finite = finite && other.finite;
  }
  void add_value(const std::string& name, double value, double examples) {
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) {
        sums[i] += value * examples;
        return;
      }
    names.push_back(name);
    sums.push_back(value * examples);
  }
  // Example-weighted means over every rank (ranks may hold different counts).
  Metrics means(Collective& collective) const {
    std::vector<double> values = sums;
    values.push_back(weight);
    values = collective.average(values);  // the world size cancels in the ratio
    const double total = values.back();
    Metrics out;
    for (size_t i = 0; i < names.size(); ++i) out.push_back({names[i], total > 0 ? values[i] / total : 0.0});
    return out;
  }
};

// The stage settings a checkpoint must have been saved with: all but those
// that only say how to run (permission to change the world size, timeouts),
// which a resumed run may change.
std::string settings_fingerprint(const ConfigValue& stage) {
  static const char* const kOperational[] = {"allow_world_size_change", "collective_timeout", "store_timeout"};
  ConfigValue kept = stage;
  kept.table.erase(std::remove_if(kept.table.begin(), kept.table.end(),
                                  [](const std::pair<std::string, ConfigValue>& entry) {
                                    return std::find(std::begin(kOperational), std::end(kOperational), entry.first) !=
                                           std::end(kOperational);
                                  }),
                   kept.table.end());
  return to_toml(kept);
}

std::string parameter_signature(const std::vector<NamedTensor>& parameters) {
  std::ostringstream out;
  for (const NamedTensor& p : parameters) out << p.name << p.tensor.sizes() << ';';
  return out.str();
}

class Loop {
 public:
  Loop(Algorithm& algorithm, StageContext& context, const TrainEnv& env, Collective& collective)
      : algorithm_(algorithm),
        context_(context),
        env_(env),
        collective_(collective),
        settings_(TrainerSettings::from(context.settings())) {}

  TrainOutcome run() {
    const ConfigView& view = context_.settings();
    LrSchedule schedule = parse_lr_schedule(settings_.lr_scheduler_type);
    env_.rank = collective_.rank();
    env_.world_size = collective_.world_size();
    env_.communicator = &collective_;
    algorithm_.setup(context_, env_);
    if (DataProducer* producer = algorithm_.producer()) return produce(*producer);
    parameters_ = algorithm_.trainable_parameters();
    if (parameters_.empty()) throw std::runtime_error("the algorithm has no trainable parameters");
    collective_.broadcast_parameters(parameters_);

    const int64_t num_train = algorithm_.num_examples(Split::Train);
    if (num_train == 0) throw ConfigError(view.locate("data") + ": the training data has no examples");
    data_ = DataSchedule::make(num_train, settings_, collective_.world_size());
    const int64_t warmup = settings_.warmup_steps > 0
                               ? settings_.warmup_steps
                               : static_cast<int64_t>(std::ceil(settings_.warmup_ratio * static_cast<double>(data_.total_steps)));

    AdamWOptions options;
    options.learning_rate = settings_.learning_rate;
    options.beta1 = settings_.adam_beta1;
    options.beta2 = settings_.adam_beta2;
    options.epsilon = settings_.adam_epsilon;
    options.weight_decay = settings_.weight_decay;
    optimizer_ = std::make_unique<AdamW>(parameters_, options);

    fingerprint_ = settings_fingerprint(*view.node());
    resume_if_possible();

    context_.log("training " + std::to_string(num_train) + " examples for " + std::to_string(data_.total_steps) +
                 " steps (" + std::to_string(settings_.per_device_train_batch_size * settings_.gradient_accumulation_steps *
                                             collective_.world_size()) +
                 " examples a step), starting at step " + std::to_string(step_));
    const auto start = std::chrono::steady_clock::now();
    const int64_t first_step = step_;
    int64_t tokens_this_run = 0;
    algorithm_.set_training(true);

    while (step_ < data_.total_steps) {
      optimizer_->set_learning_rate(settings_.learning_rate * lr_multiplier(schedule, step_, warmup, data_.total_steps));
      StepAccumulator step_metrics;
      Metrics rollout_metrics;
      bool bad = false;
      double grad_norm = 0.0;
      if (OnlineAlgorithm* online = algorithm_.online()) {
        Rollout rollout = collect_rollout(*online);
        rollout_metrics = std::move(rollout.metrics);
        step_metrics.tokens += rollout.num_tokens;
        std::vector<double> norms;
        for (const Update& update : rollout.updates) {
          bool update_bad = false;
          norms.push_back(apply_update(update, step_metrics, update_bad,
                                       [&](const std::vector<int64_t>& rows) { return online->learn(rows); }));
          bad = bad || update_bad;
        }
        for (double norm : norms) grad_norm += norm / static_cast<double>(norms.size());
      } else {
        grad_norm = apply_update(step_micro_batches(), step_metrics, bad,
                                 [&](const std::vector<int64_t>& indices) { return algorithm_.step(indices, Split::Train); });
      }
      const double lr_used = optimizer_->learning_rate();
      ++step_;
      num_tokens_ += step_metrics.tokens;
      tokens_this_run += step_metrics.tokens;

      Metrics metrics = step_metrics.means(collective_);
      if (!rollout_metrics.empty()) {
        std::vector<double> values;
        for (const Metric& m : rollout_metrics) values.push_back(m.value);
        values = collective_.average(values);
        for (size_t i = 0; i < values.size(); ++i) metrics.push_back({rollout_metrics[i].name, values[i]});
      }
      metrics.push_back({"grad_norm", grad_norm});
      // A skipped step's values are not finite: it shows only in skipped_steps.
      if (!bad) window_.add(metrics);
      if (step_ == 1 || step_ % settings_.logging_steps == 0 || step_ == data_.total_steps) {
        Metrics logged = window_.means();
        logged.push_back({"learning_rate", lr_used});
        logged.push_back({"epoch", static_cast<double>(step_) / static_cast<double>(data_.steps_per_epoch)});
        logged.push_back({"num_tokens", static_cast<double>(num_tokens_)});
        if (skipped_steps_ > 0) logged.push_back({"skipped_steps", static_cast<double>(skipped_steps_)});
        if (collective_.rank() == 0) context_.log_metrics(step_, Split::Train, logged);
        window_.clear();
        double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        show_progress(logged, elapsed, step_ - first_step, tokens_this_run);
      }
      if (settings_.eval_steps > 0 && step_ % settings_.eval_steps == 0 && step_ < data_.total_steps) evaluate();
      bool stop = collective_.any(context_.stop_requested());
      if (stop || (settings_.save_steps > 0 && step_ % settings_.save_steps == 0 && step_ < data_.total_steps))
        save_checkpoint();
      if (stop) {
        printer_.finish();
        return TrainOutcome::Preempted;
      }
    }
    printer_.finish();
    evaluate();
    save_final();
    return TrainOutcome::Completed;
  }

 private:
  // One optimizer update from gradients accumulated over `micro_batches`:
  // averaging over ranks, clipping, the shared non-finite check, the step.
  // Returns the gradient norm before clipping; `bad` says the update was skipped.
  template <typename LossFn>
  double apply_update(const Update& micro_batches, StepAccumulator& step_metrics, bool& bad, LossFn&& loss_of) {
    optimizer_->zero_grad();
    StepAccumulator update_metrics;
    const double scale = static_cast<double>(std::max<size_t>(micro_batches.size(), 1));
    for (const std::vector<int64_t>& rows : micro_batches) {
      StepOutput out = loss_of(rows);
      (out.loss / scale).backward();
      update_metrics.add(out, static_cast<double>(rows.size()));
    }
    collective_.average_gradients(parameters_);
    const double grad_norm = clip_gradients();
    bad = collective_.any(!update_metrics.finite || !std::isfinite(grad_norm));
    if (bad) {
      ++skipped_steps_;
      ++consecutive_bad_;
      optimizer_->zero_grad();
      context_.log("step " + std::to_string(step_ + 1) + ": non-finite loss or gradient norm; update skipped (" +
                   std::to_string(consecutive_bad_) + " in a row)");
      if (consecutive_bad_ >= settings_.max_bad_steps)
        throw std::runtime_error(std::to_string(consecutive_bad_) +
                                 " non-finite steps in a row (max_bad_steps); stopping. The last good checkpoint is " +
                                 last_checkpoint_description());
    } else {
      optimizer_->step();
      consecutive_bad_ = 0;
    }
    step_metrics.merge(update_metrics);
    return grad_norm;
  }

  // The example indices of this step's micro-batches on this rank (empty ones left out).
  Update step_micro_batches() const {
    Update micro_batches;
    for (int64_t k = 0; k < settings_.gradient_accumulation_steps; ++k) {
      std::vector<int64_t> indices =
          data_.micro_batch(step_ * settings_.gradient_accumulation_steps + k, collective_.rank(), settings_.seed, settings_.shuffle);
      if (!indices.empty()) micro_batches.push_back(std::move(indices));
    }
    return micro_batches;
  }

  // The rollout of this step's prompts: every micro-batch the data schedule
  // gives this rank for the step, generated under no-grad in eval mode.
  Rollout collect_rollout(OnlineAlgorithm& online) {
    std::vector<int64_t> prompts;
    for (const std::vector<int64_t>& indices : step_micro_batches()) prompts.insert(prompts.end(), indices.begin(), indices.end());
    Rollout rollout;
    {
      at::NoGradGuard no_grad;
      algorithm_.set_training(false);
      rollout = online.collect(prompts);
      algorithm_.set_training(true);
    }
    return rollout;
  }

  // The global L2 norm of all gradients, before clipping; scales them down to
  // max_grad_norm when larger (torch.nn.utils.clip_grad_norm_'s formula).
  double clip_gradients() {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> norms;
    for (const NamedTensor& p : parameters_)
      if (p.tensor.grad().defined()) norms.push_back(p.tensor.grad().detach().norm(2).to(at::kDouble));
    if (norms.empty()) return 0.0;
    const double total = at::stack(norms).norm(2).item<double>();
    if (settings_.max_grad_norm > 0 && std::isfinite(total)) {
      const double coefficient = settings_.max_grad_norm / (total + 1e-6);
      if (coefficient < 1.0)
        for (NamedTensor& p : parameters_)
          if (p.tensor.grad().defined()) p.tensor.mutable_grad().mul_(coefficient);
    }
    return total;
  }

  void evaluate() {
    const int64_t n = algorithm_.num_examples(Split::Eval);
    if (n == 0) return;
    at::NoGradGuard no_grad;
    algorithm_.set_training(false);
    StepAccumulator totals;
    const int64_t batch = settings_.per_device_eval_batch_size;
    // A contiguous shard per rank; means are weighted by example counts.
    const int64_t world = collective_.world_size();
    const int64_t first = n * collective_.rank() / world;
    const int64_t last = n * (collective_.rank() + 1) / world;
    for (int64_t start = first; start < last; start += batch) {
      std::vector<int64_t> indices;
      for (int64_t i = start; i < std::min(last, start + batch); ++i) indices.push_back(i);
      totals.add(algorithm_.step(indices, Split::Eval), static_cast<double>(indices.size()));
    }
    // A rank with an empty shard still reports every metric name (with
    // weight 0), so all ranks reduce vectors of one length.
    if (first == last) totals.add(algorithm_.step({0}, Split::Eval), 0.0);
    algorithm_.set_training(true);
    Metrics metrics = totals.means(collective_);
    if (collective_.rank() == 0) {
      context_.log_metrics(step_, Split::Eval, metrics);
      std::string line = "eval at step " + std::to_string(step_) + ":";
      for (const Metric& m : select_metrics(metrics, with_loss(algorithm_.progress_metrics())))
        line += " " + m.name + " " + std::to_string(m.value);
      printer_.message("[" + context_.stage_name() + "] " + line);
    }
  }

  static std::vector<std::string> with_loss(std::vector<std::string> names) {
    names.insert(names.begin(), "loss");
    return names;
  }

  void show_progress(const Metrics& logged, double elapsed, int64_t steps_done, int64_t tokens) {
    if (collective_.rank() != 0) return;
    ProgressLine line;
    line.stage = context_.stage_name();
    line.step = step_;
    line.total_steps = data_.total_steps;
    for (const Metric& m : logged)
      if (m.name == "loss") line.loss = m.value;
    line.shown = select_metrics(logged, algorithm_.progress_metrics());
    line.tokens_per_second = elapsed > 0 ? static_cast<double>(tokens) / elapsed : 0.0;
    line.eta_seconds = estimate_eta_seconds(elapsed, steps_done, data_.total_steps - step_);
    printer_.update(format_progress_line(line));
  }

  std::string checkpoint_path(int64_t step) const {
    return (fs::path(context_.stage_dir()) / checkpoint_dir_name(step)).string();
  }

  std::string last_checkpoint_description() const {
    auto committed = list_committed_checkpoints(context_.stage_dir());
    return committed.empty() ? "(none saved)" : committed.front().path;
  }

  // Every rank writes its own RNG state and data position, then rank 0 the
  // shared state and, after a barrier that confirms the ranks' files are
  // durable, the commit marker last. A failed collective throws out of here
  // before the marker, so a communication error never commits a checkpoint.
  void save_checkpoint() {
    const std::string dir = checkpoint_path(step_);
    collective_.barrier();
    if (collective_.rank() == 0) {
      fs::remove_all(dir);
      fs::create_directories(dir);
    }
    collective_.barrier();
    save_safetensors(rank_state_path(dir, collective_.rank()),
                     {{"rng.cpu", at::detail::getDefaultCPUGenerator().get_state()}},
                     {{"format", "pt"}, {"micro_batches", std::to_string(step_ * settings_.gradient_accumulation_steps)}});
    collective_.barrier();
    if (collective_.rank() == 0) {
      algorithm_.save(dir + "/model");
      save_safetensors(dir + "/optimizer.safetensors", optimizer_->state());
      nlohmann::json trainer_state = {
          {"step", step_},
          {"num_tokens", num_tokens_},
          {"skipped_steps", skipped_steps_},
          {"consecutive_bad_steps", consecutive_bad_},
          {"world_size", collective_.world_size()},
          {"stage_settings", fingerprint_},
          {"parameters", parameter_signature(parameters_)},
          {"log_window", window_.to_json()},
      };
      write_file_atomic(dir + "/trainer_state.json", trainer_state.dump(2));
      fsync_tree(dir + "/model");  // the algorithm's files, whoever wrote them
      write_commit_marker(dir, std::to_string(step_));
      context_.log("saved checkpoint " + dir);
      if (settings_.save_total_limit > 0) {
        auto committed = list_committed_checkpoints(context_.stage_dir());
        for (size_t i = static_cast<size_t>(settings_.save_total_limit); i < committed.size(); ++i)
          fs::remove_all(committed[i].path);
      }
    }
    collective_.barrier();
  }

  static std::string rank_state_path(const std::string& dir, int rank) {
    return dir + "/rng_state_" + std::to_string(rank) + ".safetensors";
  }

  void resume_if_possible() {
    const std::string& stage_dir = context_.stage_dir();
    if (collective_.rank() == 0)
      for (const CheckpointDir& partial : list_uncommitted_checkpoints(stage_dir)) {
        context_.log("removing unfinished checkpoint " + partial.path);
        fs::remove_all(partial.path);
      }
    collective_.barrier();
    auto committed = list_committed_checkpoints(stage_dir);
    if (committed.empty()) {
      if (context_.resume_required())
        throw ConfigError(stage_dir + ": --resume was given but there is no committed checkpoint here");
      return;
    }
    const std::string dir = committed.front().path;
    nlohmann::json state;
    try {
      std::ifstream in(dir + "/trainer_state.json");
      state = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      throw ConfigError(dir + "/trainer_state.json: unreadable (" + e.what() + ")");
    }
    if (state.value("stage_settings", "") != fingerprint_)
      throw ConfigError(dir + ": this checkpoint was saved by a stage with other settings (another pipeline?); "
                              "remove " + stage_dir + " or choose a new run.output_dir to start over");
    if (state.value("parameters", "") != parameter_signature(parameters_))
      throw ConfigError(dir + ": this checkpoint is for a model of another shape than stage " + context_.stage_name() +
                        " builds");
    const int saved_world = state.value("world_size", 1);
    if (saved_world != collective_.world_size()) {
      if (!settings_.allow_world_size_change)
        throw ConfigError(dir + ": saved by " + std::to_string(saved_world) + " process(es), resumed with " +
                          std::to_string(collective_.world_size()) + "; run with the same number or set " +
                          context_.settings().locate("allow_world_size_change") + " = true");
      context_.log("resuming a checkpoint of " + std::to_string(saved_world) + " process(es) with " +
                   std::to_string(collective_.world_size()) + " (allow_world_size_change)");
    }

    {
      // A parameter named "<folder>/<tensor>" belongs to a second model the
      // algorithm saves in that subfolder (PPO's value model beside the policy).
      std::map<std::string, SafetensorsCheckpoint> folders;
      at::NoGradGuard no_grad;
      for (NamedTensor& p : parameters_) {
        const size_t slash = p.name.find('/');
        const std::string folder = slash == std::string::npos ? "" : p.name.substr(0, slash);
        const std::string folder_path = dir + "/model" + (folder.empty() ? "" : "/" + folder);
        // A LoRA model saves its trainable tensors as a PEFT adapter, under
        // PEFT's prefix (docs/lora.md); a full model under their own names.
        const std::string adapter_file = folder_path + "/adapter_model.safetensors";
        const bool adapter = fs::exists(adapter_file);
        const std::string tensor = (adapter ? "base_model.model." : "") +
                                   (slash == std::string::npos ? p.name : p.name.substr(slash + 1));
        auto weights = folders.find(folder);
        if (weights == folders.end())
          weights = folders
                        .emplace(folder, adapter ? SafetensorsCheckpoint::open_file(adapter_file)
                                                 : SafetensorsCheckpoint::open_dir(folder_path))
                        .first;
        if (!weights->second.contains(tensor)) throw ConfigError(folder_path + ": no tensor '" + tensor + "'");
        p.tensor.copy_(weights->second.tensor(tensor));
      }
    }
    optimizer_->load_state(load_safetensors(dir + "/optimizer.safetensors"));
    // A rank the checkpoint had no process for continues from rank 0's RNG.
    const int rng_rank = collective_.rank() < saved_world ? collective_.rank() : 0;
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(load_safetensors(rank_state_path(dir, rng_rank)).at("rng.cpu"));
    step_ = state.at("step").get<int64_t>();
    num_tokens_ = state.at("num_tokens").get<int64_t>();
    skipped_steps_ = state.at("skipped_steps").get<int64_t>();
    consecutive_bad_ = state.at("consecutive_bad_steps").get<int64_t>();
    window_.from_json(state.at("log_window"));
    context_.log("resuming from " + dir + " (step " + std::to_string(step_) + ")");
  }

  // A data-producing stage (synthesize): no parameters, no optimizer, no
  // steps. Rank 0 writes the output folder as save_final writes a model (into
  // final.partial, renamed into place); the other ranks wait for it.
  TrainOutcome produce(DataProducer& producer) {
    bool finished = true;
    if (collective_.rank() == 0) {
      const fs::path final_dir = fs::path(context_.stage_dir()) / "final";
      const fs::path partial = fs::path(context_.stage_dir()) / "final.partial";
      fs::remove_all(partial);
      fs::create_directories(partial);
      finished = producer.produce(partial.string());
      if (finished) {
        fsync_tree(partial.string());
        fs::remove_all(final_dir);
        fs::rename(partial, final_dir);
        fsync_directory(context_.stage_dir());
        context_.log("saved " + final_dir.string());
      } else {
        fs::remove_all(partial);
      }
    }
    // Every rank learns whether rank 0 was stopped.
    const bool stopped = collective_.any(!finished);
    collective_.barrier();
    return stopped ? TrainOutcome::Preempted : TrainOutcome::Completed;
  }

  void save_final() {
    collective_.barrier();
    if (collective_.rank() == 0) {
      const fs::path final_dir = fs::path(context_.stage_dir()) / "final";
      const fs::path partial = fs::path(context_.stage_dir()) / "final.partial";
      fs::remove_all(partial);
      algorithm_.save(partial.string());
      fsync_tree(partial.string());
      fs::remove_all(final_dir);
      fs::rename(partial, final_dir);
      fsync_directory(context_.stage_dir());
      context_.log("saved " + final_dir.string());
    }
    collective_.barrier();
  }

  Algorithm& algorithm_;
  StageContext& context_;
  TrainEnv env_;
  Collective& collective_;
  TrainerSettings settings_;
  DataSchedule data_;
  std::vector<NamedTensor> parameters_;
  std::unique_ptr<AdamW> optimizer_;
  std::string fingerprint_;
  MetricWindow window_;
  ProgressPrinter printer_;
  int64_t step_ = 0;
  int64_t num_tokens_ = 0;
  int64_t skipped_steps_ = 0;
  int64_t consecutive_bad_ = 0;
};

}  // namespace

TrainOutcome run_training(Algorithm& algorithm, StageContext& context, const TrainEnv& env, Collective& collective) {
  Loop loop(algorithm, context, env, collective);
  return loop.run();
}

}  // namespace alignkit::core
