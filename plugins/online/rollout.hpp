// Rollouts for online RL: a batch of prompts, `num_generations` sampled
// completions each (CausalLM::generate with the KV cache), laid out as the
// tensors the losses need, plus the per-token log-probs and entropy of the
// completion tokens under a model.
//
// A rollout of N = prompts x num_generations rows, prompt-major (row
// p * num_generations + g is the g-th completion of prompt p, so a group is
// a contiguous block of rows, as TRL's repeat_interleave lays it out):
//   prompt_ids      [PAD PAD p0 p1 p2]   left-padded, every prompt ends at column P-1
//   completion_ids  [c0 c1 EOS PAD]      right-padded
//   completion_mask [ 1  1   1   0]      real tokens up to and including the first EOS
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

#include "alignkit/dataset.hpp"
#include "alignkit/model.hpp"
#include "alignkit/reward.hpp"
#include "alignkit/tokenizer.hpp"
#include "alignkit/training.hpp"

namespace alignkit::online {

struct RolloutSettings {
  int64_t num_generations = 1;
  int64_t max_prompt_length = 0;  // keeps the end of longer prompts (TRL); 0: no limit
  // max_new_tokens is the completion length limit (TRL's max_completion_length);
  // do_sample, temperature, top_k, top_p and seed as generate takes them.
  // The caller varies `seed` per rollout (e.g. stage seed + step).
  GenerationOptions generation;
  int32_t pad_id = 0;  // fills the padding of prompt_ids and completion_ids
};

struct RolloutBatch {
  at::Tensor prompt_ids;           // (N, P) int64, left-padded with pad_id
  at::Tensor prompt_mask;          // (N, P) int64, 1 on real tokens
  at::Tensor completion_ids;       // (N, C) int64, right-padded with pad_id
  at::Tensor completion_mask;      // (N, C) int64, 1 on tokens up to and including the first EOS
  std::vector<std::string> completion_texts;  // decoded, without the EOS; token ids joined by spaces without a tokenizer
  std::vector<bool> truncated;     // no EOS within the length limit
  std::vector<int64_t> example_of_row;  // the index (into the prompts given) each row continues
  int64_t num_generations = 1;

  int64_t rows() const { return completion_ids.size(0); }
  int64_t prompt_width() const { return prompt_ids.size(1); }
  int64_t completion_width() const { return completion_ids.size(1); }
  // Prompt + completion in one row, for a forward pass: (N, P + C) each.
  at::Tensor input_ids() const;
  at::Tensor attention_mask() const;
  // HF positions: real tokens numbered from 0, padding 1 (masked anyway).
  at::Tensor position_ids() const;
  at::Tensor completion_lengths() const;  // (N) int64: completion_mask summed
  // The rows `rows` (any order), every field picked alike; example_of_row keeps its values.
  RolloutBatch select(const std::vector<int64_t>& rows) const;
  RolloutBatch to(c10::Device device) const;
};

// Generates settings.num_generations completions for each prompt (its
// Example::prompt ids; `tokenizer` may be null for pre-tokenized data).
// Tensors live on the policy's device. Throws std::invalid_argument for no
// prompts, an empty prompt, num_generations < 1 or max_new_tokens < 1.
RolloutBatch generate_rollout(CausalLM& policy, const Tokenizer* tokenizer,
                              const std::vector<const Example*>& prompts, const RolloutSettings& settings);

// TRL's completion metrics of a rollout: completions/{mean,min,max}_length
// (tokens, the EOS included), completions/clipped_ratio (the share that hit
// the length limit without an EOS) and completions/{mean,min,max}_terminated_length
// (over those that ended; 0 when none did).
Metrics completion_metrics(const RolloutBatch& batch);

// What reward functions see for each row: the prompt text (Example::prompt_text,
// else the decoded prompt ids), the completion text and the example's answer.
std::vector<RewardInput> reward_inputs(const RolloutBatch& batch, const std::vector<const Example*>& prompts,
                                       const Tokenizer* tokenizer);

// Per-token scores of the completion tokens under one model.
struct CompletionScores {
  at::Tensor logps;    // (N, C) float32: log p(c_t | prompt, c_<t) of the logits / temperature; 0 off the mask
  at::Tensor entropy;  // (N, C) float32, detached: entropy of that distribution; 0 off the mask; undefined unless asked
};

// Scores `batch` with `model` (gradients flow to its parameters unless the
// caller holds a NoGradGuard: the policy with grad, a reference without).
// Logits are computed only at the positions that predict completion tokens
// (hidden states times the output embedding) and reduced one row at a time,
// so the float32 workspace is one row's (C, V), never a (N, P + C, V)
// log-softmax; under autograd each row's (C, V) logits stay alive until backward.
// `temperature` divides the logits as it did when sampling (TRL).
CompletionScores completion_logprobs(CausalLM& model, const RolloutBatch& batch, double temperature,
                                     bool with_entropy);

}  // namespace alignkit::online
