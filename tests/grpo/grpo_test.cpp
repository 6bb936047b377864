// The grpo and rloo recipes end to end on the quick-start arithmetic task
// (configs/quickstart: "a+b=" prompts, the reference answer in `answer`):
// a SentencePiece tokenizer and a tiny Llama made through the CLI, an SFT
// model trained on the noisy demonstrations, then online RL with the
// `exact_answer` reward. Also the bad input: num_generations = 1, unknown
// rewards and reward keys, no reward, and a reward that throws.
#include <cmath>

#include "algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

const std::string kQuickstart = std::string(ALIGNKIT_SOURCE_DIR) + "/configs/quickstart/";

// Built once per process: tokenizer, base model and the SFT model every test starts from.
class ArithmeticWorkspace {
 public:
  static ArithmeticWorkspace& get() {
    static ArithmeticWorkspace workspace;
    return workspace;
  }
  std::string operator/(const std::string& name) const { return dir_ / name; }
  std::string sft_model() const { return dir_ / "run/sft/final"; }

  // [run] and [models] for a pipeline of stages starting from the SFT model.
  std::string head(const std::string& output_dir) const {
    return "[run]\noutput_dir = " + quoted(output_dir) + "\nseed = 5\n\n[models.sft]\npath = " + quoted(sft_model()) +
           "\n";
  }

 private:
  ArithmeticWorkspace() {
    const std::string log = dir_ / "cli.log";
    REQUIRE(run_cli({"tokenizer", "train", "--input", kQuickstart + "corpus.txt", "--vocab-size", "276", "--out",
                     dir_ / "tokenizer.model"},
                    log) == 0);
    REQUIRE(run_cli({"model", "init", "--tokenizer", dir_ / "tokenizer.model", "--hidden-size", "64", "--layers", "2",
                     "--heads", "4", "--max-position-embeddings", "64", "--seed", "7", "--out", dir_ / "base"},
                    log) == 0);
    // The quick start's SFT stage, shortened: the model learns the format and
    // answers each question right about as often as wrong.
    write_text(dir_ / "sft.toml",
               "[run]\noutput_dir = " + quoted(dir_ / "run") + "\nseed = 42\n\n[models.base]\npath = " +
                   quoted(dir_ / "base") +
                   "\n\n[stages.sft]\nalgorithm = \"sft\"\nmodel = \"base\"\nthreads = 1\ndata = { path = " +
                   quoted(kQuickstart + "sft.jsonl") +
                   " }\nlearning_rate = 3e-3\nlr_scheduler_type = \"cosine\"\nwarmup_ratio = 0.05\n"
                   "max_steps = 300\nper_device_train_batch_size = 20\nlogging_steps = 50\n");
    REQUIRE(run_pipeline_file(dir_ / "sft.toml") == core::RunOutcome::Completed);
  }

  ScratchDir dir_;
};

std::string rl_data() {
  return "data = { path = " + quoted(kQuickstart + "rl_train.jsonl") + ", eval_path = " +
         quoted(kQuickstart + "rl_heldout.jsonl") + " }\n";
}

const char* const kExactAnswer = "[[stages.{}.rewards]]\nname = \"exact_answer\"\n";

std::string exact_answer(const std::string& stage_name) {
  std::string text = kExactAnswer;
  text.replace(text.find("{}"), 2, stage_name);
  return text;
}

double eval_reward(const std::string& stage_dir) { return last_metric(read_metrics(stage_dir, "eval"), "reward"); }

}  // namespace

