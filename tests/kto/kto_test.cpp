// The kto recipe end to end on tiny models and pre-tokenized data: it moves
// held-out rewards/chosen above rewards/rejected, paired data trains exactly
// like its unpaired rows, the KL estimate pairs each prompt with the previous
// row's completion, and bad input stops with exit code 2 before training.
#include <algorithm>
#include <cmath>

#include "../algorithms/algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

struct UnpairedRecord {
  std::vector<int> prompt;
  std::vector<int> completion;
  bool label;
};

// TRL's unpairing of preference pairs: every chosen row, then every rejected row.
std::vector<UnpairedRecord> unpair(const std::vector<Pair>& pairs) {
  std::vector<UnpairedRecord> rows;
  for (const Pair& p : pairs) rows.push_back({p.prompt, p.chosen, true});
  for (const Pair& p : pairs) rows.push_back({p.prompt, p.rejected, false});
  return rows;
}

// Truly unpaired data: each prompt appears once, with its chosen completion
// when `desirable(i)`, else its rejected one.
template <typename Desirable>
std::vector<UnpairedRecord> one_per_prompt(const std::vector<Pair>& pairs, Desirable desirable) {
  std::vector<UnpairedRecord> rows;
  for (size_t i = 0; i < pairs.size(); ++i)
    rows.push_back({pairs[i].prompt, desirable(i) ? pairs[i].chosen : pairs[i].rejected, desirable(i)});
  return rows;
}

void write_unpaired_jsonl(const std::string& path, const std::vector<UnpairedRecord>& rows) {
  std::string text;
  for (const UnpairedRecord& r : rows)
    text += nlohmann::json{{"prompt_ids", r.prompt}, {"completion_ids", r.completion}, {"label", r.label}}.dump() + "\n";
  write_text(path, text);
}

std::string data_table(const ScratchDir& dir, const std::string& train, const std::string& eval) {
  return "data = { path = " + quoted(dir / train) + ", eval_path = " + quoted(dir / eval) + " }\n";
}

// Summed completion log-prob of prompt + completion under `model`.
double completion_logp(CausalLM& model, const std::vector<int>& prompt, const std::vector<int>& completion) {
  const RowPredictions row = predict_row(model, concat(prompt, completion));
  double sum = 0;
  for (size_t t = prompt.size() - 1; t < row.label_logps.size(); ++t) sum += row.label_logps[t];
  return sum;
}

}  // namespace

TEST_CASE("kto moves held-out rewards/chosen above rewards/rejected (unpaired data, default reference)") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 12);
  write_unpaired_jsonl(dir / "train.jsonl", one_per_prompt(make_pairs(256, 2), [](size_t i) { return i % 2 == 0; }));
  write_unpaired_jsonl(dir / "eval.jsonl", unpair(make_pairs(32, 3)));
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 stage("kto", "algorithm = \"kto\"\nmodel = \"base\"\n" + data_table(dir, "train.jsonl", "eval.jsonl") +
                                  "learning_rate = 0.003\nlr_scheduler_type = \"constant\"\nmax_steps = 40\n"
                                  "per_device_train_batch_size = 16\nper_device_eval_batch_size = 64\n"
                                  "logging_steps = 1\neval_steps = 40\n"));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  // The first step starts at the reference: rewards 0, KL 0, every row's loss 1 - sigmoid(0).
  const MetricRows train = read_metrics(dir / "run/kto", "train");
  const nlohmann::json& first = train.at(1);
  CHECK(first.at("loss").get<double>() == doctest::Approx(0.5));
  CHECK(first.at("kl").get<double>() == 0.0);
  CHECK(first.at("rewards/margins").get<double>() == 0.0);
  CHECK(first.at("num_tokens").get<double>() == 16.0 * 8.0);  // 16 rows of 4 prompt + 4 completion tokens
  for (const char* name : {"rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"})
    CHECK_MESSAGE(first.contains(name), name);

  const MetricRows eval = read_metrics(dir / "run/kto", "eval");
  const double chosen = last_metric(eval, "rewards/chosen");
  const double rejected = last_metric(eval, "rewards/rejected");
  MESSAGE("held-out rewards after kto: chosen " << chosen << ", rejected " << rejected << ", kl "
                                                << last_metric(eval, "kl"));
  CHECK(chosen > 0);
  CHECK(rejected < 0);
  CHECK(last_metric(eval, "rewards/margins") == doctest::Approx(chosen - rejected));
  CHECK(chosen - rejected > 0.3);
  CHECK(fs::exists(dir / "run/kto/final/model.safetensors"));
}

