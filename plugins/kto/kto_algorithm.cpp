// The `kto` algorithm plugin: TRL's KTOTrainer (loss_type "kto") as a recipe.
// Data is unpaired (prompt, completion, label); preference pairs become two
// rows each, the chosen one desirable and the rejected one not (TRL's
// unpair_preference_dataset: all chosen rows, then all rejected rows). Each
// step scores the batch's rows with the policy, and the batch's mismatched
// rows (prompt i with the completion of row i-1, as TRL's KL dataset shifts
// completions by one) under no-grad for the KL estimate; the reference (a
// named model, or a frozen copy of the initial policy) scores both. The loss
// itself is kto_losses.hpp.
#include <ATen/ops/tensor.h>
#include <c10/core/GradMode.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/batch.hpp"
#include "alignkit/plugin.hpp"
#include "alignkit/training.hpp"
#include "kto_losses.hpp"
#include "recipe_support.hpp"

namespace alignkit::kto {
namespace {

// One row of unpaired data: a prompt, one completion and its label.
struct UnpairedRow {
  const Example* example = nullptr;
  bool desirable = true;
  bool rejected_side = false;  // the completion is the pair's `rejected` field

  const std::vector<int32_t>& completion() const { return rejected_side ? example->rejected : example->completion; }
};

// The unpaired rows of a split: unpaired data as it is, preference pairs as
// all chosen rows followed by all rejected rows.
std::vector<UnpairedRow> unpaired_rows(const recipe::SplitData& split) {
  std::vector<UnpairedRow> rows;
  if (!split.dataset) return rows;
  if (split.dataset->kind() == DataKind::Preference) {
    for (int64_t i = 0; i < split.size(); ++i) rows.push_back({&split.at(i), true, false});
    for (int64_t i = 0; i < split.size(); ++i) rows.push_back({&split.at(i), false, true});
  } else {
    for (int64_t i = 0; i < split.size(); ++i) rows.push_back({&split.at(i), split.at(i).label, false});
  }
  return rows;
}

std::vector<SettingSpec> kto_settings() {
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 1e-6, "peak learning rate of AdamW (TRL's KTO default)", 0.0),
      setting::number("beta", 0.1, "strength of the pull towards the reference (must be > 0)", 0.0),
      setting::number("desirable_weight", 1.0, "weight of the desirable rows' losses", 0.0),
      setting::number("undesirable_weight", 1.0, "weight of the undesirable rows' losses", 0.0),
  };
  for (SettingSpec& spec : recipe::truncation_settings(1024)) settings.push_back(std::move(spec));
  return settings;
}

// Sums of completion log-probs of `rows` under `model`: (B,), with the graph unless under no-grad.
at::Tensor completion_logps(CausalLM& model, const Batch& batch) {
  at::Tensor logits = model.forward(batch.input_ids, batch.attention_mask, batch.position_ids);  // (B, T, V)
  return sequence_logprobs(logits, batch.input_ids, batch.loss_mask).sum;                         // (B)
}

class KtoAlgorithm : public Algorithm {
 public:
  void setup(StageContext& context, const TrainEnv& env) override {
    context_ = &context;
    env_ = env;
    const ConfigView& settings = context.settings();
    if (settings.has("per_device_train_batch_size") && settings.get_int("per_device_train_batch_size") < 2)
      throw ConfigError(settings.locate("per_device_train_batch_size") +
                        ": KTO needs at least 2 examples in a batch: its KL estimate scores each prompt with the "
                        "completion of another example of the same batch (TRL refuses 1 too)");
    loss_.beta = settings.get_float("beta");
    loss_.desirable_weight = settings.get_float("desirable_weight");
    loss_.undesirable_weight = settings.get_float("undesirable_weight");
    if (!(loss_.beta > 0)) throw ConfigError(settings.locate("beta") + ": must be greater than 0");

    model_dir_ = recipe::require_model_dir(context, "model");
    tokenizer_ = recipe::load_tokenizer(context, "model", model_dir_);
    policy_ = recipe::load_model(context, "model", model_dir_, env);
    const ModelInfo& info = policy_->info();
    collate_ = recipe::collate_options(settings, recipe::choose_pad_id(tokenizer_.get(), info, model_dir_),
                                       LossOn::Completion);

    recipe::DataRequirements requirements;
    requirements.algorithm = "KTO";
    requirements.kinds = {DataKind::UnpairedPreference, DataKind::Preference};
    requirements.fields = "prompt, completion, label; or prompt, chosen, rejected";
    requirements.vocab_size = info.vocab_size;
    requirements.truncation = collate_;
    data_ = recipe::load_stage_data(context, tokenizer_.get(), env.seed, requirements);
    check_rejected(data_.train);
    check_rejected(data_.eval);
    train_rows_ = unpaired_rows(data_.train);
    eval_rows_ = unpaired_rows(data_.eval);

    int64_t desirable = 0;
    for (const UnpairedRow& row : train_rows_) desirable += row.desirable ? 1 : 0;
    const std::string warning =
        class_weight_warning(desirable, static_cast<int64_t>(train_rows_.size()) - desirable, loss_);
    if (!warning.empty()) context.log("warning: " + warning);

    // Without a named reference, TRL's default: a frozen copy of the initial policy.
    const std::string reference_dir = context.model_dir("reference");
    const std::string role = reference_dir.empty() ? "model" : "reference";
    const std::string source = reference_dir.empty() ? model_dir_ : reference_dir;
    reference_ = recipe::load_reference(context, role, source, env, policy_, model_dir_);
  }

