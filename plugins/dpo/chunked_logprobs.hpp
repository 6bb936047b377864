// Per-token log-probs of the labels straight from the final hidden states and
// the output embedding, a chunk of positions at a time: the (B, T, V) logits
// and their log-softmax are never held, in forward or in backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "alignkit/batch.hpp"

namespace alignkit::recipe {

struct ChunkedLogprobs {
  SequenceLogprobs tokens;  // as sequence_logprobs(linear(hidden, weight), input_ids, loss_mask)
  at::Tensor mean_logit;    // (B, T-1) float32, detached: each scoring position's logit averaged over the vocabulary
};

// hidden (B, T, H), weight (V, H). Position t scores input_ids[t + 1]; each
// chunk of `chunk_size` positions computes its logits (chunk, V), the label
// logit and the log-sum-exp, and forgets them. Backward recomputes each chunk's
// logits and gives exact gradients to `hidden` and `weight` (softmax minus the
// one-hot label), so memory holds one chunk's logits at a time. Matches the
// plain computation to float32 rounding. Throws std::invalid_argument as
// sequence_logprobs does, and for chunk_size < 1.
ChunkedLogprobs chunked_sequence_logprobs(const at::Tensor& hidden, const at::Tensor& weight,
                                          const at::Tensor& input_ids, const at::Tensor& loss_mask,
                                          int64_t chunk_size);

}  // namespace alignkit::recipe