TEST_CASE("kto on paired data trains exactly like its unpaired rows; the KL pairs prompt i with completion i-1") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 6);
  make_tiny_model(dir / "other", 7);
  const std::vector<Pair> pairs = make_ragged_pairs(12, 4);
  write_preference_jsonl(dir / "pairs.jsonl", pairs);
  const std::vector<UnpairedRecord> rows = unpair(pairs);
  write_unpaired_jsonl(dir / "rows.jsonl", rows);
  auto kto = [&](const std::string& file, const std::string& extra) {
    return "algorithm = \"kto\"\n" + data_table(dir, file, file) +
           "shuffle = false\nlearning_rate = 0.003\nmax_steps = 4\nlogging_steps = 1\n"
           "per_device_train_batch_size = 6\nper_device_eval_batch_size = 64\n" + extra;
  };
  // No training (learning rate 0): one eval batch of every row, with a
  // reference other than the policy, in both directions so that one of the
  // two KL estimates is positive before the clamp.
  auto frozen = [&](const std::string& model, const std::string& reference) {
    return "algorithm = \"kto\"\nmodel = " + quoted(model) + "\nreference = " + quoted(reference) + "\n" +
           data_table(dir, "pairs.jsonl", "rows.jsonl") +
           "beta = 0.5\nlearning_rate = 0.0\nmax_steps = 1\nper_device_eval_batch_size = 64\n";
  };
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") + "\n[models.other]\npath = " + quoted(dir / "other") + "\n" +
                 stage("paired", kto("pairs.jsonl", "model = \"base\"\n")) +
                 stage("unpaired", kto("rows.jsonl", "model = \"base\"\n")) + stage("forward", frozen("base", "other")) +
                 stage("backward", frozen("other", "base")));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  const MetricRows paired = read_metrics(dir / "run/paired", "train");
  const MetricRows unpaired = read_metrics(dir / "run/unpaired", "train");
  REQUIRE(paired.size() == 4);
  REQUIRE(unpaired.size() == 4);
  for (const auto& [step, row] : paired) {
    CAPTURE(step);
    for (const auto& [name, value] : row.items())
      if (value.is_number()) CHECK(unpaired.at(step).at(name).get<double>() == doctest::Approx(value.get<double>()));
  }

  // The eval metrics computed independently: log-probs summed over completion
  // tokens, rewards beta * (policy - reference), and the KL estimate from
  // prompt i with the completion of row i-1 (row 0 with the last row's).
  std::shared_ptr<CausalLM> base = load_model(dir / "base");
  std::shared_ptr<CausalLM> other = load_model(dir / "other");
  const double beta = 0.5;
  const size_t n = rows.size();
  double chosen_logps = 0, chosen_rewards = 0, rejected_logps = 0, rejected_rewards = 0, kl_raw = 0;
  double chosen_count = 0, rejected_count = 0;
  for (size_t i = 0; i < n; ++i) {
    const double policy = completion_logp(*base, rows[i].prompt, rows[i].completion);
    const double reference = completion_logp(*other, rows[i].prompt, rows[i].completion);
    const std::vector<int>& shifted = rows[(i + n - 1) % n].completion;
    kl_raw += completion_logp(*base, rows[i].prompt, shifted) - completion_logp(*other, rows[i].prompt, shifted);
    (rows[i].label ? chosen_logps : rejected_logps) += policy;
    (rows[i].label ? chosen_rewards : rejected_rewards) += beta * (policy - reference);
    (rows[i].label ? chosen_count : rejected_count) += 1;
  }
  kl_raw /= static_cast<double>(n);
  MESSAGE("raw KL estimate, base against other: " << kl_raw);
  const nlohmann::json forward = read_metrics(dir / "run/forward", "eval").rbegin()->second;
  const nlohmann::json backward = read_metrics(dir / "run/backward", "eval").rbegin()->second;
  CHECK(forward.at("kl").get<double>() == doctest::Approx(std::max(kl_raw, 0.0)).epsilon(1e-5));
  CHECK(backward.at("kl").get<double>() == doctest::Approx(std::max(-kl_raw, 0.0)).epsilon(1e-5));
  CHECK(kl_raw != 0.0);
  CHECK(forward.at("logps/chosen").get<double>() == doctest::Approx(chosen_logps / chosen_count).epsilon(1e-5));
  CHECK(forward.at("logps/rejected").get<double>() == doctest::Approx(rejected_logps / rejected_count).epsilon(1e-5));
  CHECK(forward.at("rewards/chosen").get<double>() == doctest::Approx(chosen_rewards / chosen_count).epsilon(1e-5));
  CHECK(forward.at("rewards/rejected").get<double>() ==
        doctest::Approx(rejected_rewards / rejected_count).epsilon(1e-5));
}

