// Decoder layers, the decoder stack, the heads and HF-style random init.
#include "decoder.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <stdexcept>

#include "recompute.hpp"

namespace alignkit::llama {

DecoderLayerImpl::DecoderLayerImpl(const LlamaConfig& config, const at::TensorOptions& options) {
  // Registration order is HF's, so named_parameters() lists tensors as it does.
  self_attn = register_module("self_attn", Attention(config, options));
  mlp = register_module("mlp", MLP(config, options));
  input_layernorm = register_module("input_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps, options));
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                                     const at::Tensor& visible, LayerCache* cache, int64_t past) {
  at::Tensor h = hidden + self_attn(input_layernorm(hidden), cos, sin, visible, cache, past);  // (B, T, H)
  return h + mlp(post_attention_layernorm(h));
}

DecoderImpl::DecoderImpl(const LlamaConfig& config, const at::TensorOptions& options)
    : rotary_(config.rope, config.head_dim),
      sliding_window_(config.sliding_window),
      num_kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim) {
  embed_tokens =
      register_module("embed_tokens", Embedding(config.vocab_size, config.hidden_size, config.pad_token_id, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(DecoderLayer(config, options));
  norm = register_module("norm", RMSNorm(config.hidden_size, config.rms_norm_eps, options));
}

at::Tensor DecoderImpl::forward(const at::Tensor& ids, const at::Tensor& key_mask, const at::Tensor& position_ids,
                                KVCache* cache) {
  const int64_t past = cache ? cache->length : 0;
  const int64_t length = ids.size(1);
  at::Tensor hidden = embed_tokens(ids);  // (B, T, H)
  auto [cos, sin] = rotary_.cos_sin(position_ids, hidden.scalar_type());
  at::Tensor visible = visible_keys(key_mask, past, length, sliding_window_);  // (B, 1, T, S)
  const bool recompute = recompute_blocks && !cache && is_training() && at::GradMode::is_enabled();
  for (size_t i = 0; i < layers->size(); ++i) {
    DecoderLayerImpl& layer = *layers[i]->as<DecoderLayerImpl>();
    hidden = recompute ? recomputed_layer_forward(layer, hidden, cos, sin, visible)
                       : layer.forward(hidden, cos, sin, visible, cache ? &cache->layers[i] : nullptr, past);
  }
  if (cache) cache->length += length;
  return norm(hidden);
}

KVCache DecoderImpl::make_cache(int64_t batch, int64_t capacity) const {
  KVCache cache;
  cache.capacity = capacity;
  auto options = embed_tokens->weight.options().requires_grad(false);
  for (size_t i = 0; i < layers->size(); ++i)
    cache.layers.push_back({at::zeros({batch, num_kv_heads_, capacity, head_dim_}, options),
                            at::zeros({batch, num_kv_heads_, capacity, head_dim_}, options)});
  return cache;
}

ValueHeadImpl::ValueHeadImpl(int64_t hidden_size, const at::TensorOptions& options) {
  summary = register_module("summary", Linear(hidden_size, 1, /*bias=*/true, options));
}

at::Tensor ValueHeadImpl::forward(const at::Tensor& hidden) { return summary(hidden).squeeze(-1); }

NetworkImpl::NetworkImpl(const LlamaConfig& config, HeadKind kind, const at::TensorOptions& options) : head(kind) {
  model = register_module("model", Decoder(config, options));
  if (head == HeadKind::Scalar) {
    score = register_module("score", Linear(config.hidden_size, 1, /*bias=*/false, options));
    return;
  }
  if (!config.tie_word_embeddings)
    lm_head = register_module("lm_head", Linear(config.hidden_size, config.vocab_size, /*bias=*/false, options));
  if (head == HeadKind::Value) v_head = register_module("v_head", ValueHead(config.hidden_size, options));
}

at::Tensor NetworkImpl::output_embedding() const {
  if (head == HeadKind::Scalar)
    throw std::runtime_error("llama: a Scalar-head model (SequenceClassification) has no lm_head");
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

at::Tensor NetworkImpl::head_values(const at::Tensor& hidden) {
  if (head == HeadKind::Scalar) return score(hidden).squeeze(-1);
  if (head == HeadKind::Value) return v_head(hidden);
  throw std::runtime_error("llama: head_values needs a Scalar or Value head; this model was built as a LanguageModel");
}

bool NetworkImpl::is_head_parameter(const std::string& name) const {
  return name.rfind("score.", 0) == 0 || name.rfind("v_head.", 0) == 0;
}

void initialise_parameters(NetworkImpl& network, double std, uint64_t seed, const std::vector<std::string>* names) {
  at::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto ends_with = [](const std::string& text, const std::string& suffix) {
    return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  for (const auto& item : network.named_parameters()) {
    const std::string& name = item.key();
    at::Tensor parameter = item.value();
    if (names && std::find(names->begin(), names->end(), name) == names->end()) continue;
    if (ends_with(name, "norm.weight")) {
      parameter.fill_(1.0);
    } else if (ends_with(name, ".bias")) {
      parameter.zero_();
    } else {
      // Drawn in float32 on the CPU, so a seed gives the same model on any device and dtype.
      at::Tensor values = at::empty(parameter.sizes(), at::kFloat).normal_(0.0, std, generator);
      parameter.copy_(values);
      if (name == "model.embed_tokens.weight" && network.model->embed_tokens->padding_idx >= 0)
        parameter[network.model->embed_tokens->padding_idx].zero_();
    }
  }
}

}  // namespace alignkit::llama
