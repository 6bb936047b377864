// The shared online pieces on a tiny random Llama: rollout layout (left-padded
// prompts, completion mask up to and including the first EOS, truncation
// flags, decoded texts, prompt-major groups, seeded sampling) and completion
// log-probs / entropy against a direct full-vocabulary computation on each
// unpadded row. Also GRPO with beta > 0 and two iterations end to end.
#include <cmath>

#include "algorithm_test_util.hpp"
#include "rollout.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

std::vector<Example> prompt_examples() {
  std::vector<Example> examples(3);
  examples[0].prompt = {kBos, 5, 6, 7, 8};
  examples[1].prompt = {kBos, 9};
  examples[2].prompt = {kBos, 10, 11};
  return examples;
}

online::RolloutSettings sampling(uint64_t seed, double temperature) {
  online::RolloutSettings settings;
  settings.num_generations = 3;
  settings.pad_id = kEos;
  settings.generation.max_new_tokens = 5;
  settings.generation.do_sample = true;
  settings.generation.temperature = temperature;
  settings.generation.seed = seed;
  return settings;
}

}  // namespace

TEST_CASE("generate_rollout lays out groups, padding, EOS masks and truncation as documented") {
  ScratchDir dir;
  make_tiny_model(dir / "model", 3);
  std::shared_ptr<CausalLM> model = load_model(dir / "model");
  std::vector<Example> examples = prompt_examples();
  std::vector<const Example*> prompts;
  for (const Example& e : examples) prompts.push_back(&e);

  at::NoGradGuard no_grad;
  const online::RolloutBatch batch = online::generate_rollout(*model, nullptr, prompts, sampling(11, 1.0));
  REQUIRE(batch.rows() == 9);
  CHECK(batch.prompt_width() == 5);
  CHECK(batch.completion_width() <= 5);
  int64_t ended = 0, truncated = 0;
  for (int64_t row = 0; row < batch.rows(); ++row) {
    CAPTURE(row);
    const Example& example = examples[static_cast<size_t>(row / 3)];
    CHECK(batch.example_of_row[static_cast<size_t>(row)] == row / 3);
    // Left padding: the prompt ends in the last column.
    const int64_t length = static_cast<int64_t>(example.prompt.size());
    CHECK(batch.prompt_mask[row].sum().item<int64_t>() == length);
    for (int64_t t = 0; t < length; ++t)
      CHECK(batch.prompt_ids[row][5 - length + t].item<int64_t>() == example.prompt[static_cast<size_t>(t)]);
    // The mask covers the tokens up to and including the first EOS.
    std::vector<int32_t> kept;
    bool seen_eos = false;
    for (int64_t t = 0; t < batch.completion_width(); ++t) {
      const int64_t id = batch.completion_ids[row][t].item<int64_t>();
      const int64_t mask = batch.completion_mask[row][t].item<int64_t>();
      CHECK(mask == (seen_eos ? 0 : (t < batch.completion_lengths()[row].item<int64_t>() ? 1 : 0)));
      if (mask && id == kEos) seen_eos = true;
      else if (mask) kept.push_back(static_cast<int32_t>(id));
    }
    CHECK(batch.truncated[static_cast<size_t>(row)] == !seen_eos);
    if (!seen_eos) CHECK(batch.completion_lengths()[row].item<int64_t>() == 5);
    (seen_eos ? ended : truncated) += 1;
    std::string text;
    for (size_t i = 0; i < kept.size(); ++i) text += (i ? " " : "") + std::to_string(kept[i]);
    CHECK(batch.completion_texts[static_cast<size_t>(row)] == text);
  }
  MESSAGE(ended << " completions ended with EOS, " << truncated << " were truncated");

  // Seeded: the same seed samples the same completions, another seed others.
  const online::RolloutBatch again = online::generate_rollout(*model, nullptr, prompts, sampling(11, 1.0));
  CHECK(at::equal(again.completion_ids, batch.completion_ids));
  const online::RolloutBatch other = online::generate_rollout(*model, nullptr, prompts, sampling(12, 1.0));
  CHECK_FALSE(at::equal(other.completion_ids.slice(1, 0, std::min(other.completion_width(), batch.completion_width())),
                        batch.completion_ids.slice(1, 0, std::min(other.completion_width(), batch.completion_width()))));
  // select() picks rows alike.
  const online::RolloutBatch picked = batch.select({4, 0});
  CHECK(at::equal(picked.completion_ids[0], batch.completion_ids[4]));
  CHECK(picked.example_of_row == std::vector<int64_t>{1, 0});
  CHECK(picked.completion_texts[1] == batch.completion_texts[0]);

  CHECK_THROWS_AS(online::generate_rollout(*model, nullptr, {}, sampling(1, 1.0)), std::invalid_argument);
  online::RolloutSettings none = sampling(1, 1.0);
  none.num_generations = 0;
  CHECK_THROWS_AS(online::generate_rollout(*model, nullptr, prompts, none), std::invalid_argument);
}

