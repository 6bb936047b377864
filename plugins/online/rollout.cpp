// Rollout generation and completion log-probs (see rollout.hpp).
#include "rollout.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>

#include "alignkit/batch.hpp"

namespace alignkit::online {
namespace {

at::Tensor pick_rows(const at::Tensor& tensor, const at::Tensor& rows) { return tensor.index_select(0, rows); }

std::string ids_as_text(const std::vector<int32_t>& ids) {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) text += (i ? " " : "") + std::to_string(ids[i]);
  return text;
}

std::string decode(const Tokenizer* tokenizer, const std::vector<int32_t>& ids) {
  return tokenizer ? tokenizer->decode(ids) : ids_as_text(ids);
}

}  // namespace

at::Tensor RolloutBatch::input_ids() const { return at::cat({prompt_ids, completion_ids}, 1); }

at::Tensor RolloutBatch::attention_mask() const { return at::cat({prompt_mask, completion_mask}, 1); }

at::Tensor RolloutBatch::position_ids() const {
  at::Tensor mask = attention_mask();                         // (N, P + C)
  return (mask.cumsum(1) - 1).masked_fill(mask.eq(0), 1);     // (N, P + C)
}

at::Tensor RolloutBatch::completion_lengths() const { return completion_mask.sum(1); }

RolloutBatch RolloutBatch::select(const std::vector<int64_t>& rows) const {
  at::Tensor index = at::tensor(rows, at::kLong).to(prompt_ids.device());  // (n)
  RolloutBatch out;
  out.prompt_ids = pick_rows(prompt_ids, index);
  out.prompt_mask = pick_rows(prompt_mask, index);
  out.completion_ids = pick_rows(completion_ids, index);
  out.completion_mask = pick_rows(completion_mask, index);
  out.num_generations = num_generations;
  for (int64_t row : rows) {
    if (row < 0 || row >= this->rows())
      throw std::out_of_range("rollout row " + std::to_string(row) + " of " + std::to_string(this->rows()));
    out.completion_texts.push_back(completion_texts[static_cast<size_t>(row)]);
    out.truncated.push_back(truncated[static_cast<size_t>(row)]);
    out.example_of_row.push_back(example_of_row[static_cast<size_t>(row)]);
  }
  return out;
}

RolloutBatch RolloutBatch::to(c10::Device device) const {
  RolloutBatch out = *this;
  out.prompt_ids = prompt_ids.to(device);
  out.prompt_mask = prompt_mask.to(device);
  out.completion_ids = completion_ids.to(device);
  out.completion_mask = completion_mask.to(device);
  return out;
}

RolloutBatch generate_rollout(CausalLM& policy, const Tokenizer* tokenizer,
                              const std::vector<const Example*>& prompts, const RolloutSettings& settings) {
  if (prompts.empty()) throw std::invalid_argument("generate_rollout: no prompts");
  if (settings.num_generations < 1)
    throw std::invalid_argument("generate_rollout: num_generations must be at least 1, found " +
                                std::to_string(settings.num_generations));
  if (settings.generation.max_new_tokens < 1)
    throw std::invalid_argument("generate_rollout: the completion length limit must be at least 1 token");
  const int64_t groups = static_cast<int64_t>(prompts.size());
  const int64_t rows = groups * settings.num_generations;

  // Each prompt repeated num_generations times: one generate call samples them all.
  std::vector<std::vector<int32_t>> kept(prompts.size());
  std::vector<std::vector<int64_t>> requests;
  requests.reserve(static_cast<size_t>(rows));
  int64_t prompt_width = 0;
  for (size_t p = 0; p < prompts.size(); ++p) {
    kept[p] = truncate_prompt(prompts[p]->prompt, settings.max_prompt_length);
    if (kept[p].empty()) throw std::invalid_argument("generate_rollout: prompt " + std::to_string(p) + " is empty");
    prompt_width = std::max<int64_t>(prompt_width, static_cast<int64_t>(kept[p].size()));
    for (int64_t g = 0; g < settings.num_generations; ++g) requests.emplace_back(kept[p].begin(), kept[p].end());
  }
  GenerationOptions options = settings.generation;
  options.pad_token_id = settings.pad_id;
  const std::vector<std::vector<int64_t>> completions = policy.generate(requests, options);

  std::vector<int64_t> stops = options.stop_token_ids;
  if (stops.empty()) stops.push_back(policy.info().eos_token_id);
  int64_t completion_width = 1;
  for (const auto& completion : completions)
    completion_width = std::max<int64_t>(completion_width, static_cast<int64_t>(completion.size()));

  RolloutBatch batch;
  batch.num_generations = settings.num_generations;
  batch.prompt_ids = at::full({rows, prompt_width}, settings.pad_id, at::kLong);          // (N, P)
  batch.prompt_mask = at::zeros({rows, prompt_width}, at::kLong);                         // (N, P)
  batch.completion_ids = at::full({rows, completion_width}, settings.pad_id, at::kLong);  // (N, C)
  batch.completion_mask = at::zeros({rows, completion_width}, at::kLong);                 // (N, C)
  int64_t* prompt_ids = batch.prompt_ids.data_ptr<int64_t>();
  int64_t* prompt_mask = batch.prompt_mask.data_ptr<int64_t>();
  int64_t* completion_ids = batch.completion_ids.data_ptr<int64_t>();
  int64_t* completion_mask = batch.completion_mask.data_ptr<int64_t>();
  for (int64_t row = 0; row < rows; ++row) {
    const std::vector<int32_t>& prompt = kept[static_cast<size_t>(row / settings.num_generations)];
    const int64_t offset = prompt_width - static_cast<int64_t>(prompt.size());
    for (size_t t = 0; t < prompt.size(); ++t) {
      prompt_ids[row * prompt_width + offset + static_cast<int64_t>(t)] = prompt[t];
      prompt_mask[row * prompt_width + offset + static_cast<int64_t>(t)] = 1;
    }
    // generate stops at (and keeps) the first stop token; a completion that
    // reached the limit ended only if its last token is a stop token.
    const std::vector<int64_t>& completion = completions[static_cast<size_t>(row)];
    const bool ended = !completion.empty() &&
                       (static_cast<int64_t>(completion.size()) < options.max_new_tokens ||
                        std::find(stops.begin(), stops.end(), completion.back()) != stops.end());
    std::vector<int32_t> text_ids;
    for (size_t t = 0; t < completion.size(); ++t) {
      completion_ids[row * completion_width + static_cast<int64_t>(t)] = completion[t];
      completion_mask[row * completion_width + static_cast<int64_t>(t)] = 1;
      if (!(ended && t + 1 == completion.size())) text_ids.push_back(static_cast<int32_t>(completion[t]));
    }
    batch.completion_texts.push_back(decode(tokenizer, text_ids));
    batch.truncated.push_back(!ended);
    batch.example_of_row.push_back(row / settings.num_generations);
  }
  const c10::Device device = policy.output_embedding().device();
  return device.is_cpu() ? batch : batch.to(device);
}

