// The `ppo` algorithm plugin: TRL's PPOTrainer on the shared online loop.
// Models: the policy (`model`, trained), a frozen reference (`reference`,
// default: the policy's starting point), a value model trained beside the
// policy (a scalar head at every position, as TRL's AutoModelForSequence-
// Classification critic, initialised from `value_model`, else the reward
// model, else the policy) and the rewards (`[[stages.X.rewards]]`, or the
// stage's `reward_model` alone). Each step: sample completions for the step's
// prompts, score them, per-token KL to the reference, GAE and whitened
// advantages (ppo_math.hpp), then num_ppo_epochs passes of num_mini_batches
// clipped policy + value updates over the rollout.
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/plugin.hpp"
#include "alignkit/registry.hpp"
#include "alignkit/training.hpp"
#include "ppo_math.hpp"
#include "recipe_support.hpp"
#include "reward_model_check.hpp"
#include "reward_set.hpp"
#include "rl_math.hpp"
#include "rollout.hpp"
#include "stage_context_overlay.hpp"

namespace alignkit::ppo {
namespace {

// Prefix of the value model's parameters: the trainer reads them back from
// this subfolder of a checkpoint's model folder.
const std::string kValueFolder = "value_model";

std::vector<SettingSpec> ppo_settings() {
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 3e-6, "peak learning rate of AdamW (TRL's PPOConfig default)", 0.0),
      setting::integer("response_length", 53, "longest sampled completion in tokens", 1),
      setting::number("temperature", 0.7, "sampling temperature of the rollouts (log-probs use the same)", 0.0),
      setting::integer("max_prompt_length", 0, "keep the end of longer prompts (0: no limit)", 0),
      setting::text("kl_estimator", "k1", "per-token KL to the reference: k1 (log-ratio) or k3 (low variance)",
                    {"k1", "k3"}),
      setting::number("kl_coef", 0.05, "weight of the KL penalty in the per-token reward", 0.0),
      setting::number("missing_eos_penalty", 0.0,
                      "subtracted from the score of a completion that ends without EOS (0: off, TRL's None)", 0.0),
      setting::number("gamma", 1.0, "discount factor of GAE", 0.0),
      setting::number("lam", 0.95, "lambda of GAE", 0.0),
      setting::integer("num_ppo_epochs", 4, "passes over each rollout", 1),
      setting::integer("num_mini_batches", 1, "optimizer updates per pass over a rollout", 1),
      setting::number("cliprange", 0.2, "clip range of the policy ratio", 0.0),
      setting::number("cliprange_value", 0.2, "how far value predictions may move from the rollout's values", 0.0),
      setting::number("vf_coef", 0.1, "weight of the value loss", 0.0),
      online::rewards_setting("the rewards: [[stages.X.rewards]] tables (name = a reward plugin, weight); "
                              "default: the stage's reward_model alone"),
  };
  return settings;
}

// The rollout buffer: one row per completion, tensors (N, C) over its tokens.
struct Buffer {
  online::RolloutBatch batch;
  at::Tensor logps;       // (N, C) under the policy that sampled
  at::Tensor values;      // (N, C) of the value model
  at::Tensor advantages;  // (N, C) whitened
  at::Tensor returns;     // (N, C)
  at::Tensor mask;        // (N, C) bool: completion tokens
};

class PpoAlgorithm : public Algorithm, public OnlineAlgorithm {
 public:
  void setup(StageContext& context, const TrainEnv& env) override {
    context_ = &context;
    const ConfigView& settings = context.settings();
    read_settings(settings);

    policy_dir_ = recipe::require_model_dir(context, "model");
    tokenizer_ = recipe::load_tokenizer(context, "model", policy_dir_);
    policy_ = recipe::load_model(context, "model", policy_dir_, env);
    const ModelInfo& info = policy_->info();
    pad_id_ = recipe::choose_pad_id(tokenizer_.get(), info, policy_dir_);
    eos_id_ = tokenizer_ && tokenizer_->eos_id() >= 0 ? tokenizer_->eos_id() : info.eos_token_id;
    if (eos_id_ < 0)
      throw ConfigError(settings.locate("model") + ": " + policy_dir_ +
                        " names no EOS token (tokenizer or config.json eos_token_id); PPO needs one to end completions");
    const std::string reference_dir =
        context.model_dir("reference").empty() ? policy_dir_ : context.model_dir("reference");
    reference_ = recipe::load_reference(context, "reference", reference_dir, env, policy_, policy_dir_);

    create_rewards(context);
    value_ = load_value_model(context, env);

    recipe::DataRequirements requirements;
    requirements.algorithm = "PPO";
    requirements.kinds = {DataKind::PromptOnly, DataKind::PromptCompletion, DataKind::Preference};
    requirements.fields = "prompt (completions, if any, are not used)";
    requirements.vocab_size = info.vocab_size;
    requirements.truncation.max_length = 0;
    data_ = recipe::load_stage_data(context, tokenizer_.get(), env.seed, requirements);

    const int64_t prompts_per_step =
        settings.get_int("per_device_train_batch_size") * settings.get_int("gradient_accumulation_steps");
    micro_batch_ = settings.get_int("per_device_train_batch_size");
    if (prompts_per_step % num_mini_batches_ != 0)
      throw ConfigError(settings.locate("num_mini_batches") + ": " + std::to_string(num_mini_batches_) +
                        " mini-batches do not divide the " + std::to_string(prompts_per_step) +
                        " prompts of a step (per_device_train_batch_size x gradient_accumulation_steps)");
  }

