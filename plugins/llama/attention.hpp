// Rotary position embeddings, the attention mask (causal + key padding +
// optional sliding window), the key/value cache and grouped-query attention,
// each as Hugging Face's Llama/Mistral/Qwen2 modelling code computes them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "config.hpp"
#include "layers.hpp"

namespace alignkit::llama {

// The inverse frequencies of `rope_type` default, linear or llama3, (head_dim / 2) float32.
at::Tensor rope_inverse_frequencies(const RopeConfig& rope, int64_t head_dim);

// cos and sin of position x frequency, duplicated over both halves of head_dim
// as HF's `torch.cat((freqs, freqs), -1)`: two (B, T, head_dim) tensors of `dtype`.
class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  RotaryEmbedding(const RopeConfig& rope, int64_t head_dim);
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& position_ids, c10::ScalarType dtype) const;

 private:
  // (head_dim / 2) float32, moved to the positions' device on first use there.
  mutable at::Tensor inverse_frequencies_;
};

// x * cos + rotate_half(x) * sin, where rotate_half swaps the two halves of
// head_dim and negates the second: x (B, heads, T, D), cos/sin (B, T, D).
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Which keys each query may see: (B, 1, T, S) bool. Query t sits at sequence
// index `past + t`; key s at index s. A key is visible when it is not after
// the query, is a real token (key_mask (B, S), nonzero = real) and, with a
// sliding window, lies fewer than `window` indices back.
at::Tensor visible_keys(const at::Tensor& key_mask, int64_t past, int64_t query_length,
                        std::optional<int64_t> sliding_window);

// Keys and values of one layer for every position so far: (B, kv_heads, capacity, D).
struct LayerCache {
  at::Tensor keys;
  at::Tensor values;
};

// The cache of a whole decoder; `length` positions are filled.
struct KVCache {
  std::vector<LayerCache> layers;
  int64_t length = 0;
  int64_t capacity = 0;
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const LlamaConfig& config, const at::TensorOptions& options);
  // hidden (B, T, H), cos/sin (B, T, D), visible (B, 1, T, S) -> (B, T, H). With
  // a cache, this step's keys and values are stored at [past, past + T) and
  // attention runs over [0, past + T).
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& visible, LayerCache* cache, int64_t past);

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t num_heads_;
  int64_t num_kv_heads_;
  int64_t head_dim_;
  double scaling_;
  double dropout_;
};
TORCH_MODULE(Attention);

}  // namespace alignkit::llama
