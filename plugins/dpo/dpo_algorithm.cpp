// The `dpo` algorithm plugin: TRL's DPOTrainer as a recipe. Each step scores
// prompt + chosen and prompt + rejected rows in one forward of the policy,
// sums the completion tokens' log-probs, takes the reference's log-probs (a
// frozen model under no-grad, a table precomputed before training, or none
// for reference-free losses) and hands both to the pure loss functions of
// losses.hpp.
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <c10/core/GradMode.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/batch.hpp"
#include "alignkit/core/safetensors.hpp"
#include "alignkit/plugin.hpp"
#include "alignkit/training.hpp"
#include "chunked_logprobs.hpp"
#include "losses.hpp"
#include "recipe_support.hpp"

namespace fs = std::filesystem;

namespace alignkit::dpo {
namespace {

// Where precompute_ref_log_probs keeps the reference's log-probs, in the stage folder.
constexpr const char* kReferenceLogpsFile = "ref_logps.safetensors";
constexpr const char* kReferenceInputsKey = "alignkit.reference_inputs";

// Per-pair log-probs of one model on a preference batch: (B,) each.
struct PairLogps {
  at::Tensor chosen;         // summed over completion tokens
  at::Tensor rejected;
  at::Tensor chosen_mean;    // averaged per completion token (ipo)
  at::Tensor rejected_mean;
};

// Scores a collate_preference batch (rows 0..B-1 chosen, B..2B-1 rejected)
// with one forward of `model`.
struct PairScores {
  SequenceLogprobs tokens;  // (2B, T-1)
  at::Tensor mean_logit;    // (2B, T-1) detached: vocabulary-mean logit at each scoring position
  PairLogps logps;
};

// chunk_size > 0: the label log-probs come from the hidden states and the
// output embedding by chunks of positions (logprob_chunk_size), so the
// (2B, T, V) logits never exist; 0: from the full logits.
PairScores score_pairs(CausalLM& model, const Batch& batch, int64_t chunk_size) {
  const int64_t pairs = batch.rows() / 2;
  PairScores scores;
  if (chunk_size > 0) {
    at::Tensor hidden = model.hidden_states(batch.input_ids, batch.attention_mask, batch.position_ids);  // (2B, T, H)
    recipe::ChunkedLogprobs chunked = recipe::chunked_sequence_logprobs(hidden, model.output_embedding(),
                                                                        batch.input_ids, batch.loss_mask, chunk_size);
    scores.tokens = chunked.tokens;
    scores.mean_logit = chunked.mean_logit;
  } else {
    at::Tensor logits = model.forward(batch.input_ids, batch.attention_mask, batch.position_ids);  // (2B, T, V)
    scores.tokens = sequence_logprobs(logits, batch.input_ids, batch.loss_mask);
    scores.mean_logit = logits.detach().slice(1, 0, logits.size(1) - 1).mean(-1);  // (2B, T-1)
  }
  at::Tensor mean = scores.tokens.sum / scores.tokens.count.clamp_min(1).to(scores.tokens.sum.scalar_type());  // (2B)
  scores.logps.chosen = scores.tokens.sum.slice(0, 0, pairs);  // (B)
  scores.logps.rejected = scores.tokens.sum.slice(0, pairs);   // (B)
  scores.logps.chosen_mean = mean.slice(0, 0, pairs);          // (B)
  scores.logps.rejected_mean = mean.slice(0, pairs);           // (B)
  return scores;
}

PairLogps reference_pass(CausalLM& model, const Batch& batch, int64_t chunk_size) {
  at::NoGradGuard no_grad;
  return score_pairs(model, batch, chunk_size).logps;
}

// Mean logit over the vocabulary at the positions that score counted labels,
// token-weighted over the rows [first, last) (TRL's logits/chosen, logits/rejected).
double mean_completion_logit(const at::Tensor& mean_logit, const at::Tensor& label_mask, int64_t first, int64_t last) {
  at::Tensor per_position = mean_logit.slice(0, first, last);  // (n, T-1)
  at::Tensor mask = label_mask.slice(0, first, last);          // (n, T-1)
  const int64_t count = mask.sum().item<int64_t>();
  if (count == 0) return 0.0;
  return per_position.masked_select(mask).to(at::kDouble).sum().item<double>() / static_cast<double>(count);
}

std::vector<SettingSpec> dpo_settings() {
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 1e-6, "peak learning rate of AdamW (TRL's DPO default)", 0.0),
      setting::number("beta", 0.1, "strength of the pull towards the reference (must be > 0)", 0.0),
      setting::text_list("loss_type", {"sigmoid"},
                         "one loss or a list combined by loss_weights (ipo averages log-probs per token)",
                         loss_type_names()),
      setting::number_list("loss_weights", "one weight per loss_type entry (default: 1.0 each)"),
      setting::number("label_smoothing", 0.0, "assumed share of flipped labels, for loss_type robust (< 0.5)", 0.0),
      setting::boolean("reference_free", false,
                       "no reference model: its log-probs are taken as 0 (sigmoid, hinge, ipo, robust, sft only)"),
      setting::boolean("precompute_ref_log_probs", false,
                       "score every pair with the reference once before training, keep the table in the stage "
                       "folder (reused on resume) and free the reference"),
      setting::integer("precompute_ref_batch_size", 0,
                       "pairs per batch of that pass (0: per_device_eval_batch_size)", 0.0),
      recipe::logprob_chunk_setting(),
  };
  for (SettingSpec& spec : recipe::truncation_settings(1024)) settings.push_back(std::move(spec));
  return settings;
}

