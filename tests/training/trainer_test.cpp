// The shared training loop's parts: AdamW against LibTorch's own, the LR
// schedules, data order and sharding, gradient accumulation, clipping, and
// non-finite step skipping with max_bad_steps, driven in-process by a
// least-squares "algorithm" and a fake StageContext.
#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "alignkit/core/atomic_file.hpp"
#include "alignkit/core/config_check.hpp"
#include "alignkit/core/optim.hpp"
#include "alignkit/core/safetensors.hpp"
#include "alignkit/core/trainer.hpp"
#include "test_support.hpp"

using namespace alignkit;
namespace fs = std::filesystem;

namespace {

// y = 2x - 1 on fixed points; NaN loss on the steps listed in `poison`.
class LineFit : public Algorithm {
 public:
  explicit LineFit(std::set<int64_t> poison = {}) : poison_(std::move(poison)) {}
  void setup(StageContext&, const TrainEnv&) override {
    weight_ = at::zeros({2}, at::kFloat).requires_grad_(true);
    xs_ = at::linspace(-1, 1, 16);
  }
  std::vector<NamedTensor> trainable_parameters() override { return {{"line.weight", weight_}}; }
  int64_t num_examples(Split split) const override { return split == Split::Train ? 16 : 4; }
  StepOutput step(const std::vector<int64_t>& indices, Split split) override {
    at::Tensor x = xs_.index_select(0, at::tensor(indices, at::kLong));
    if (split == Split::Eval) x = x + 0.05;
    at::Tensor prediction = weight_[0] * x + weight_[1];
    at::Tensor loss = (prediction - (2 * x - 1)).pow(2).mean();
    if (split == Split::Train && poison_.count(calls_++)) loss = loss * std::nan("");
    return {loss, {{"fit/slope", weight_[0].item<double>()}}, static_cast<int64_t>(indices.size())};
  }
  void set_training(bool) override {}
  std::vector<std::string> progress_metrics() const override { return {"fit/slope"}; }
  void save(const std::string& dir) override {
    fs::create_directories(dir);
    core::save_safetensors(dir + "/model.safetensors", {{"line.weight", weight_.detach()}});
  }
  at::Tensor weight() const { return weight_; }

 private:
  std::set<int64_t> poison_;
  int64_t calls_ = 0;  // micro-batches seen in training
  at::Tensor weight_, xs_;
};

class FakeContext : public StageContext {
 public:
  FakeContext(const std::string& dir, const std::vector<std::pair<std::string, ConfigValue>>& overrides) : dir_(dir) {
    table_ = ConfigValue::empty_table();
    for (const auto& [key, value] : overrides) table_.set(key, value);
    table_.set("seed", ConfigValue::of_int(7));
    std::vector<SettingSpec> specs = core::trainer_setting_specs();
    specs.push_back(setting::integer("seed", 0, "seed"));
    std::vector<core::Diagnostic> problems;
    core::check_table(table_, "stages.t", specs, problems);
    REQUIRE(core::join(problems) == "");
    view_ = ConfigView(&table_, "stages.t");
  }
  const std::string& stage_name() const override { return name_; }
  const std::string& stage_dir() const override { return dir_; }
  const ConfigView& settings() const override { return view_; }
  std::string model_dir(const std::string&) const override { return ""; }
  std::shared_ptr<CausalLM> load_model(const std::string&, const ModelOptions&) override { return nullptr; }
  std::unique_ptr<Tokenizer> load_tokenizer(const std::string&) override { return nullptr; }
  std::unique_ptr<Dataset> load_dataset(const ConfigView&, const std::string&, const Tokenizer*) override { return nullptr; }
  void log_metrics(int64_t step, Split split, const Metrics& metrics) override { logged.push_back({step, split, metrics}); }
  void log(const std::string&) override {}
  bool stop_requested() const override { return false; }
  bool resume_required() const override { return false; }
  Registry& registry() override { throw std::logic_error("not in this test"); }

  struct Logged {
    int64_t step;
    Split split;
    Metrics metrics;
  };
  std::vector<Logged> logged;

  double metric(const Logged& line, const std::string& name) const {
    for (const Metric& m : line.metrics)
      if (m.name == name) return m.value;
    FAIL("no metric " << name);
    return 0;
  }

