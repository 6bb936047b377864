// The `sft` algorithm plugin: TRL's SFTTrainer as a recipe. Language-modelling
// and prompt-completion records become right-padded rows; the loss is the
// mean token NLL over the completion tokens (completion_only_loss, TRL's
// default for prompt-completion data) or over every token.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/batch.hpp"
#include "alignkit/plugin.hpp"
#include "alignkit/training.hpp"
#include "losses.hpp"
#include "recipe_support.hpp"

namespace alignkit::sft {
namespace {

std::vector<SettingSpec> sft_settings() {
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 2e-5, "peak learning rate of AdamW (TRL's SFT default)", 0.0),
      setting::boolean("completion_only_loss", true,
                       "prompt-completion data: count only completion tokens in the loss (false: the prompt too); "
                       "language-modelling data has no prompt"),
  };
  for (SettingSpec& spec : recipe::truncation_settings(1024)) settings.push_back(std::move(spec));
  return settings;
}

class SftAlgorithm : public Algorithm {
 public:
  void setup(StageContext& context, const TrainEnv& env) override {
    context_ = &context;
    env_ = env;
    const ConfigView& settings = context.settings();
    model_dir_ = recipe::require_model_dir(context, "model");
    tokenizer_ = recipe::load_tokenizer(context, "model", model_dir_);
    model_ = recipe::load_model(context, "model", model_dir_, env);
    const LossOn loss_on = settings.get_bool("completion_only_loss") ? LossOn::Completion : LossOn::All;
    collate_ = recipe::collate_options(settings, recipe::choose_pad_id(tokenizer_.get(), model_->info(), model_dir_),
                                       loss_on);

    recipe::DataRequirements requirements;
    requirements.algorithm = "SFT";
    requirements.kinds = {DataKind::LanguageModeling, DataKind::PromptCompletion};
    requirements.fields = "text, or prompt and completion";
    requirements.vocab_size = model_->info().vocab_size;
    requirements.truncation = collate_;
    data_ = recipe::load_stage_data(context, tokenizer_.get(), env.seed, requirements);
  }

  std::vector<NamedTensor> trainable_parameters() override { return model_->trainable_parameters(); }

  int64_t num_examples(Split split) const override { return split_data(split).size(); }

  StepOutput step(const std::vector<int64_t>& indices, Split split) override {
    return recipe::guarded("sft step", [&] {
      std::vector<Row> rows;
      for (const Example* example : split_data(split).examples(indices)) rows.push_back(chosen_row(*example));
      const Batch batch = collate(rows, collate_).to(env_.device);
      at::Tensor logits = model_->forward(batch.input_ids, batch.attention_mask, batch.position_ids);  // (B, T, V)
      const SequenceLogprobs tokens = sequence_logprobs(logits, batch.input_ids, batch.loss_mask);    // (B, T-1)

      StepOutput out;
      out.loss = dpo::masked_mean_nll(tokens.per_token, tokens.mask);
      const int64_t length = logits.size(1);
      out.metrics.push_back({"mean_token_accuracy",
                             dpo::mean_token_accuracy(logits.slice(1, 0, length - 1), batch.input_ids.slice(1, 1),
                                                      tokens.mask)});
      out.num_tokens = batch.attention_mask.sum().item<int64_t>();
      return out;
    });
  }

  void set_training(bool training) override { model_->set_training(training); }

  std::vector<std::string> progress_metrics() const override { return {"mean_token_accuracy"}; }

  void save(const std::string& dir) override {
    recipe::guarded("sft save", [&] { recipe::save_model_folder(*context_, *model_, model_dir_, dir); });
  }

 private:
  const recipe::SplitData& split_data(Split split) const { return split == Split::Train ? data_.train : data_.eval; }

  StageContext* context_ = nullptr;
  TrainEnv env_;
  std::string model_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<CausalLM> model_;
  CollateOptions collate_;
  recipe::StageData data_;
};

struct SftProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<SftAlgorithm>(); }
};

void register_sft(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "sft", ALIGNKIT_VERSION_STRING,
                          "supervised fine-tuning on language-modelling or prompt-completion data (TRL's SFTTrainer)",
                          sft_settings()},
                         std::make_shared<SftProvider>());
}

}  // namespace
}  // namespace alignkit::sft

ALIGNKIT_PLUGIN("sft", ALIGNKIT_VERSION_STRING, "supervised fine-tuning", alignkit::sft::register_sft)
