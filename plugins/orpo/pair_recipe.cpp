// Setup, scoring and saving of the reference-free pair recipes (orpo, cpo).
#include "pair_recipe.hpp"

#include <ATen/TensorOperators.h>

#include <algorithm>
#include <utility>

namespace alignkit::pairs {

namespace {

// Mean logit over the vocabulary at the positions whose labels `label_mask`
// counts, token-weighted over rows [first, last) (TRL's logits/chosen, logits/rejected).
double mean_completion_logit(const at::Tensor& logits, const at::Tensor& label_mask, int64_t first, int64_t last) {
  const int64_t length = logits.size(1);
  at::Tensor per_position = logits.detach().slice(0, first, last).slice(1, 0, length - 1).mean(-1);  // (n, T-1)
  at::Tensor mask = label_mask.slice(0, first, last);                                                 // (n, T-1)
  const int64_t count = mask.sum().item<int64_t>();
  if (count == 0) return 0.0;
  return per_position.masked_select(mask).to(at::kDouble).sum().item<double>() / static_cast<double>(count);
}

}  // namespace

std::vector<SettingSpec> pair_truncation_settings() { return recipe::truncation_settings(1024); }

ReferenceFreePairRecipe::ReferenceFreePairRecipe(std::string display_name, std::string id)
    : display_name_(std::move(display_name)), id_(std::move(id)) {}

void ReferenceFreePairRecipe::setup(StageContext& context, const TrainEnv& env) {
  context_ = &context;
  env_ = env;
  const ConfigView& settings = context.settings();
  const std::string reference_dir = context.model_dir("reference");
  if (!reference_dir.empty())
    throw ConfigError(settings.locate("reference") + ": " + display_name_ +
                      " uses no reference model (its preference term compares chosen with rejected under the "
                      "policy alone); remove `reference` from the stage, or use algorithm = \"dpo\" to train "
                      "against one");
  read_loss_settings(context);

  model_dir_ = recipe::require_model_dir(context, "model");
  tokenizer_ = recipe::load_tokenizer(context, "model", model_dir_);
  policy_ = recipe::load_model(context, "model", model_dir_, env);
  const ModelInfo& info = policy_->info();
  collate_ = recipe::collate_options(settings, recipe::choose_pad_id(tokenizer_.get(), info, model_dir_),
                                     LossOn::Completion);

  recipe::DataRequirements requirements;
  requirements.algorithm = display_name_;
  requirements.kinds = {DataKind::Preference};
  requirements.fields = "prompt, chosen, rejected";
  requirements.vocab_size = info.vocab_size;
  requirements.truncation = collate_;
  requirements.rows_include_rejected = true;
  data_ = recipe::load_stage_data(context, tokenizer_.get(), env.seed, requirements);
}

std::vector<NamedTensor> ReferenceFreePairRecipe::trainable_parameters() { return policy_->trainable_parameters(); }

int64_t ReferenceFreePairRecipe::num_examples(Split split) const { return split_data(split).size(); }

StepOutput ReferenceFreePairRecipe::step(const std::vector<int64_t>& indices, Split split) {
  return recipe::guarded(id_ + " step", [&] {
    const Batch batch = collate_preference(split_data(split).examples(indices), collate_).to(env_.device);
    const int64_t pairs = batch.rows() / 2;
    at::Tensor logits = policy_->forward(batch.input_ids, batch.attention_mask, batch.position_ids);  // (2B, T, V)
    // Every real token is scored once; the completion mask picks the preference log-probs.
    const SequenceLogprobs all = sequence_logprobs(logits, batch.input_ids, batch.attention_mask);
    at::Tensor completion_mask = batch.loss_mask.slice(1, 1).logical_and(all.mask);        // (2B, T-1)
    at::Tensor completion_tokens = completion_mask.sum(1);                                  // (2B)
    at::Tensor sums = (all.per_token * completion_mask.to(all.per_token.scalar_type())).sum(1);  // (2B)
    at::Tensor logps = averages_logps() ? sums / completion_tokens.clamp_min(1).to(sums.scalar_type()) : sums;

    at::Tensor chosen_real = all.mask.slice(0, 0, pairs);  // (B, T-1)
    const int64_t chosen_count = chosen_real.sum().item<int64_t>();
    at::Tensor chosen_nll = -all.per_token.slice(0, 0, pairs).sum() / static_cast<double>(std::max<int64_t>(1, chosen_count));

    PairLossOutput result = loss(logps.slice(0, 0, pairs), logps.slice(0, pairs), chosen_nll);
    StepOutput out;
    out.loss = result.loss;
    out.metrics = std::move(result.metrics);
    out.metrics.push_back({"logits/chosen", mean_completion_logit(logits, completion_mask, 0, pairs)});
    out.metrics.push_back({"logits/rejected", mean_completion_logit(logits, completion_mask, pairs, 2 * pairs)});
    out.num_tokens = batch.attention_mask.sum().item<int64_t>();
    return out;
  });
}

void ReferenceFreePairRecipe::set_training(bool training) { policy_->set_training(training); }

std::vector<std::string> ReferenceFreePairRecipe::progress_metrics() const {
  return {"rewards/accuracies", "rewards/margins"};
}

void ReferenceFreePairRecipe::save(const std::string& dir) {
  recipe::guarded(id_ + " save", [&] { recipe::save_model_folder(*context_, *policy_, model_dir_, dir); });
}

const recipe::SplitData& ReferenceFreePairRecipe::split_data(Split split) const {
  return split == Split::Train ? data_.train : data_.eval;
}

}  // namespace alignkit::pairs
