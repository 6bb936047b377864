// Rotary embeddings, attention mask, KV cache and grouped-query attention, as
// transformers' modeling_llama.py (eager attention) computes them.
#include "attention.hpp"

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/where.h>

#include <cmath>
#include <limits>

namespace alignkit::llama {

at::Tensor rope_inverse_frequencies(const RopeConfig& rope, int64_t head_dim) {
  // 1 / theta^(2i / D), computed in float32 exactly as HF's default init.
  at::Tensor exponents = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(head_dim);
  at::Tensor inverse = at::pow(rope.theta, exponents).reciprocal();  // (D/2)
  if (rope.type == "linear") return inverse / rope.factor;
  if (rope.type != "llama3") return inverse;

  // Llama 3.1: long wavelengths are divided by `factor`, short ones kept, and
  // the band between blended smoothly (transformers' _compute_llama3_parameters).
  const double original = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = original / rope.low_freq_factor;
  const double high_freq_wavelen = original / rope.high_freq_factor;
  at::Tensor wavelen = (2 * M_PI) / inverse;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inverse / rope.factor, inverse);
  at::Tensor smooth = (original / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  at::Tensor medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return at::where(medium, smoothed, scaled);
}

RotaryEmbedding::RotaryEmbedding(const RopeConfig& rope, int64_t head_dim)
    : inverse_frequencies_(rope_inverse_frequencies(rope, head_dim)) {}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::cos_sin(const at::Tensor& position_ids,
                                                           c10::ScalarType dtype) const {
  if (inverse_frequencies_.device() != position_ids.device())
    inverse_frequencies_ = inverse_frequencies_.to(position_ids.device());
  at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inverse_frequencies_;  // (B, T, D/2)
  at::Tensor angles = at::cat({freqs, freqs}, -1);                        // (B, T, D)
  return {angles.cos().to(dtype), angles.sin().to(dtype)};
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);  // rotate_half(x)
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

at::Tensor visible_keys(const at::Tensor& key_mask, int64_t past, int64_t query_length,
                        std::optional<int64_t> sliding_window) {
  const auto index_options = at::TensorOptions().dtype(at::kLong).device(key_mask.device());
  at::Tensor query_index = at::arange(past, past + query_length, index_options).unsqueeze(1);  // (T, 1)
  at::Tensor key_index = at::arange(key_mask.size(1), index_options).unsqueeze(0);             // (1, S)
  at::Tensor visible = key_index <= query_index;                                              // (T, S)
  if (sliding_window) visible = visible.logical_and(query_index - key_index < *sliding_window);
  return visible.unsqueeze(0).logical_and(key_mask.ne(0).unsqueeze(1)).unsqueeze(1);  // (B, 1, T, S)
}

AttentionImpl::AttentionImpl(const LlamaConfig& config, const at::TensorOptions& options)
    : num_heads_(config.num_attention_heads),
      num_kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      scaling_(1.0 / std::sqrt(static_cast<double>(config.head_dim))),
      dropout_(config.attention_dropout) {
  const int64_t hidden = config.hidden_size;
  q_proj = register_module("q_proj", Linear(hidden, num_heads_ * head_dim_, config.qkv_bias, options));
  k_proj = register_module("k_proj", Linear(hidden, num_kv_heads_ * head_dim_, config.qkv_bias, options));
  v_proj = register_module("v_proj", Linear(hidden, num_kv_heads_ * head_dim_, config.qkv_bias, options));
  o_proj = register_module("o_proj", Linear(num_heads_ * head_dim_, hidden, config.o_bias, options));
}

at::Tensor AttentionImpl::forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                                  const at::Tensor& visible, LayerCache* cache, int64_t past) {
  const int64_t batch = hidden.size(0);
  const int64_t length = hidden.size(1);
  at::Tensor q = q_proj(hidden).view({batch, length, num_heads_, head_dim_}).transpose(1, 2);     // (B, nH, T, D)
  at::Tensor k = k_proj(hidden).view({batch, length, num_kv_heads_, head_dim_}).transpose(1, 2);  // (B, kvH, T, D)
  at::Tensor v = v_proj(hidden).view({batch, length, num_kv_heads_, head_dim_}).transpose(1, 2);  // (B, kvH, T, D)
  q = apply_rotary(q, cos, sin);
  k = apply_rotary(k, cos, sin);
  if (cache) {
    cache->keys.narrow(2, past, length).copy_(k);
    cache->values.narrow(2, past, length).copy_(v);
    k = cache->keys.narrow(2, 0, past + length);    // (B, kvH, S, D)
    v = cache->values.narrow(2, 0, past + length);  // (B, kvH, S, D)
  }
  const int64_t keys = k.size(2);
  const int64_t group = num_heads_ / num_kv_heads_;

  // Query head h uses key/value head h / group (HF's repeat_kv). Stacking the
  // `group` query heads of each kv head along the query axis gives the same
  // products without copying keys and values `group` times.
  at::Tensor grouped_q = q.reshape({batch, num_kv_heads_, group * length, head_dim_});
  at::Tensor scores = at::matmul(grouped_q, k.transpose(-1, -2)) * scaling_;  // (B, kvH, g*T, S)
  // Softmax in float32, as HF. A fully masked row (a left-padding query) gets
  // equal finite scores, hence a uniform distribution rather than NaN.
  scores = scores.view({batch, num_heads_, length, keys})
               .to(at::kFloat)
               .masked_fill(visible.logical_not(), std::numeric_limits<float>::lowest());  // (B, nH, T, S)
  at::Tensor probs = at::softmax(scores, -1).to(q.scalar_type());
  if (is_training() && dropout_ > 0) probs = at::dropout(probs, dropout_, /*train=*/true);
  at::Tensor out = at::matmul(probs.reshape({batch, num_kv_heads_, group * length, keys}), v);  // (B, kvH, g*T, D)
  out = out.view({batch, num_heads_, length, head_dim_}).transpose(1, 2).reshape({batch, length, num_heads_ * head_dim_});
  return o_proj(out);  // (B, T, H)
}

}  // namespace alignkit::llama
