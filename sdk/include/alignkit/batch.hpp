// Shared batching for every algorithm: TRL's truncation of prompt + completion
// rows, collation into right-padded tensors with loss masks, the chosen-then-
// rejected concatenation of preference batches, per-token log-probs of the
// labels, and the deterministic train/eval hold-out.
//
// A row is a prompt followed by a completion. Positions are laid out as
//   input_ids      [p0 p1 p2 c0 c1 c2 PAD PAD]
//   attention_mask [ 1  1  1  1  1  1   0   0]
//   loss_mask      [ 0  0  0  1  1  1   0   0]   (completion tokens; LossOn::All: every real token)
// and `sequence_logprobs` scores token t+1 with the logits at t, so a row's
// log-prob counts exactly the masked tokens that have a predecessor.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <c10/core/Device.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/dataset.hpp"

namespace alignkit {

// Which end of a too-long row survives `max_length` (TRL's `truncation_mode`).
enum class TruncationMode {
  KeepStart,  // "keep_start": drop the end of the completion (then of the prompt)
  KeepEnd,    // "keep_end": drop the start of the prompt (then of the completion)
};

inline const char* truncation_mode_name(TruncationMode mode) {
  return mode == TruncationMode::KeepStart ? "keep_start" : "keep_end";
}

// Throws std::invalid_argument listing the accepted names.
inline TruncationMode parse_truncation_mode(const std::string& name) {
  if (name == "keep_start") return TruncationMode::KeepStart;
  if (name == "keep_end") return TruncationMode::KeepEnd;
  throw std::invalid_argument("truncation_mode: expected \"keep_start\" or \"keep_end\", found \"" + name + "\"");
}

// Which tokens the loss (and the sequence log-prob) counts.
enum class LossOn {
  Completion,  // completion tokens only (TRL's completion_only_loss, and every preference loss)
  All,         // every real token, prompt included (plain language modelling)
};

// One row before padding.
struct Row {
  std::vector<int32_t> prompt;
  std::vector<int32_t> completion;
};

struct CollateOptions {
  int32_t pad_id = 0;                 // see padding_id()
  int64_t max_length = 0;             // prompt + completion; 0: no limit
  TruncationMode truncation_mode = TruncationMode::KeepStart;
  int64_t max_prompt_length = 0;      // 0: no limit; keeps the end of the prompt (TRL)
  int64_t max_completion_length = 0;  // 0: no limit; keeps the start of the completion (TRL)
  LossOn loss_on = LossOn::Completion;
};

// The id padding uses: the tokenizer's pad, else its eos (as TRL does).
// Throws std::invalid_argument when the tokenizer has neither.
inline int32_t padding_id(int64_t pad_id, int64_t eos_id) {
  if (pad_id >= 0) return static_cast<int32_t>(pad_id);
  if (eos_id >= 0) return static_cast<int32_t>(eos_id);
  throw std::invalid_argument("cannot pad a batch: the tokenizer has neither a pad nor an eos token");
}

// Keeps the last `max_prompt_length` prompt tokens (prompts for generation, TRL's max_prompt_length).
inline std::vector<int32_t> truncate_prompt(const std::vector<int32_t>& prompt, int64_t max_prompt_length) {
  if (max_prompt_length <= 0 || static_cast<int64_t>(prompt.size()) <= max_prompt_length) return prompt;
  return std::vector<int32_t>(prompt.end() - max_prompt_length, prompt.end());
}

// TRL's order: the prompt is cut to max_prompt_length (keeping its end), the
// completion to max_completion_length (keeping its start), then the pair to
// max_length by `truncation_mode`.
inline Row truncate_row(Row row, const CollateOptions& options) {
  row.prompt = truncate_prompt(row.prompt, options.max_prompt_length);
  if (options.max_completion_length > 0 && static_cast<int64_t>(row.completion.size()) > options.max_completion_length)
    row.completion.resize(static_cast<size_t>(options.max_completion_length));

  const int64_t max_length = options.max_length;
  const int64_t prompt_length = static_cast<int64_t>(row.prompt.size());
  const int64_t completion_length = static_cast<int64_t>(row.completion.size());
  if (max_length <= 0 || prompt_length + completion_length <= max_length) return row;

  if (options.truncation_mode == TruncationMode::KeepStart) {
    if (prompt_length >= max_length) {
      row.prompt.resize(static_cast<size_t>(max_length));
      row.completion.clear();
    } else {
      row.completion.resize(static_cast<size_t>(max_length - prompt_length));
    }
  } else {
    if (completion_length >= max_length) {
      row.completion.erase(row.completion.begin(), row.completion.end() - max_length);
      row.prompt.clear();
    } else {
      row.prompt.erase(row.prompt.begin(), row.prompt.end() - (max_length - completion_length));
    }
  }
  return row;
}

inline Row chosen_row(const Example& example) { return {example.prompt, example.completion}; }
inline Row rejected_row(const Example& example) { return {example.prompt, example.rejected}; }

// A right-padded batch. All tensors are (B, T) int64 except loss_mask (bool).
struct Batch {
  at::Tensor input_ids;       // (B, T) int64, pad_id after each row
  at::Tensor attention_mask;  // (B, T) int64, 1 on real tokens
  at::Tensor position_ids;    // (B, T) int64, cumsum(mask) - 1 clamped at 0
  at::Tensor loss_mask;       // (B, T) bool, tokens the loss counts
  std::vector<int64_t> prompt_lengths;  // per row, after truncation
  std::vector<int64_t> lengths;         // per row, prompt + completion after truncation