TEST_CASE("grpo with exact_answer raises the held-out mean reward of the SFT model (seed 5, 40 steps)") {
  ArithmeticWorkspace& ws = ArithmeticWorkspace::get();
  ScratchDir dir;
  const std::string common = "model = \"sft\"\n" + rl_data() +
                             "num_generations = 8\nmax_completion_length = 4\nper_device_train_batch_size = 16\n"
                             "per_device_eval_batch_size = 20\nlr_scheduler_type = \"constant\"\n";
  write_text(dir / "pipeline.toml",
             ws.head(dir / "run") +
                 // The SFT model's own held-out reward: learning rate 0 leaves it alone.
                 stage("before", "algorithm = \"grpo\"\n" + common + "learning_rate = 0.0\nmax_steps = 1\n") +
                 exact_answer("before") +
                 stage("grpo", "algorithm = \"grpo\"\n" + common + "learning_rate = 2e-3\nmax_steps = 40\n"
                                                                   "logging_steps = 5\n") +
                 exact_answer("grpo"));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);

  const double before = eval_reward(dir / "run/before");
  const double after = eval_reward(dir / "run/grpo");
  const MetricRows train = read_metrics(dir / "run/grpo", "train");
  MESSAGE("held-out mean reward (greedy): SFT model " << before << ", after GRPO " << after
                                                      << "; training reward first " << train.begin()->second.at("reward")
                                                      << ", last " << train.rbegin()->second.at("reward"));
  CHECK(after >= before + 0.25);
  // TRL's metrics are logged.
  const nlohmann::json& first = train.begin()->second;
  for (const char* name : {"reward", "reward_std", "rewards/exact_answer/mean", "rewards/exact_answer/std",
                           "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio", "entropy",
                           "clip_ratio/region_mean", "loss", "grad_norm"})
    CHECK_MESSAGE(first.contains(name), name);
  CHECK_FALSE(first.contains("kl"));  // beta = 0: no reference, no KL
  CHECK(fs::exists(dir / "run/grpo/final/model.safetensors"));
  CHECK(fs::exists(dir / "run/grpo/final/tokenizer.model"));
}

TEST_CASE("rloo with exact_answer and the KL penalty raises the training reward; kl is logged") {
  ArithmeticWorkspace& ws = ArithmeticWorkspace::get();
  ScratchDir dir;
  write_text(dir / "pipeline.toml",
             ws.head(dir / "run") +
                 stage("rloo", "algorithm = \"rloo\"\nmodel = \"sft\"\n" + rl_data() +
                                   "num_generations = 4\nmax_completion_length = 4\nper_device_train_batch_size = 16\n"
                                   "per_device_eval_batch_size = 20\nlearning_rate = 2e-3\n"
                                   "lr_scheduler_type = \"constant\"\nmax_steps = 30\nlogging_steps = 10\n") +
                 exact_answer("rloo"));
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);
  const MetricRows train = read_metrics(dir / "run/rloo", "train");
  const double first = train.begin()->second.at("rewards/exact_answer/mean").get<double>();
  const double last = train.rbegin()->second.at("rewards/exact_answer/mean").get<double>();
  MESSAGE("rloo training rewards/exact_answer/mean: first " << first << ", last (mean of steps 21-30) " << last
                                                            << "; held-out reward " << eval_reward(dir / "run/rloo"));
  CHECK(last >= first + 0.2);
  CHECK(train.rbegin()->second.contains("kl"));
}