  std::vector<NamedTensor> trainable_parameters() override { return policy_->trainable_parameters(); }

  int64_t num_examples(Split split) const override { return static_cast<int64_t>(rows(split).size()); }

  StepOutput step(const std::vector<int64_t>& indices, Split split) override {
    return recipe::guarded("kto step", [&] {
      const std::vector<UnpairedRow>& all = rows(split);
      const size_t size = indices.size();
      std::vector<Row> matched, mismatched;
      std::vector<int64_t> labels;
      for (size_t i = 0; i < size; ++i) {
        const UnpairedRow& row = all.at(static_cast<size_t>(indices[i]));
        // TRL's KL rows: completions shifted by one within the batch, wrapping around.
        const UnpairedRow& previous = all.at(static_cast<size_t>(indices[(i + size - 1) % size]));
        matched.push_back({row.example->prompt, row.completion()});
        mismatched.push_back({row.example->prompt, previous.completion()});
        labels.push_back(row.desirable ? 1 : 0);
      }
      const Batch batch = collate(matched, collate_).to(env_.device);
      KtoLogps in;
      in.policy = completion_logps(*policy_, batch);  // (B)
      in.desirable = at::tensor(labels, at::kLong).to(at::kBool).to(env_.device);  // (B)
      {
        at::NoGradGuard no_grad;
        const Batch kl_batch = collate(mismatched, collate_).to(env_.device);
        in.policy_kl = completion_logps(*policy_, kl_batch);  // (B)
        std::vector<Row> both = matched;
        both.insert(both.end(), mismatched.begin(), mismatched.end());
        at::Tensor reference = completion_logps(*reference_, collate(both, collate_).to(env_.device));  // (2B)
        const int64_t b = static_cast<int64_t>(size);
        in.reference = reference.slice(0, 0, b);
        in.reference_kl = reference.slice(0, b);
      }
      KtoLossOutput loss = kto_loss(in, loss_);
      StepOutput out;
      out.loss = loss.loss;
      out.metrics = std::move(loss.metrics);
      out.num_tokens = batch.attention_mask.sum().item<int64_t>();
      return out;
    });
  }

  void set_training(bool training) override { policy_->set_training(training); }

  std::vector<std::string> progress_metrics() const override { return {"kl", "rewards/margins"}; }

  void save(const std::string& dir) override {
    recipe::guarded("kto save", [&] { recipe::save_model_folder(*context_, *policy_, model_dir_, dir); });
  }

 private:
  const std::vector<UnpairedRow>& rows(Split split) const { return split == Split::Train ? train_rows_ : eval_rows_; }

  // load_stage_data checks the prompt + completion rows; preference data also
  // trains on prompt + rejected rows, checked here the same way.
  void check_rejected(const recipe::SplitData& split) const {
    if (!split.dataset || split.dataset->kind() != DataKind::Preference) return;
    const int64_t vocab = policy_->info().vocab_size;
    for (int64_t i = 0; i < split.size(); ++i) {
      const Example& example = split.at(i);
      const std::string record = split.dataset->source() + ":" + std::to_string(example.source_line) + ": ";
      for (int32_t id : example.rejected)
        if (id < 0 || id >= vocab)
          throw ConfigError(record + "token id " + std::to_string(id) + " in the rejected completion is outside the "
                                     "model's vocabulary [0, " + std::to_string(vocab) + ")");
      const Row kept = truncate_row(rejected_row(example), collate_);
      if (kept.prompt.size() + kept.completion.size() < 2)
        throw ConfigError(record + "prompt + rejected has fewer than 2 tokens after truncation; a row needs at "
                                   "least 2 (a token and the one it predicts)");
    }
  }

  StageContext* context_ = nullptr;
  TrainEnv env_;
  KtoSettings loss_;
  std::string model_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<CausalLM> policy_;
  std::shared_ptr<CausalLM> reference_;
  CollateOptions collate_;
  recipe::StageData data_;
  std::vector<UnpairedRow> train_rows_;
  std::vector<UnpairedRow> eval_rows_;
};

struct KtoProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<KtoAlgorithm>(); }
};

void register_kto(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "kto", ALIGNKIT_VERSION_STRING,
                          "Kahneman-Tversky Optimization on unpaired (or unpaired-from-paired) preference data "
                          "(TRL's KTOTrainer)",
                          kto_settings()},
                         std::make_shared<KtoProvider>());
}

}  // namespace
}  // namespace alignkit::kto

ALIGNKIT_PLUGIN("kto", ALIGNKIT_VERSION_STRING, "KTO training on desirable / undesirable completions",
                alignkit::kto::register_kto)
