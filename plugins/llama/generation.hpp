// Autoregressive generation for a Llama-family network: batched prompts (left
// padded), KV cache or full recomputation, greedy or sampled tokens.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "alignkit/model.hpp"
#include "config.hpp"
#include "decoder.hpp"

namespace alignkit::llama {

// As CausalLM::generate. Throws std::runtime_error for bad options or prompts.
std::vector<std::vector<int64_t>> generate_tokens(NetworkImpl& network, const LlamaConfig& config,
                                                  const std::vector<std::vector<int64_t>>& prompts,
                                                  const GenerationOptions& options);

// The next token of each row from float32 CPU logits (B, V) -> (B) int64:
// argmax, or HF's sampling chain temperature -> top-k -> top-p -> multinomial.
at::Tensor choose_next_tokens(at::Tensor logits, const GenerationOptions& options, at::Generator& generator);

}  // namespace alignkit::llama
