// A decoder block whose activations are recomputed in backward (see recompute.hpp).
#include "recompute.hpp"

#include <ATen/Context.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>
#include <vector>

namespace alignkit::llama {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The random state of `device`'s default generator, to replay dropout.
at::Generator default_generator(const at::Tensor& like) { return at::globalContext().defaultGenerator(like.device()); }

std::vector<at::Tensor> trainable_parameters_of(DecoderLayerImpl& layer) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& parameter : layer.parameters())
    if (parameter.requires_grad()) out.push_back(parameter);
  return out;
}

struct RecomputedLayer : torch::autograd::Function<RecomputedLayer> {
  // `parameters` are inputs only so that autograd routes their gradients (and
  // the output requires grad when the block trains but `hidden` does not, as
  // with frozen embeddings under LoRA).
  static variable_list forward(AutogradContext* ctx, DecoderLayerImpl* layer, const at::Tensor& hidden,
                               const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& visible,
                               at::TensorList parameters) {
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    ctx->saved_data["parameters"] = static_cast<int64_t>(parameters.size());
    at::Generator generator = default_generator(hidden);
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      ctx->saved_data["rng_state"] = generator.get_state();
    }
    ctx->save_for_backward({hidden, cos, sin, visible});
    return {layer->forward(hidden, cos, sin, visible, nullptr, 0)};  // (B, T, H), autograd off here
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    const int64_t num_parameters = ctx->saved_data["parameters"].toInt();
    const variable_list saved = ctx->get_saved_variables();
    at::Tensor hidden = saved[0].detach().requires_grad_(true);  // (B, T, H)
    std::vector<at::Tensor> parameters = trainable_parameters_of(*layer);
    TORCH_CHECK(static_cast<int64_t>(parameters.size()) == num_parameters,
                "recomputed decoder block: its trainable parameters changed between forward and backward");

    at::Generator generator = default_generator(hidden);
    at::Tensor current_state;
    at::Tensor output;
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      current_state = generator.get_state();
      generator.set_state(ctx->saved_data["rng_state"].toTensor());
    }
    {
      at::AutoGradMode enable_grad(true);
      output = layer->forward(hidden, saved[1], saved[2], saved[3], nullptr, 0);  // (B, T, H)
    }
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(current_state);
    }
    variable_list inputs = {hidden};
    inputs.insert(inputs.end(), parameters.begin(), parameters.end());
    variable_list grads = torch::autograd::grad({output}, inputs, {grad_outputs[0]}, /*retain_graph=*/false,
                                                /*create_graph=*/false, /*allow_unused=*/true);
    // One entry per forward argument: layer, hidden, cos, sin, visible, then each parameter.
    variable_list out = {at::Tensor(), grads[0], at::Tensor(), at::Tensor(), at::Tensor()};
    out.insert(out.end(), grads.begin() + 1, grads.end());
    return out;
  }
};

}  // namespace

at::Tensor recomputed_layer_forward(DecoderLayerImpl& layer, const at::Tensor& hidden, const at::Tensor& cos,
                                    const at::Tensor& sin, const at::Tensor& visible) {
  const std::vector<at::Tensor> parameters = trainable_parameters_of(layer);
  return RecomputedLayer::apply(&layer, hidden, cos, sin, visible, at::TensorList(parameters))[0];
}

}  // namespace alignkit::llama
