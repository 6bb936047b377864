// The reward recipe end to end: it learns a held-out preference from a base
// causal LM (its scalar head initialised), reads each sequence's reward at its
// last real token, applies the margin field and the centring term as TRL
// does, saves a LlamaForSequenceClassification folder that `alignkit score`
// reads, and refuses bad input with exit code 2 before training.
#include <cmath>

#include "algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

std::string preference_data(const ScratchDir& dir, const std::string& train, const std::string& eval) {
  return "data = { path = " + quoted(dir / train) + ", eval_path = " + quoted(dir / eval) + " }\n";
}

// Pairs with a `margin` field each.
void write_margin_jsonl(const std::string& path, const std::vector<Pair>& pairs, const std::vector<double>& margins) {
  std::string text;
  for (size_t i = 0; i < pairs.size(); ++i)
    text += nlohmann::json{{"prompt_ids", pairs[i].prompt},
                           {"chosen_ids", pairs[i].chosen},
                           {"rejected_ids", pairs[i].rejected},
                           {"margin", margins[i]}}
                .dump() +
            "\n";
  write_text(path, text);
}

// Prompt + completion rows for `alignkit score`, chosen then rejected.
void write_scoring_rows(const std::string& path, const std::vector<Pair>& pairs) {
  std::string text;
  for (const Pair& p : pairs)
    text += nlohmann::json{{"prompt_ids", p.prompt}, {"completion_ids", p.chosen}}.dump() + "\n";
  for (const Pair& p : pairs)
    text += nlohmann::json{{"prompt_ids", p.prompt}, {"completion_ids", p.rejected}}.dump() + "\n";
  write_text(path, text);
}

std::vector<double> scored_rewards(const std::string& model, const std::string& rows, const std::string& log,
                                   const std::string& batch_size) {
  const std::string out = rows + ".scores";
  const int code = run_cli({"score", "--model", model, "--data", rows, "--out", out, "--threads", "1",
                            "--batch-size", batch_size},
                           log);
  REQUIRE_MESSAGE(code == 0, read_text(log));
  std::vector<double> rewards;
  std::ifstream in(out);
  std::string line;
  while (std::getline(in, line)) rewards.push_back(nlohmann::json::parse(line).at("reward").get<double>());
  return rewards;
}

double log_sigmoid(double x) { return -std::log1p(std::exp(-x)); }

}  // namespace

TEST_CASE("reward from a base causal LM reaches >= 0.9 held-out pairwise accuracy; alignkit score ranks the pairs") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 12);
  write_preference_jsonl(dir / "train.jsonl", make_pairs(256, 2));
  const std::vector<Pair> heldout = make_pairs(64, 3);
  write_preference_jsonl(dir / "eval.jsonl", heldout);
  const std::string data = preference_data(dir, "train.jsonl", "eval.jsonl");
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 // The initialised head, untrained: learning rate 0 leaves the weights alone.
                 stage("before", "algorithm = \"reward\"\nmodel = \"base\"\n" + data +
                                     "learning_rate = 0.0\nmax_steps = 1\nper_device_eval_batch_size = 64\n") +
                 stage("reward", "algorithm = \"reward\"\nmodel = \"base\"\n" + data +
                                     "learning_rate = 0.003\nlr_scheduler_type = \"constant\"\nmax_steps = 120\n"
                                     "per_device_train_batch_size = 16\nper_device_eval_batch_size = 64\n"));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  const double before = last_metric(read_metrics(dir / "run/before", "eval"), "accuracy");
  const MetricRows after = read_metrics(dir / "run/reward", "eval");
  MESSAGE("held-out accuracy: initialised head " << before << ", trained " << last_metric(after, "accuracy"));
  CHECK(before <= 0.75);
  CHECK(last_metric(after, "accuracy") >= 0.9);
  CHECK(last_metric(after, "margin") > 0);
  for (const char* name : {"loss", "min_reward", "mean_reward", "max_reward"}) CHECK(after.rbegin()->second.contains(name));
  // The untrained head scores every pair alike: the loss starts at log 2 give or take.
  CHECK(read_metrics(dir / "run/reward", "train").at(1).at("loss").get<double>() ==
        doctest::Approx(std::log(2.0)).epsilon(0.1));

  // Saved as a one-label sequence classifier, which `alignkit score` reads.
  const std::string final_dir = dir / "run/reward/final";
  const nlohmann::json config = nlohmann::json::parse(read_text(final_dir + "/config.json"));
  CHECK(config.at("architectures") == nlohmann::json::array({"LlamaForSequenceClassification"}));
  CHECK(config.at("num_labels") == 1);
  write_scoring_rows(dir / "rows.jsonl", heldout);
  const std::vector<double> rewards = scored_rewards(final_dir, dir / "rows.jsonl", dir / "score.log", "8");
  REQUIRE(rewards.size() == 2 * heldout.size());
  double correct = 0;
  for (size_t i = 0; i < heldout.size(); ++i) correct += rewards[i] > rewards[heldout.size() + i] ? 1 : 0;
  const double score_accuracy = correct / static_cast<double>(heldout.size());
  CHECK(score_accuracy == doctest::Approx(last_metric(after, "accuracy")));
  CHECK(read_text(dir / "score.log").find("no score.weight") == std::string::npos);
}

