// Linear, embedding, RMSNorm and SwiGLU MLP of a Llama-family decoder.
#include "layers.hpp"

#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>

namespace alignkit::llama {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({out_features, in_features}, options));
  if (with_bias) bias = register_parameter("bias", at::empty({out_features}, options));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) { return at::linear(x, weight, bias); }

EmbeddingImpl::EmbeddingImpl(int64_t vocab_size, int64_t hidden_size, int64_t padding, const at::TensorOptions& options)
    : padding_idx(padding) {
  weight = register_parameter("weight", at::empty({vocab_size, hidden_size}, options));
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) { return at::embedding(weight, ids, padding_idx); }

RMSNormImpl::RMSNormImpl(int64_t hidden_size, double epsilon, const at::TensorOptions& options) : eps(epsilon) {
  weight = register_parameter("weight", at::empty({hidden_size}, options));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);  // (..., 1)
  return weight * (x32 * at::rsqrt(variance + eps)).to(x.scalar_type());
}

MLPImpl::MLPImpl(const LlamaConfig& config, const at::TensorOptions& options) {
  gate_proj = register_module("gate_proj", Linear(config.hidden_size, config.intermediate_size, config.mlp_bias, options));
  up_proj = register_module("up_proj", Linear(config.hidden_size, config.intermediate_size, config.mlp_bias, options));
  down_proj = register_module("down_proj", Linear(config.intermediate_size, config.hidden_size, config.mlp_bias, options));
}

at::Tensor MLPImpl::forward(const at::Tensor& x) {
  return down_proj(at::silu(gate_proj(x)) * up_proj(x));
}

}  // namespace alignkit::llama
