// The decoder stack and the network around it, with Hugging Face's module
// names so that named_parameters() gives checkpoint names
// ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight", "score.weight",
// "v_head.summary.weight").
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "alignkit/model.hpp"
#include "attention.hpp"
#include "config.hpp"
#include "layers.hpp"

namespace alignkit::llama {

// Pre-norm block: h = x + attn(norm(x)); out = h + mlp(norm(h)).
class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const LlamaConfig& config, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& visible, LayerCache* cache, int64_t past);

  Attention self_attn{nullptr};
  MLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr};
  RMSNorm post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

// HF's LlamaModel: embeddings, layers, final norm.
class DecoderImpl : public torch::nn::Module {
 public:
  DecoderImpl(const LlamaConfig& config, const at::TensorOptions& options);
  // ids (B, T), positions (B, T), key_mask (B, S) with S = past + T (nonzero =
  // real token) -> final-norm hidden states (B, T, H). With a cache, past is
  // cache->length and the cache grows by T.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& key_mask, const at::Tensor& position_ids,
                     KVCache* cache = nullptr);
  // An empty cache for `batch` sequences of up to `capacity` positions.
  KVCache make_cache(int64_t batch, int64_t capacity) const;

  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  // Gradient checkpointing: in training with autograd on (and no cache), each
  // block's activations are recomputed in backward instead of kept.
  bool recompute_blocks = false;

 private:
  RotaryEmbedding rotary_;
  std::optional<int64_t> sliding_window_;
  int64_t num_kv_heads_;
  int64_t head_dim_;
};
TORCH_MODULE(Decoder);

// TRL's ValueHead: `summary` = Linear(H, 1) with bias.
class ValueHeadImpl : public torch::nn::Module {
 public:
  ValueHeadImpl(int64_t hidden_size, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& hidden);  // (B, T, H) -> (B, T)

  Linear summary{nullptr};
};
TORCH_MODULE(ValueHead);

// The whole network of one head kind:
//   LanguageModel: model + lm_head (absent when tied)            = *ForCausalLM
//   Scalar:        model + score (1 x H, no bias)                = *ForSequenceClassification
//   Value:         model + lm_head (unless tied) + v_head        = TRL's *WithValueHead
class NetworkImpl : public torch::nn::Module {
 public:
  NetworkImpl(const LlamaConfig& config, HeadKind head, const at::TensorOptions& options);

  // (V, H): lm_head.weight, or the embeddings when tied. Throws for Scalar.
  at::Tensor output_embedding() const;
  // hidden (B, T, H) -> head values (B, T). Throws for LanguageModel.
  at::Tensor head_values(const at::Tensor& hidden);
  // The parameters a checkpoint of an LM may lack, which are then initialised.
  bool is_head_parameter(const std::string& name) const;

  HeadKind head;
  Decoder model{nullptr};
  Linear lm_head{nullptr};
  Linear score{nullptr};
  ValueHead v_head{nullptr};
};
TORCH_MODULE(Network);

// HF-style random init, deterministic for `seed`: weights of linear and
// embedding layers ~ N(0, std), biases 0, norms 1, the padding row 0. Only
// `names` are initialised when given.
void initialise_parameters(NetworkImpl& network, double std, uint64_t seed,
                           const std::vector<std::string>* names = nullptr);

}  // namespace alignkit::llama
