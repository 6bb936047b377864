// Linear, embedding, RMSNorm and SwiGLU MLP of a Llama-family decoder.
#include "layers.hpp"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>

#include <cmath>

namespace alignkit::llama {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({out_features, in_features}, options));
  if (with_bias) bias = register_parameter("bias", at::empty({out_features}, options));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  at::Tensor y = at::linear(x, weight, bias);  // (..., out)
  if (!lora_A || !adapter_enabled) return y;
  at::Tensor dropped = lora_dropout > 0 ? at::dropout(x, lora_dropout, is_training()) : x;
  return y + lora_B->forward(lora_A->forward(dropped)) * lora_scaling;
}

void LinearImpl::add_adapter(int64_t r, double alpha, double dropout, at::Generator& generator) {
  const int64_t out_features = weight.size(0);
  const int64_t in_features = weight.size(1);
  const at::TensorOptions options = weight.options();
  lora_A = register_module("lora_A", std::make_shared<LinearImpl>(in_features, r, /*bias=*/false, options));
  lora_B = register_module("lora_B", std::make_shared<LinearImpl>(r, out_features, /*bias=*/false, options));
  at::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  // Drawn in float32 on the CPU, so a seed gives the same adapter on any device and dtype.
  lora_A->weight.copy_(at::empty({r, in_features}, at::kFloat).uniform_(-bound, bound, generator));
  lora_B->weight.zero_();
  lora_scaling = alpha / static_cast<double>(r);
  lora_dropout = dropout;
}

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
