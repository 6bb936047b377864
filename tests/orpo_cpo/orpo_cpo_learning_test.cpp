// The orpo and cpo recipes end to end: with no reference model, ORPO and
// SimPO lift held-out rewards/accuracies from about chance to >= 0.9, and the
// log-probs, NLL and metrics a stage logs are the ones TRL computes.
#include <cmath>

#include "algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

std::string preference_data(const ScratchDir& dir, const std::string& train, const std::string& eval) {
  return "data = { path = " + quoted(dir / train) + ", eval_path = " + quoted(dir / eval) + " }\n";
}

double metric(const nlohmann::json& row, const char* name) { return row.at(name).get<double>(); }

}  // namespace

TEST_CASE("orpo and simpo from a random base lift held-out rewards/accuracies from about chance to >= 0.9") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 12);
  write_preference_jsonl(dir / "train.jsonl", make_pairs(256, 2));
  write_preference_jsonl(dir / "eval.jsonl", make_pairs(64, 3));
  const std::string data = preference_data(dir, "train.jsonl", "eval.jsonl");
  const std::string training = "learning_rate = 0.003\nlr_scheduler_type = \"constant\"\nmax_steps = 60\n"
                               "per_device_train_batch_size = 16\nper_device_eval_batch_size = 64\n";
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 // The base model's own preference: learning rate 0 leaves the weights alone.
                 stage("before", "algorithm = \"orpo\"\nmodel = \"base\"\n" + data +
                                     "learning_rate = 0.0\nmax_steps = 1\nper_device_eval_batch_size = 64\n") +
                 stage("orpo", "algorithm = \"orpo\"\nmodel = \"base\"\n" + data + training) +
                 stage("simpo", "algorithm = \"cpo\"\nmodel = \"base\"\n" + data +
                                    "loss_type = \"simpo\"\ncpo_alpha = 0.0\n" + training));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  const double before = last_metric(read_metrics(dir / "run/before", "eval"), "rewards/accuracies");
  const MetricRows orpo = read_metrics(dir / "run/orpo", "eval");
  const MetricRows simpo = read_metrics(dir / "run/simpo", "eval");
  MESSAGE("held-out rewards/accuracies: base " << before << ", after orpo " << last_metric(orpo, "rewards/accuracies")
                                               << ", after simpo " << last_metric(simpo, "rewards/accuracies"));
  CHECK(before >= 0.25);
  CHECK(before <= 0.75);
  for (const MetricRows* after : {&orpo, &simpo}) {
    CHECK(last_metric(*after, "rewards/accuracies") >= 0.9);
    CHECK(last_metric(*after, "rewards/margins") > 0);
  }
  // ORPO's NLL term taught the chosen rule; pure SimPO (cpo_alpha 0) only ranks.
  CHECK(last_metric(orpo, "nll_loss") < metric(read_metrics(dir / "run/orpo", "train").at(1), "nll_loss"));
  CHECK(last_metric(orpo, "log_odds_chosen") > 0);
  CHECK(fs::exists(dir / "run/orpo/final/model.safetensors"));
  CHECK(fs::exists(dir / "run/simpo/final/model.safetensors"));
}

