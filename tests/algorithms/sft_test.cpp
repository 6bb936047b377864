// The sft recipe: it learns (the held-out loss falls), its loss and metrics
// count exactly the tokens TRL counts, and it writes a complete model folder.
#include <cmath>

#include "algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

TEST_CASE("sft lowers the held-out loss of a tiny model") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 12);
  write_text(dir / "base/tokenizer_config.json", "{\"model_max_length\": 64}\n");
  write_chosen_completion_jsonl(dir / "sft.jsonl", make_pairs(320, 1));
  const std::string data = "data = { path = " + quoted(dir / "sft.jsonl") + ", eval_fraction = 0.2 }\n";
  const std::string common = "algorithm = \"sft\"\nmodel = \"base\"\n" + data +
                             "per_device_train_batch_size = 32\nper_device_eval_batch_size = 64\n";
  // `untrained` only evaluates: learning rate 0 leaves the weights as they were.
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 stage("untrained", common + "learning_rate = 0.0\nmax_steps = 1\n") +
                 stage("sft", common + "learning_rate = 0.01\nlr_scheduler_type = \"constant\"\nmax_steps = 100\n"
                                       "logging_steps = 20\n"));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  const MetricRows before = read_metrics(dir / "run/untrained", "eval");
  const MetricRows after = read_metrics(dir / "run/sft", "eval");
  const double loss_before = last_metric(before, "loss");
  const double loss_after = last_metric(after, "loss");
  MESSAGE("held-out loss " << loss_before << " -> " << loss_after << ", token accuracy "
                           << last_metric(before, "mean_token_accuracy") << " -> "
                           << last_metric(after, "mean_token_accuracy"));
  CHECK(loss_before > 3.0);  // about ln(32): a random model guesses
  CHECK(loss_after < 0.5 * loss_before);
  CHECK(last_metric(after, "mean_token_accuracy") > last_metric(before, "mean_token_accuracy") + 0.3);

  // 80% of 320 records train: 8 steps an epoch of 32 rows of 8 tokens.
  const MetricRows train = read_metrics(dir / "run/sft", "train");
  CHECK(train.rbegin()->first == 100);
  CHECK(last_metric(train, "num_tokens") == doctest::Approx(100 * 32 * 8));
  CHECK(last_metric(train, "epoch") == doctest::Approx(100.0 / 8.0));

  for (const char* file : {"config.json", "model.safetensors", "tokenizer_config.json"})
    CHECK_MESSAGE(fs::exists(dir / (std::string("run/sft/final/") + file)), file);
}

TEST_CASE("sft loss and token accuracy count completion tokens only, unless completion_only_loss = false") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 5);
  const std::vector<Pair> records = make_ragged_pairs(12, 9);
  std::string prompt_completion, language_modelling;
  for (const Pair& r : records) {
    prompt_completion += nlohmann::json{{"prompt_ids", r.prompt}, {"completion_ids", r.chosen}}.dump() + "\n";
    language_modelling += nlohmann::json{{"input_ids", concat(r.prompt, r.chosen)}}.dump() + "\n";
  }
  write_text(dir / "pc.jsonl", prompt_completion);
  write_text(dir / "lm.jsonl", language_modelling);
  auto evaluate_only = [&](const std::string& file, const std::string& extra) {
    return "algorithm = \"sft\"\nmodel = \"base\"\ndata = { path = " + quoted(dir / file) +
           ", eval_path = " + quoted(dir / file) +
           " }\nlearning_rate = 0.0\nmax_steps = 1\nper_device_train_batch_size = 4\n"
           "per_device_eval_batch_size = 64\n" + extra;
  };
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 stage("completion", evaluate_only("pc.jsonl", "shuffle = false\n")) +
                 stage("everything", evaluate_only("pc.jsonl", "completion_only_loss = false\n")) +
                 stage("text", evaluate_only("lm.jsonl", "")));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  // Row by row, without padding: the completion's tokens, or every token after the first.
  std::shared_ptr<CausalLM> model = load_model(dir / "base");
  double completion_nll = 0, all_nll = 0, completion_hits = 0, all_hits = 0;
  int64_t completion_count = 0, all_count = 0, first_batch_tokens = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const Pair& r = records[i];
    const RowPredictions row = predict_row(*model, concat(r.prompt, r.chosen));
    for (size_t t = 0; t < row.label_logps.size(); ++t) {
      const bool in_completion = t + 1 >= r.prompt.size();
      all_nll -= row.label_logps[t];
      all_hits += row.argmax_hits[t];
      ++all_count;
      if (in_completion) {
        completion_nll -= row.label_logps[t];
        completion_hits += row.argmax_hits[t];
        ++completion_count;
      }
    }
    if (i < 4) first_batch_tokens += static_cast<int64_t>(r.prompt.size() + r.chosen.size());
  }
  const MetricRows completion = read_metrics(dir / "run/completion", "eval");
  const MetricRows everything = read_metrics(dir / "run/everything", "eval");
  const MetricRows text = read_metrics(dir / "run/text", "eval");
  CHECK(last_metric(completion, "loss") == doctest::Approx(completion_nll / completion_count).epsilon(1e-5));
  CHECK(last_metric(completion, "mean_token_accuracy") == doctest::Approx(completion_hits / completion_count));
  CHECK(last_metric(everything, "loss") == doctest::Approx(all_nll / all_count).epsilon(1e-5));
  CHECK(last_metric(everything, "mean_token_accuracy") == doctest::Approx(all_hits / all_count));
  CHECK(last_metric(text, "loss") == doctest::Approx(all_nll / all_count).epsilon(1e-5));
  CHECK(completion_count < all_count);

  // num_tokens counts every real token (prompt too) of the rows trained on: in
  // file order (shuffle = false), the first 4 records.
  const MetricRows train = read_metrics(dir / "run/completion", "train");
  CHECK(train.at(1).at("num_tokens").get<double>() == first_batch_tokens);
}
