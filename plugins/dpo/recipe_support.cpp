// Shared recipe plumbing for sft and dpo (see recipe_support.hpp).
#include "recipe_support.hpp"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "alignkit/core/atomic_file.hpp"

namespace fs = std::filesystem;

namespace alignkit::recipe {
namespace {

// Files of a Hugging Face folder that describe the tokenizer or generation,
// besides the tokenizer plugins' own files.
const char* const kCompanionFiles[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                       "generation_config.json"};

std::string kinds_text(const std::vector<DataKind>& kinds) {
  std::string text;
  for (size_t i = 0; i < kinds.size(); ++i)
    text += (i == 0 ? "" : (i + 1 == kinds.size() ? " or " : ", ")) + std::string(data_kind_name(kinds[i]));
  return text;
}

std::vector<int64_t> every_row(size_t size) {
  std::vector<int64_t> rows(size);
  for (size_t i = 0; i < size; ++i) rows[i] = static_cast<int64_t>(i);
  return rows;
}

// How a record's fields are called in its dataset type, for messages.
struct FieldNames {
  const char* prompt;
  const char* completion;
  const char* rejected;
};

FieldNames field_names(DataKind kind) {
  switch (kind) {
    case DataKind::LanguageModeling: return {"prompt", "text", "rejected"};
    case DataKind::Preference: return {"prompt", "chosen", "rejected"};
    default: return {"prompt", "completion", "rejected"};
  }
}

// Throws ConfigError for the first token id outside the vocabulary or row
// that truncation leaves too short to score.
void check_examples(const Dataset& dataset, const std::string& where, const std::string& path,
                    const DataRequirements& requirements) {
  const FieldNames names = field_names(dataset.kind());
  for (size_t i = 0; i < dataset.size(); ++i) {
    const Example& example = dataset.at(i);
    const std::string record = where + ": " + path + ":" + std::to_string(example.source_line) + ": ";
    auto check_ids = [&](const std::vector<int32_t>& ids, const char* field) {
      for (int32_t id : ids)
        if (id < 0 || id >= requirements.vocab_size)
          throw ConfigError(record + "token id " + std::to_string(id) + " in the " + field +
                            " is outside the model's vocabulary [0, " + std::to_string(requirements.vocab_size) +
                            ")");
    };
    auto check_length = [&](const Row& row, const char* field) {
      const Row kept = truncate_row(row, requirements.truncation);
      const size_t length = kept.prompt.size() + kept.completion.size();
      if (length < 2)
        throw ConfigError(record + "prompt + " + field + " has " + std::to_string(length) +
                          (requirements.truncation.max_length > 0
                               ? " token(s) after truncation to max_length " +
                                     std::to_string(requirements.truncation.max_length)
                               : std::string(" token(s)")) +
                          "; a row needs at least 2 (a token and the one it predicts)");
    };
    check_ids(example.prompt, names.prompt);
    check_ids(example.completion, names.completion);
    check_length(chosen_row(example), names.completion);
    if (requirements.rows_include_rejected) {
      check_ids(example.rejected, names.rejected);
      check_length(rejected_row(example), names.rejected);
    }
  }
}

std::shared_ptr<const Dataset> load_checked(StageContext& context, const ConfigView& data, const std::string& key,
                                            const Tokenizer* tokenizer, const DataRequirements& requirements) {
  const std::string path = data.get_string(key);
  const std::string where = data.locate(key);
  std::unique_ptr<Dataset> dataset;
  try {
    dataset = context.load_dataset(data, path, tokenizer);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError(where + ": " + e.what());
  }
  const std::vector<DataKind>& kinds = requirements.kinds;
  if (std::find(kinds.begin(), kinds.end(), dataset->kind()) == kinds.end())
    throw ConfigError(where + ": " + requirements.algorithm + " needs " + kinds_text(kinds) + " data (" +
                      requirements.fields + "), but " + path + " holds " + data_kind_name(dataset->kind()) +
                      " records");
  check_examples(*dataset, where, path, requirements);
  if (dataset->skipped_records() > 0)
    context.log(path + ": skipped " + std::to_string(dataset->skipped_records()) + " malformed records");
  return std::shared_ptr<const Dataset>(std::move(dataset));
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The implicit reference of a LoRA stage: the policy itself, its adapters
// switched off for the duration of each call, under no-grad.
class AdapterDisabledReference : public CausalLM {
 public:
  explicit AdapterDisabledReference(std::shared_ptr<CausalLM> policy) : policy_(std::move(policy)) {}

  const ModelInfo& info() const override { return policy_->info(); }
  HeadKind head() const override { return policy_->head(); }
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions) override {
    return without_adapters([&] { return policy_->forward(ids, mask, positions); });
  }
  at::Tensor hidden_states(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions) override {
    return without_adapters([&] { return policy_->hidden_states(ids, mask, positions); });
  }
  at::Tensor head_values(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions) override {
    return without_adapters([&] { return policy_->head_values(ids, mask, positions); });
  }
  // LoRA never adapts lm_head, so the policy's is the base model's.
  at::Tensor output_embedding() override { return policy_->output_embedding().detach(); }
  std::vector<NamedTensor> named_parameters() override { return {}; }
  // The policy's mode is the trainer's; the reference only borrows the policy.
  void set_training(bool) override {}
  void to(c10::Device, c10::ScalarType) override {}
  void save(const std::string&) const override {
    throw std::runtime_error("the adapter-disabled reference is a view of the policy; save the policy instead");
  }
  std::vector<std::vector<int64_t>> generate(const std::vector<std::vector<int64_t>>& prompts,
                                             const GenerationOptions& options) override {
    return without_adapters([&] { return policy_->generate(prompts, options); });
  }
  std::vector<NamedTensor> trainable_parameters() override { return {}; }
  bool has_adapters() const override { return false; }
  void set_adapters_enabled(bool) override {}
  void save_adapter(const std::string&, const std::string&) const override {
    throw std::runtime_error("the adapter-disabled reference has no adapters");
  }

 private:
  template <typename Call>
  auto without_adapters(Call&& call) -> decltype(call()) {
    at::NoGradGuard no_grad;
    policy_->set_adapters_enabled(false);
    struct Restore {
      CausalLM& model;
      ~Restore() { model.set_adapters_enabled(true); }
    } restore{*policy_};
    return call();
  }

  std::shared_ptr<CausalLM> policy_;
};

}  // namespace

const Example& SplitData::at(int64_t index) const {
  if (!dataset || index < 0 || index >= size())
    throw std::out_of_range("example " + std::to_string(index) + " of a split of " + std::to_string(size()));
  return dataset->at(static_cast<size_t>(rows[static_cast<size_t>(index)]));
}

std::vector<const Example*> SplitData::examples(const std::vector<int64_t>& indices) const {
  std::vector<const Example*> out;
  out.reserve(indices.size());
  for (int64_t index : indices) out.push_back(&at(index));
  return out;
}

StageData load_stage_data(StageContext& context, const Tokenizer* tokenizer, uint64_t seed,
                          const DataRequirements& requirements) {
  const ConfigView& settings = context.settings();
  if (!settings.has("data"))
    throw ConfigError(settings.locate("data") + ": missing; " + requirements.algorithm +
                      " needs a `data` table whose `path` names a file of " + kinds_text(requirements.kinds) +
                      " records (" + requirements.fields + ")");
  const ConfigView data = settings.table("data");
  StageData out;
  std::shared_ptr<const Dataset> train = load_checked(context, data, "path", tokenizer, requirements);
  out.train = {train, every_row(train->size())};
  if (data.has("eval_path")) {
    std::shared_ptr<const Dataset> eval = load_checked(context, data, "eval_path", tokenizer, requirements);
    out.eval = {eval, every_row(eval->size())};
    return out;
  }
  const double fraction = data.has("eval_fraction") ? data.get_float("eval_fraction") : 0.0;
  if (fraction > 0) {
    HoldoutSplit split;
    try {
      split = holdout_split(train->size(), fraction, seed);
    } catch (const std::invalid_argument& e) {
      throw ConfigError(data.locate("eval_fraction") + ": " + e.what() + " (" + data.get_string("path") + ")");
    }
    out.train = {train, split.train};
    out.eval = {train, split.eval};
  }
  return out;
}

std::string require_model_dir(StageContext& context, const std::string& role) {
  std::string dir = context.model_dir(role);
  if (dir.empty()) throw ConfigError(context.settings().locate(role) + ": the stage names no " + role + " model");
  return dir;
}

void apply_stage_model_settings(StageContext& context, const TrainEnv& env, ModelOptions& options) {
  const ConfigView& settings = context.settings();
  options.gradient_checkpointing = settings.has("gradient_checkpointing") && settings.get_bool("gradient_checkpointing");
  if (!settings.has("lora")) return;
  const ConfigView lora = settings.table("lora");
  options.lora.r = lora.get_int("r");
  if (options.lora.r < 1) throw ConfigError(lora.locate("r") + ": must be at least 1, found " + std::to_string(options.lora.r));
  options.lora.alpha = lora.get_float("lora_alpha");
  options.lora.dropout = lora.get_float("lora_dropout");
  if (!(options.lora.dropout >= 0 && options.lora.dropout < 1))
    throw ConfigError(lora.locate("lora_dropout") + ": must be in [0, 1), found " + std::to_string(options.lora.dropout));
  options.lora.target_modules = lora.get_string_list("target_modules");
  options.lora.seed = env.seed;
}

std::shared_ptr<CausalLM> load_model(StageContext& context, const std::string& role, const std::string& dir,
                                     const TrainEnv& env) {
  ModelOptions options;
  options.dtype = env.dtype;
  options.device = env.device;
  options.head = HeadKind::LanguageModel;
  if (role == "model") apply_stage_model_settings(context, env, options);
  try {
    return context.load_model(dir, options);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError(context.settings().locate(role) + ": " + e.what());
  }
}

std::shared_ptr<CausalLM> load_reference(StageContext& context, const std::string& role, const std::string& dir,
                                         const TrainEnv& env, const std::shared_ptr<CausalLM>& policy,
                                         const std::string& policy_dir) {
  if (role == "model" && policy->has_adapters()) {
    context.log("reference: the model with its LoRA adapters disabled (no second model loaded)");
    return std::make_shared<AdapterDisabledReference>(policy);
  }
  std::shared_ptr<CausalLM> reference = load_model(context, role, dir, env);
  const int64_t vocab = reference->info().vocab_size;
  if (vocab != policy->info().vocab_size)
    throw ConfigError(context.settings().locate(role) + ": the reference " + dir + " has a vocabulary of " +
                      std::to_string(vocab) + " tokens but the model " + policy_dir + " has " +
                      std::to_string(policy->info().vocab_size) + "; the two must share one tokenizer");
  reference->set_training(false);
  context.log("reference model: " + dir + " (frozen, eval mode)");
  return reference;
}

std::unique_ptr<Tokenizer> load_tokenizer(StageContext& context, const std::string& role, const std::string& dir) {
  try {
    return context.load_tokenizer(dir);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError(context.settings().locate(role) + ": " + e.what());
  }
}

int32_t choose_pad_id(const Tokenizer* tokenizer, const ModelInfo& info, const std::string& model_dir) {
  int64_t pad = -1;
  if (tokenizer) pad = tokenizer->pad_id() >= 0 ? tokenizer->pad_id() : tokenizer->eos_id();
  if (pad < 0) pad = info.pad_token_id >= 0 ? info.pad_token_id : info.eos_token_id;
  if (pad < 0)
    throw ConfigError(model_dir + ": cannot pad batches: neither the tokenizer nor config.json names a pad or eos "
                                  "token (set pad_token_id or eos_token_id in config.json)");
  if (pad >= info.vocab_size)
    throw ConfigError(model_dir + ": the padding token id " + std::to_string(pad) +
                      " is outside the model's vocabulary of " + std::to_string(info.vocab_size));
  return static_cast<int32_t>(pad);
}

std::vector<SettingSpec> truncation_settings(int64_t default_max_length) {
  return {
      setting::integer("max_length", default_max_length,
                       "longest prompt + completion row in tokens; longer rows are truncated (0: no limit)", 0.0),
      setting::text("truncation_mode", "keep_start",
                    "which part of a too-long row survives: keep_start drops the end of the completion, keep_end "
                    "the start of the prompt",
                    {"keep_start", "keep_end"}),
  };
}

SettingSpec logprob_chunk_setting() {
  return setting::integer("logprob_chunk_size", 0,
                          "score labels from the hidden states by chunks of this many positions, so the full "
                          "(batch, length, vocabulary) logits are never held (0: from the full logits)",
                          0.0);
}

CollateOptions collate_options(const ConfigView& settings, int32_t pad_id, LossOn loss_on) {
  CollateOptions options;
  options.pad_id = pad_id;
  options.max_length = settings.get_int("max_length");
  try {
    options.truncation_mode = parse_truncation_mode(settings.get_string("truncation_mode"));
  } catch (const std::invalid_argument& e) {
    throw ConfigError(settings.locate("truncation_mode") + ": " + e.what());
  }
  options.loss_on = loss_on;
  return options;
}

void save_model_folder(StageContext& context, const CausalLM& model, const std::string& source_dir,
                       const std::string& dir) {
  const Registry& registry = context.registry();
  const ConfigView& settings = context.settings();
  if (model.has_adapters()) {
    model.save_adapter(dir, fs::absolute(source_dir).lexically_normal().string());
    if (settings.table("lora").get_bool("merge_on_save")) model.save(dir);
  } else {
    model.save(dir);
  }
  std::vector<std::string> files(std::begin(kCompanionFiles), std::end(kCompanionFiles));
  for (const std::string& name : registry.names(ComponentKind::Tokenizer))
    files.push_back(registry.tokenizer(name)->file_name());
  for (const std::string& file : files) {
    const fs::path source = fs::path(source_dir) / file;
    if (fs::is_regular_file(source)) core::write_file_atomic((fs::path(dir) / file).string(), read_bytes(source));
  }
}

}  // namespace alignkit::recipe
