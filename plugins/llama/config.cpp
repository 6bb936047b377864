// Reading and writing config.json for Llama, Mistral and Qwen2 decoders.
//
// Defaults are Hugging Face's (transformers 4.x/5.x configuration classes).
// Keys that change the architecture in a way this plugin does not implement
// are refused by name rather than ignored.
#include "config.hpp"

#include <nlohmann/json.hpp>

#include <stdexcept>

namespace alignkit::llama {
namespace {

using json = nlohmann::ordered_json;

const char* const kSupportedModelTypes = "llama, mistral, qwen2";
const char* const kRequiredKeys =
    "model_type, vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads";
const char* const kOptionalKeys =
    "num_key_value_heads, head_dim, hidden_act, max_position_embeddings, rms_norm_eps, rope_theta, rope_scaling, "
    "rope_parameters, tie_word_embeddings, attention_bias, mlp_bias, attention_dropout, initializer_range, "
    "sliding_window, use_sliding_window, bos_token_id, eos_token_id, pad_token_id, torch_dtype, dtype";

struct DtypeName {
  const char* name;
  c10::ScalarType dtype;
};
constexpr DtypeName kDtypeNames[] = {
    {"float32", c10::kFloat}, {"bfloat16", c10::kBFloat16}, {"float16", c10::kHalf}, {"float64", c10::kDouble}};

// Typed access to one JSON object with errors that name the file and key.
class Reader {
 public:
  Reader(const json& object, std::string source, std::string prefix = "")
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  bool has(const std::string& key) const {
    auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }

