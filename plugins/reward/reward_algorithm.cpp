// The `reward` algorithm plugin: TRL's RewardTrainer. The stage's model is
// loaded with a scalar `score` head (initialised when the checkpoint is a
// causal LM, as TRL does from a base model); one forward scores prompt +
// chosen and prompt + rejected rows, a sequence's reward is the head's value
// at its last real token, and reward_loss.hpp turns the pairs into the
// Bradley-Terry loss. The result is saved as a *ForSequenceClassification
// folder that `alignkit score` and a later `reward_model` role read.
#include <ATen/TensorOperators.h>
#include <ATen/ops/tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/batch.hpp"
#include "alignkit/plugin.hpp"
#include "alignkit/training.hpp"
#include "recipe_support.hpp"
#include "reward_loss.hpp"

namespace alignkit::reward {
namespace {

std::vector<SettingSpec> reward_settings() {
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 1e-4, "peak learning rate of AdamW (TRL's RewardConfig default)", 0.0),
      setting::number("center_rewards_coefficient", 0.0,
                      "weight of mean((r_chosen + r_rejected)^2), which pulls rewards towards zero mean "
                      "(0: off, TRL's None; 0.01 recommended)",
                      0.0),
  };
  for (SettingSpec& spec : recipe::truncation_settings(1024)) settings.push_back(std::move(spec));
  return settings;
}

class RewardAlgorithm : public Algorithm {
 public:
  void setup(StageContext& context, const TrainEnv& env) override {
    context_ = &context;
    env_ = env;
    const ConfigView& settings = context.settings();
    if (!context.model_dir("reward_model").empty())
      throw ConfigError(settings.locate("reward_model") +
                        ": the reward algorithm trains a reward model from `model` and scores with none; "
                        "remove reward_model (it is for algorithms that score with a trained reward model)");
    center_rewards_coefficient_ = settings.get_float("center_rewards_coefficient");

    model_dir_ = recipe::require_model_dir(context, "model");
    tokenizer_ = recipe::load_tokenizer(context, "model", model_dir_);
    model_ = load_scalar_model(context, env);
    const ModelInfo& info = model_->info();
    collate_ = recipe::collate_options(settings, recipe::choose_pad_id(tokenizer_.get(), info, model_dir_),
                                       LossOn::Completion);

    recipe::DataRequirements requirements;
    requirements.algorithm = "reward";
    requirements.kinds = {DataKind::Preference};
    requirements.fields = "prompt, chosen, rejected, optional margin";
    requirements.vocab_size = info.vocab_size;
    requirements.truncation = collate_;
    requirements.rows_include_rejected = true;
    data_ = recipe::load_stage_data(context, tokenizer_.get(), env.seed, requirements);
  }

  std::vector<NamedTensor> trainable_parameters() override { return model_->trainable_parameters(); }

  int64_t num_examples(Split split) const override { return split_data(split).size(); }

  StepOutput step(const std::vector<int64_t>& indices, Split split) override {
    return recipe::guarded("reward step", [&] {
      const std::vector<const Example*> examples = split_data(split).examples(indices);
      const Batch batch = collate_preference(examples, collate_).to(env_.device);
      const int64_t pairs = batch.rows() / 2;
      at::Tensor values = model_->head_values(batch.input_ids, batch.attention_mask, batch.position_ids);  // (2B, T)
      at::Tensor last = at::tensor(batch.lengths, at::kLong).sub(1).to(env_.device).unsqueeze(1);       // (2B, 1)
      at::Tensor rewards = values.gather(1, last).squeeze(1).to(at::kFloat);                             // (2B)
      std::vector<double> margins;  // 0 where a record has no margin field
      for (const Example* example : examples) margins.push_back(example->margin);
      at::Tensor margin = at::tensor(margins, at::kDouble).to(env_.device);  // (B)
      RewardLossOutput loss = reward_loss(rewards.slice(0, 0, pairs), rewards.slice(0, pairs), margin,
                                          center_rewards_coefficient_);
      StepOutput out;
      out.loss = loss.loss;
      out.metrics = std::move(loss.metrics);
      out.num_tokens = batch.attention_mask.sum().item<int64_t>();
      return out;
    });
  }

  void set_training(bool training) override { model_->set_training(training); }

  std::vector<std::string> progress_metrics() const override { return {"accuracy", "margin"}; }

  void save(const std::string& dir) override {
    recipe::guarded("reward save", [&] { recipe::save_model_folder(*context_, *model_, model_dir_, dir); });
  }

 private:
  const recipe::SplitData& split_data(Split split) const { return split == Split::Train ? data_.train : data_.eval; }

  // The model with a scalar head; a load failure becomes a ConfigError at the `model` key.
  std::shared_ptr<CausalLM> load_scalar_model(StageContext& context, const TrainEnv& env) {
    ModelOptions options;
    options.dtype = env.dtype;
    options.device = env.device;
    options.head = HeadKind::Scalar;
    recipe::apply_stage_model_settings(context, env, options);
    try {
      return context.load_model(model_dir_, options);
    } catch (const ConfigError&) {
      throw;
    } catch (const std::exception& e) {
      throw ConfigError(context.settings().locate("model") + ": " + e.what());
    }
  }

  StageContext* context_ = nullptr;
  TrainEnv env_;
  double center_rewards_coefficient_ = 0.0;
  std::string model_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<CausalLM> model_;
  CollateOptions collate_;
  recipe::StageData data_;
};

struct RewardProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<RewardAlgorithm>(); }
};

void register_reward(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "reward", ALIGNKIT_VERSION_STRING,
                          "reward-model training: a scalar head and the Bradley-Terry loss (TRL's RewardTrainer)",
                          reward_settings()},
                         std::make_shared<RewardProvider>());
}

}  // namespace
}  // namespace alignkit::reward

ALIGNKIT_PLUGIN("reward", ALIGNKIT_VERSION_STRING, "reward-model training on preference pairs (Bradley-Terry loss)",
                alignkit::reward::register_reward)