  std::vector<NamedTensor> trainable_parameters() override {
    std::vector<NamedTensor> parameters = policy_->trainable_parameters();
    for (NamedTensor& p : value_->named_parameters()) parameters.push_back({kValueFolder + "/" + p.name, p.tensor});
    return parameters;
  }

  int64_t num_examples(Split split) const override {
    return split == Split::Train ? data_.train.size() : data_.eval.size();
  }

  // Evaluation: greedy completions of held-out prompts, scored.
  StepOutput step(const std::vector<int64_t>& indices, Split split) override {
    if (split == Split::Train) throw std::logic_error("ppo learns from rollouts (online()), not from step()");
    return recipe::guarded("ppo evaluation", [&] {
      const std::vector<const Example*> prompts = data_.eval.examples(indices);
      online::RolloutSettings rollout = rollout_settings(/*sample=*/false);
      const online::RolloutBatch batch = online::generate_rollout(*policy_, tokenizer_.get(), prompts, rollout);
      const online::RewardScores scores = rewards_.score(online::reward_inputs(batch, prompts, tokenizer_.get()));
      const at::Tensor total = scores.total.to(at::kDouble);  // (N)
      StepOutput out;
      out.loss = -total.mean();  // lower is better, as for every other algorithm's eval loss
      out.metrics = {{"objective/scores", total.mean().item<double>()},
                     {"val/num_eos_tokens", eos_count(batch)}};
      for (Metric& m : scores.metrics()) out.metrics.push_back(std::move(m));
      out.num_tokens = batch.completion_mask.sum().item<int64_t>();
      return out;
    });
  }

  void set_training(bool training) override {
    policy_->set_training(training);
    value_->set_training(training);
  }

  std::vector<std::string> progress_metrics() const override { return {"objective/scores", "objective/kl"}; }

  void save(const std::string& dir) override {
    recipe::guarded("ppo save", [&] {
      recipe::save_model_folder(*context_, *policy_, policy_dir_, dir);
      value_->save(dir + "/" + kValueFolder);
    });
  }

  OnlineAlgorithm* online() override { return this; }

  Rollout collect(const std::vector<int64_t>& prompt_indices) override {
    return recipe::guarded("ppo rollout", [&] { return collect_rollout(prompt_indices); });
  }

  StepOutput learn(const std::vector<int64_t>& rows) override {
    return recipe::guarded("ppo update", [&] { return learn_rows(rows); });
  }

 private:
  void read_settings(const ConfigView& settings) {
    response_length_ = settings.get_int("response_length");
    temperature_ = settings.get_float("temperature");
    if (temperature_ <= 0)
      throw ConfigError(settings.locate("temperature") + ": must be > 0 (PPO samples its completions)");
    max_prompt_length_ = settings.get_int("max_prompt_length");
    estimator_ = online::parse_kl_estimator(settings.get_string("kl_estimator"));
    kl_coef_ = settings.get_float("kl_coef");
    missing_eos_penalty_ = settings.get_float("missing_eos_penalty");
    gamma_ = settings.get_float("gamma");
    lam_ = settings.get_float("lam");
    num_ppo_epochs_ = settings.get_int("num_ppo_epochs");
    num_mini_batches_ = settings.get_int("num_mini_batches");
    loss_settings_.cliprange = settings.get_float("cliprange");
    loss_settings_.cliprange_value = settings.get_float("cliprange_value");
    loss_settings_.vf_coef = settings.get_float("vf_coef");
  }