  int64_t rows() const { return static_cast<int64_t>(lengths.size()); }
  Batch to(c10::Device device) const {
    return {input_ids.to(device), attention_mask.to(device), position_ids.to(device), loss_mask.to(device),
            prompt_lengths, lengths};
  }
};

// Truncates each row, then pads all of them on the right to the longest.
// Throws std::invalid_argument for an empty batch or a row left with no tokens.
inline Batch collate(const std::vector<Row>& rows, const CollateOptions& options) {
  if (rows.empty()) throw std::invalid_argument("collate: the batch has no rows");
  std::vector<Row> truncated;
  truncated.reserve(rows.size());
  int64_t width = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    truncated.push_back(truncate_row(rows[r], options));
    const int64_t length = static_cast<int64_t>(truncated.back().prompt.size() + truncated.back().completion.size());
    if (length == 0) throw std::invalid_argument("collate: row " + std::to_string(r) + " has no tokens");
    width = std::max(width, length);
  }

  const int64_t batch_size = static_cast<int64_t>(rows.size());
  Batch batch;
  batch.input_ids = at::empty({batch_size, width}, at::kLong);       // (B, T)
  batch.attention_mask = at::empty({batch_size, width}, at::kLong);  // (B, T)
  batch.position_ids = at::empty({batch_size, width}, at::kLong);    // (B, T)
  batch.loss_mask = at::empty({batch_size, width}, at::kBool);       // (B, T)
  int64_t* ids = batch.input_ids.data_ptr<int64_t>();
  int64_t* mask = batch.attention_mask.data_ptr<int64_t>();
  int64_t* positions = batch.position_ids.data_ptr<int64_t>();
  bool* loss = batch.loss_mask.data_ptr<bool>();
  const bool loss_on_prompt = options.loss_on == LossOn::All;

  for (int64_t r = 0; r < batch_size; ++r) {
    const Row& row = truncated[static_cast<size_t>(r)];
    const int64_t prompt_length = static_cast<int64_t>(row.prompt.size());
    const int64_t length = prompt_length + static_cast<int64_t>(row.completion.size());
    batch.prompt_lengths.push_back(prompt_length);
    batch.lengths.push_back(length);
    for (int64_t t = 0; t < width; ++t) {
      const int64_t cell = r * width + t;
      const bool real = t < length;
      ids[cell] = !real ? options.pad_id
                      : (t < prompt_length ? row.prompt[static_cast<size_t>(t)]
                                           : row.completion[static_cast<size_t>(t - prompt_length)]);
      mask[cell] = real ? 1 : 0;
      // cumsum(mask) - 1 clamped at 0: padding keeps the last real position.
      positions[cell] = std::min(t, length - 1);
      loss[cell] = real && (loss_on_prompt || t >= prompt_length);
    }
  }
  return batch;
}

// TRL's concatenated forward: rows 0..B-1 are prompt + chosen, rows B..2B-1
// prompt + rejected, padded to one width so one forward scores both.
inline Batch collate_preference(const std::vector<const Example*>& examples, const CollateOptions& options) {
  std::vector<Row> rows;
  rows.reserve(2 * examples.size());
  for (const Example* example : examples) rows.push_back(chosen_row(*example));
  for (const Example* example : examples) rows.push_back(rejected_row(*example));
  return collate(rows, options);
}

// Log-probs of each row's labels under `logits`.
struct SequenceLogprobs {
  at::Tensor per_token;  // (B, T-1) float32: log p(input_ids[t+1] | logits[t]); 0 where not counted
  at::Tensor mask;       // (B, T-1) bool: loss_mask shifted by one (the labels counted)
  at::Tensor sum;        // (B) float32: sum of per_token over the mask
  at::Tensor count;      // (B) int64: tokens counted
};

