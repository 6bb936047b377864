// The plain layers of a Llama-family decoder: linear, embedding, RMSNorm and
// the SwiGLU MLP. Parameters are allocated uninitialised; a checkpoint or the
// random init fills them.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/Generator.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>

#include "config.hpp"

namespace alignkit::llama {

// y = x W^T + b, plus with a LoRA adapter (PEFT's lora.Linear)
// scaling * lora_B(lora_A(dropout(x))) while adapter_enabled.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

  // Registers lora_A (r, in), drawn kaiming-uniform(a = sqrt(5)) as PEFT does,
  // i.e. U(-1/sqrt(in), 1/sqrt(in)) from `generator`, and lora_B (out, r) = 0.
  void add_adapter(int64_t r, double alpha, double dropout, at::Generator& generator);
  bool has_adapter() const { return lora_A != nullptr; }

  at::Tensor weight;  // (out, in)
  at::Tensor bias;    // (out), or undefined
  std::shared_ptr<LinearImpl> lora_A;  // weight (r, in), or null
  std::shared_ptr<LinearImpl> lora_B;  // weight (out, r), or null
  double lora_scaling = 0.0;           // lora_alpha / r
  double lora_dropout = 0.0;
  bool adapter_enabled = true;
};
TORCH_MODULE(Linear);

// Token embedding; the row of `padding_idx` gets no gradient, as nn.Embedding(padding_idx=pad_token_id).
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t vocab_size, int64_t hidden_size, int64_t padding_idx, const at::TensorOptions& options);
  // ids (B, T) -> (B, T, H)
  at::Tensor forward(const at::Tensor& ids);

  at::Tensor weight;  // (V, H)
  int64_t padding_idx;  // -1: none
};
TORCH_MODULE(Embedding);

// weight * (x / sqrt(mean(x^2) + eps)), normalised in float32 and cast back
// to the input dtype before the weight, as LlamaRMSNorm.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t hidden_size, double eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;  // (H)
  double eps;
};
TORCH_MODULE(RMSNorm);

// down_proj(silu(gate_proj(x)) * up_proj(x)).
class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const LlamaConfig& config, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);

  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

}  // namespace alignkit::llama
