// The synthesize stage and `alignkit data synthesize` on the arithmetic task
// (configs/quickstart): a tiny model trained briefly with SFT samples answers,
// a rule reward judges them, and the pairs' chosen answers are right where the
// rejected ones are wrong; `synthesize -> dpo` runs end to end as a pipeline;
// the LM judge writes pairs; the reward-model judge's margins match
// `alignkit score`; bad input exits 2; stats measures token lengths.
#include <doctest/doctest.h>

#include "data_test_util.hpp"

using namespace data_test;

namespace {

// Built once per process: tokenizer, tiny model, a short SFT run on the
// quick-start demonstrations; the prompts are configs/quickstart/rl_train.jsonl.
struct Fixture {
  std::string dir, sft, prompts;
  Fixture() {
    dir = scratch("synthesize");
    const std::string source = ALIGNKIT_SOURCE_DIR;
    Result r = alignkit("tokenizer train --input " + source + "/configs/quickstart/corpus.txt --vocab-size 276 --out " + dir +
                        "/tokenizer.model");
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    r = alignkit("model init --tokenizer " + dir + "/tokenizer.model --hidden-size 48 --layers 2 --heads 4 "
                 "--max-position-embeddings 64 --seed 7 --out " + dir + "/base");
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    write_file(dir + "/sft.toml", "[run]\noutput_dir = \"" + dir + "/sft-run\"\nseed = 1\n[models.base]\npath = \"" + dir +
                                      "/base\"\n[stages.sft]\nalgorithm = \"sft\"\nmodel = \"base\"\n"
                                      "data = { path = \"" + source + "/configs/quickstart/sft.jsonl\" }\n"
                                      "learning_rate = 3e-3\nmax_steps = 120\nper_device_train_batch_size = 20\n"
                                      "logging_steps = 60\nsave_steps = 1000\nthreads = 1\n");
    r = alignkit("run " + dir + "/sft.toml");
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    sft = dir + "/sft-run/sft/final";
    prompts = source + "/configs/quickstart/rl_train.jsonl";  // 80 sums with their answers
  }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

std::string answer_of(const std::string& prompt) {
  const int a = prompt[0] - '0', b = prompt[2] - '0';
  return std::to_string(a + b);
}

}  // namespace

TEST_CASE("data synthesize with a rule reward: chosen answers are right, rejected ones wrong") {
  const Fixture& f = fixture();
  const std::string out = f.dir + "/pairs.jsonl";
  const Result r = alignkit("data synthesize --model " + f.sft + " --data " + f.prompts + " --out " + out +
                            " --judge rule --reward exact_answer --num-completions 6 --max-new-tokens 4 --seed 3");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const json summary = json::parse(r.out.substr(0, r.out.rfind("pairs written")));
  CHECK(summary["prompts"] == 80);
  CHECK(summary["completions"] == 480);
  const std::vector<json> pairs = json_lines_of(out);
  REQUIRE(pairs.size() >= 10);
  CHECK(summary["pairs"] == pairs.size());
  int chosen_right = 0, rejected_right = 0;
  for (const json& p : pairs) {
    const std::string answer = answer_of(p["prompt"].get<std::string>());
    chosen_right += p["chosen"] == answer;
    rejected_right += p["rejected"] == answer;
    CHECK(p["margin"].get<double>() > 0.0);
    CHECK(p["judge"] == "rule:exact_answer");
  }
  MESSAGE("rule judge: " << pairs.size() << " pairs from 80 prompts; chosen right " << chosen_right << ", rejected right "
                         << rejected_right);
  CHECK(chosen_right == static_cast<int>(pairs.size()));
  CHECK(rejected_right == 0);
  const Result check = alignkit("data validate " + out + " --type preference");
  CHECK_MESSAGE(check.exit_code == 0, check.err);
}

TEST_CASE("pipeline synthesize -> dpo: the dpo stage trains on the synthesize stage's output") {
  const Fixture& f = fixture();
  const std::string run = f.dir + "/synth-dpo";
  fs::remove_all(run);
  const std::string toml = f.dir + "/synth_dpo.toml";
  write_file(toml, "[run]\noutput_dir = \"" + run + "\"\nseed = 5\n[models.sft]\npath = \"" + f.sft + "\"\n"
                   "[stages.synth]\nalgorithm = \"synthesize\"\nmodel = \"sft\"\ndata = { path = \"" + f.prompts + "\" }\n"
                   "judge = \"rule\"\nnum_completions = 6\nmax_new_tokens = 4\nthreads = 1\n"
                   "[[stages.synth.rewards]]\nname = \"exact_answer\"\n"
                   "[stages.dpo]\nalgorithm = \"dpo\"\nmodel = \"sft\"\nreference = \"sft\"\n"
                   "data = { path = \"stages.synth.output\" }\nmax_steps = 6\nper_device_train_batch_size = 4\n"
                   "learning_rate = 1e-3\nlogging_steps = 2\nsave_steps = 1000\nthreads = 1\n");
  Result r = alignkit("validate " + toml);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(contains(r.out, "dpo: dpo on local (after synth)"));
  r = alignkit("run " + toml);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(fs::exists(run + "/synth/final/data.jsonl"));
  CHECK(fs::exists(run + "/synth/final/summary.json"));
  CHECK(fs::exists(run + "/dpo/final/config.json"));
  const std::vector<json> metrics = json_lines_of(run + "/dpo/metrics.jsonl");
  REQUIRE_FALSE(metrics.empty());
  CHECK(metrics.back().contains("loss"));
  // The resolved pipeline names the produced file; a second run skips both finished stages.
  CHECK(contains(read_file(run + "/pipeline.resolved.toml"), run + "/synth/final/data.jsonl"));
  r = alignkit("run " + toml);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(contains(r.err, "[synth] already finished"));
  CHECK(contains(r.err, "[dpo] already finished"));
}

TEST_CASE("data synthesize with an LM judge asked in both orders writes pairs with positive margins") {
  const Fixture& f = fixture();
  std::vector<json> few;
  for (const json& p : json_lines_of(f.prompts))
    if (few.size() < 8) few.push_back(p);
  write_file(f.dir + "/few.jsonl", jsonl(few));
  const std::string out = f.dir + "/lm_pairs.jsonl";
  const Result r = alignkit("data synthesize --model " + f.sft + " --data " + f.dir + "/few.jsonl --out " + out +
                            " --judge lm --judge-model " + f.sft + " --judge-template '{prompt} {a} or {b}:' --num-completions 3 --max-new-tokens 4 --pairs all-pairs"
                            " --margin-threshold 0");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const std::vector<json> pairs = json_lines_of(out);
  REQUIRE_FALSE(pairs.empty());
  for (const json& p : pairs) {
    CHECK(p["judge"] == "lm");
    CHECK(p["margin"].get<double>() > 0.0);
    CHECK(p["chosen"] != p["rejected"]);
  }
}

TEST_CASE("data synthesize with a reward model: each pair's margin is r(chosen) - r(rejected) as alignkit score gives it") {
  const Fixture& f = fixture();
  const std::string source = ALIGNKIT_SOURCE_DIR;
  const std::string run = f.dir + "/rm-run";
  fs::remove_all(run);
  write_file(f.dir + "/rm.toml", "[run]\noutput_dir = \"" + run + "\"\nseed = 2\n[models.sft]\npath = \"" + f.sft + "\"\n"
                                 "[stages.reward]\nalgorithm = \"reward\"\nmodel = \"sft\"\n"
                                 "data = { path = \"" + source + "/configs/quickstart/prefs_train.jsonl\" }\n"
                                 "learning_rate = 1e-3\nmax_steps = 5\nper_device_train_batch_size = 8\nthreads = 1\n"
                                 "logging_steps = 5\nsave_steps = 1000\n");
  Result r = alignkit("run " + f.dir + "/rm.toml");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  std::vector<json> few;
  for (const json& p : json_lines_of(f.prompts))
    if (few.size() < 6) few.push_back(p);
  write_file(f.dir + "/few_rm.jsonl", jsonl(few));
  const std::string out = f.dir + "/rm_pairs.jsonl";
  r = alignkit("data synthesize --model " + f.sft + " --data " + f.dir + "/few_rm.jsonl --out " + out + " --judge reward_model"
               " --reward-model " + run + "/reward/final --num-completions 4 --max-new-tokens 4 --threads 1");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const std::vector<json> pairs = json_lines_of(out);
  REQUIRE_FALSE(pairs.empty());
  // Score chosen and rejected again with `alignkit score` (the reward model's head at the last token).
  std::vector<json> rows;
  for (const json& p : pairs) {
    rows.push_back({{"prompt", p["prompt"]}, {"completion", p["chosen"]}});
    rows.push_back({{"prompt", p["prompt"]}, {"completion", p["rejected"]}});
  }
  write_file(f.dir + "/rm_rows.jsonl", jsonl(rows));
  r = alignkit("score --model " + run + "/reward/final --data " + f.dir + "/rm_rows.jsonl --threads 1");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  std::vector<double> rewards;
  size_t start = 0;
  while (start < r.out.size()) {
    const size_t end = r.out.find('\n', start);
    rewards.push_back(json::parse(r.out.substr(start, end - start))["reward"].get<double>());
    start = end + 1;
  }
  REQUIRE(rewards.size() == 2 * pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    CHECK(pairs[i]["judge"] == "reward_model");
    CHECK(pairs[i]["margin"].get<double>() == doctest::Approx(rewards[2 * i] - rewards[2 * i + 1]).epsilon(1e-4));
    CHECK(rewards[2 * i] > rewards[2 * i + 1]);
  }
}

TEST_CASE("data synthesize: bad input exits 2 naming the setting") {
  const Fixture& f = fixture();
  const std::string base = "data synthesize --model " + f.sft + " --data " + f.prompts + " --out " + f.dir + "/bad.jsonl";
  Result r = alignkit(base + " --judge rule");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "stages.synthesize.rewards: the stage names no reward"));
  r = alignkit(base + " --judge rule --reward exact_answr");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "no reward plugin named 'exact_answr'; did you mean 'exact_answer'?"));
  r = alignkit(base + " --judge lm --judge-model " + f.sft + " --reward exact_answer");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "rewards judge only with judge = \"rule\""));
  r = alignkit(base + " --judge lm");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "judge_model"));
  r = alignkit(base + " --judge lm --judge-model " + f.sft + " --judge-template 'A: {a} B: {prompt}'");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "{prompt}, {a} and {b}"));
  r = alignkit(base + " --judge sometimes");
  CHECK(r.exit_code == 2);
  r = alignkit("data synthesize --model " + f.sft + " --data " + f.dir + "/none.jsonl --out " + f.dir +
               "/bad.jsonl --judge rule --reward exact_answer");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "none.jsonl"));
  r = alignkit("data synthesize --model " + f.sft + " --data " + f.prompts + " --out /proc/no/bad.jsonl --judge rule --reward x");
  CHECK(r.exit_code == 2);
  CHECK_FALSE(fs::exists(f.dir + "/bad.jsonl"));
}

TEST_CASE("data stats --tokenizer gives token-length percentiles as training reads the file") {
  const Fixture& f = fixture();
  write_file(f.dir + "/stats.jsonl", jsonl({{{"prompt", "1+2="}, {"chosen", "3"}, {"rejected", "12"}},
                                            {{"prompt", "3+4="}, {"chosen", "7"}, {"rejected", "43"}}}));
  const Result r = alignkit("data stats " + f.dir + "/stats.jsonl --tokenizer " + f.sft + " --json");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const json s = json::parse(r.out);
  REQUIRE(s.contains("tokens"));
  CHECK(s["tokens"]["prompt"]["count"] == 2);
  CHECK(s["tokens"]["prompt"]["p50"].get<double>() >= 2.0);  // BOS + the text
  CHECK(s["tokens"]["rejected"]["max"].get<double>() >= s["tokens"]["chosen"]["max"].get<double>());
}