TEST_CASE("kto bad input stops with exit code 2 before training: labels, batch size 1; unbalanced weights warn") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 3);
  const std::vector<Pair> pairs = make_pairs(8, 1);
  write_unpaired_jsonl(dir / "good.jsonl", unpair(pairs));
  auto pipeline = [&](const std::string& data_file, const std::string& extra) {
    write_text(dir / "pipeline.toml",
               pipeline_head(dir / "run", dir / "base") +
                   stage("kto", "algorithm = \"kto\"\nmodel = \"base\"\nmax_steps = 1\n"
                                "data = { path = " + quoted(dir / data_file) + " }\n" + extra));
    return dir / "pipeline.toml";
  };
  const std::string good = read_text(dir / "good.jsonl");
  const std::string line_1 = good.substr(0, good.find('\n') + 1);
  for (const char* label : {"\"yes\"", "2", "0.5"}) {
    CAPTURE(label);
    const std::string bad = nlohmann::json{{"prompt_ids", pairs[0].prompt}, {"completion_ids", pairs[0].chosen}}
                                .dump()
                                .insert(1, std::string("\"label\": ") + label + ", ");
    write_text(dir / "bad.jsonl", line_1 + bad + "\n");
    fs::remove(dir / "run.log");
    CHECK(run_cli({"run", pipeline("bad.jsonl", "per_device_train_batch_size = 2\n")}, dir / "run.log") == 2);
    const std::string log = read_text(dir / "run.log");
    CHECK_MESSAGE(contains(log, (dir / "bad.jsonl") + ":2: field 'label' must be true or false"), log);
    CHECK_FALSE(fs::exists(dir / "run/kto/metrics.jsonl"));
  }

  fs::remove(dir / "run.log");
  CHECK(run_cli({"run", pipeline("good.jsonl", "per_device_train_batch_size = 1\n")}, dir / "run.log") == 2);
  std::string log = read_text(dir / "run.log");
  CHECK_MESSAGE(contains(log, "stages.kto.per_device_train_batch_size: KTO needs at least 2 examples in a batch: "
                              "its KL estimate"),
                log);
  CHECK_FALSE(fs::exists(dir / "run/kto/metrics.jsonl"));

  // 2 desirable rows against 8 undesirable: TRL's rule recommends other weights.
  write_unpaired_jsonl(dir / "unbalanced.jsonl",
                       one_per_prompt(make_pairs(10, 2), [](size_t i) { return i < 2; }));
  fs::remove(dir / "run.log");
  CHECK(run_cli({"run", pipeline("unbalanced.jsonl", "per_device_train_batch_size = 4\n")}, dir / "run.log") == 0);
  log = read_text(dir / "run.log");
  CHECK_MESSAGE(contains(log, "warning: the data has 2 desirable and 8 undesirable rows"), log);
  CHECK_MESSAGE(contains(log, "desirable_weight in [4.00, 5.33]"), log);
}