 private:
  std::string name_ = "t";
  std::string dir_;
  ConfigValue table_;
  ConfigView view_;
};

// An online LineFit: each rollout "generates" targets for the step's prompts
// and plans two updates over the rollout rows, the second on the rows in
// reverse order, as a PPO epoch over minibatches would.
class OnlineLineFit : public LineFit, public OnlineAlgorithm {
 public:
  OnlineAlgorithm* online() override { return this; }
  Rollout collect(const std::vector<int64_t>& prompt_indices) override {
    CHECK_FALSE(at::GradMode::is_enabled());
    prompts_ = prompt_indices;
    collected.push_back(prompt_indices);
    std::vector<int64_t> rows(prompt_indices.size()), reversed;
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
    reversed.assign(rows.rbegin(), rows.rend());
    return {{{rows}, {reversed}}, {{"rollout/prompts", static_cast<double>(rows.size())}}, 3};
  }
  StepOutput learn(const std::vector<int64_t>& rows) override {
    CHECK(at::GradMode::is_enabled());
    std::vector<int64_t> indices;
    for (int64_t row : rows) indices.push_back(prompts_.at(static_cast<size_t>(row)));
    ++updates_seen;
    return step(indices, Split::Train);
  }
  std::vector<std::vector<int64_t>> collected;
  int updates_seen = 0;

 private:
  std::vector<int64_t> prompts_;
};

ConfigValue num(double v) { return ConfigValue::of_float(v); }
ConfigValue integer(int64_t v) { return ConfigValue::of_int(v); }

}  // namespace

TEST_CASE("AdamW matches LibTorch's torch::optim::AdamW, with decay skipped on biases and norms") {
  at::manual_seed(0);
  at::Tensor w_ours = at::randn({4, 3}).requires_grad_(true);
  at::Tensor b_ours = at::randn({4}).requires_grad_(true);
  at::Tensor w_ref = w_ours.detach().clone().requires_grad_(true);
  at::Tensor b_ref = b_ours.detach().clone().requires_grad_(true);
  core::AdamWOptions options;
  options.learning_rate = 0.01;
  options.weight_decay = 0.1;
  core::AdamW ours({{"layer.weight", w_ours}, {"layer.bias", b_ours}}, options);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{w_ref}, std::make_unique<torch::optim::AdamWOptions>(
                                                          torch::optim::AdamWOptions(0.01).weight_decay(0.1)));
  groups.emplace_back(std::vector<at::Tensor>{b_ref}, std::make_unique<torch::optim::AdamWOptions>(
                                                          torch::optim::AdamWOptions(0.01).weight_decay(0.0)));
  torch::optim::AdamW reference(std::move(groups));
  at::Tensor x = at::randn({5, 3});
  for (int step = 0; step < 5; ++step) {
    ours.zero_grad();
    reference.zero_grad();
    (x.matmul(w_ours.t()) + b_ours).pow(2).sum().backward();
    (x.matmul(w_ref.t()) + b_ref).pow(2).sum().backward();
    ours.step();
    reference.step();
  }
  CHECK(at::allclose(w_ours, w_ref, 1e-6, 1e-7));
  CHECK(at::allclose(b_ours, b_ref, 1e-6, 1e-7));
  CHECK(core::skips_weight_decay("model.norm.weight", at::ones({4, 4})));
  CHECK_FALSE(core::skips_weight_decay("model.layers.0.mlp.up_proj.weight", at::ones({4, 4})));
}

TEST_CASE("AdamW state round-trips, so a restored optimizer continues identically") {
  at::Tensor a = at::ones({3}).requires_grad_(true);
  core::AdamW first({{"a", a}}, {});
  a.mutable_grad() = at::full({3}, 0.5);
  first.step();
  std::map<std::string, at::Tensor> saved;
  for (auto& [name, tensor] : first.state()) saved[name] = tensor.clone();
  at::Tensor b = a.detach().clone().requires_grad_(true);
  core::AdamW second({{"a", b}}, {});
  second.load_state(saved);
  a.mutable_grad() = at::full({3}, -0.25);
  b.mutable_grad() = at::full({3}, -0.25);
  first.step();
  second.step();
  CHECK(at::equal(a, b));
  saved.erase("exp_avg.a");
  CHECK_THROWS_WITH(second.load_state(saved), "optimizer state has no 'exp_avg.a'");
}

