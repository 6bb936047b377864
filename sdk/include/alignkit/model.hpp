// Model interface: a causal language model built from a Hugging Face folder
// (config.json + *.safetensors), with optional scalar (reward) and value heads.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace alignkit {

// Which output the model is built for.
//   LanguageModel: lm_head, as *ForCausalLM.
//   Scalar:        `score` head with one label, as *ForSequenceClassification (reward models).
//   Value:         an lm model plus a per-token value head (PPO critics).
enum class HeadKind { LanguageModel, Scalar, Value };

// The linear layers LoRA may adapt in a Llama-family decoder (PEFT's
// `target_modules`); "all-linear" stands for all of them.
inline const std::vector<std::string>& lora_module_names() {
  static const std::vector<std::string> names = {"q_proj", "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

// Low-rank adapters (PEFT's LoraConfig): each targeted linear layer computes
// W x + (lora_alpha / r) * B (A dropout(x)), with A (r, in) kaiming-uniform as
// PEFT draws it and B (out, r) zero, so a fresh adapter leaves the model as it
// was. With adapters, only A and B (and a Scalar/Value head) are trainable.
struct LoraOptions {
  int64_t r = 0;  // 0: no adapters
  double alpha = 8.0;
  double dropout = 0.0;
  std::vector<std::string> target_modules;  // names from lora_module_names(), or {"all-linear"}
  uint64_t seed = 0;                        // draws A
};

struct ModelOptions {
  c10::ScalarType dtype = c10::kFloat;  // parameters are converted to this on load
  c10::Device device = c10::Device(c10::kCPU);
  HeadKind head = HeadKind::LanguageModel;
  // PEFT adapter folders (adapter_config.json + adapter_model.safetensors)
  // merged into the loaded weights, in order. A shape that does not match the
  // base model is an error naming the file and tensor.
  std::vector<std::string> merge_adapters;
  LoraOptions lora;                     // fresh adapters on top of the loaded (and merged) weights
  bool gradient_checkpointing = false;  // decoder blocks recompute their activations in backward
};

struct ModelInfo {
  std::string architecture;  // "llama"
  std::string model_type;    // from config.json: "llama", "mistral", "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t max_position_embeddings = 0;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;
  int64_t num_parameters = 0;
};

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  bool do_sample = false;     // false: greedy
  double temperature = 1.0;
  int64_t top_k = 0;          // 0: off
  double top_p = 1.0;         // 1.0: off
  uint64_t seed = 0;
  bool use_cache = true;
  std::vector<int64_t> stop_token_ids;  // empty: the model's eos
  int64_t pad_token_id = -1;            // -1: the model's pad, else its eos
};

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;

  virtual const ModelInfo& info() const = 0;
  virtual HeadKind head() const = 0;

  // input_ids (B, T) int64, attention_mask (B, T) 1 for real tokens, position_ids (B, T)
  // → logits (B, T, V). Padding may be on either side; padded positions are masked out.
  virtual at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                             const at::Tensor& position_ids) = 0;
  // The final-norm hidden states (B, T, H), for heads and chunked log-probs.
  virtual at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                   const at::Tensor& position_ids) = 0;
  // The scalar or value head applied to every position: (B, T). Throws for LanguageModel.
  virtual at::Tensor head_values(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                 const at::Tensor& position_ids) = 0;
  // lm_head weight (V, H), tied or not: lets callers compute log-probs by chunks.
  virtual at::Tensor output_embedding() = 0;

  // Parameters with their Hugging Face names ("model.layers.0.self_attn.q_proj.weight").
  virtual std::vector<NamedTensor> named_parameters() = 0;
  virtual void set_training(bool training) = 0;
  virtual void to(c10::Device device, c10::ScalarType dtype) = 0;

  // Writes config.json and model.safetensors (Hugging Face layout) into `dir`, creating it.
  virtual void save(const std::string& dir) const = 0;

  // Continues each prompt (token ids, unpadded); returns only the new tokens,
  // ending at (and including) the stop token when one was produced.
  virtual std::vector<std::vector<int64_t>> generate(const std::vector<std::vector<int64_t>>& prompts,
                                                     const GenerationOptions& options) = 0;

  // LoRA (ModelOptions::lora; docs/lora.md).
  // The tensors an optimizer should update: every parameter, or with adapters
  // only the adapters (and a Scalar/Value head). Frozen parameters have
  // requires_grad false.
  virtual std::vector<NamedTensor> trainable_parameters() = 0;
  virtual bool has_adapters() const = 0;
  // Off: forward, hidden_states and generate compute the base model alone
  // (the implicit DPO/KTO reference). A no-op without adapters.
  virtual void set_adapters_enabled(bool enabled) = 0;
  // Writes adapter_config.json + adapter_model.safetensors in PEFT's layout
  // (`base_model_name_or_path` = `base_model`). Throws without adapters.
  // save() of a model with adapters writes the merged weights.
  virtual void save_adapter(const std::string& dir, const std::string& base_model) const = 0;
};

// What a model plugin registers: builds models of one family.
class ModelProvider {
 public:
  virtual ~ModelProvider() = default;
  // The config.json `model_type` values it understands.
  virtual std::vector<std::string> model_types() const = 0;
  // Loads a Hugging Face folder. Throws std::runtime_error naming the file and key.
  virtual std::shared_ptr<CausalLM> load(const std::string& dir, const ModelOptions& options) const = 0;
  // Builds a randomly initialised model from config.json text.
  virtual std::shared_ptr<CausalLM> create(const std::string& config_json, uint64_t seed,
                                           const ModelOptions& options) const = 0;
};

}  // namespace alignkit
