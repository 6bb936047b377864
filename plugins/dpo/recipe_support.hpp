// What the sft and dpo recipes share: loading a stage's model, tokenizer and
// data with clear ConfigErrors (naming the setting, file and line), the
// train/eval split (eval_path, or eval_fraction held out of path), the
// truncation settings, and saving a complete Hugging Face folder.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "alignkit/batch.hpp"
#include "alignkit/config.hpp"
#include "alignkit/dataset.hpp"
#include "alignkit/model.hpp"
#include "alignkit/registry.hpp"
#include "alignkit/tokenizer.hpp"
#include "alignkit/training.hpp"

namespace alignkit::recipe {

// One split of a stage's data: `rows` index into `dataset`, in file order.
struct SplitData {
  std::shared_ptr<const Dataset> dataset;  // null when the split is empty
  std::vector<int64_t> rows;

  int64_t size() const { return static_cast<int64_t>(rows.size()); }
  // The `index`-th example of the split; throws std::out_of_range.
  const Example& at(int64_t index) const;
  std::vector<const Example*> examples(const std::vector<int64_t>& indices) const;
};

struct StageData {
  SplitData train;
  SplitData eval;
};

// What the recipe accepts, for load_stage_data's checks and messages.
struct DataRequirements {
  std::string algorithm;                   // "DPO": how messages name the recipe
  std::vector<DataKind> kinds;             // accepted dataset types
  std::string fields;                      // "prompt, chosen, rejected": what such records hold
  int64_t vocab_size = 0;                  // every token id must lie in [0, vocab_size)
  CollateOptions truncation;               // each truncated row must keep at least 2 tokens
  bool rows_include_rejected = false;      // check prompt + rejected rows too (preference data)
};

// Reads the stage's `data` table: `path`, and `eval_path` or a hold-out of
// `eval_fraction` of `path` chosen by `seed`. Throws ConfigError (naming the
// setting, file and line) for a missing table, an unreadable file, records of
// a type the recipe does not take, a token id outside the vocabulary, or a
// row that truncation leaves with fewer than 2 tokens.
StageData load_stage_data(StageContext& context, const Tokenizer* tokenizer, uint64_t seed,
                          const DataRequirements& requirements);

// The folder of model role `role`; throws ConfigError when the stage names none.
std::string require_model_dir(StageContext& context, const std::string& role);

// The stage's `[lora]` table and `gradient_checkpointing` as ModelOptions of
// the trained model (the host has checked the table against its SettingSpecs).
void apply_stage_model_settings(StageContext& context, const TrainEnv& env, ModelOptions& options);

// Loads a model folder; a failure becomes a ConfigError located at the stage's
// `role` key. The trained model (role "model") gets the stage's LoRA adapters
// and gradient checkpointing.
std::shared_ptr<CausalLM> load_model(StageContext& context, const std::string& role, const std::string& dir,
                                     const TrainEnv& env);

// A frozen reference model (eval mode) from `dir`, named by `role` in
// messages; refused when its vocabulary differs from the policy's. When the
// stage names no reference (role "model") and the policy has LoRA adapters,
// no second model is loaded: the reference is the policy with its adapters
// disabled, under no-grad (TRL's and torchtune's LoRA reference).
std::shared_ptr<CausalLM> load_reference(StageContext& context, const std::string& role, const std::string& dir,
                                         const TrainEnv& env, const std::shared_ptr<CausalLM>& policy,
                                         const std::string& policy_dir);

// The tokenizer of a model folder, or nullptr (pre-tokenized data needs none).
std::unique_ptr<Tokenizer> load_tokenizer(StageContext& context, const std::string& role, const std::string& dir);

// The padding id: the tokenizer's pad or eos, else the model's. Throws ConfigError when none exists.
int32_t choose_pad_id(const Tokenizer* tokenizer, const ModelInfo& info, const std::string& model_dir);

// `max_length` and `truncation_mode` settings, with TRL's defaults.
std::vector<SettingSpec> truncation_settings(int64_t default_max_length);
// `logprob_chunk_size`: positions per chunk of chunked_sequence_logprobs (0: off).
SettingSpec logprob_chunk_setting();
// Reads them back (after the host checked them).
CollateOptions collate_options(const ConfigView& settings, int32_t pad_id, LossOn loss_on);

// Writes `model` into `dir` (config.json, model.safetensors) and copies the
// tokenizer files of `source_dir` there, so `dir` is a complete model folder.
// With LoRA adapters `dir` gets the adapter in PEFT's layout (base:
// `source_dir`) and, with the stage's lora.merge_on_save, the merged model too.
void save_model_folder(StageContext& context, const CausalLM& model, const std::string& source_dir,
                       const std::string& dir);

// Runs `body`; any exception but a ConfigError becomes a std::runtime_error
// prefixed with `what` (LibTorch's errors without their backtrace), the only
// kind step() and save() let cross the plugin boundary.
template <typename Body>
auto guarded(const std::string& what, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const ConfigError&) {
    throw;
  } catch (const c10::Error& e) {
    throw std::runtime_error(what + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error(what + ": " + e.what());
  }
}

}  // namespace alignkit::recipe