  // The stage's [[rewards]]; without them, the reward_model reward on the
  // stage's reward_model; without that either, a ConfigError.
  void create_rewards(StageContext& context) {
    const ConfigView& settings = context.settings();
    rewards_ = online::RewardSet::create(context, "rewards", /*required=*/false);
    if (!rewards_.empty()) return;
    if (context.model_dir("reward_model").empty())
      throw ConfigError(settings.locate("rewards") +
                        ": a PPO stage needs a reward: set reward_model (a trained reward model, e.g. "
                        "\"stages.reward.output\") or add [[" + settings.path() +
                        ".rewards]] tables naming reward plugins");
    ConfigValue table = *settings.node();
    ConfigValue reward = ConfigValue::empty_table();
    reward.set("name", ConfigValue::of_string("reward_model"));
    reward.where = settings.where();
    table.set("rewards", ConfigValue::of_array({reward}));
    implicit_reward_context_ = std::make_unique<StageContextOverlay>(context, std::move(table), settings.path());
    rewards_ = online::RewardSet::create(*implicit_reward_context_, "rewards", /*required=*/true);
  }

  // A scalar head at every position on the value_model, reward_model or
  // policy folder (the first the stage names); the head is initialised when
  // the folder is a causal LM.
  std::shared_ptr<CausalLM> load_value_model(StageContext& context, const TrainEnv& env) {
    std::string role = "value_model";
    if (context.model_dir(role).empty()) role = context.model_dir("reward_model").empty() ? "model" : "reward_model";
    const std::string dir = role == "reward_model" ? reward::checked_reward_model_dir(context) : context.model_dir(role);
    ModelOptions options;
    options.dtype = env.dtype;
    options.device = env.device;
    options.head = HeadKind::Scalar;
    std::shared_ptr<CausalLM> value;
    try {
      value = context.load_model(dir, options);
    } catch (const ConfigError&) {
      throw;
    } catch (const std::exception& e) {
      throw ConfigError(context.settings().locate(role) + ": the value model: " + e.what());
    }
    if (value->info().vocab_size != policy_->info().vocab_size)
      throw ConfigError(context.settings().locate(role) + ": the value model " + dir + " has a vocabulary of " +
                        std::to_string(value->info().vocab_size) + " tokens but the policy " + policy_dir_ + " has " +
                        std::to_string(policy_->info().vocab_size) + "; it reads the policy's tokens");
    context.log("value model from " + role + " (" + dir + ")");
    return value;
  }

  online::RolloutSettings rollout_settings(bool sample) const {
    online::RolloutSettings settings;
    settings.num_generations = 1;
    settings.max_prompt_length = max_prompt_length_;
    settings.pad_id = pad_id_;
    settings.generation.max_new_tokens = response_length_;
    settings.generation.do_sample = sample;
    settings.generation.temperature = sample ? temperature_ : 1.0;
    settings.generation.stop_token_ids = {eos_id_};
    settings.generation.pad_token_id = pad_id_;
    if (sample)  // from the global generator: a resumed run draws the same seeds
      settings.generation.seed = static_cast<uint64_t>(at::randint(0, int64_t{1} << 62, {1}, at::kLong).item<int64_t>());
    return settings;
  }

  double eos_count(const online::RolloutBatch& batch) const {
    double count = 0;
    for (bool truncated : batch.truncated) count += truncated ? 0.0 : 1.0;
    return count;
  }

  // The value model's prediction for each completion token: its head at the position before the token.
  at::Tensor completion_values(const online::RolloutBatch& batch) {
    const at::Tensor all = value_->head_values(batch.input_ids(), batch.attention_mask(), batch.position_ids());  // (N, P + C)
    return all.narrow(1, batch.prompt_width() - 1, batch.completion_width()).to(at::kFloat);                     // (N, C)
  }

  Rollout collect_rollout(const std::vector<int64_t>& prompt_indices) {
    const std::vector<const Example*> prompts = data_.train.examples(prompt_indices);
    Buffer buffer;
    buffer.batch = online::generate_rollout(*policy_, tokenizer_.get(), prompts, rollout_settings(/*sample=*/true));
    const online::RolloutBatch& batch = buffer.batch;
    buffer.mask = batch.completion_mask.to(at::kBool);  // (N, C)
    buffer.logps = online::completion_logprobs(*policy_, batch, temperature_, /*with_entropy=*/false).logps;  // (N, C)
    const at::Tensor ref_logps =
        online::completion_logprobs(*reference_, batch, temperature_, /*with_entropy=*/false).logps;  // (N, C)
    buffer.values = completion_values(batch).masked_fill(buffer.mask.logical_not(), 0.0);              // (N, C)

    const online::RewardScores scores = rewards_.score(online::reward_inputs(batch, prompts, tokenizer_.get()));
    std::vector<uint8_t> ended;
    for (bool truncated : batch.truncated) ended.push_back(truncated ? 0 : 1);
    const at::Tensor contains_eos = at::tensor(ended, at::kByte).to(at::kBool).to(buffer.mask.device());  // (N)
    const TokenRewards rewards =
        per_token_rewards(buffer.logps, ref_logps, buffer.mask, scores.total.to(buffer.logps.device()), contains_eos,
                          kl_coef_, estimator_, missing_eos_penalty_);
    const Advantages advantages = gae_advantages(rewards.rewards, buffer.values, buffer.mask, gamma_, lam_);
    buffer.advantages = advantages.advantages;
    buffer.returns = advantages.returns;

    Rollout rollout;
    const double non_score = rewards.non_score_reward.sum(1).mean().item<double>();
    const double mean_score = rewards.scores.mean().item<double>();
    rollout.metrics = {
        {"objective/kl", rewards.kl.sum(1).mean().item<double>()},
        {"objective/entropy", (-buffer.logps).masked_fill(buffer.mask.logical_not(), 0.0).sum(1).mean().item<double>()},
        {"objective/non_score_reward", non_score},
        {"objective/rlhf_reward", non_score + mean_score},
        {"objective/scores", mean_score},
        {"val/num_eos_tokens", eos_count(batch)},
    };
    for (Metric& m : scores.metrics()) rollout.metrics.push_back(std::move(m));
    rollout.num_tokens = batch.completion_mask.sum().item<int64_t>();
    rollout.updates = schedule_updates(batch.rows());
    buffer_ = std::move(buffer);
    return rollout;
  }

