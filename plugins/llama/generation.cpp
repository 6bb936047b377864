// Generation loop and sampling (transformers' greedy search and sampling with
// TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper).
#include "generation.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/multinomial.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/topk.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace alignkit::llama {
namespace {

void check_options(const GenerationOptions& options) {
  auto fail = [](const std::string& message) { throw std::runtime_error("llama: generate: " + message); };
  if (options.max_new_tokens < 0) fail("max_new_tokens must not be negative");
  if (options.do_sample && !(options.temperature > 0)) fail("temperature must be positive when sampling");
  if (options.top_k < 0) fail("top_k must not be negative (0 turns it off)");
  if (!(options.top_p > 0 && options.top_p <= 1)) fail("top_p must be in (0, 1] (1 turns it off)");
}

// Puts the network in eval mode (no attention dropout) for the scope.
class EvalScope {
 public:
  explicit EvalScope(NetworkImpl& network) : network_(network), was_training_(network.is_training()) {
    network_.eval();
  }
  ~EvalScope() { network_.train(was_training_); }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  NetworkImpl& network_;
  bool was_training_;
};

}  // namespace

at::Tensor choose_next_tokens(at::Tensor logits, const GenerationOptions& options, at::Generator& generator) {
  if (!options.do_sample) return logits.argmax(-1);
  const float removed = -std::numeric_limits<float>::infinity();
  const int64_t vocab = logits.size(-1);
  if (options.temperature != 1.0) logits = logits / options.temperature;
  if (options.top_k > 0) {
    const int64_t k = std::min(options.top_k, vocab);
    at::Tensor kth = std::get<0>(logits.topk(k, -1)).narrow(-1, k - 1, 1);  // (B, 1)
    logits = logits.masked_fill(logits < kth, removed);
  }
  if (options.top_p < 1.0) {
    // Drop the least likely tokens whose total probability stays within
    // 1 - top_p; the most likely token always survives.
    auto [sorted, order] = logits.sort(-1, /*descending=*/false);  // (B, V) ascending
    at::Tensor drop_sorted = sorted.softmax(-1).cumsum(-1) <= (1.0 - options.top_p);
    drop_sorted.narrow(-1, vocab - 1, 1).fill_(false);
    at::Tensor drop = drop_sorted.scatter(-1, order, drop_sorted);
    logits = logits.masked_fill(drop, removed);
  }
  at::Tensor probs = at::softmax(logits, -1);
  return at::multinomial(probs, 1, /*replacement=*/false, generator).squeeze(-1);
}

std::vector<std::vector<int64_t>> generate_tokens(NetworkImpl& network, const LlamaConfig& config,
                                                  const std::vector<std::vector<int64_t>>& prompts,
                                                  const GenerationOptions& options) {
  check_options(options);
  if (network.head == HeadKind::Scalar)
    throw std::runtime_error("llama: generate needs an lm_head; this model was built with a Scalar head");
  const int64_t batch = static_cast<int64_t>(prompts.size());
  std::vector<std::vector<int64_t>> outputs(prompts.size());
  if (batch == 0 || options.max_new_tokens == 0) return outputs;

  int64_t prompt_length = 0;
  for (size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) throw std::runtime_error("llama: generate: prompt " + std::to_string(b) + " is empty");
    for (int64_t id : prompts[b])
      if (id < 0 || id >= config.vocab_size)
        throw std::runtime_error("llama: generate: prompt " + std::to_string(b) + " has token " + std::to_string(id) +
                                 " outside the vocabulary of " + std::to_string(config.vocab_size));
    prompt_length = std::max<int64_t>(prompt_length, static_cast<int64_t>(prompts[b].size()));
  }
  const std::vector<int64_t>& stops = options.stop_token_ids.empty() ? config.eos_token_ids : options.stop_token_ids;
  int64_t pad = options.pad_token_id;
  if (pad < 0) pad = config.pad_token_id;
  if (pad < 0) pad = config.eos_token_ids.empty() ? 0 : config.eos_token_ids.front();

  // Left padding: every prompt ends at the same column, where generation continues.
  std::vector<int64_t> ids(batch * prompt_length, pad);
  std::vector<int64_t> mask(batch * prompt_length, 0);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t offset = prompt_length - static_cast<int64_t>(prompts[b].size());
    std::copy(prompts[b].begin(), prompts[b].end(), ids.begin() + b * prompt_length + offset);
    std::fill(mask.begin() + b * prompt_length + offset, mask.begin() + (b + 1) * prompt_length, 1);
  }
  const c10::Device device = network.model->embed_tokens->weight.device();
  auto long_options = at::TensorOptions().dtype(at::kLong);
  at::Tensor all_ids = at::tensor(ids, long_options).view({batch, prompt_length}).to(device);     // (B, P)
  at::Tensor all_mask = at::tensor(mask, long_options).view({batch, prompt_length}).to(device);   // (B, P)
  // HF: position = number of real tokens before it; padding gets 1 (masked anyway).
  at::Tensor all_positions = (all_mask.cumsum(1) - 1).masked_fill(all_mask.eq(0), 1);            // (B, P)

  EvalScope eval(network);
  at::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  KVCache cache;
  if (options.use_cache) cache = network.model->make_cache(batch, prompt_length + options.max_new_tokens);
  at::Tensor step_ids = all_ids;
  at::Tensor step_positions = all_positions;
  at::Tensor last_positions = all_positions.select(1, prompt_length - 1);  // (B)
  const at::Tensor output_weight = network.output_embedding();              // (V, H)
  std::vector<bool> finished(batch, false);

  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    at::Tensor hidden = options.use_cache
                            ? network.model->forward(step_ids, all_mask, step_positions, &cache)
                            : network.model->forward(all_ids, all_mask, all_positions);  // (B, T, H)
    at::Tensor logits = at::linear(hidden.select(1, hidden.size(1) - 1), output_weight);  // (B, V)
    at::Tensor next = choose_next_tokens(logits.to(at::kFloat).cpu(), options, generator).contiguous();  // (B)
    int64_t* next_ids = next.data_ptr<int64_t>();
    bool all_finished = true;
    for (int64_t b = 0; b < batch; ++b) {
      if (finished[b]) {
        next_ids[b] = pad;
        continue;
      }
      outputs[b].push_back(next_ids[b]);
      finished[b] = std::find(stops.begin(), stops.end(), next_ids[b]) != stops.end();
      all_finished = all_finished && finished[b];
    }
    if (all_finished || step + 1 == options.max_new_tokens) break;

    step_ids = next.to(device).unsqueeze(1);  // (B, 1)
    last_positions = last_positions + 1;
    step_positions = last_positions.unsqueeze(1);  // (B, 1)
    all_ids = at::cat({all_ids, step_ids}, 1);
    all_mask = at::cat({all_mask, at::ones({batch, 1}, all_mask.options())}, 1);
    all_positions = at::cat({all_positions, step_positions}, 1);
  }
  return outputs;
}

}  // namespace alignkit::llama
