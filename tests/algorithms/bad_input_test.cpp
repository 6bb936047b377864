// Bad input to the sft and dpo recipes: the host rejects bad values of the
// declared settings, and setup rejects what only the data and models reveal,
// with ConfigError (exit code 2) before any training step.
#include "algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// No step ran: no metric line, no checkpoint, no final model.
bool nothing_trained(const std::string& stage_dir) {
  if (fs::exists(stage_dir + "/metrics.jsonl") && !read_text(stage_dir + "/metrics.jsonl").empty()) return false;
  if (fs::exists(stage_dir))
    for (const fs::directory_entry& entry : fs::directory_iterator(stage_dir))
      if (entry.path().filename().string().rfind("checkpoint-", 0) == 0) return false;
  return !fs::exists(stage_dir + "/final");
}

// A folder with a tiny model and a little data of each kind.
struct BadInputFixture {
  ScratchDir dir;
  BadInputFixture() {
    make_tiny_model(dir / "base", 3);
    const std::vector<Pair> pairs = make_pairs(8, 1);
    write_preference_jsonl(dir / "pairs.jsonl", pairs);
    write_prompt_only_jsonl(dir / "prompts.jsonl", pairs);
    write_chosen_completion_jsonl(dir / "completions.jsonl", pairs);
  }
  // Writes a one-stage pipeline with `body` and returns its path.
  std::string pipeline(const std::string& algorithm, const std::string& body) const {
    write_text(dir / "pipeline.toml",
               pipeline_head(dir / "run", dir / "base") +
                   stage(algorithm, "algorithm = \"" + algorithm + "\"\nmodel = \"base\"\nmax_steps = 2\n" + body));
    return dir / "pipeline.toml";
  }
  std::string data(const std::string& file) const { return "data = { path = " + quoted(dir / file) + " }\n"; }
};

}  // namespace

TEST_CASE("a dpo stage given prompt-only data stops with exit code 2, naming both data types and the file") {
  BadInputFixture f;
  const std::string file = f.pipeline("dpo", f.data("prompts.jsonl"));
  CHECK(run_cli({"run", file}, f.dir / "run.log") == 2);
  const std::string log = read_text(f.dir / "run.log");
  CHECK_MESSAGE(contains(log, "stages.dpo.data.path: DPO needs preference data (prompt, chosen, rejected), but " +
                                  (f.dir / "prompts.jsonl") + " holds prompt-only records"),
                log);
  CHECK_MESSAGE(contains(log, "pipeline.toml:"), log);  // located in the pipeline file
  CHECK(nothing_trained(f.dir / "run/dpo"));
}

TEST_CASE("the host checks dpo's declared settings: beta >= 0, known loss types, batch size >= 1") {
  BadInputFixture f;
  SUBCASE("negative beta, through the CLI") {
    CHECK(run_cli({"run", f.pipeline("dpo", f.data("pairs.jsonl") + "beta = -0.5\n")}, f.dir / "run.log") == 2);
    const std::string log = read_text(f.dir / "run.log");
    CHECK_MESSAGE(contains(log, "stages.dpo.beta"), log);
    CHECK_MESSAGE(contains(log, "must be at least 0, found -0.5"), log);
    CHECK_FALSE(fs::exists(f.dir / "run/dpo"));
  }
  SUBCASE("unknown loss_type lists the valid ones") {
    const std::string problems =
        resolve_problems(f.pipeline("dpo", f.data("pairs.jsonl") + "loss_type = [\"sigmoid\", \"sigmod\"]\n"));
    CHECK_MESSAGE(contains(problems, "stages.dpo.loss_type"), problems);
    CHECK_MESSAGE(contains(problems, "'sigmod'"), problems);
    CHECK_MESSAGE(
        contains(problems, "sigmoid, hinge, ipo, robust, bco_pair, sppo_hard, nca_pair, apo_zero, apo_down, sft"),
        problems);
  }
  SUBCASE("per_device_train_batch_size = 0") {
    const std::string problems =
        resolve_problems(f.pipeline("dpo", f.data("pairs.jsonl") + "per_device_train_batch_size = 0\n"));
    CHECK_MESSAGE(contains(problems, "stages.dpo.per_device_train_batch_size"), problems);
  }
}