  // num_ppo_epochs passes, each over a fresh permutation of the rows cut into
  // num_mini_batches updates of micro-batches of per_device_train_batch_size rows.
  std::vector<Update> schedule_updates(int64_t rows) const {
    std::vector<Update> updates;
    for (int64_t epoch = 0; epoch < num_ppo_epochs_; ++epoch) {
      const at::Tensor order = at::randperm(rows, at::kLong);  // global generator: resumes alike
      const int64_t* index = order.data_ptr<int64_t>();
      for (int64_t m = 0; m < num_mini_batches_; ++m) {
        Update update;
        const int64_t begin = m * rows / num_mini_batches_;
        const int64_t end = (m + 1) * rows / num_mini_batches_;
        for (int64_t start = begin; start < end; start += micro_batch_)
          update.emplace_back(index + start, index + std::min(end, start + micro_batch_));
        if (!update.empty()) updates.push_back(std::move(update));
      }
    }
    return updates;
  }

  StepOutput learn_rows(const std::vector<int64_t>& rows) {
    const online::RolloutBatch batch = buffer_.batch.select(rows);
    const at::Tensor index = at::tensor(rows, at::kLong).to(buffer_.mask.device());
    const at::Tensor mask = buffer_.mask.index_select(0, index);  // (b, C)
    const online::CompletionScores current =
        online::completion_logprobs(*policy_, batch, temperature_, /*with_entropy=*/true);  // (b, C)
    const at::Tensor values = completion_values(batch);                                    // (b, C)
    PpoLossOutput loss =
        ppo_loss(current.logps, buffer_.logps.index_select(0, index), buffer_.advantages.index_select(0, index), values,
                 buffer_.values.index_select(0, index), buffer_.returns.index_select(0, index), mask, loss_settings_);
    StepOutput out;
    out.loss = loss.loss;
    out.metrics = std::move(loss.metrics);
    out.metrics.push_back({"policy/entropy_avg", online::masked_mean(current.entropy, mask).item<double>()});
    out.num_tokens = mask.sum().item<int64_t>();
    return out;
  }

  StageContext* context_ = nullptr;
  int64_t response_length_ = 53;
  double temperature_ = 0.7;
  int64_t max_prompt_length_ = 0;
  online::KlEstimator estimator_ = online::KlEstimator::K1;
  double kl_coef_ = 0.05;
  double missing_eos_penalty_ = 0.0;
  double gamma_ = 1.0;
  double lam_ = 0.95;
  int64_t num_ppo_epochs_ = 4;
  int64_t num_mini_batches_ = 1;
  int64_t micro_batch_ = 1;
  PpoLossSettings loss_settings_;

  std::string policy_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<CausalLM> policy_;
  std::shared_ptr<CausalLM> reference_;
  std::shared_ptr<CausalLM> value_;
  int32_t pad_id_ = 0;
  int64_t eos_id_ = -1;
  std::unique_ptr<StageContextOverlay> implicit_reward_context_;  // outlives rewards_, which logs through it
  online::RewardSet rewards_;
  recipe::StageData data_;
  Buffer buffer_;
};

struct PpoProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<PpoAlgorithm>(); }
};

void register_ppo(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "ppo", ALIGNKIT_VERSION_STRING,
                          "PPO against a reward (TRL's PPOTrainer): value model, GAE, clipped policy and value losses",
                          ppo_settings()},
                         std::make_shared<PpoProvider>());
}

}  // namespace
}  // namespace alignkit::ppo

ALIGNKIT_PLUGIN("ppo", ALIGNKIT_VERSION_STRING, "PPO: online RL against a reward model or reward functions",
                alignkit::ppo::register_ppo)