LossSettings read_loss_settings(const ConfigView& settings) {
  LossSettings loss;
  loss.beta = settings.get_float("beta");
  if (!(loss.beta > 0))
    throw ConfigError(settings.locate("beta") + ": must be greater than 0 (it divides the ipo and sppo_hard targets)");
  loss.label_smoothing = settings.get_float("label_smoothing");
  loss.reference_free = settings.get_bool("reference_free");
  const std::vector<std::string> names = settings.get_string_list("loss_type");
  const std::vector<double> weights =
      settings.has("loss_weights") ? settings.get_float_list("loss_weights") : std::vector<double>{};
  try {
    loss.terms = make_loss_terms(names, weights);
  } catch (const std::invalid_argument& e) {
    const char* key = !weights.empty() && weights.size() != names.size() ? "loss_weights" : "loss_type";
    throw ConfigError(settings.locate(key) + ": " + e.what());
  }
  try {
    validate(loss);
  } catch (const std::invalid_argument& e) {
    const char* key = std::string(e.what()).find("label_smoothing") != std::string::npos ? "label_smoothing"
                      : loss.reference_free                                                ? "reference_free"
                                                                                           : "loss_weights";
    throw ConfigError(settings.locate(key) + ": " + e.what());
  }
  return loss;
}

class DpoAlgorithm : public Algorithm {
 public:
  void setup(StageContext& context, const TrainEnv& env) override {
    context_ = &context;
    env_ = env;
    const ConfigView& settings = context.settings();
    loss_ = read_loss_settings(settings);
    for (const LossTerm& term : loss_.terms) has_sft_term_ = has_sft_term_ || term.type == LossType::Sft;
    const bool precompute = settings.get_bool("precompute_ref_log_probs");
    chunk_size_ = settings.get_int("logprob_chunk_size");
    const std::string reference_dir = context.model_dir("reference");
    if (loss_.reference_free && !reference_dir.empty())
      throw ConfigError(settings.locate("reference") + ": a reference model was named, but reference_free = true");
    if (loss_.reference_free && precompute)
      throw ConfigError(settings.locate("precompute_ref_log_probs") +
                        ": there is nothing to precompute with reference_free = true");

    model_dir_ = recipe::require_model_dir(context, "model");
    tokenizer_ = recipe::load_tokenizer(context, "model", model_dir_);
    policy_ = recipe::load_model(context, "model", model_dir_, env);
    const ModelInfo& info = policy_->info();
    collate_ = recipe::collate_options(settings, recipe::choose_pad_id(tokenizer_.get(), info, model_dir_),
                                       LossOn::Completion);

    recipe::DataRequirements requirements;
    requirements.algorithm = "DPO";
    requirements.kinds = {DataKind::Preference};
    requirements.fields = "prompt, chosen, rejected";
    requirements.vocab_size = info.vocab_size;
    requirements.truncation = collate_;
    requirements.rows_include_rejected = true;
    data_ = recipe::load_stage_data(context, tokenizer_.get(), env.seed, requirements);

    if (loss_.reference_free) {
      context.log("reference-free: reference log-probs are taken as 0");
      return;
    }
    // Without a named reference, TRL's default: a frozen copy of the initial policy.
    const std::string reference_role = reference_dir.empty() ? "model" : "reference";
    const std::string source = reference_dir.empty() ? model_dir_ : reference_dir;
    if (precompute) {
      load_or_precompute_reference(source, reference_role);
    } else {
      reference_ = recipe::load_reference(context, reference_role, source, env, policy_, model_dir_);
    }
  }

