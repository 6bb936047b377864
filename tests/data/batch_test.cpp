// The shared batching in sdk batch.hpp on hand-made rows and tensors:
// truncation modes, padding and masks, the chosen-then-rejected preference
// batch, label log-probs (values and gradients against a plain log_softmax)
// and the deterministic hold-out split.
#include <doctest/doctest.h>

#include <ATen/ops/allclose.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/tensor.h>

#include <algorithm>
#include <set>
#include <vector>

#include "alignkit/batch.hpp"

using namespace alignkit;

namespace {

// Fixed, varied logits: no random generator needed.
at::Tensor test_logits(int64_t batch, int64_t length, int64_t vocab) {
  return at::arange(batch * length * vocab, at::kFloat).mul(0.37).sin().mul(3).view({batch, length, vocab});
}

std::vector<int64_t> shape(const at::Tensor& tensor) { return tensor.sizes().vec(); }

at::Tensor long_tensor(std::vector<int64_t> values, int64_t rows) {
  const int64_t columns = static_cast<int64_t>(values.size()) / rows;
  return at::tensor(values, at::kLong).view({rows, columns});
}

std::vector<int32_t> range(int32_t first, int32_t count) {
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < count; ++i) ids.push_back(first + i);
  return ids;
}

CollateOptions limit(int64_t max_length, TruncationMode mode) {
  CollateOptions options;
  options.max_length = max_length;
  options.truncation_mode = mode;
  return options;
}

}  // namespace

TEST_CASE("keep_start drops the end of the completion, then of the prompt") {
  const Row row{range(10, 3), range(20, 4)};  // 3 prompt + 4 completion tokens
  Row cut = truncate_row(row, limit(5, TruncationMode::KeepStart));
  CHECK(cut.prompt == range(10, 3));
  CHECK(cut.completion == range(20, 2));

  cut = truncate_row({range(10, 6), range(20, 2)}, limit(5, TruncationMode::KeepStart));
  CHECK(cut.prompt == range(10, 5));
  CHECK(cut.completion.empty());

  cut = truncate_row(row, limit(0, TruncationMode::KeepStart));  // 0: no limit
  CHECK(cut.completion == range(20, 4));
  cut = truncate_row(row, limit(7, TruncationMode::KeepStart));  // fits exactly
  CHECK(cut.completion == range(20, 4));
}

TEST_CASE("keep_end drops the start of the prompt, then of the completion") {
  Row cut = truncate_row({range(10, 3), range(20, 4)}, limit(5, TruncationMode::KeepEnd));
  CHECK(cut.prompt == std::vector<int32_t>{12});
  CHECK(cut.completion == range(20, 4));

  cut = truncate_row({range(10, 3), range(20, 6)}, limit(5, TruncationMode::KeepEnd));
  CHECK(cut.prompt.empty());
  CHECK(cut.completion == range(21, 5));
}

TEST_CASE("prompt and completion limits apply before max_length, as in TRL") {
  CollateOptions options = limit(4, TruncationMode::KeepStart);
  options.max_prompt_length = 2;      // keeps the end of the prompt
  options.max_completion_length = 3;  // keeps the start of the completion
  const Row cut = truncate_row({range(10, 5), range(20, 5)}, options);
  CHECK(cut.prompt == std::vector<int32_t>{13, 14});
  CHECK(cut.completion == std::vector<int32_t>{20, 21});
  CHECK(truncate_prompt(range(10, 5), 2) == std::vector<int32_t>{13, 14});
  CHECK(truncate_prompt(range(10, 5), 0) == range(10, 5));

  CHECK(parse_truncation_mode("keep_end") == TruncationMode::KeepEnd);
  CHECK(std::string(truncation_mode_name(TruncationMode::KeepStart)) == "keep_start");
  CHECK_THROWS_WITH_AS(parse_truncation_mode("keep_middle"),
                       "truncation_mode: expected \"keep_start\" or \"keep_end\", found \"keep_middle\"",
                       std::invalid_argument);
}