TEST_CASE("bad input: num_generations = 1, an unknown reward or reward key, no reward (exit code 2)") {
  ArithmeticWorkspace& ws = ArithmeticWorkspace::get();
  ScratchDir dir;
  auto pipeline = [&](const std::string& algorithm, const std::string& extra, const std::string& rewards) {
    const std::string path = dir / (algorithm + std::to_string(std::hash<std::string>{}(extra + rewards)) + ".toml");
    write_text(path, ws.head(dir / "run") +
                         stage("rl", "algorithm = \"" + algorithm + "\"\nmodel = \"sft\"\n" + rl_data() +
                                         "max_completion_length = 4\nmax_steps = 1\n" + extra) +
                         rewards);
    return path;
  };
  const std::string reward = exact_answer("rl");

  const std::string one = run_config_error(pipeline("grpo", "num_generations = 1\n", reward));
  CHECK(one.find("stages.rl.num_generations") != std::string::npos);
  CHECK(one.find("at least 2") != std::string::npos);
  CHECK(one.find("group") != std::string::npos);
  CHECK(run_config_error(pipeline("rloo", "num_generations = 1\n", reward)).find("at least 2") != std::string::npos);

  const std::string unknown =
      run_config_error(pipeline("grpo", "", "[[stages.rl.rewards]]\nname = \"exact_answers\"\n"));
  CHECK(unknown.find(".toml:") != std::string::npos);  // file:line
  CHECK(unknown.find("no reward plugin named 'exact_answers'") != std::string::npos);
  CHECK(unknown.find("did you mean 'exact_answer'") != std::string::npos);

  const std::string key =
      run_config_error(pipeline("grpo", "", "[[stages.rl.rewards]]\nname = \"exact_answer\"\nextract = \"first_number\"\n"
                                            "patern = \"x\"\n"));
  CHECK(key.find("stages.rl.rewards[0].patern: unknown key") != std::string::npos);
  CHECK(key.find("did you mean 'pattern'") != std::string::npos);
  CHECK(key.find(".toml:") != std::string::npos);

  const std::string bad_regex = run_config_error(pipeline(
      "grpo", "", "[[stages.rl.rewards]]\nname = \"regex_match\"\npattern = \"(\"\n"));
  CHECK(bad_regex.find("stages.rl.rewards[0].pattern") != std::string::npos);

  const std::string none = run_config_error(pipeline("grpo", "", ""));
  CHECK(none.find("names no reward") != std::string::npos);
  CHECK(none.find("exact_answer") != std::string::npos);  // lists what is installed

  // Through the CLI: configuration errors exit with 2.
  CHECK(run_cli({"run", pipeline("grpo", "num_generations = 1\n", reward)}, dir / "cli.log") == 2);
  CHECK(read_text(dir / "cli.log").find("at least 2") != std::string::npos);
}

TEST_CASE("a reward that throws on some completions is counted and scored default_score; training goes on") {
  ArithmeticWorkspace& ws = ArithmeticWorkspace::get();
  ScratchDir dir;
  // Every other prompt has no reference answer: exact_answer throws on its completions.
  std::string records;
  for (int a = 0; a < 8; ++a)
    records += a % 2 == 0 ? "{\"prompt\": \"" + std::to_string(a) + "+1=\", \"answer\": \"" + std::to_string(a + 1) + "\"}\n"
                          : "{\"prompt\": \"" + std::to_string(a) + "+1=\"}\n";
  write_text(dir / "mixed.jsonl", records);
  write_text(dir / "pipeline.toml",
             ws.head(dir / "run") +
                 stage("grpo", "algorithm = \"grpo\"\nmodel = \"sft\"\ndata = { path = " + quoted(dir / "mixed.jsonl") +
                                   " }\nnum_generations = 2\nmax_completion_length = 3\n"
                                   "per_device_train_batch_size = 8\nmax_steps = 2\nshuffle = false\n") +
                 "[[stages.grpo.rewards]]\nname = \"exact_answer\"\ndefault_score = -1.0\n"
                 "[[stages.grpo.rewards]]\nname = \"length_penalty\"\nweight = 0.5\ntarget_length = 1\n");
  CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed);
  const MetricRows train = read_metrics(dir / "run/grpo", "train");
  const nlohmann::json& first = train.at(1);
  // 4 prompts without an answer x 2 completions each, of 16.
  CHECK(first.at("rewards/exact_answer/failures").get<double>() == 8.0);
  CHECK(first.at("rewards/length_penalty/failures").get<double>() == 0.0);
  // Half the rows score -1, the others 0 or 1: the mean lies in [-0.5, 0].
  CHECK(first.at("rewards/exact_answer/mean").get<double>() >= -0.5 - 1e-6);
  CHECK(first.at("rewards/exact_answer/mean").get<double>() <= 1e-6);
  CHECK(fs::exists(dir / "run/grpo/final/model.safetensors"));
}
