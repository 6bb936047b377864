// Rollout throughput of online RL: generated tokens per second of
// online::generate_rollout (prompts x num_generations sampled completions,
// KV cache, left padding), and tokens per second of scoring those completions
// with online::completion_logprobs (the policy's per-token log-probs and
// entropy, no grad), the two halves of a GRPO/RLOO collect step.
//
//   bench_rollout [--model DIR] [--prompts 8] [--generations 8] [--prompt 32]
//                 [--new 64] [--repeats 5] [--threads N]
//
// Without --model it times a random decoder (hidden 256, 4 layers, 8 heads
// over 4 kv heads, vocab 8000). Sampling at temperature 1 with no stop token,
// so every run makes exactly prompts x generations x new tokens. Each part
// runs once to warm up, then `repeats` times; medians give the rates. Prints
// a readable line and a JSON line.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "alignkit/core/plugin_host.hpp"
#include "alignkit/dataset.hpp"
#include "alignkit/model.hpp"
#include "bench_support.hpp"
#include "rollout.hpp"

namespace {

using alignkit::bench::blas_provider;
using alignkit::bench::median;

struct Settings {
  std::string model_dir;
  int64_t prompts = 8;
  int64_t generations = 8;
  int64_t prompt = 32;
  int64_t new_tokens = 64;
  int repeats = 5;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
};

const char* const kUsage =
    "usage: bench_rollout [--model DIR] [--prompts N] [--generations N] [--prompt N] [--new N] [--repeats N] "
    "[--threads N]";

Settings parse(int argc, char** argv) {
  Settings settings;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage << "\n";
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::runtime_error(flag + " needs a value\n" + kUsage);
    const std::string value = argv[++i];
    auto number = [&] { return alignkit::bench::positive_integer(flag, value); };
    if (flag == "--model") settings.model_dir = value;
    else if (flag == "--prompts") settings.prompts = number();
    else if (flag == "--generations") settings.generations = number();
    else if (flag == "--prompt") settings.prompt = number();
    else if (flag == "--new") settings.new_tokens = number();
    else if (flag == "--repeats") settings.repeats = static_cast<int>(number());
    else if (flag == "--threads") settings.threads = static_cast<int>(number());
    else throw std::runtime_error("unknown option " + flag + "\n" + kUsage);
  }
  return settings;
}

template <typename Body>
double median_seconds(int repeats, Body&& body) {
  body();  // warm-up
  std::vector<double> seconds;
  for (int i = 0; i < repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    body();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return median(seconds);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Settings settings = parse(argc, argv);
    at::set_num_threads(settings.threads);
    const std::string blas = blas_provider();
    if (blas.find("openblas") == std::string::npos)
      std::cerr << "warning: libblas.so.3 is " << blas << ", not OpenBLAS: numbers will be far too slow\n";

    auto host = alignkit::core::load_plugins();
    const alignkit::ModelProvider* provider = host->registry().model("llama");
    if (!provider) throw std::runtime_error("the llama plugin was not found on the plugin search path");
    std::shared_ptr<alignkit::CausalLM> model;
    if (settings.model_dir.empty()) {
      const nlohmann::json config = {{"model_type", "llama"},       {"vocab_size", 8000},
                                     {"hidden_size", 256},          {"intermediate_size", 688},
                                     {"num_hidden_layers", 4},      {"num_attention_heads", 8},
                                     {"num_key_value_heads", 4},    {"max_position_embeddings", 2048},
                                     {"torch_dtype", "float32"}};
      model = provider->create(config.dump(), 0, {});
    } else {
      model = provider->load(settings.model_dir, {});
    }
    model->set_training(false);

    std::mt19937_64 random(0);
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(model->info().vocab_size - 1));
    std::vector<alignkit::Example> examples(static_cast<size_t>(settings.prompts));
    std::vector<const alignkit::Example*> prompts;
    for (auto& example : examples) {
      for (int64_t t = 0; t < settings.prompt; ++t) example.prompt.push_back(token(random));
      prompts.push_back(&example);
    }

    alignkit::online::RolloutSettings rollout;
    rollout.num_generations = settings.generations;
    rollout.generation.max_new_tokens = settings.new_tokens;
    rollout.generation.do_sample = true;
    rollout.generation.temperature = 1.0;
    rollout.generation.stop_token_ids = {-1};  // never produced: every run makes the same number of tokens
    at::NoGradGuard no_grad;
    alignkit::online::RolloutBatch batch;
    int64_t generated = 0;
    const double generate_seconds = median_seconds(settings.repeats, [&] {
      ++rollout.generation.seed;
      batch = alignkit::online::generate_rollout(*model, nullptr, prompts, rollout);
      generated = batch.completion_mask.sum().item<int64_t>();
    });
    const double score_seconds = median_seconds(settings.repeats, [&] {
      alignkit::online::completion_logprobs(*model, batch, 1.0, true);
    });

    const double generate_rate = static_cast<double>(generated) / generate_seconds;
    const double score_rate = static_cast<double>(generated) / score_seconds;
    std::cout << "rollout: " << settings.prompts << " prompts x " << settings.generations << " generations, prompt "
              << settings.prompt << ", new " << settings.new_tokens << ", threads " << settings.threads << ": generate "
              << generate_rate << " tokens/s, score (log-probs + entropy) " << score_rate << " tokens/s (median of "
              << settings.repeats << ")\n";
    nlohmann::json report = {{"benchmark", "rollout"},
                             {"model", settings.model_dir.empty() ? "random-llama-h256-l4-v8000" : settings.model_dir},
                             {"parameters", model->info().num_parameters},
                             {"prompts", settings.prompts},
                             {"generations", settings.generations},
                             {"prompt_tokens", settings.prompt},
                             {"new_tokens", settings.new_tokens},
                             {"generated_tokens", generated},
                             {"repeats", settings.repeats},
                             {"threads", settings.threads},
                             {"blas", blas},
                             {"generate_tokens_per_s", generate_rate},
                             {"generate_seconds", generate_seconds},
                             {"score_tokens_per_s", score_rate}};
    std::cout << report.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_rollout: " << e.what() << "\n";
    return 1;
  }
}
