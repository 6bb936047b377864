// Helpers for the sft/dpo recipe tests: scratch folders, tiny Llama models
// made through the real plugin host, a learnable synthetic preference task
// written as pre-tokenized JSONL, pipelines run in this process or through
// the CLI, and metrics.jsonl read back.
#pragma once

#include <ATen/ATen.h>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "alignkit/core/pipeline.hpp"
#include "alignkit/core/plugin_host.hpp"
#include "alignkit/core/runner.hpp"
#include "alignkit/model.hpp"

namespace alignkit::test {

namespace fs = std::filesystem;

class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "alignkit-algo-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The plugins of this build tree, loaded once (as the CLI loads them).
inline core::PluginHost& plugin_host() {
  static std::unique_ptr<core::PluginHost> host =
      core::load_plugins({std::string(ALIGNKIT_BINARY_DIR) + "/lib/alignkit/plugins"});
  return *host;
}

// Token ids of the synthetic task: 0 unused, 1 BOS, 2 EOS (also padding), 3.. content.
constexpr int kVocab = 32;
constexpr int kBos = 1;
constexpr int kEos = 2;
constexpr int kFirstContent = 3;

// A randomly initialised Llama (hidden 32, 2 layers, vocab 32) saved as a Hugging Face folder.
inline void make_tiny_model(const std::string& dir, uint64_t seed) {
  nlohmann::json config = {{"model_type", "llama"},
                           {"vocab_size", kVocab},
                           {"hidden_size", 32},
                           {"intermediate_size", 64},
                           {"num_hidden_layers", 2},
                           {"num_attention_heads", 4},
                           {"num_key_value_heads", 2},
                           {"max_position_embeddings", 64},
                           {"rms_norm_eps", 1e-5},
                           {"initializer_range", 0.1},
                           {"bos_token_id", kBos},
                           {"eos_token_id", kEos},
                           {"torch_dtype", "float32"}};
  const ModelProvider* llama = plugin_host().registry().model("llama");
  REQUIRE_MESSAGE(llama != nullptr, "the llama plugin is missing from " ALIGNKIT_BINARY_DIR "/lib/alignkit/plugins");
  llama->create(config.dump(), seed, {})->save(dir);
}

// One example of the synthetic task: a prompt of random content tokens; the
// chosen completion shifts each of them up by one, the rejected one down by
// one (wrapping around the content range). The two rules are mirror images,
// equally hard to learn, so a model trained on both has no preference.
struct Pair {
  std::vector<int> prompt;
  std::vector<int> chosen;
  std::vector<int> rejected;
};

constexpr int kPromptTokens = 3;

inline int shift_token(int token, int by) {
  const int range = kVocab - kFirstContent;
  return kFirstContent + ((token - kFirstContent + by) % range + range) % range;
}

inline std::vector<Pair> make_pairs(size_t count, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<int> token(kFirstContent, kVocab - 1);
  std::vector<Pair> pairs(count);
  for (Pair& pair : pairs) {
    pair.prompt = {kBos};
    for (int i = 0; i < kPromptTokens; ++i) {
      const int t = token(random);
      pair.prompt.push_back(t);
      pair.chosen.push_back(shift_token(t, 1));
      pair.rejected.push_back(shift_token(t, -1));
    }
    pair.chosen.push_back(kEos);
    pair.rejected.push_back(kEos);
  }
  return pairs;
}

inline void write_preference_jsonl(const std::string& path, const std::vector<Pair>& pairs) {
  std::string text;
  for (const Pair& p : pairs)
    text += nlohmann::json{{"prompt_ids", p.prompt}, {"chosen_ids", p.chosen}, {"rejected_ids", p.rejected}}.dump() +
            "\n";
  write_text(path, text);
}

// SFT data of the task with no preference: half the completions copy, half reverse.
inline void write_mixed_completion_jsonl(const std::string& path, const std::vector<Pair>& pairs) {
  std::string text;
  for (size_t i = 0; i < pairs.size(); ++i)
    text += nlohmann::json{{"prompt_ids", pairs[i].prompt},
                           {"completion_ids", i % 2 == 0 ? pairs[i].chosen : pairs[i].rejected}}
                .dump() +
            "\n";
  write_text(path, text);
}

// SFT data of the task: every completion is the chosen one.
inline void write_chosen_completion_jsonl(const std::string& path, const std::vector<Pair>& pairs) {
  std::string text;
  for (const Pair& p : pairs)
    text += nlohmann::json{{"prompt_ids", p.prompt}, {"completion_ids", p.chosen}}.dump() + "\n";
  write_text(path, text);
}

inline void write_prompt_only_jsonl(const std::string& path, const std::vector<Pair>& pairs) {
  std::string text;
  for (const Pair& p : pairs) text += nlohmann::json{{"prompt_ids", p.prompt}}.dump() + "\n";
  write_text(path, text);
}

// Records of random lengths (prompt 1-5 tokens, completions 1-4), so batches need padding.
inline std::vector<Pair> make_ragged_pairs(size_t count, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<int> token(kFirstContent, kVocab - 1);
  std::uniform_int_distribution<int> prompt_length(1, 5);
  std::uniform_int_distribution<int> completion_length(1, 4);
  auto tokens = [&](int length) {
    std::vector<int> ids;
    for (int i = 0; i < length; ++i) ids.push_back(token(random));
    return ids;
  };
  std::vector<Pair> pairs(count);
  for (Pair& pair : pairs) {
    pair.prompt = tokens(prompt_length(random));
    pair.chosen = tokens(completion_length(random));
    pair.rejected = tokens(completion_length(random));
  }
  return pairs;
}

// TOML text: a quoted string, the [run] and [models.base] tables, one stage.
inline std::string quoted(const std::string& text) { return nlohmann::json(text).dump(); }

inline std::string pipeline_head(const std::string& output_dir, const std::string& model_dir) {
  return "[run]\noutput_dir = " + quoted(output_dir) + "\nseed = 3\n\n[models.base]\npath = " + quoted(model_dir) +
         "\n";
}

// A stage on one CPU thread, plus `body` (TOML lines).
inline std::string stage(const std::string& name, const std::string& body) {
  return "\n[stages." + name + "]\nthreads = 1\n" + body;
}

// What a model predicts along one unpadded row, computed independently of the
// recipes: entry t is about the prediction of ids[t + 1] from ids[0..t].
struct RowPredictions {
  std::vector<double> label_logps;  // log p(ids[t + 1] | ids[0..t])
  std::vector<double> mean_logits;  // mean logit over the vocabulary at t
  std::vector<bool> argmax_hits;    // the argmax at t is ids[t + 1]
};

inline RowPredictions predict_row(CausalLM& model, const std::vector<int>& ids) {
  at::NoGradGuard no_grad;
  const int64_t length = static_cast<int64_t>(ids.size());
  at::Tensor input = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).unsqueeze(0);  // (1, T)
  at::Tensor positions = at::arange(length, at::kLong).unsqueeze(0);                                    // (1, T)
  at::Tensor logits = model.forward(input, at::ones_like(input), positions)[0].to(at::kDouble);        // (T, V)
  at::Tensor logps = logits.log_softmax(-1);                                                            // (T, V)
  RowPredictions out;
  for (int64_t t = 0; t + 1 < length; ++t) {
    out.label_logps.push_back(logps[t][ids[t + 1]].item<double>());
    out.mean_logits.push_back(logits[t].mean().item<double>());
    out.argmax_hits.push_back(logits[t].argmax().item<int64_t>() == ids[t + 1]);
  }
  return out;
}