TEST_CASE("reward reads each reward at the last real token: eval metrics match alignkit score row by row") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 6);
  const std::vector<Pair> pairs = make_ragged_pairs(10, 4);
  write_preference_jsonl(dir / "pairs.jsonl", pairs);
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 stage("zero", "algorithm = \"reward\"\nmodel = \"base\"\n" +
                                   preference_data(dir, "pairs.jsonl", "pairs.jsonl") +
                                   "learning_rate = 0.0\nmax_steps = 1\nper_device_eval_batch_size = 64\n"));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);
  const nlohmann::json eval = read_metrics(dir / "run/zero", "eval").rbegin()->second;

  // Unpadded rows, one per forward, scored by the CLI from the saved model.
  write_scoring_rows(dir / "rows.jsonl", pairs);
  const std::vector<double> rewards = scored_rewards(dir / "run/zero/final", dir / "rows.jsonl", dir / "score.log", "1");
  REQUIRE(rewards.size() == 20);
  double low = rewards[0], high = rewards[0], sum = 0, gap = 0, correct = 0, loss = 0;
  for (double r : rewards) {
    low = std::min(low, r);
    high = std::max(high, r);
    sum += r;
  }
  for (size_t i = 0; i < 10; ++i) {
    const double d = rewards[i] - rewards[10 + i];
    gap += d;
    correct += d > 0 ? 1 : 0;
    loss -= log_sigmoid(d);
  }
  CHECK(eval.at("min_reward").get<double>() == doctest::Approx(low).epsilon(1e-5));
  CHECK(eval.at("max_reward").get<double>() == doctest::Approx(high).epsilon(1e-5));
  CHECK(eval.at("mean_reward").get<double>() == doctest::Approx(sum / 20).epsilon(1e-5));
  CHECK(eval.at("margin").get<double>() == doctest::Approx(gap / 10).epsilon(1e-5));
  CHECK(eval.at("accuracy").get<double>() == doctest::Approx(correct / 10));
  CHECK(eval.at("loss").get<double>() == doctest::Approx(loss / 10).epsilon(1e-5));
}

TEST_CASE("reward applies the margin field and center_rewards_coefficient as TRL does") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 7);
  const std::vector<Pair> pair = make_pairs(1, 9);
  write_preference_jsonl(dir / "plain.jsonl", pair);
  write_margin_jsonl(dir / "margin.jsonl", pair, {0.75});
  auto evaluate = [&](const std::string& file, const std::string& extra) {
    return "algorithm = \"reward\"\nmodel = \"base\"\n" + preference_data(dir, file, file) +
           "learning_rate = 0.0\nmax_steps = 1\n" + extra;
  };
  write_text(dir / "pipeline.toml", pipeline_head(dir / "run", dir / "base") +
                                        stage("plain", evaluate("plain.jsonl", "")) +
                                        stage("margin", evaluate("margin.jsonl", "")) +
                                        stage("center", evaluate("margin.jsonl", "center_rewards_coefficient = 0.5\n")));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);
  const nlohmann::json plain = read_metrics(dir / "run/plain", "eval").rbegin()->second;
  const nlohmann::json margin = read_metrics(dir / "run/margin", "eval").rbegin()->second;
  const nlohmann::json center = read_metrics(dir / "run/center", "eval").rbegin()->second;
  // One pair: `margin` is r_chosen - r_rejected, min + max is r_chosen + r_rejected.
  const double d = plain.at("margin").get<double>();
  const double sum = plain.at("min_reward").get<double>() + plain.at("max_reward").get<double>();
  CHECK(plain.at("loss").get<double>() == doctest::Approx(-log_sigmoid(d)).epsilon(1e-5));
  CHECK(margin.at("margin").get<double>() == doctest::Approx(d));  // the metric never subtracts the field
  CHECK(margin.at("loss").get<double>() == doctest::Approx(-log_sigmoid(d - 0.75)).epsilon(1e-5));
  CHECK(center.at("loss").get<double>() == doctest::Approx(-log_sigmoid(d - 0.75) + 0.5 * sum * sum).epsilon(1e-5));
}

TEST_CASE("reward refuses non-preference data and a reward_model with exit code 2 before training") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 5);
  const std::vector<Pair> pairs = make_pairs(8, 1);
  write_chosen_completion_jsonl(dir / "sft.jsonl", pairs);
  write_preference_jsonl(dir / "pairs.jsonl", pairs);
  auto pipeline = [&](const std::string& name, const std::string& body) {
    const std::string file = dir / (name + ".toml");
    write_text(file, pipeline_head(dir / name, dir / "base") +
                         stage("reward", "algorithm = \"reward\"\nmodel = \"base\"\nmax_steps = 2\n" + body));
    return file;
  };

  const std::string completions = pipeline("completions", "data = { path = " + quoted(dir / "sft.jsonl") + " }\n");
  CHECK(run_cli({"run", completions}, dir / "completions.log") == 2);
  const std::string log = read_text(dir / "completions.log");
  CHECK_MESSAGE(log.find("stages.reward.data.path") != std::string::npos, log);
  CHECK_MESSAGE(log.find("reward needs preference data (prompt, chosen, rejected, optional margin), but " +
                         (dir / "sft.jsonl") + " holds prompt-completion records") != std::string::npos,
                log);
  CHECK_FALSE(fs::exists(dir / "completions/reward/metrics.jsonl"));

  const std::string with_rm = pipeline("with_rm", "data = { path = " + quoted(dir / "pairs.jsonl") +
                                                      " }\nreward_model = \"base\"\n");
  CHECK(run_cli({"run", with_rm}, dir / "with_rm.log") == 2);
  const std::string rm_log = read_text(dir / "with_rm.log");
  CHECK_MESSAGE(rm_log.find("stages.reward.reward_model: the reward algorithm trains a reward model from `model`") !=
                    std::string::npos,
                rm_log);
  CHECK_FALSE(fs::exists(dir / "with_rm/reward/metrics.jsonl"));
}
