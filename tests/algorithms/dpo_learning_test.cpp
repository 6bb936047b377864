// The dpo recipe: it learns a held-out preference from an SFT model (sigmoid
// and ipo), its log-probs and metrics are the ones TRL computes, and a
// precomputed reference table trains exactly like a live reference model.
#include <cmath>

#include "algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

std::string preference_data(const ScratchDir& dir, const std::string& train, const std::string& eval) {
  return "data = { path = " + quoted(dir / train) + ", eval_path = " + quoted(dir / eval) + " }\n";
}

}  // namespace

TEST_CASE("dpo from an SFT model lifts held-out rewards/accuracies from about chance to >= 0.9 (sigmoid, ipo)") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 12);
  // SFT sees both rules equally often, so the SFT model prefers neither.
  write_mixed_completion_jsonl(dir / "sft.jsonl", make_pairs(512, 1));
  write_preference_jsonl(dir / "train.jsonl", make_pairs(256, 2));
  write_preference_jsonl(dir / "eval.jsonl", make_pairs(64, 3));
  const std::string data = preference_data(dir, "train.jsonl", "eval.jsonl");
  auto dpo = [&](const std::string& loss_type) {
    return "algorithm = \"dpo\"\nmodel = \"stages.sft.output\"\n" + data + "loss_type = \"" + loss_type +
           "\"\nlearning_rate = 0.003\nlr_scheduler_type = \"constant\"\nmax_steps = 60\n"
           "per_device_train_batch_size = 16\nper_device_eval_batch_size = 64\n";
  };
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 stage("sft", "algorithm = \"sft\"\nmodel = \"base\"\ndata = { path = " + quoted(dir / "sft.jsonl") +
                                  " }\nlearning_rate = 0.01\nlr_scheduler_type = \"constant\"\nmax_steps = 150\n"
                                  "per_device_train_batch_size = 32\n") +
                 // The SFT model's own preference on the held-out pairs: reference-free
                 // rewards are beta * log p, and learning rate 0 leaves the weights alone.
                 stage("before", "algorithm = \"dpo\"\nmodel = \"stages.sft.output\"\n" + data +
                                     "reference_free = true\nlearning_rate = 0.0\nmax_steps = 1\n"
                                     "per_device_eval_batch_size = 64\n") +
                 stage("sigmoid", dpo("sigmoid")) + stage("ipo", dpo("ipo")));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  const double before = last_metric(read_metrics(dir / "run/before", "eval"), "rewards/accuracies");
  const MetricRows sigmoid = read_metrics(dir / "run/sigmoid", "eval");
  const MetricRows ipo = read_metrics(dir / "run/ipo", "eval");
  MESSAGE("held-out rewards/accuracies: SFT model " << before << ", after sigmoid "
                                                    << last_metric(sigmoid, "rewards/accuracies") << ", after ipo "
                                                    << last_metric(ipo, "rewards/accuracies"));
  CHECK(before >= 0.25);
  CHECK(before <= 0.75);
  for (const MetricRows* after : {&sigmoid, &ipo}) {
    CHECK(last_metric(*after, "rewards/accuracies") >= 0.9);
    CHECK(last_metric(*after, "rewards/margins") > 0);
  }
  // The first step starts at the reference: equal rewards, the losses' values at delta = 0.
  const nlohmann::json first_sigmoid = read_metrics(dir / "run/sigmoid", "train").at(1);
  const nlohmann::json first_ipo = read_metrics(dir / "run/ipo", "train").at(1);
  CHECK(first_sigmoid.at("loss").get<double>() == doctest::Approx(std::log(2.0)));
  CHECK(first_sigmoid.at("rewards/margins").get<double>() == 0.0);
  CHECK(first_ipo.at("loss").get<double>() == doctest::Approx(25.0));  // (1 / (2 * 0.1))^2
  CHECK(fs::exists(dir / "run/sigmoid/final/model.safetensors"));
}