  std::vector<NamedTensor> trainable_parameters() override { return policy_->trainable_parameters(); }

  int64_t num_examples(Split split) const override { return split_data(split).size(); }

  StepOutput step(const std::vector<int64_t>& indices, Split split) override {
    return recipe::guarded("dpo step", [&] {
      const recipe::SplitData& data = split_data(split);
      const Batch batch = collate_preference(data.examples(indices), collate_).to(env_.device);
      const int64_t pairs = batch.rows() / 2;
      PairScores policy = score_pairs(*policy_, batch, chunk_size_);

      PreferenceLogps in;
      in.policy_chosen = policy.logps.chosen;
      in.policy_rejected = policy.logps.rejected;
      in.policy_chosen_mean = policy.logps.chosen_mean;
      in.policy_rejected_mean = policy.logps.rejected_mean;
      if (!loss_.reference_free) {
        PairLogps reference = reference_ ? reference_pass(*reference_, batch, chunk_size_) : precomputed(split, indices);
        in.reference_chosen = reference.chosen;
        in.reference_rejected = reference.rejected;
        in.reference_chosen_mean = reference.chosen_mean;
        in.reference_rejected_mean = reference.rejected_mean;
      }
      if (has_sft_term_)
        in.chosen_nll =
            masked_mean_nll(policy.tokens.per_token.slice(0, 0, pairs), policy.tokens.mask.slice(0, 0, pairs));
      LossOutput loss = preference_loss(in, loss_);

      StepOutput out;
      out.loss = loss.loss;
      out.metrics = std::move(loss.metrics);
      out.metrics.push_back({"logits/chosen", mean_completion_logit(policy.mean_logit, policy.tokens.mask, 0, pairs)});
      out.metrics.push_back({"logits/rejected", mean_completion_logit(policy.mean_logit, policy.tokens.mask, pairs, 2 * pairs)});
      out.num_tokens = batch.attention_mask.sum().item<int64_t>();
      return out;
    });
  }

  void set_training(bool training) override { policy_->set_training(training); }

  std::vector<std::string> progress_metrics() const override { return {"rewards/accuracies", "rewards/margins"}; }

  void save(const std::string& dir) override {
    recipe::guarded("dpo save", [&] { recipe::save_model_folder(*context_, *policy_, model_dir_, dir); });
  }

 private:
  const recipe::SplitData& split_data(Split split) const { return split == Split::Train ? data_.train : data_.eval; }

  // What the precomputed table depends on besides the examples: when any of
  // it changes, the table is computed again.
  std::string reference_inputs(const std::string& source) const {
    const ConfigView& settings = context_->settings();
    const ConfigView data = settings.table("data");
    std::string text = "reference=" + fs::absolute(source).lexically_normal().string();
    text += ";path=" + data.get_string("path");
    if (data.has("eval_path")) text += ";eval_path=" + data.get_string("eval_path");
    text += ";train=" + std::to_string(data_.train.size()) + ";eval=" + std::to_string(data_.eval.size());
    text += ";seed=" + std::to_string(env_.seed) + ";max_length=" + std::to_string(collate_.max_length);
    text += ";truncation_mode=" + std::string(truncation_mode_name(collate_.truncation_mode));
    text += ";pad=" + std::to_string(collate_.pad_id);
    return text;
  }