TEST_CASE("orpo averages completion log-probs and takes the NLL over prompt + chosen; cpo sigmoid sums") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 6);
  const std::vector<Pair> pairs = make_ragged_pairs(10, 4);
  write_preference_jsonl(dir / "pairs.jsonl", pairs);
  auto evaluate_only = [&](const std::string& algorithm, const std::string& extra) {
    return "algorithm = \"" + algorithm + "\"\nmodel = \"base\"\n" +
           preference_data(dir, "pairs.jsonl", "pairs.jsonl") +
           "beta = 0.5\nlearning_rate = 0.0\nmax_steps = 1\nper_device_train_batch_size = 4\n"
           "per_device_eval_batch_size = 64\n" + extra;
  };
  write_text(dir / "pipeline.toml", pipeline_head(dir / "run", dir / "base") + stage("orpo", evaluate_only("orpo", "")) +
                                        stage("cpo", evaluate_only("cpo", "cpo_alpha = 0.25\n")));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  const double beta = 0.5;
  std::shared_ptr<CausalLM> model = load_model(dir / "base");
  double sum_chosen = 0, sum_rejected = 0, mean_chosen = 0, mean_rejected = 0;
  double ratio = 0, log_odds_sum = 0, sigmoid_loss = 0, nll_sum = 0, chosen_logit_sum = 0;
  int64_t nll_tokens = 0, chosen_tokens = 0;
  auto log1mexp = [](double x) { return std::log1p(-std::exp(x)); };
  for (const Pair& p : pairs) {
    // Completion tokens: the predictions of ids[t + 1] for t + 1 >= prompt length.
    auto completion_logp = [&](const RowPredictions& row) {
      double logp = 0;
      for (size_t t = p.prompt.size() - 1; t < row.label_logps.size(); ++t) logp += row.label_logps[t];
      return logp;
    };
    const RowPredictions chosen_row = predict_row(*model, concat(p.prompt, p.chosen));
    const RowPredictions rejected_row = predict_row(*model, concat(p.prompt, p.rejected));
    const double chosen = completion_logp(chosen_row), rejected = completion_logp(rejected_row);
    for (double logp : chosen_row.label_logps) nll_sum -= logp;  // every token after the first
    nll_tokens += static_cast<int64_t>(chosen_row.label_logps.size());
    for (size_t t = p.prompt.size() - 1; t < chosen_row.mean_logits.size(); ++t, ++chosen_tokens)
      chosen_logit_sum += chosen_row.mean_logits[t];
    const double c = chosen / p.chosen.size(), r = rejected / p.rejected.size();
    sum_chosen += chosen;
    sum_rejected += rejected;
    mean_chosen += c;
    mean_rejected += r;
    const double log_odds = (c - r) - (log1mexp(c) - log1mexp(r));
    log_odds_sum += log_odds;
    ratio += -std::log1p(std::exp(-log_odds));
    sigmoid_loss += std::log1p(std::exp(-beta * (chosen - rejected)));
  }
  const double n = static_cast<double>(pairs.size());
  const double nll = nll_sum / static_cast<double>(nll_tokens);
  const nlohmann::json orpo = read_metrics(dir / "run/orpo", "eval").rbegin()->second;
  CHECK(metric(orpo, "loss") == doctest::Approx(nll - beta * ratio / n).epsilon(1e-5));
  CHECK(metric(orpo, "nll_loss") == doctest::Approx(nll).epsilon(1e-5));
  CHECK(metric(orpo, "log_odds_ratio") == doctest::Approx(ratio / n).epsilon(1e-5));
  CHECK(metric(orpo, "log_odds_chosen") == doctest::Approx(log_odds_sum / n).epsilon(1e-4));
  CHECK(metric(orpo, "logps/chosen") == doctest::Approx(mean_chosen / n).epsilon(1e-5));
  CHECK(metric(orpo, "logps/rejected") == doctest::Approx(mean_rejected / n).epsilon(1e-5));
  CHECK(metric(orpo, "rewards/chosen") == doctest::Approx(beta * mean_chosen / n).epsilon(1e-5));
  CHECK(metric(orpo, "rewards/margins") == doctest::Approx(beta * (mean_chosen - mean_rejected) / n).epsilon(1e-4));
  CHECK(metric(orpo, "logits/chosen") == doctest::Approx(chosen_logit_sum / chosen_tokens).epsilon(1e-5));
  for (const char* name : {"rewards/rejected", "rewards/accuracies", "logits/rejected"}) CHECK(orpo.contains(name));

  const nlohmann::json cpo = read_metrics(dir / "run/cpo", "eval").rbegin()->second;
  CHECK(metric(cpo, "loss") == doctest::Approx(sigmoid_loss / n + 0.25 * nll).epsilon(1e-5));
  CHECK(metric(cpo, "nll_loss") == doctest::Approx(nll).epsilon(1e-5));
  CHECK(metric(cpo, "logps/chosen") == doctest::Approx(sum_chosen / n).epsilon(1e-5));
  CHECK(metric(cpo, "logps/rejected") == doctest::Approx(sum_rejected / n).epsilon(1e-5));
  CHECK(metric(cpo, "rewards/chosen") == doctest::Approx(beta * sum_chosen / n).epsilon(1e-5));
}