TEST_CASE("dpo log-probs are summed over completion tokens (ipo: averaged), with TRL's metrics") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 6);
  const std::vector<Pair> pairs = make_ragged_pairs(10, 4);
  write_preference_jsonl(dir / "pairs.jsonl", pairs);
  auto evaluate_only = [&](const std::string& extra) {
    return "algorithm = \"dpo\"\nmodel = \"base\"\n" + preference_data(dir, "pairs.jsonl", "pairs.jsonl") +
           "reference_free = true\nbeta = 0.5\nlearning_rate = 0.0\nmax_steps = 1\n"
           "per_device_train_batch_size = 4\nper_device_eval_batch_size = 64\n" + extra;
  };
  write_text(dir / "pipeline.toml", pipeline_head(dir / "run", dir / "base") +
                                        stage("sigmoid", evaluate_only("shuffle = false\n")) +
                                        stage("ipo", evaluate_only("loss_type = \"ipo\"\n")) +
                                        stage("mixed", evaluate_only("loss_type = [\"sigmoid\", \"sft\"]\n"
                                                                     "loss_weights = [1.0, 0.5]\n")));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  const double beta = 0.5;
  std::shared_ptr<CausalLM> model = load_model(dir / "base");
  double sum_chosen = 0, sum_rejected = 0, sigmoid_loss = 0, ipo_loss = 0, wins = 0;
  double chosen_logit_sum = 0, rejected_logit_sum = 0, chosen_nll = 0;
  int64_t chosen_tokens = 0, rejected_tokens = 0;
  for (const Pair& p : pairs) {
    // Completion tokens only: the prediction of ids[t + 1] for t + 1 >= prompt length.
    auto score = [&](const std::vector<int>& completion, double& logit_sum, int64_t& tokens) {
      const RowPredictions row = predict_row(*model, concat(p.prompt, completion));
      double logp = 0;
      for (size_t t = p.prompt.size() - 1; t < row.label_logps.size(); ++t) {
        logp += row.label_logps[t];
        logit_sum += row.mean_logits[t];
        ++tokens;
      }
      return logp;
    };
    const int64_t chosen_before = chosen_tokens;
    const double chosen = score(p.chosen, chosen_logit_sum, chosen_tokens);
    const double rejected = score(p.rejected, rejected_logit_sum, rejected_tokens);
    chosen_nll -= chosen;
    REQUIRE(chosen_tokens - chosen_before == static_cast<int64_t>(p.chosen.size()));
    sum_chosen += chosen;
    sum_rejected += rejected;
    const double delta = beta * (chosen - rejected);
    sigmoid_loss += std::log1p(std::exp(-delta));
    const double ipo_delta = chosen / p.chosen.size() - rejected / p.rejected.size();
    ipo_loss += std::pow(ipo_delta - 1 / (2 * beta), 2);
    wins += chosen > rejected;
  }
  const double n = static_cast<double>(pairs.size());
  const nlohmann::json sigmoid = read_metrics(dir / "run/sigmoid", "eval").rbegin()->second;
  CHECK(sigmoid.at("loss").get<double>() == doctest::Approx(sigmoid_loss / n).epsilon(1e-5));
  CHECK(sigmoid.at("logps/chosen").get<double>() == doctest::Approx(sum_chosen / n).epsilon(1e-5));
  CHECK(sigmoid.at("logps/rejected").get<double>() == doctest::Approx(sum_rejected / n).epsilon(1e-5));
  CHECK(sigmoid.at("rewards/chosen").get<double>() == doctest::Approx(beta * sum_chosen / n).epsilon(1e-5));
  CHECK(sigmoid.at("rewards/rejected").get<double>() == doctest::Approx(beta * sum_rejected / n).epsilon(1e-5));
  CHECK(sigmoid.at("rewards/margins").get<double>() ==
        doctest::Approx(beta * (sum_chosen - sum_rejected) / n).epsilon(1e-5));
  CHECK(sigmoid.at("rewards/accuracies").get<double>() == doctest::Approx(wins / n));
  CHECK(sigmoid.at("logits/chosen").get<double>() ==
        doctest::Approx(chosen_logit_sum / static_cast<double>(chosen_tokens)).epsilon(1e-5));
  CHECK(sigmoid.at("logits/rejected").get<double>() ==
        doctest::Approx(rejected_logit_sum / static_cast<double>(rejected_tokens)).epsilon(1e-5));
  const nlohmann::json ipo = read_metrics(dir / "run/ipo", "eval").rbegin()->second;
  CHECK(ipo.at("loss").get<double>() == doctest::Approx(ipo_loss / n).epsilon(1e-5));
  // sigmoid + 0.5 * the chosen completions' mean token NLL.
  const nlohmann::json mixed = read_metrics(dir / "run/mixed", "eval").rbegin()->second;
  const double nll = chosen_nll / static_cast<double>(chosen_tokens);
  CHECK(mixed.at("nll_loss").get<double>() == doctest::Approx(nll).epsilon(1e-5));
  CHECK(mixed.at("loss").get<double>() == doctest::Approx(sigmoid_loss / n + 0.5 * nll).epsilon(1e-5));

  // num_tokens: every real token of the chosen and rejected rows trained on,
  // in file order (shuffle = false) the first 4 pairs.
  size_t first_batch_tokens = 0;
  for (size_t i = 0; i < 4; ++i)
    first_batch_tokens += 2 * pairs[i].prompt.size() + pairs[i].chosen.size() + pairs[i].rejected.size();
  const MetricRows train = read_metrics(dir / "run/sigmoid", "train");
  CHECK(train.at(1).at("num_tokens").get<double>() == static_cast<double>(first_batch_tokens));
}