  // One pass of the reference over both splits before training (TRL's
  // precompute_ref_log_probs), or the table an earlier run of this stage left.
  void load_or_precompute_reference(const std::string& source, const std::string& role) {
    const std::string path = (fs::path(context_->stage_dir()) / kReferenceLogpsFile).string();
    const std::string inputs = reference_inputs(source);
    if (fs::exists(path)) {
      auto file = core::SafetensorsFile::open(path);
      auto it = file->metadata().find(kReferenceInputsKey);
      if (it != file->metadata().end() && it->second == inputs) {
        for (const std::string& name : file->names()) precomputed_[name] = file->tensor(name).clone();
        context_->log("reference log-probs: reusing " + path);
        return;
      }
      context_->log(path + " was computed for other inputs; computing it again");
    }

    const ConfigView& settings = context_->settings();
    int64_t batch_size = settings.get_int("precompute_ref_batch_size");
    if (batch_size <= 0)
      batch_size = settings.has("per_device_eval_batch_size") ? settings.get_int("per_device_eval_batch_size") : 8;
    // The policy has its initial weights until the trainer restores a checkpoint, after setup.
    std::shared_ptr<CausalLM> reference =
        role == "reference" ? recipe::load_reference(*context_, role, source, env_, policy_, model_dir_) : policy_;
    reference->set_training(false);
    // Batch b is scored by rank b % world_size; the shards are then gathered
    // so that every rank holds the whole table.
    Communicator* ranks = env_.communicator;
    const int rank = ranks ? ranks->rank() : 0;
    const int world = ranks ? ranks->world_size() : 1;
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (Split split : {Split::Train, Split::Eval}) {
      const recipe::SplitData& data = split_data(split);
      if (data.size() == 0) continue;
      std::vector<at::Tensor> rows;  // (b, 5) each: index, chosen, rejected, chosen_mean, rejected_mean
      for (int64_t start = batch_size * rank; start < data.size(); start += batch_size * world) {
        std::vector<int64_t> indices;
        for (int64_t i = start; i < std::min(data.size(), start + batch_size); ++i) indices.push_back(i);
        const Batch batch = collate_preference(data.examples(indices), collate_).to(env_.device);
        PairLogps logps =
            recipe::guarded("precomputing reference log-probs", [&] { return reference_pass(*reference, batch, chunk_size_); });
        rows.push_back(at::stack({at::tensor(indices, at::kLong).to(at::kDouble), logps.chosen.cpu().to(at::kDouble),
                                  logps.rejected.cpu().to(at::kDouble), logps.chosen_mean.cpu().to(at::kDouble),
                                  logps.rejected_mean.cpu().to(at::kDouble)},
                                 1));
      }
      at::Tensor local = rows.empty() ? at::empty({0, 5}, at::kDouble) : at::cat(rows);  // (n_rank, 5)
      at::Tensor all = ranks ? ranks->all_gather(local) : local;                          // (N, 5)
      at::Tensor order = all.select(1, 0).to(at::kLong).argsort();                        // (N)
      all = all.index_select(0, order);
      const std::string prefix = split_name(split);
      const char* names[4] = {".chosen", ".rejected", ".chosen_mean", ".rejected_mean"};
      for (int k = 0; k < 4; ++k) {
        at::Tensor column = all.select(1, k + 1).to(at::kFloat).contiguous();  // (N), as sequence_logprobs gives them
        precomputed_[prefix + names[k]] = column;
        tensors.emplace_back(prefix + names[k], column);
      }
    }
    if (rank != 0) return;  // rank 0 writes the gathered table
    core::save_safetensors(path, tensors, {{"format", "pt"}, {kReferenceInputsKey, inputs}});
    context_->log("reference log-probs of " + std::to_string(data_.train.size() + data_.eval.size()) +
                  " pairs precomputed with " + source + " into " + path);
  }

  PairLogps precomputed(Split split, const std::vector<int64_t>& indices) const {
    const std::string prefix = split_name(split);
    at::Tensor rows = at::tensor(indices, at::kLong);  // (B)
    auto column = [&](const char* name) {
      auto it = precomputed_.find(prefix + name);
      if (it == precomputed_.end())
        throw std::runtime_error(std::string("no precomputed reference log-probs for the ") + prefix + " split");
      return it->second.index_select(0, rows).to(env_.device);  // (B)
    };
    return {column(".chosen"), column(".rejected"), column(".chosen_mean"), column(".rejected_mean")};
  }

  StageContext* context_ = nullptr;
  TrainEnv env_;
  LossSettings loss_;
  bool has_sft_term_ = false;  // the chosen rows' NLL is needed
  int64_t chunk_size_ = 0;     // logprob_chunk_size: 0 scores full logits
  std::string model_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<CausalLM> policy_;
  std::shared_ptr<CausalLM> reference_;  // null when precomputed or reference-free
  std::map<std::string, at::Tensor> precomputed_;  // "<split>.<column>" -> (N) on CPU
  CollateOptions collate_;
  recipe::StageData data_;
};

struct DpoProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<DpoAlgorithm>(); }
};

void register_dpo(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "dpo", ALIGNKIT_VERSION_STRING,
                          "Direct Preference Optimization and its loss family (TRL's DPOTrainer)", dpo_settings()},
                         std::make_shared<DpoProvider>());
}

}  // namespace
}  // namespace alignkit::dpo

ALIGNKIT_PLUGIN("dpo", ALIGNKIT_VERSION_STRING, "DPO preference training (sigmoid, ipo, hinge and more)",
                alignkit::dpo::register_dpo)
