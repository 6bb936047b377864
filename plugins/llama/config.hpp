// config.json of a Llama-family decoder (model_type llama, mistral, qwen2),
// read with Hugging Face's defaults and semantics, and written back.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace alignkit::llama {

// Rotary embedding settings, from transformers 4.x (`rope_theta` + `rope_scaling`)
// or 5.x (`rope_parameters`).
struct RopeConfig {
  std::string type = "default";  // default | linear | llama3
  double theta = 10000.0;
  double factor = 1.0;  // linear and llama3
  // llama3 only
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type;  // llama | mistral | qwen2
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // llama: attention_bias; qwen2: always
  bool o_bias = false;    // llama: attention_bias; qwen2: never
  bool mlp_bias = false;  // llama: mlp_bias
  double attention_dropout = 0.0;
  double initializer_range = 0.02;
  // mistral: each query sees the `sliding_window` most recent positions (itself included).
  std::optional<int64_t> sliding_window;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // config.json may give one id or a list
  int64_t pad_token_id = -1;
  std::optional<c10::ScalarType> torch_dtype;  // `torch_dtype` (4.x) or `dtype` (5.x)

  // The file as read, so saving keeps every key this plugin does not own.
  std::string original_json;
};

// Parses config.json text. `source` names it in errors, which are
// std::runtime_error naming the key, the value found and what is supported.
LlamaConfig parse_config(const std::string& json_text, const std::string& source);

enum class ConfigHead { CausalLM, SequenceClassification };

// The config.json to write: the original keys, with `architectures`, the
// dtype key and (for SequenceClassification) one label set, and every key the
// model depends on filled in where the original left it to a default.
std::string serialize_config(const LlamaConfig& config, ConfigHead head, c10::ScalarType saved_dtype);

// "float32" <-> kFloat, as torch_dtype spells them.
std::string dtype_config_name(c10::ScalarType dtype);

}  // namespace alignkit::llama