TEST_CASE("dpo setup refuses settings only it can judge, naming the setting") {
  BadInputFixture f;
  const std::string pairs = f.data("pairs.jsonl");
  const std::string zero_beta = run_config_error(f.pipeline("dpo", pairs + "beta = 0.0\n"));
  CHECK_MESSAGE(contains(zero_beta, "stages.dpo.beta: must be greater than 0"), zero_beta);
  const std::string weights =
      run_config_error(f.pipeline("dpo", pairs + "loss_type = [\"sigmoid\", \"sft\"]\nloss_weights = [1.0]\n"));
  CHECK_MESSAGE(contains(weights, "stages.dpo.loss_weights: loss_weights has 1 values but loss_type has 2"), weights);
  const std::string free =
      run_config_error(f.pipeline("dpo", pairs + "reference_free = true\nloss_type = \"apo_zero\"\n"));
  CHECK_MESSAGE(contains(free, "stages.dpo.reference_free: loss 'apo_zero' needs a reference model"), free);
  const std::string both = run_config_error(f.pipeline("dpo", pairs + "reference_free = true\nreference = \"base\"\n"));
  CHECK_MESSAGE(contains(both, "stages.dpo.reference: a reference model was named, but reference_free = true"), both);
  const std::string smoothing =
      run_config_error(f.pipeline("dpo", pairs + "loss_type = \"robust\"\nlabel_smoothing = 0.5\n"));
  CHECK_MESSAGE(contains(smoothing, "stages.dpo.label_smoothing"), smoothing);
}

TEST_CASE("sft and dpo setup refuse data the model cannot take, naming the file and line") {
  BadInputFixture f;
  SUBCASE("sft given preference data") {
    const std::string message = run_config_error(f.pipeline("sft", f.data("pairs.jsonl")));
    CHECK_MESSAGE(contains(message, "SFT needs language-modeling or prompt-completion data (text, or prompt and "
                                    "completion), but " + (f.dir / "pairs.jsonl") + " holds preference records"),
                  message);
  }
  SUBCASE("a token id outside the model's vocabulary") {
    write_text(f.dir / "big.jsonl", "{\"prompt_ids\": [1, 5], \"chosen_ids\": [6, 2], \"rejected_ids\": [7, 2]}\n"
                                    "{\"prompt_ids\": [1, 5], \"chosen_ids\": [6, 2], \"rejected_ids\": [70, 2]}\n");
    const std::string message = run_config_error(f.pipeline("dpo", f.data("big.jsonl")));
    CHECK_MESSAGE(contains(message, (f.dir / "big.jsonl") + ":2: token id 70 in the rejected is outside the model's "
                                                             "vocabulary [0, 32)"),
                  message);
  }
  SUBCASE("text records and a model folder without a tokenizer") {
    write_text(f.dir / "text.jsonl", "{\"prompt\": \"hi\", \"completion\": \"there\"}\n");
    const std::string message = run_config_error(f.pipeline("sft", f.data("text.jsonl")));
    CHECK_MESSAGE(contains(message, "stages.sft.data.path"), message);
    CHECK_MESSAGE(contains(message, "a tokenizer is needed"), message);
  }
  SUBCASE("truncation that leaves a row too short to score") {
    const std::string message = run_config_error(f.pipeline("sft", f.data("completions.jsonl") + "max_length = 1\n"));
    CHECK_MESSAGE(contains(message, (f.dir / "completions.jsonl") + ":1: prompt + completion has 1 token(s) after "
                                                                     "truncation to max_length 1"),
                  message);
  }
  SUBCASE("a hold-out that leaves nothing to train on") {
    const std::string message = run_config_error(
        f.pipeline("dpo", "data = { path = " + quoted(f.dir / "pairs.jsonl") + ", eval_fraction = 0.95 }\n"));
    CHECK_MESSAGE(contains(message, "stages.dpo.data.eval_fraction"), message);
    CHECK_MESSAGE(contains(message, "leaves none for training"), message);
  }
  SUBCASE("no data table") {
    const std::string message = run_config_error(f.pipeline("dpo", ""));
    CHECK_MESSAGE(contains(message, "stages.dpo.data: missing; DPO needs a `data` table"), message);
  }
  CHECK(nothing_trained(f.dir / "run/dpo"));
  CHECK(nothing_trained(f.dir / "run/sft"));
}