Metrics completion_metrics(const RolloutBatch& batch) {
  at::Tensor lengths = batch.completion_lengths().to(at::kDouble).cpu();  // (N)
  std::vector<double> terminated;
  int64_t clipped = 0;
  for (int64_t row = 0; row < batch.rows(); ++row) {
    if (batch.truncated[static_cast<size_t>(row)])
      ++clipped;
    else
      terminated.push_back(lengths[row].item<double>());
  }
  double terminated_sum = 0;
  for (double length : terminated) terminated_sum += length;
  const bool any = !terminated.empty();
  return {
      {"completions/mean_length", lengths.mean().item<double>()},
      {"completions/min_length", lengths.min().item<double>()},
      {"completions/max_length", lengths.max().item<double>()},
      {"completions/clipped_ratio", static_cast<double>(clipped) / static_cast<double>(batch.rows())},
      {"completions/mean_terminated_length", any ? terminated_sum / static_cast<double>(terminated.size()) : 0.0},
      {"completions/min_terminated_length", any ? *std::min_element(terminated.begin(), terminated.end()) : 0.0},
      {"completions/max_terminated_length", any ? *std::max_element(terminated.begin(), terminated.end()) : 0.0},
  };
}

std::vector<RewardInput> reward_inputs(const RolloutBatch& batch, const std::vector<const Example*>& prompts,
                                       const Tokenizer* tokenizer) {
  std::vector<RewardInput> inputs;
  inputs.reserve(static_cast<size_t>(batch.rows()));
  for (int64_t row = 0; row < batch.rows(); ++row) {
    const Example& example = *prompts.at(static_cast<size_t>(batch.example_of_row[static_cast<size_t>(row)]));
    RewardInput input;
    input.prompt = example.prompt_text.empty() ? decode(tokenizer, example.prompt) : example.prompt_text;
    input.completion = batch.completion_texts[static_cast<size_t>(row)];
    input.answer = example.answer;
    inputs.push_back(std::move(input));
  }
  return inputs;
}

CompletionScores completion_logprobs(CausalLM& model, const RolloutBatch& batch, double temperature,
                                     bool with_entropy) {
  if (!(temperature > 0)) throw std::invalid_argument("completion_logprobs: temperature must be positive");
  const int64_t prompt_width = batch.prompt_width();
  const int64_t completion_width = batch.completion_width();
  at::Tensor hidden = model.hidden_states(batch.input_ids(), batch.attention_mask(), batch.position_ids());  // (N, P+C, H)
  // Position t predicts token t + 1: columns P-1 .. P+C-2 predict the completion.
  at::Tensor predicting = hidden.slice(1, prompt_width - 1, prompt_width + completion_width - 1);  // (N, C, H)
  at::Tensor weight = model.output_embedding();                                                   // (V, H)
  at::Tensor mask = batch.completion_mask.to(at::kBool);                                          // (N, C)
  const std::vector<at::Tensor> rows = predicting.unbind(0);  // N x (C, H)
  std::vector<at::Tensor> logps, entropies;
  logps.reserve(rows.size());
  for (size_t b = 0; b < rows.size(); ++b) {
    at::Tensor logits = at::linear(rows[b], weight).to(at::kFloat);  // (C, V)
    if (temperature != 1.0) logits = logits / temperature;
    at::Tensor normaliser = logits.logsumexp(1);  // (C)
    at::Tensor labels = batch.completion_ids.select(0, static_cast<int64_t>(b)).unsqueeze(1);  // (C, 1)
    logps.push_back(logits.gather(1, labels).squeeze(1) - normaliser);  // (C)
    if (with_entropy) {
      at::NoGradGuard no_grad;
      at::Tensor detached = logits.detach();
      at::Tensor probs = (detached - normaliser.detach().unsqueeze(1)).exp();  // (C, V)
      entropies.push_back(normaliser.detach() - (probs * detached).sum(1));  // (C)
    }
  }
  CompletionScores out;
  out.logps = at::stack(logps).masked_fill(~mask, 0.0);  // (N, C)
  if (with_entropy) out.entropy = at::stack(entropies).masked_fill(~mask, 0.0);  // (N, C)
  return out;
}

}  // namespace alignkit::online