TEST_CASE("learning-rate schedules: warmup ramp, then constant, linear or half-cosine to zero") {
  using core::LrSchedule;
  CHECK(core::lr_multiplier(LrSchedule::Linear, 0, 2, 10) == 0.0);
  CHECK(core::lr_multiplier(LrSchedule::Linear, 1, 2, 10) == 0.5);
  CHECK(core::lr_multiplier(LrSchedule::Linear, 2, 2, 10) == 1.0);
  CHECK(core::lr_multiplier(LrSchedule::Linear, 6, 2, 10) == doctest::Approx(0.5));
  CHECK(core::lr_multiplier(LrSchedule::Constant, 9, 2, 10) == 1.0);
  CHECK(core::lr_multiplier(LrSchedule::Cosine, 6, 2, 10) == doctest::Approx(0.5));
  CHECK(core::lr_multiplier(LrSchedule::Cosine, 2, 2, 10) == doctest::Approx(1.0));
  CHECK(core::lr_multiplier(LrSchedule::Cosine, 10, 2, 10) == doctest::Approx(0.0));
  CHECK_THROWS_AS(core::parse_lr_schedule("polynomial"), std::invalid_argument);
}

TEST_CASE("data order: each epoch covers every example once, depends only on the seed, and ranks are disjoint") {
  core::TrainerSettings settings;
  settings.per_device_train_batch_size = 3;
  settings.gradient_accumulation_steps = 2;
  settings.num_train_epochs = 2;
  core::DataSchedule one = core::DataSchedule::make(10, settings, 1);
  CHECK(one.micro_batches_per_epoch == 4);
  CHECK(one.steps_per_epoch == 2);
  CHECK(one.total_steps == 4);
  std::multiset<int64_t> epoch0;
  for (int64_t m = 0; m < 4; ++m)
    for (int64_t i : one.micro_batch(m, 0, 5, true)) epoch0.insert(i);
  CHECK(epoch0 == std::multiset<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(one.micro_batch(0, 0, 5, true) == one.micro_batch(0, 0, 5, true));
  CHECK(one.micro_batch(0, 0, 5, true) != one.micro_batch(4, 0, 5, true));  // the next epoch reshuffles
  CHECK(one.micro_batch(1, 0, 5, false) == std::vector<int64_t>{3, 4, 5});
  CHECK(one.micro_batch(3, 0, 5, false) == std::vector<int64_t>{9});  // a short last micro-batch

  core::DataSchedule two = core::DataSchedule::make(10, settings, 2);
  std::set<int64_t> rank0, rank1;
  for (int64_t m = 0; m < two.micro_batches_per_epoch; ++m) {
    for (int64_t i : two.micro_batch(m, 0, 5, true)) rank0.insert(i);
    for (int64_t i : two.micro_batch(m, 1, 5, true)) rank1.insert(i);
  }
  CHECK(rank0.size() + rank1.size() >= 10);
  std::set<int64_t> all(rank0);
  all.insert(rank1.begin(), rank1.end());
  CHECK(all.size() == 10);
}

TEST_CASE("the loop learns, logs the first step, clips, and writes final/") {
  alignkit::test::TempDir dir;
  FakeContext context(dir.path().string(), {{"learning_rate", num(0.1)},
                                            {"per_device_train_batch_size", integer(4)},
                                            {"max_steps", integer(60)},
                                            {"logging_steps", integer(20)},
                                            {"lr_scheduler_type", ConfigValue::of_string("constant")},
                                            {"max_grad_norm", num(0.5)}});
  LineFit algorithm;
  core::Collective single;
  CHECK(core::run_training(algorithm, context, TrainEnv{}, single) == TrainOutcome::Completed);
  std::vector<FakeContext::Logged> train, eval;
  for (const auto& line : context.logged) (line.split == Split::Train ? train : eval).push_back(line);
  REQUIRE(train.size() == 4);  // steps 1, 20, 40, 60
  CHECK(train[0].step == 1);
  CHECK(train[3].step == 60);
  CHECK(context.metric(train[3], "loss") < context.metric(train[0], "loss") / 100);
  CHECK(context.metric(train[0], "grad_norm") > 0.5);  // logged before clipping
  CHECK(context.metric(train[3], "num_tokens") == 240);
  REQUIRE(eval.size() == 1);  // the evaluation at the end
  CHECK(algorithm.weight()[0].item<double>() == doctest::Approx(2.0).epsilon(0.02));
  CHECK(fs::exists(dir / "final/model.safetensors"));
}

TEST_CASE("online algorithms: one rollout per step from the step's prompts, then each planned update") {
  alignkit::test::TempDir dir;
  FakeContext context(dir.path().string(), {{"learning_rate", num(0.1)},
                                            {"per_device_train_batch_size", integer(2)},
                                            {"gradient_accumulation_steps", integer(2)},
                                            {"max_steps", integer(60)},
                                            {"logging_steps", integer(60)},
                                            {"lr_scheduler_type", ConfigValue::of_string("constant")}});
  OnlineLineFit algorithm;
  core::Collective single;
  CHECK(core::run_training(algorithm, context, TrainEnv{}, single) == TrainOutcome::Completed);
  REQUIRE(algorithm.collected.size() == 60);
  CHECK(algorithm.updates_seen == 120);          // two updates of one micro-batch each
  CHECK(algorithm.collected[0].size() == 4);     // batch 2 x accumulation 2 prompts
  std::set<int64_t> first_epoch;                 // 16 prompts = 4 steps an epoch
  for (size_t k = 0; k < 4; ++k) first_epoch.insert(algorithm.collected[k].begin(), algorithm.collected[k].end());
  CHECK(first_epoch.size() == 16);
  const FakeContext::Logged& last = context.logged.front();
  CHECK(last.step == 1);
  CHECK(context.metric(last, "rollout/prompts") == 4);
  CHECK(context.metric(last, "num_tokens") == 3 + 8);  // generated + learned on
  CHECK(algorithm.weight()[0].item<double>() == doctest::Approx(2.0).epsilon(0.02));
}

TEST_CASE("gradient accumulation: 2 micro-batches of 2 update like one batch of 4") {
  alignkit::test::TempDir a_dir, b_dir;
  auto run = [](const std::string& dir, int64_t batch, int64_t accumulation) {
    FakeContext context(dir, {{"learning_rate", num(0.05)},
                              {"per_device_train_batch_size", integer(batch)},
                              {"gradient_accumulation_steps", integer(accumulation)},
                              {"max_steps", integer(3)},
                              {"shuffle", ConfigValue::of_bool(false)}});
    LineFit algorithm;
    core::Collective single;
    core::run_training(algorithm, context, TrainEnv{}, single);
    return algorithm.weight().detach().clone();
  };
  CHECK(at::allclose(run(a_dir.path().string(), 2, 2), run(b_dir.path().string(), 4, 1), 1e-6, 1e-7));
}

TEST_CASE("non-finite steps are skipped and counted; max_bad_steps in a row stops the run") {
  alignkit::test::TempDir dir;
  {
    FakeContext context(dir.path().string(), {{"learning_rate", num(0.1)},
                                              {"per_device_train_batch_size", integer(4)},
                                              {"max_steps", integer(10)},
                                              {"logging_steps", integer(10)}});
    LineFit algorithm({2, 5});
    core::Collective single;
    CHECK(core::run_training(algorithm, context, TrainEnv{}, single) == TrainOutcome::Completed);
    CHECK(std::isfinite(algorithm.weight()[0].item<double>()));
    const auto& last = context.logged[context.logged.size() - 2];  // the final train line, before eval
    CHECK(last.step == 10);
    CHECK(context.metric(last, "skipped_steps") == 2);
    CHECK(std::isfinite(context.metric(last, "loss")));  // skipped steps stay out of the averages
  }
  alignkit::test::TempDir second;
  FakeContext context(second.path().string(), {{"per_device_train_batch_size", integer(4)},
                                               {"max_steps", integer(10)},
                                               {"max_bad_steps", integer(3)}});
  LineFit algorithm({3, 4, 5});
  core::Collective single;
  CHECK_THROWS_WITH(core::run_training(algorithm, context, TrainEnv{}, single),
                    doctest::Contains("3 non-finite steps in a row (max_bad_steps); stopping"));
}

TEST_CASE("checkpoints commit last; --resume without one and a checkpoint of other settings are refused") {
  alignkit::test::TempDir dir;
  std::vector<std::pair<std::string, ConfigValue>> settings = {{"learning_rate", num(0.1)},
                                                               {"per_device_train_batch_size", integer(4)},
                                                               {"max_steps", integer(6)},
                                                               {"save_steps", integer(2)},
                                                               {"save_total_limit", integer(2)}};
  {
    FakeContext context(dir.path().string(), settings);
    LineFit algorithm;
    core::Collective single;
    core::run_training(algorithm, context, TrainEnv{}, single);
  }
  auto committed = core::list_committed_checkpoints(dir.path().string());
  REQUIRE(committed.size() == 2);  // save_total_limit
  CHECK(committed[0].step == 4);
  CHECK(fs::exists(committed[0].path + "/model/model.safetensors"));
  CHECK(fs::exists(committed[0].path + "/optimizer.safetensors"));

  settings[0].second = num(0.2);
  FakeContext changed(dir.path().string(), settings);
  LineFit algorithm;
  core::Collective single;
  CHECK_THROWS_WITH_AS(core::run_training(algorithm, changed, TrainEnv{}, single),
                       doctest::Contains("saved by a stage with other settings"), ConfigError);
}