  // `why` ends the message for a missing key; by default it lists the keys read.
  int64_t required_int(const std::string& key, const std::string& why = "") const {
    if (!has(key))
      fail("missing required key '" + name(key) + "' " +
           (why.empty() ? std::string("(required: ") + kRequiredKeys + "; optional: " + kOptionalKeys + ")" : why));
    return to_int(key);
  }
  std::optional<int64_t> optional_int(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    return to_int(key);
  }
  double required_number(const std::string& key, const std::string& why) const {
    if (!has(key)) fail("missing required key '" + name(key) + "' " + why);
    return number(key, 0.0);
  }
  double number(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const json& value = object_.at(key);
    if (!value.is_number()) fail("key '" + name(key) + "' must be a number, found " + value.dump());
    return value.get<double>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& value = object_.at(key);
    if (!value.is_boolean()) fail("key '" + name(key) + "' must be true or false, found " + value.dump());
    return value.get<bool>();
  }
  std::optional<std::string> text(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    const json& value = object_.at(key);
    if (!value.is_string()) fail("key '" + name(key) + "' must be a string, found " + value.dump());
    return value.get<std::string>();
  }
  int64_t positive_int(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const {
    std::optional<int64_t> value = fallback ? optional_int(key) : std::optional<int64_t>(required_int(key));
    int64_t result = value ? *value : *fallback;
    if (result <= 0) fail("key '" + name(key) + "' must be positive, found " + std::to_string(result));
    return result;
  }

  [[noreturn]] void fail(const std::string& message) const { throw std::runtime_error(source_ + ": " + message); }
  std::string name(const std::string& key) const { return prefix_ + key; }

 private:
  int64_t to_int(const std::string& key) const {
    const json& value = object_.at(key);
    if (!value.is_number_integer()) fail("key '" + name(key) + "' must be an integer, found " + value.dump());
    return value.get<int64_t>();
  }

  const json& object_;
  std::string source_;
  std::string prefix_;
};

RopeConfig parse_rope(const Reader& config, const json& root, const std::string& source) {
  RopeConfig rope;
  // 5.x: one `rope_parameters` object holding theta and the scaling; 4.x:
  // top-level `rope_theta` and an optional `rope_scaling` object.
  const bool v5 = config.has("rope_parameters");
  const std::string key = v5 ? "rope_parameters" : "rope_scaling";
  rope.theta = config.number("rope_theta", 10000.0);
  if (!config.has(key)) return rope;

  const json& scaling = root.at(key);
  if (!scaling.is_object()) config.fail("key '" + key + "' must be an object, found " + scaling.dump());
  Reader params(scaling, source, key + ".");
  if (v5) rope.theta = params.number("rope_theta", rope.theta);
  // Before transformers 4.45 the field was called "type".
  rope.type = (params.has("rope_type") ? params.text("rope_type") : params.text("type")).value_or("default");
  const std::string why = "(required by rope_type '" + rope.type + "')";
  if (rope.type == "default") return rope;
  if (rope.type == "linear") {
    rope.factor = params.required_number("factor", why);
  } else if (rope.type == "llama3") {
    rope.factor = params.required_number("factor", why);
    rope.low_freq_factor = params.required_number("low_freq_factor", why);
    rope.high_freq_factor = params.required_number("high_freq_factor", why);
    rope.original_max_position_embeddings = params.required_int("original_max_position_embeddings", why);
    if (rope.high_freq_factor == rope.low_freq_factor)
      params.fail("keys '" + params.name("low_freq_factor") + "' and '" + params.name("high_freq_factor") +
                  "' must differ");
  } else {
    params.fail("key '" + params.name("rope_type") + "' is '" + rope.type +
                "', which is not supported (supported: default, linear, llama3)");
  }
  if (rope.factor <= 0) params.fail("key '" + params.name("factor") + "' must be positive");
  return rope;
}

}  // namespace

std::string dtype_config_name(c10::ScalarType dtype) {
  for (const DtypeName& entry : kDtypeNames)
    if (entry.dtype == dtype) return entry.name;
  throw std::runtime_error(std::string("dtype ") + c10::toString(dtype) +
                           " has no config.json name (supported: float32, bfloat16, float16, float64)");
}

LlamaConfig parse_config(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    throw std::runtime_error(source + ": not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw std::runtime_error(source + ": not a JSON object");
  Reader config(root, source);
  LlamaConfig out;
  out.original_json = json_text;

  std::optional<std::string> model_type = config.text("model_type");
  if (!model_type)
    config.fail(std::string("missing required key 'model_type' (supported: ") + kSupportedModelTypes + ")");
  out.model_type = *model_type;
  const bool llama = out.model_type == "llama";
  const bool mistral = out.model_type == "mistral";
  const bool qwen2 = out.model_type == "qwen2";
  if (!llama && !mistral && !qwen2)
    config.fail("model_type '" + out.model_type + "' is not supported (supported: " + kSupportedModelTypes + ")");

  out.vocab_size = config.positive_int("vocab_size");
  out.hidden_size = config.positive_int("hidden_size");
  out.intermediate_size = config.positive_int("intermediate_size");
  out.num_hidden_layers = config.positive_int("num_hidden_layers");
  out.num_attention_heads = config.positive_int("num_attention_heads");
  // HF's LlamaConfig falls back to multi-head attention; Mistral's and Qwen2's
  // class defaults (8, 32) are model-specific guesses, so those must say it.
  out.num_key_value_heads =
      llama ? config.positive_int("num_key_value_heads", out.num_attention_heads) : config.positive_int("num_key_value_heads");
  if (out.num_attention_heads % out.num_key_value_heads != 0)
    config.fail("num_attention_heads (" + std::to_string(out.num_attention_heads) +
                ") must be a multiple of num_key_value_heads (" + std::to_string(out.num_key_value_heads) + ")");
  if (config.has("head_dim")) {
    out.head_dim = config.positive_int("head_dim");
  } else {
    if (out.hidden_size % out.num_attention_heads != 0)
      config.fail("hidden_size (" + std::to_string(out.hidden_size) + ") is not divisible by num_attention_heads (" +
                  std::to_string(out.num_attention_heads) + "); give head_dim explicitly");
    out.head_dim = out.hidden_size / out.num_attention_heads;
  }
  if (out.head_dim % 2 != 0) config.fail("head_dim " + std::to_string(out.head_dim) + " must be even for rotary embeddings");

  std::string act = config.text("hidden_act").value_or("silu");
  if (act != "silu" && act != "swish")
    config.fail("hidden_act '" + act + "' is not supported (supported: silu, swish)");
  const int64_t default_max_positions = llama ? 2048 : mistral ? 4096 * 32 : 32768;
  out.max_position_embeddings = config.positive_int("max_position_embeddings", default_max_positions);
  out.rms_norm_eps = config.number("rms_norm_eps", 1e-6);
  if (out.rms_norm_eps < 0) config.fail("key 'rms_norm_eps' must not be negative");
  out.rope = parse_rope(config, root, source);
  if (config.has("partial_rotary_factor") && config.number("partial_rotary_factor", 1.0) != 1.0)
    config.fail("partial_rotary_factor other than 1.0 is not supported");
  out.tie_word_embeddings = config.boolean("tie_word_embeddings", false);
  out.attention_dropout = config.number("attention_dropout", 0.0);
  if (out.attention_dropout < 0 || out.attention_dropout >= 1) config.fail("key 'attention_dropout' must be in [0, 1)");
  out.initializer_range = config.number("initializer_range", 0.02);
  if (out.initializer_range < 0) config.fail("key 'initializer_range' must not be negative");

  if (llama) {
    out.qkv_bias = out.o_bias = config.boolean("attention_bias", false);
    out.mlp_bias = config.boolean("mlp_bias", false);
  } else {
    // Mistral has no biases; Qwen2 has them on q, k, v (never o). Neither reads these keys.
    for (const char* key : {"attention_bias", "mlp_bias"})
      if (config.boolean(key, false))
        config.fail(std::string("key '") + key + "' = true is not supported for model_type '" + out.model_type +
                    "' (only llama has it)");
    out.qkv_bias = qwen2;
  }
  if (mistral) {
    // MistralConfig's default is 4096; an explicit null turns the window off.
    std::optional<int64_t> window = root.contains("sliding_window") ? config.optional_int("sliding_window") : 4096;
    if (window && *window <= 0) config.fail("key 'sliding_window' must be positive or null");
    out.sliding_window = window;
  }
  if (qwen2) {
    if (config.boolean("use_sliding_window", false))
      config.fail("use_sliding_window = true is not supported for qwen2 (supported: false)");
    if (config.has("layer_types")) {
      for (const auto& type : root.at("layer_types"))
        if (type != "full_attention")
          config.fail("layer_types entry " + type.dump() + " is not supported (supported: \"full_attention\")");
    }
  }

  out.bos_token_id = config.optional_int("bos_token_id").value_or(-1);
  out.pad_token_id = config.optional_int("pad_token_id").value_or(-1);
  if (config.has("eos_token_id")) {
    const json& eos = root.at("eos_token_id");
    if (eos.is_array()) {
      for (const auto& id : eos) {
        if (!id.is_number_integer()) config.fail("key 'eos_token_id' must hold integers, found " + eos.dump());
        out.eos_token_ids.push_back(id.get<int64_t>());
      }
    } else {
      out.eos_token_ids.push_back(*config.optional_int("eos_token_id"));
    }
  }
  auto check_token = [&](const char* key, int64_t id) {
    if (id < -1 || id >= out.vocab_size)
      config.fail(std::string("key '") + key + "' = " + std::to_string(id) + " is outside the vocabulary of " +
                  std::to_string(out.vocab_size));
  };
  check_token("bos_token_id", out.bos_token_id);
  check_token("pad_token_id", out.pad_token_id);
  for (int64_t id : out.eos_token_ids) check_token("eos_token_id", id);

  const char* dtype_key = config.has("torch_dtype") ? "torch_dtype" : "dtype";
  if (std::optional<std::string> dtype = config.text(dtype_key)) {
    for (const DtypeName& entry : kDtypeNames)
      if (*dtype == entry.name) out.torch_dtype = entry.dtype;
    if (!out.torch_dtype)
      config.fail(std::string("key '") + dtype_key + "' is '" + *dtype +
                  "', which is not supported (supported: float32, bfloat16, float16, float64)");
  }
  return out;
}

std::string serialize_config(const LlamaConfig& config, ConfigHead head, c10::ScalarType saved_dtype) {
  json root = json::parse(config.original_json);
  const std::string family = config.model_type == "llama" ? "Llama" : config.model_type == "mistral" ? "Mistral" : "Qwen2";
  root["architectures"] =
      json::array({family + (head == ConfigHead::CausalLM ? "ForCausalLM" : "ForSequenceClassification")});
  // transformers 5.x names the key `dtype`; keep whichever form the file used.
  root[root.contains("dtype") && !root.contains("torch_dtype") ? "dtype" : "torch_dtype"] = dtype_config_name(saved_dtype);
  if (head == ConfigHead::SequenceClassification) {
    root["id2label"] = {{"0", "LABEL_0"}};
    root["label2id"] = {{"LABEL_0", 0}};
    root["num_labels"] = 1;
  }

  // Keys a minimal config may leave to defaults: write the values used, so
  // any reader (transformers included) builds the same model.
  auto fill = [&](const char* key, json value) {
    if (!root.contains(key) || root[key].is_null()) root[key] = std::move(value);
  };
  fill("num_key_value_heads", config.num_key_value_heads);
  fill("head_dim", config.head_dim);
  fill("hidden_act", "silu");
  fill("max_position_embeddings", config.max_position_embeddings);
  fill("rms_norm_eps", config.rms_norm_eps);
  if (!root.contains("rope_parameters")) fill("rope_theta", config.rope.theta);
  fill("tie_word_embeddings", config.tie_word_embeddings);
  fill("initializer_range", config.initializer_range);
  fill("attention_dropout", config.attention_dropout);
  if (config.model_type == "mistral" && !root.contains("sliding_window"))
    root["sliding_window"] = config.sliding_window ? json(*config.sliding_window) : json(nullptr);
  if (config.model_type == "llama") {
    fill("attention_bias", config.qkv_bias);
    fill("mlp_bias", config.mlp_bias);
  }
  return root.dump(2) + "\n";
}

}  // namespace alignkit::llama
