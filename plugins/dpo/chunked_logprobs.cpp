// Chunked label log-probs with a recomputing backward (see chunked_logprobs.hpp).
#include "chunked_logprobs.hpp"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace alignkit::recipe {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// log p(label) of every row of `hidden`: rows (N, H), weight (V, H), labels (N) -> (N) float32.
struct LabelLogprobs : torch::autograd::Function<LabelLogprobs> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& weight,
                            const at::Tensor& labels, int64_t chunk_size) {
    ctx->save_for_backward({rows, weight, labels});
    ctx->saved_data["chunk_size"] = chunk_size;
    const int64_t count = rows.size(0);
    at::Tensor out = at::empty({count}, rows.options().dtype(at::kFloat));  // (N)
    for (int64_t start = 0; start < count; start += chunk_size) {
      const int64_t size = std::min(chunk_size, count - start);
      at::Tensor logits = at::linear(rows.narrow(0, start, size), weight).to(at::kFloat);  // (n, V)
      at::Tensor label_logit = logits.gather(1, labels.narrow(0, start, size).unsqueeze(1)).squeeze(1);  // (n)
      out.narrow(0, start, size).copy_(label_logit - logits.logsumexp(1));
    }
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& rows = saved[0];    // (N, H)
    const at::Tensor& weight = saved[1];  // (V, H)
    const at::Tensor& labels = saved[2];  // (N)
    const int64_t chunk_size = ctx->saved_data["chunk_size"].toInt();
    const at::Tensor grad = grad_outputs[0].to(at::kFloat);  // (N)
    const bool want_rows = ctx->needs_input_grad(0);
    const bool want_weight = ctx->needs_input_grad(1);
    at::Tensor grad_rows = want_rows ? at::zeros_like(rows) : at::Tensor();                               // (N, H)
    at::Tensor grad_weight = want_weight ? at::zeros(weight.sizes(), weight.options().dtype(at::kFloat)) : at::Tensor();  // (V, H)
    const int64_t count = rows.size(0);
    for (int64_t start = 0; start < count; start += chunk_size) {
      const int64_t size = std::min(chunk_size, count - start);
      at::Tensor chunk_rows = rows.narrow(0, start, size);                           // (n, H)
      at::Tensor logits = at::linear(chunk_rows, weight).to(at::kFloat);             // (n, V)
      at::Tensor chunk_grad = grad.narrow(0, start, size).unsqueeze(1);              // (n, 1)
      // d log p(label) / d logits = onehot(label) - softmax(logits).
      at::Tensor grad_logits = logits.softmax(1).mul_(chunk_grad).neg_();            // (n, V)
      grad_logits.scatter_add_(1, labels.narrow(0, start, size).unsqueeze(1), chunk_grad);
      if (want_rows) grad_rows.narrow(0, start, size).copy_(at::matmul(grad_logits.to(weight.scalar_type()), weight));
      if (want_weight) grad_weight.add_(at::matmul(grad_logits.t(), chunk_rows.to(at::kFloat)));
    }
    if (want_weight) grad_weight = grad_weight.to(weight.scalar_type());
    return {grad_rows, grad_weight, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

ChunkedLogprobs chunked_sequence_logprobs(const at::Tensor& hidden, const at::Tensor& weight,
                                          const at::Tensor& input_ids, const at::Tensor& loss_mask,
                                          int64_t chunk_size) {
  if (chunk_size < 1)
    throw std::invalid_argument("chunked_sequence_logprobs: chunk_size must be at least 1, found " +
                                std::to_string(chunk_size));
  if (hidden.dim() != 3 || weight.dim() != 2 || weight.size(1) != hidden.size(2))
    throw std::invalid_argument("chunked_sequence_logprobs: hidden must be (B, T, H) and weight (V, H)");
  const int64_t batch_size = hidden.size(0);
  const int64_t length = hidden.size(1);
  const int64_t vocab = weight.size(0);
  if (input_ids.dim() != 2 || input_ids.size(0) != batch_size || input_ids.size(1) != length)
    throw std::invalid_argument("chunked_sequence_logprobs: input_ids does not match hidden (B, T)");
  if (loss_mask.sizes() != input_ids.sizes())
    throw std::invalid_argument("chunked_sequence_logprobs: loss_mask does not match input_ids");
  if (length < 2) throw std::invalid_argument("chunked_sequence_logprobs: rows need at least 2 tokens");

  at::Tensor labels = input_ids.slice(1, 1).to(at::kLong);  // (B, T-1)
  at::Tensor mask = loss_mask.slice(1, 1).to(at::kBool);    // (B, T-1)
  at::Tensor safe_labels = labels.masked_fill(~mask, 0);    // (B, T-1)
  at::Tensor out_of_range = safe_labels.lt(0).logical_or(safe_labels.ge(vocab));
  if (out_of_range.any().item<bool>()) {
    const int64_t bad = safe_labels.masked_select(out_of_range)[0].item<int64_t>();
    throw std::invalid_argument("chunked_sequence_logprobs: input_ids holds token id " + std::to_string(bad) +
                                " but the output embedding has " + std::to_string(vocab) + " rows");
  }

  at::Tensor rows = hidden.slice(1, 0, length - 1).reshape({batch_size * (length - 1), hidden.size(2)});  // (N, H)
  at::Tensor per_token = LabelLogprobs::apply(rows, weight, safe_labels.reshape({-1}), chunk_size);          // (N)
  ChunkedLogprobs out;
  out.tokens.per_token = per_token.view({batch_size, length - 1}).masked_fill(~mask, 0.0);  // (B, T-1)
  out.tokens.mask = mask;
  out.tokens.sum = out.tokens.per_token.sum(1);  // (B)
  out.tokens.count = mask.sum(1);                // (B)
  // mean_v(h . w_v) = h . mean_v(w_v): the vocabulary-mean logit without the logits.
  at::Tensor mean_row = weight.detach().to(at::kFloat).mean(0);                                              // (H)
  out.mean_logit = at::matmul(rows.detach().to(at::kFloat), mean_row).view({batch_size, length - 1});       // (B, T-1)
  return out;
}

}  // namespace alignkit::recipe
