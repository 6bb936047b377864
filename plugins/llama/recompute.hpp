// Activation recomputation (gradient checkpointing) of one decoder block:
// LibTorch 1.13's C++ API has no torch.utils.checkpoint, so this is a custom
// autograd Function that keeps only the block's inputs and runs the block
// again, with gradients, when backward reaches it.
#pragma once

#include <ATen/core/Tensor.h>

#include "decoder.hpp"

namespace alignkit::llama {

// layer(hidden, cos, sin, visible) without a cache, as DecoderLayerImpl::forward,
// but the block's activations are dropped after the forward pass and recomputed
// in backward. The random state of the forward pass is restored for the rerun,
// so dropout draws the same masks; gradients reach the block's parameters
// (accumulated by autograd as usual) and `hidden`.
at::Tensor recomputed_layer_forward(DecoderLayerImpl& layer, const at::Tensor& hidden, const at::Tensor& cos,
                                    const at::Tensor& sin, const at::Tensor& visible);

}  // namespace alignkit::llama
