// An interrupted DPO run (SIGTERM to the CLI once a checkpoint is committed)
// resumes to exactly the losses and weights of an uninterrupted run, reusing
// its precomputed reference log-probs. On the CPU, where results are
// reproducible bit for bit.
#include "algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

TEST_CASE("an interrupted and resumed dpo run matches an uninterrupted one bit for bit") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 9);
  write_preference_jsonl(dir / "train.jsonl", make_ragged_pairs(64, 7));
  write_preference_jsonl(dir / "eval.jsonl", make_ragged_pairs(16, 8));
  auto write_pipeline = [&](const std::string& name) {
    write_text(dir / (name + ".toml"),
               pipeline_head(dir / name, dir / "base") +
                   stage("dpo", "algorithm = \"dpo\"\nmodel = \"base\"\ndata = { path = " +
                                    quoted(dir / "train.jsonl") +
                                    ", eval_path = " + quoted(dir / "eval.jsonl") +
                                    " }\nprecompute_ref_log_probs = true\nlearning_rate = 0.003\nmax_steps = 80\n"
                                    "save_steps = 5\neval_steps = 20\nlogging_steps = 1\ndevice = \"cpu\"\n"
                                    "per_device_train_batch_size = 8\nper_device_eval_batch_size = 16\n"));
  };
  write_pipeline("whole");
  write_pipeline("interrupted");

  REQUIRE(run_cli({"run", dir / "whole.toml"}, dir / "whole.log") == 0);

  {
    CliProcess process({"run", dir / "interrupted.toml"}, dir / "interrupted.log");
    const std::string first_checkpoint = dir / "interrupted/dpo/checkpoint-000005/COMMITTED";
    int exit_code = -1;
    bool ended = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!(ended = process.poll(exit_code)) && !fs::exists(first_checkpoint) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE_MESSAGE(!ended, read_text(dir / "interrupted.log"));
    process.signal(SIGTERM);
    CHECK_MESSAGE(process.wait() == 75, read_text(dir / "interrupted.log"));  // preempted after saving
  }
  CHECK_FALSE(fs::exists(dir / "interrupted/dpo/final"));
  const MetricRows partial = read_metrics(dir / "interrupted/dpo", "train");
  REQUIRE_FALSE(partial.empty());
  CHECK(partial.rbegin()->first < 80);

  REQUIRE(run_cli({"run", dir / "interrupted.toml", "--resume"}, dir / "resumed.log") == 0);
  const std::string resumed_log = read_text(dir / "resumed.log");
  CHECK_MESSAGE(resumed_log.find("resuming from") != std::string::npos, resumed_log);
  CHECK_MESSAGE(resumed_log.find("reference log-probs: reusing") != std::string::npos, resumed_log);

  for (const char* split : {"train", "eval"}) {
    CAPTURE(split);
    const MetricRows whole = read_metrics(dir / "whole/dpo", split);
    const MetricRows resumed = read_metrics(dir / "interrupted/dpo", split);
    REQUIRE(whole.size() == resumed.size());
    for (const auto& [step, row] : whole) {
      CAPTURE(step);
      for (const char* metric : {"loss", "rewards/margins", "logps/chosen", "logits/rejected"})
        CHECK(resumed.at(step).at(metric).get<double>() == row.at(metric).get<double>());
      if (std::string(split) == "train") {
        CHECK(resumed.at(step).at("grad_norm").get<double>() == row.at("grad_norm").get<double>());
        CHECK(resumed.at(step).at("num_tokens").get<double>() == row.at("num_tokens").get<double>());
      }
    }
  }
  CHECK(read_text(dir / "interrupted/dpo/final/model.safetensors") ==
        read_text(dir / "whole/dpo/final/model.safetensors"));
}