inline std::shared_ptr<CausalLM> load_model(const std::string& dir) {
  return core::load_model(plugin_host().registry(), dir, ModelOptions{});
}

inline std::vector<int> concat(const std::vector<int>& a, const std::vector<int>& b) {
  std::vector<int> out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

// Resolves and runs a pipeline file in this process. Throws what the runner
// throws; fails the test with every diagnostic when the file does not resolve.
inline core::RunOutcome run_pipeline_file(const std::string& file, const std::vector<std::string>& overrides = {},
                                          bool resume = false) {
  core::Pipeline pipeline = core::Pipeline::load(file, overrides);
  std::vector<core::Diagnostic> problems = pipeline.resolve(plugin_host());
  std::string text;
  for (const core::Diagnostic& problem : problems) text += problem.str() + "\n";
  REQUIRE_MESSAGE(problems.empty(), text);
  core::RunOptions options;
  options.resume = resume;
  return core::run_pipeline(pipeline, plugin_host(), options);
}

// Every diagnostic of resolving `file`, one a line.
inline std::string resolve_problems(const std::string& file, const std::vector<std::string>& overrides = {}) {
  core::Pipeline pipeline = core::Pipeline::load(file, overrides);
  std::string text;
  for (const core::Diagnostic& problem : pipeline.resolve(plugin_host())) text += problem.str() + "\n";
  return text;
}

// The message of the ConfigError running `file` throws ("" when none).
inline std::string run_config_error(const std::string& file, const std::vector<std::string>& overrides = {}) {
  try {
    run_pipeline_file(file, overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

// metrics.jsonl lines of one split, by step; a later line for a step wins
// (a resumed run repeats the steps after its checkpoint).
using MetricRows = std::map<int64_t, nlohmann::json>;

inline MetricRows read_metrics(const std::string& stage_dir, const std::string& split) {
  MetricRows rows;
  std::ifstream in(stage_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json row = nlohmann::json::parse(line);
    if (row.at("split") == split) rows[row.at("step").get<int64_t>()] = row;
  }
  return rows;
}

inline double last_metric(const MetricRows& rows, const std::string& name) {
  REQUIRE_FALSE(rows.empty());
  return rows.rbegin()->second.at(name).get<double>();
}

// The CLI as a child process: stdout and stderr go to `log_path`.
class CliProcess {
 public:
  CliProcess(const std::vector<std::string>& args, const std::string& log_path) {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      FILE* log = std::freopen(log_path.c_str(), "a", stdout);
      if (log) ::dup2(::fileno(stdout), STDERR_FILENO);
      std::vector<char*> argv;
      std::string program = ALIGNKIT_CLI;
      argv.push_back(program.data());
      std::vector<std::string> copies = args;
      for (std::string& arg : copies) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execv(program.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~CliProcess() {
    if (pid_ > 0 && !waited_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  CliProcess(const CliProcess&) = delete;
  CliProcess& operator=(const CliProcess&) = delete;

  void signal(int number) { ::kill(pid_, number); }
  bool running() const { return !waited_; }

  // The exit code (128 + signal when killed).
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    waited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // Polls without blocking; true once the child has ended.
  bool poll(int& exit_code) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
    waited_ = true;
    exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }

 private:
  pid_t pid_ = -1;
  bool waited_ = false;
};

inline int run_cli(const std::vector<std::string>& args, const std::string& log_path) {
  CliProcess process(args, log_path);
  return process.wait();
}

}  // namespace alignkit::test
