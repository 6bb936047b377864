// LoRA through the pipeline: a DPO stage with `[stages.X.lora]` learns the
// synthetic preference task with one model in memory (the reference is the
// model with its adapters disabled), writes the adapter in PEFT's layout and
// the merged model, and `alignkit model merge` rebuilds that merged model.
// Bad `lora` tables stop with file:line errors and exit code 2.
#include <iostream>
#include <sstream>

#include "../algorithms/algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

// stderr of the code run in `body`, where the stage context logs.
template <typename Body>
std::string capture_stderr(Body&& body) {
  std::ostringstream captured;
  std::streambuf* old = std::cerr.rdbuf(captured.rdbuf());
  try {
    body();
  } catch (...) {
    std::cerr.rdbuf(old);
    throw;
  }
  std::cerr.rdbuf(old);
  return captured.str();
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
  return count;
}

at::Tensor eval_logits(CausalLM& model) {
  at::NoGradGuard no_grad;
  at::Tensor ids = at::tensor({1, 5, 9, 12, 7, 3, 1, 4, 8, 11, 2, 2}, at::kLong).view({2, 6});  // (2, 6)
  return model.forward(ids, at::ones_like(ids), at::arange(6, at::kLong).repeat({2, 1}));     // (2, 6, V)
}

}  // namespace

TEST_CASE("dpo with LoRA learns held-out preferences (>= 0.9) with no reference model loaded") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 12);
  write_preference_jsonl(dir / "train.jsonl", make_pairs(256, 2));
  write_preference_jsonl(dir / "eval.jsonl", make_pairs(64, 3));
  write_text(dir / "pipeline.toml",
             pipeline_head(dir / "run", dir / "base") +
                 stage("dpo", "algorithm = \"dpo\"\nmodel = \"base\"\ndata = { path = " + quoted(dir / "train.jsonl") +
                                  ", eval_path = " + quoted(dir / "eval.jsonl") +
                                  " }\nlearning_rate = 0.01\nlr_scheduler_type = \"constant\"\nmax_steps = 40\n"
                                  "per_device_train_batch_size = 16\nper_device_eval_batch_size = 64\n"
                                  "logprob_chunk_size = 8\ngradient_checkpointing = true\n"
                                  "lora = { r = 8, lora_alpha = 16, target_modules = \"all-linear\", "
                                  "merge_on_save = true }\n"));
  const std::string log = capture_stderr([&] { CHECK(run_pipeline_file(dir / "pipeline.toml") == core::RunOutcome::Completed); });
  // One model in memory: the policy. The reference borrows it.
  CHECK(count_of(log, "loading model") == 1);
  CHECK(count_of(log, "with LoRA adapters (r 8)") == 1);
  CHECK(count_of(log, "reference: the model with its LoRA adapters disabled (no second model loaded)") == 1);

  const MetricRows eval = read_metrics(dir / "run/dpo", "eval");
  MESSAGE("held-out rewards/accuracies after LoRA DPO: " << last_metric(eval, "rewards/accuracies"));
  CHECK(last_metric(eval, "rewards/accuracies") >= 0.9);
  CHECK(last_metric(eval, "rewards/margins") > 0);
  // The first step starts at the reference: fresh adapters change nothing.
  CHECK(read_metrics(dir / "run/dpo", "train").at(1).at("loss").get<double>() == doctest::Approx(std::log(2.0)));

  // final/: the PEFT adapter and (merge_on_save) the merged model, with the base's files.
  const std::string final_dir = dir / "run/dpo/final";
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors", "config.json", "model.safetensors"})
    CHECK_MESSAGE(fs::exists(final_dir + "/" + file), file);
  const nlohmann::json adapter = nlohmann::json::parse(read_text(final_dir + "/adapter_config.json"));
  CHECK(adapter.at("base_model_name_or_path") == fs::absolute(dir / "base").lexically_normal().string());
  CHECK(adapter.at("target_modules").size() == 7);

  // The adapter alone (what final/ holds without merge_on_save) loads as base + adapter.
  fs::create_directories(dir / "adapter_only");
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors"})
    fs::copy_file(final_dir + "/" + file, dir / ("adapter_only/" + std::string(file)));
  const at::Tensor merged_logits = eval_logits(*load_model(final_dir));
  CHECK(at::allclose(eval_logits(*load_model(dir / "adapter_only")), merged_logits, 0.0, 1e-5));
  CHECK_FALSE(at::allclose(eval_logits(*load_model(dir / "base")), merged_logits, 0.0, 1e-3));

  // `alignkit model merge` writes the same full checkpoint.
  CHECK(run_cli({"model", "merge", "--base", dir / "base", "--adapter", dir / "adapter_only", "--out", dir / "merged"},
                dir / "merge.log") == 0);
  CHECK(at::allclose(eval_logits(*load_model(dir / "merged")), merged_logits, 0.0, 1e-5));

  // An adapter for a base of another shape: exit code 2, naming the tensor.
  nlohmann::json wider = nlohmann::json::parse(read_text(dir / "base/config.json"));
  wider["hidden_size"] = 48;
  plugin_host().registry().model("llama")->create(wider.dump(), 1, {})->save(dir / "wider");
  CHECK(run_cli({"model", "merge", "--base", dir / "wider", "--adapter", dir / "adapter_only", "--out", dir / "bad"},
                dir / "bad.log") == 2);
  CHECK(read_text(dir / "bad.log").find("lora_A.weight': shape [8, 32] but") != std::string::npos);
}

TEST_CASE("a bad [stages.X.lora] table is a file:line error naming the valid values, exit code 2") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 3);
  write_preference_jsonl(dir / "pairs.jsonl", make_pairs(8, 1));
  auto pipeline = [&](const std::string& name, const std::string& lora) {
    const std::string file = dir / (name + ".toml");
    write_text(file, pipeline_head(dir / "run", dir / "base") +
                         stage("dpo", "algorithm = \"dpo\"\nmodel = \"base\"\ndata = { path = " +
                                          quoted(dir / "pairs.jsonl") + " }\nmax_steps = 1\n" + lora));
    return file;
  };
  const std::string unknown_module = pipeline("module", "[stages.dpo.lora]\ntarget_modules = [\"q_proj\", \"qkv\"]\n");
  CHECK(resolve_problems(unknown_module).find(unknown_module + ":15:") != std::string::npos);
  CHECK(resolve_problems(unknown_module).find("stages.dpo.lora.target_modules: 'qkv' is not one of: q_proj, k_proj, "
                                              "v_proj, o_proj, gate_proj, up_proj, down_proj, all-linear") !=
        std::string::npos);
  const std::string zero_rank = pipeline("rank", "[stages.dpo.lora]\nr = 0\n");
  CHECK(resolve_problems(zero_rank).find("stages.dpo.lora.r: must be at least 1, found 0") != std::string::npos);
  const std::string unknown_key = pipeline("key", "[stages.dpo.lora]\nrank = 4\n");
  CHECK(resolve_problems(unknown_key).find("stages.dpo.lora.rank: unknown key 'rank'") != std::string::npos);
  for (const std::string& file : {unknown_module, zero_rank, unknown_key})
    CHECK(run_cli({"run", file}, dir / "run.log") == 2);
}