// Scores labels input_ids[:, 1:] with logits[:, :-1]. Works one row at a time
// (as TRL's selective_log_softmax): the label logit is gathered and the row's
// logsumexp subtracted, so the transient full-vocabulary workspace is one
// row's (T, V) in float32, never a (B, T, V) log_softmax. Float32 logits are
// not copied; half-precision rows are upcast, and under autograd those float32
// rows stay alive until backward. Gradients flow to `logits`.
// Throws std::invalid_argument for mismatched shapes or a label outside the vocabulary.
inline SequenceLogprobs sequence_logprobs(const at::Tensor& logits, const at::Tensor& input_ids,
                                          const at::Tensor& loss_mask) {
  if (logits.dim() != 3)
    throw std::invalid_argument("sequence_logprobs: logits must be (B, T, V), found " + std::to_string(logits.dim()) +
                                " dimensions");
  const int64_t batch_size = logits.size(0);
  const int64_t length = logits.size(1);
  const int64_t vocab = logits.size(2);
  auto shape = [](const at::Tensor& t) {
    std::string s = "(";
    for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
    return s + ")";
  };
  if (input_ids.dim() != 2 || input_ids.size(0) != batch_size || input_ids.size(1) != length)
    throw std::invalid_argument("sequence_logprobs: input_ids " + shape(input_ids) + " does not match logits " +
                                shape(logits));
  if (loss_mask.sizes() != input_ids.sizes())
    throw std::invalid_argument("sequence_logprobs: loss_mask " + shape(loss_mask) + " does not match input_ids " +
                                shape(input_ids));
  if (length < 2) throw std::invalid_argument("sequence_logprobs: rows need at least 2 tokens, found " + shape(logits));

  at::Tensor labels = input_ids.slice(1, 1).to(at::kLong);  // (B, T-1)
  at::Tensor mask = loss_mask.slice(1, 1).to(at::kBool);    // (B, T-1)
  // Padding may hold any id, so only counted labels must be in range; one
  // device sync in the common case, a second only to name the bad id.
  at::Tensor safe_labels = labels.masked_fill(~mask, 0);  // (B, T-1)
  at::Tensor out_of_range = safe_labels.lt(0).logical_or(safe_labels.ge(vocab));
  if (out_of_range.any().item<bool>()) {
    const int64_t bad = safe_labels.masked_select(out_of_range)[0].item<int64_t>();
    throw std::invalid_argument("sequence_logprobs: input_ids holds token id " + std::to_string(bad) +
                                " but logits have " + std::to_string(vocab) + " entries");
  }

  // unbind, not select per row: select's backward would build one zero-filled
  // (B, T, V) gradient per row and add them up (bench/dpo measured 1.4-1.8x
  // slower steps); unbind's backward stacks the row gradients once.
  const std::vector<at::Tensor> row_logits_list = logits.slice(1, 0, length - 1).unbind(0);  // B x (T-1, V)
  std::vector<at::Tensor> rows;
  rows.reserve(static_cast<size_t>(batch_size));
  for (int64_t b = 0; b < batch_size; ++b) {
    at::Tensor row_logits = row_logits_list[static_cast<size_t>(b)].to(at::kFloat);  // (T-1, V)
    at::Tensor label_logit = row_logits.gather(1, safe_labels.select(0, b).unsqueeze(1)).squeeze(1);  // (T-1)
    rows.push_back(label_logit.sub(row_logits.logsumexp(1)));  // (T-1)
  }
  SequenceLogprobs out;
  out.per_token = at::stack(rows).masked_fill(~mask, 0.0);  // (B, T-1)
  out.mask = mask;
  out.sum = out.per_token.sum(1);  // (B)
  out.count = mask.sum(1);         // (B)
  return out;
}

// Deterministic hold-out of `eval_fraction` of `size` examples (TRL's
// train_test_split): a seeded Fisher-Yates shuffle on std::mt19937_64 (whose
// output the standard fixes), eval = the first ceil(fraction * size) indices
// of the shuffle, each list sorted. Throws std::invalid_argument unless
// 0 <= fraction < 1 and some training examples remain.
struct HoldoutSplit {
  std::vector<int64_t> train;
  std::vector<int64_t> eval;
};

inline HoldoutSplit holdout_split(size_t size, double eval_fraction, uint64_t seed) {
  if (!(eval_fraction >= 0.0 && eval_fraction < 1.0))
    throw std::invalid_argument("eval_fraction must be in [0, 1), found " + std::to_string(eval_fraction));
  std::vector<int64_t> order(size);
  for (size_t i = 0; i < size; ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 generator(seed);
  for (size_t i = size; i > 1; --i) std::swap(order[i - 1], order[generator() % i]);
  // The epsilon keeps 0.7 * 10 (7.000000000000001 in binary) at 7.
  const size_t eval_size = static_cast<size_t>(std::ceil(eval_fraction * static_cast<double>(size) - 1e-9));
  if (size > 0 && eval_size >= size)
    throw std::invalid_argument("eval_fraction " + std::to_string(eval_fraction) + " of " + std::to_string(size) +
                                " examples leaves none for training");
  HoldoutSplit split;
  split.eval.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(eval_size));
  split.train.assign(order.begin() + static_cast<std::ptrdiff_t>(eval_size), order.end());
  std::sort(split.eval.begin(), split.eval.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

}  // namespace alignkit