TEST_CASE("collate pads on the right and masks completions") {
  CollateOptions options;
  options.pad_id = 0;
  const Batch batch = collate({{{1, 5, 6}, {7, 2}}, {{1, 8}, {2}}}, options);

  CHECK(batch.rows() == 2);
  CHECK((batch.input_ids.scalar_type() == at::kLong));
  CHECK(batch.input_ids.equal(long_tensor({1, 5, 6, 7, 2, /**/ 1, 8, 2, 0, 0}, 2)));
  CHECK(batch.attention_mask.equal(long_tensor({1, 1, 1, 1, 1, /**/ 1, 1, 1, 0, 0}, 2)));
  CHECK(batch.position_ids.equal(long_tensor({0, 1, 2, 3, 4, /**/ 0, 1, 2, 2, 2}, 2)));
  CHECK((batch.loss_mask.scalar_type() == at::kBool));
  CHECK(batch.loss_mask.to(at::kLong).equal(long_tensor({0, 0, 0, 1, 1, /**/ 0, 0, 1, 0, 0}, 2)));
  CHECK(batch.prompt_lengths == std::vector<int64_t>{3, 2});
  CHECK(batch.lengths == std::vector<int64_t>{5, 3});

  // position_ids is cumsum(attention_mask) - 1 clamped at 0.
  CHECK(batch.position_ids.equal(batch.attention_mask.cumsum(1).sub(1).clamp_min(0)));

  options.loss_on = LossOn::All;
  options.pad_id = 9;
  const Batch everything = collate({{{1, 5, 6}, {7, 2}}, {{1, 8}, {2}}}, options);
  CHECK(everything.loss_mask.to(at::kLong).equal(everything.attention_mask));
  CHECK(everything.input_ids[1][4].item<int64_t>() == 9);

  const Batch moved = batch.to(c10::Device(c10::kCPU));
  CHECK(moved.input_ids.equal(batch.input_ids));
  CHECK(moved.lengths == batch.lengths);
}

TEST_CASE("collate truncates each row and rejects empty input") {
  const Batch batch = collate({{range(10, 3), range(20, 4)}, {{1}, {2}}}, limit(4, TruncationMode::KeepEnd));
  CHECK(batch.input_ids.equal(long_tensor({20, 21, 22, 23, /**/ 1, 2, 0, 0}, 2)));
  CHECK(batch.prompt_lengths == std::vector<int64_t>{0, 1});

  CHECK_THROWS_WITH_AS(collate({}, CollateOptions()), "collate: the batch has no rows", std::invalid_argument);
  CHECK_THROWS_WITH_AS(collate({{{1}, {2}}, {{}, {}}}, CollateOptions()), "collate: row 1 has no tokens",
                       std::invalid_argument);
}

TEST_CASE("padding uses the pad id, else eos") {
  CHECK(padding_id(3, 2) == 3);
  CHECK(padding_id(-1, 2) == 2);
  CHECK_THROWS_AS(padding_id(-1, -1), std::invalid_argument);
}

TEST_CASE("a preference batch holds every chosen row, then every rejected row") {
  Example first;
  first.prompt = {1, 5};
  first.completion = {6, 2};
  first.rejected = {7, 8, 2};
  Example second;
  second.prompt = {1};
  second.completion = {9, 2};
  second.rejected = {2};
  CollateOptions options;
  options.pad_id = 0;
  const Batch batch = collate_preference({&first, &second}, options);

  CHECK(batch.rows() == 4);
  CHECK(batch.input_ids.equal(long_tensor({1, 5, 6, 2, 0,  //
                                           1, 9, 2, 0, 0,  //
                                           1, 5, 7, 8, 2,  //
                                           1, 2, 0, 0, 0},
                                          4)));
  CHECK(batch.loss_mask.to(at::kLong).equal(long_tensor({0, 0, 1, 1, 0,  //
                                                         0, 1, 1, 0, 0,  //
                                                         0, 0, 1, 1, 1,  //
                                                         0, 1, 0, 0, 0},
                                                        4)));
}

TEST_CASE("sequence_logprobs scores token t+1 with the logits at t") {
  const at::Tensor logits = test_logits(2, 4, 6).requires_grad_(true);  // (B, T, V)
  const at::Tensor input_ids = long_tensor({1, 3, 5, 0, /**/ 2, 4, 0, 0}, 2);
  const at::Tensor loss_mask = long_tensor({0, 1, 1, 0, /**/ 0, 1, 0, 0}, 2).to(at::kBool);

  const SequenceLogprobs out = sequence_logprobs(logits, input_ids, loss_mask);
  CHECK(shape(out.per_token) == std::vector<int64_t>{2, 3});
  CHECK((out.per_token.scalar_type() == at::kFloat));
  CHECK(out.mask.to(at::kLong).equal(long_tensor({1, 1, 0, /**/ 1, 0, 0}, 2)));
  CHECK(out.count.equal(at::tensor(std::vector<int64_t>{2, 1}, at::kLong)));

  // Against a plain log_softmax: row 0 counts log p(3 | t=0) + log p(5 | t=1), row 1 log p(4 | t=0).
  const at::Tensor reference = at::log_softmax(logits, -1);  // (B, T, V)
  const double row0 = reference[0][0][3].item<double>() + reference[0][1][5].item<double>();
  const double row1 = reference[1][0][4].item<double>();
  CHECK(out.sum[0].item<double>() == doctest::Approx(row0).epsilon(1e-6));
  CHECK(out.sum[1].item<double>() == doctest::Approx(row1).epsilon(1e-6));
  CHECK(out.per_token[0][2].item<double>() == 0.0);
  CHECK(out.per_token[1][1].item<double>() == 0.0);

  // Gradients match those of the log_softmax formula.
  out.sum.sum().backward();
  const at::Tensor ours = logits.grad().clone();
  logits.grad().zero_();
  reference[0][0][3].add(reference[0][1][5]).add(reference[1][0][4]).backward();
  CHECK(at::allclose(ours, logits.grad(), 1e-5, 1e-6));
  CHECK(ours[0][3].abs().sum().item<double>() == 0.0);  // the last position predicts nothing
}