TEST_CASE("precompute_ref_log_probs trains like a live reference, and the default reference is the initial policy") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 8);
  write_preference_jsonl(dir / "train.jsonl", make_ragged_pairs(48, 5));
  write_preference_jsonl(dir / "eval.jsonl", make_ragged_pairs(16, 6));
  auto dpo = [&](const std::string& extra) {
    return "algorithm = \"dpo\"\nmodel = \"base\"\n" + preference_data(dir, "train.jsonl", "eval.jsonl") +
           "learning_rate = 0.003\nmax_steps = 12\nlogging_steps = 1\nper_device_train_batch_size = 8\n"
           "per_device_eval_batch_size = 16\nloss_type = [\"sigmoid\", \"ipo\"]\n" + extra;
  };
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") + stage("live", dpo("reference = \"base\"\n")) +
                 stage("precomputed", dpo("reference = \"base\"\nprecompute_ref_log_probs = true\n"
                                          "precompute_ref_batch_size = 5\n")) +
                 stage("live_default", dpo("")) +
                 stage("precomputed_default", dpo("precompute_ref_log_probs = true\n")));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  const MetricRows live = read_metrics(dir / "run/live", "train");
  REQUIRE(live.size() == 12);
  for (const char* other : {"precomputed", "live_default", "precomputed_default"}) {
    CAPTURE(other);
    const MetricRows rows = read_metrics(dir / (std::string("run/") + other), "train");
    REQUIRE(rows.size() == live.size());
    for (const auto& [step, row] : live) {
      CAPTURE(step);
      for (const char* metric : {"loss", "rewards/chosen", "rewards/rejected", "logps/chosen"})
        CHECK(rows.at(step).at(metric).get<double>() == doctest::Approx(row.at(metric).get<double>()).epsilon(1e-5));
    }
    CHECK(last_metric(read_metrics(dir / (std::string("run/") + other), "eval"), "loss") ==
          doctest::Approx(last_metric(read_metrics(dir / "run/live", "eval"), "loss")).epsilon(1e-5));
  }
  // The same folder loaded twice: a named reference and the default one agree exactly.
  CHECK(read_metrics(dir / "run/live_default", "train").at(12).at("loss") == live.at(12).at("loss"));
  // Training moved the policy away from the reference.
  CHECK(live.at(12).at("rewards/margins").get<double>() != 0.0);
  CHECK(fs::exists(dir / "run/precomputed/ref_logps.safetensors"));
  CHECK(fs::exists(dir / "run/precomputed_default/ref_logps.safetensors"));
  CHECK_FALSE(fs::exists(dir / "run/live/ref_logps.safetensors"));
}