TEST_CASE("completion_logprobs equals log_softmax(logits / T) of each unpadded row; entropy likewise; gradients flow") {
  ScratchDir dir;
  make_tiny_model(dir / "model", 4);
  std::shared_ptr<CausalLM> model = load_model(dir / "model");
  std::vector<Example> examples = prompt_examples();
  std::vector<const Example*> prompts;
  for (const Example& e : examples) prompts.push_back(&e);
  const double temperature = 0.7;
  online::RolloutBatch batch;
  {
    at::NoGradGuard no_grad;
    batch = online::generate_rollout(*model, nullptr, prompts, sampling(5, temperature));
  }
  online::CompletionScores scores = online::completion_logprobs(*model, batch, temperature, true);
  REQUIRE(scores.logps.sizes() == batch.completion_ids.sizes());
  CHECK(scores.logps.requires_grad());
  CHECK_FALSE(scores.entropy.requires_grad());

  at::NoGradGuard no_grad;
  for (int64_t row = 0; row < batch.rows(); ++row) {
    CAPTURE(row);
    const Example& example = examples[static_cast<size_t>(row / 3)];
    std::vector<int64_t> ids(example.prompt.begin(), example.prompt.end());
    const int64_t prompt_length = static_cast<int64_t>(ids.size());
    const int64_t completion_length = batch.completion_lengths()[row].item<int64_t>();
    for (int64_t t = 0; t < completion_length; ++t) ids.push_back(batch.completion_ids[row][t].item<int64_t>());
    at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0);                       // (1, T)
    at::Tensor positions = at::arange(static_cast<int64_t>(ids.size()), at::kLong).unsqueeze(0);
    at::Tensor logits = model->forward(input, at::ones_like(input), positions)[0].to(at::kDouble) / temperature;  // (T, V)
    at::Tensor logp = logits.log_softmax(-1);                                          // (T, V)
    for (int64_t t = 0; t < batch.completion_width(); ++t) {
      if (t >= completion_length) {
        CHECK(scores.logps[row][t].item<double>() == 0.0);
        CHECK(scores.entropy[row][t].item<double>() == 0.0);
        continue;
      }
      const int64_t position = prompt_length - 1 + t;  // predicts completion token t
      CHECK(scores.logps[row][t].item<double>() ==
            doctest::Approx(logp[position][ids[static_cast<size_t>(position + 1)]].item<double>()).epsilon(1e-4));
      const double entropy = -(logp[position].exp() * logp[position]).sum().item<double>();
      CHECK(scores.entropy[row][t].item<double>() == doctest::Approx(entropy).epsilon(1e-4));
    }
  }
}

TEST_CASE("grpo with beta > 0 (frozen reference, k3 KL) and two iterations: kl and clipping are measured") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 9);
  std::string records;
  for (int i = 0; i < 16; ++i)
    records += nlohmann::json{{"prompt_ids", {kBos, kFirstContent + i}}, {"answer", std::to_string(kFirstContent + i)}}
                   .dump() +
               "\n";
  write_text(dir / "prompts.jsonl", records);
  // Pre-tokenized data: a completion's text is its ids, so exact_answer
  // rewards completions whose first token repeats the prompt's last one.
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 stage("grpo", "algorithm = \"grpo\"\nmodel = \"base\"\ndata = { path = " + quoted(dir / "prompts.jsonl") +
                                   " }\nbeta = 0.04\nnum_iterations = 2\nloss_type = \"grpo\"\nepsilon_high = 0.28\n"
                                   "num_generations = 4\nmax_completion_length = 3\nper_device_train_batch_size = 8\n"
                                   "learning_rate = 0.01\nmax_steps = 3\nlogging_steps = 1\n") +
                 "[[stages.grpo.rewards]]\nname = \"exact_answer\"\n");
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);
  const MetricRows train = read_metrics(dir / "run/grpo", "train");
  REQUIRE(train.size() == 3);
  for (const auto& [step, row] : train) {
    CAPTURE(step);
    CHECK(row.contains("kl"));
    CHECK(row.at("kl").get<double>() >= 0.0);
  }
  // After the first update the policy has left the reference.
  CHECK(train.at(3).at("kl").get<double>() > 0.0);
  CHECK(train.at(3).contains("clip_ratio/region_mean"));
}

TEST_CASE("grpo resumed from a checkpoint samples and learns exactly as the uninterrupted run") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 10);
  std::string records;
  for (int i = 0; i < 12; ++i)
    records += nlohmann::json{{"prompt_ids", {kBos, kFirstContent + i}}, {"answer", std::to_string(kFirstContent + i)}}
                   .dump() +
               "\n";
  write_text(dir / "prompts.jsonl", records);
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 stage("grpo", "algorithm = \"grpo\"\nmodel = \"base\"\ndata = { path = " + quoted(dir / "prompts.jsonl") +
                                   " }\nnum_generations = 4\nmax_completion_length = 3\nper_device_train_batch_size = 4\n"
                                   "learning_rate = 0.01\nmax_steps = 6\nsave_steps = 3\nlogging_steps = 1\n") +
                 "[[stages.grpo.rewards]]\nname = \"exact_answer\"\n");
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);
  const MetricRows uninterrupted = read_metrics(dir / "run/grpo", "train");
  REQUIRE(uninterrupted.size() == 6);
  // As if the run had stopped after its step-3 checkpoint.
  fs::remove_all(dir / "run/grpo/final");
  fs::remove(dir / "run/grpo/DONE");
  CHECK(run_pipeline_file(dir / "pipeline.toml", {}, /*resume=*/true) == core::RunOutcome::Completed);
  const MetricRows resumed = read_metrics(dir / "run/grpo", "train");
  for (int64_t step = 4; step <= 6; ++step) {
    CAPTURE(step);
    for (const char* name : {"reward", "loss", "grad_norm", "completions/mean_length"})
      CHECK(resumed.at(step).at(name).get<double>() == uninterrupted.at(step).at(name).get<double>());
  }
}