TEST_CASE("sequence_logprobs computes half-precision logits in float32") {
  const at::Tensor logits = test_logits(1, 3, 5);
  const at::Tensor input_ids = long_tensor({0, 1, 2}, 1);
  const at::Tensor mask = long_tensor({1, 1, 1}, 1);
  const SequenceLogprobs full = sequence_logprobs(logits, input_ids, mask);
  const SequenceLogprobs half = sequence_logprobs(logits.to(at::kBFloat16), input_ids, mask);
  CHECK((half.per_token.scalar_type() == at::kFloat));
  CHECK(half.sum.item<double>() == doctest::Approx(full.sum.item<double>()).epsilon(0.02));
}

TEST_CASE("sequence_logprobs rejects mismatched shapes and labels outside the vocabulary") {
  const at::Tensor logits = test_logits(2, 3, 4);
  const at::Tensor ids = long_tensor({0, 1, 2, 0, 1, 2}, 2);
  const at::Tensor mask = long_tensor({1, 1, 1, 1, 1, 1}, 2);
  CHECK_THROWS_WITH_AS(sequence_logprobs(logits[0], ids, mask),
                       "sequence_logprobs: logits must be (B, T, V), found 2 dimensions", std::invalid_argument);
  CHECK_THROWS_WITH_AS(sequence_logprobs(logits, ids.slice(1, 0, 2), mask.slice(1, 0, 2)),
                       "sequence_logprobs: input_ids (2, 2) does not match logits (2, 3, 4)", std::invalid_argument);
  CHECK_THROWS_WITH_AS(sequence_logprobs(logits, ids, mask.slice(1, 0, 2)),
                       "sequence_logprobs: loss_mask (2, 2) does not match input_ids (2, 3)", std::invalid_argument);
  CHECK_THROWS_WITH_AS(sequence_logprobs(logits, long_tensor({0, 1, 7, 0, 1, 2}, 2), mask),
                       "sequence_logprobs: input_ids holds token id 7 but logits have 4 entries",
                       std::invalid_argument);
  // Padding positions may hold any id: only counted labels are checked.
  CHECK_NOTHROW(sequence_logprobs(logits, long_tensor({0, 1, 99, 0, 1, 2}, 2), long_tensor({1, 1, 0, 1, 1, 1}, 2)));
}

TEST_CASE("holdout_split is deterministic, disjoint and sized by ceil(fraction * n)") {
  const HoldoutSplit split = holdout_split(10, 0.3, 42);
  CHECK(split.eval.size() == 3);
  CHECK(split.train.size() == 7);
  std::set<int64_t> all(split.train.begin(), split.train.end());
  all.insert(split.eval.begin(), split.eval.end());
  CHECK(all.size() == 10);
  CHECK(*all.begin() == 0);
  CHECK(*all.rbegin() == 9);
  CHECK(std::is_sorted(split.eval.begin(), split.eval.end()));

  CHECK(holdout_split(10, 0.3, 42).eval == split.eval);
  bool differs = false;
  for (uint64_t seed = 0; seed < 8 && !differs; ++seed) differs = holdout_split(10, 0.3, seed).eval != split.eval;
  CHECK(differs);

  CHECK(holdout_split(10, 0.7, 1).eval.size() == 7);  // 0.7 * 10 is 7.000000000000001 in binary
  CHECK(holdout_split(3, 0.1, 1).eval.size() == 1);
  CHECK(holdout_split(5, 0.0, 1).train.size() == 5);
  CHECK_THROWS_AS(holdout_split(5, 1.0, 1), std::invalid_argument);
  CHECK_THROWS_AS(holdout_split(5, -0.1, 1), std::invalid_argument);
  CHECK_THROWS_AS(holdout_split(1, 0.5, 1), std::invalid_argument);
}
