// LoRA on a Llama-family network: attaching fresh adapters to the targeted
// linear layers, folding adapters into the base weights, and PEFT's file
// layout (adapter_config.json + adapter_model.safetensors, tensors named
// "base_model.model.<HF module>.lora_A.weight").
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "alignkit/model.hpp"
#include "decoder.hpp"

namespace alignkit::llama {

// True for the tensors adapters add ("....q_proj.lora_A.weight"), which a
// base checkpoint neither holds nor receives.
bool is_adapter_parameter(const std::string& name);

// Adds adapters to every linear layer of the decoder whose module name is in
// options.target_modules (or all of them for "all-linear"; never lm_head or a
// head, as PEFT). Throws std::invalid_argument for r <= 0 or an unknown
// module name, listing the valid names.
void attach_adapters(NetworkImpl& network, const LoraOptions& options);

// Turns every adapter on or off.
void set_adapters_enabled(NetworkImpl& network, bool enabled);

// W + scaling * B A of every adapted layer, (out, in) in W's dtype: what a
// merged checkpoint holds for "<module>.weight".
at::Tensor merged_weight(const LinearImpl& linear);

// Adds the PEFT adapter in `dir` to the weights of `network` (W += scaling B A;
// modules_to_save tensors replace the head's). Throws std::runtime_error naming
// the file and tensor for a missing file, a tensor the model has no module
// for, or a shape that does not match the base model.
void merge_adapter_folder(NetworkImpl& network, const std::string& dir);

// Writes `network`'s adapters (and, with a Scalar/Value head, the head as
// PEFT's modules_to_save) into `dir` in PEFT's layout.
void save_adapter_folder(const NetworkImpl& network, const LoraOptions& options, const std::string& base_model,
                         const std::string& dir);

}  // namespace alignkit::llama
