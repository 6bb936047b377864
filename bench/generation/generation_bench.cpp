// Generation throughput of the llama plugin, with and without the KV cache,
// measured in one run so the ratio compares like with like.
//
//   bench_generation [--model DIR] [--batch 4] [--prompt 32] [--new 64]
//                    [--repeats 5] [--threads N]
//
// Without --model it times a random decoder (hidden 256, 4 layers, 8 heads
// over 4 kv heads, vocab 8000). Each mode runs once to warm up, then
// `repeats` times; the median time gives tokens/s (new tokens of the whole
// batch per second). Greedy decoding with no stop token, so every run makes
// exactly batch x new tokens. Prints a readable line and a JSON line.
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
#include "alignkit/model.hpp"
#include "bench_support.hpp"

namespace {

using alignkit::bench::blas_provider;
using alignkit::bench::median;

struct Settings {
  std::string model_dir;
  int64_t batch = 4;
  int64_t prompt = 32;
  int64_t new_tokens = 64;
  int repeats = 5;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
};

const char* const kUsage =
    "usage: bench_generation [--model DIR] [--batch N] [--prompt N] [--new N] [--repeats N] [--threads N]";

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
    else if (flag == "--batch") settings.batch = number();
    else if (flag == "--prompt") settings.prompt = number();
    else if (flag == "--new") settings.new_tokens = number();
    else if (flag == "--repeats") settings.repeats = static_cast<int>(number());
    else if (flag == "--threads") settings.threads = static_cast<int>(number());
    else throw std::runtime_error("unknown option " + flag + "\n" + kUsage);
  }
  return settings;
}

// Median seconds of one generate() call over `repeats` runs, after a warm-up.
double time_generation(alignkit::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                       const alignkit::GenerationOptions& options, int repeats) {
  model.generate(prompts, options);
  std::vector<double> seconds;
  for (int i = 0; i < repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    model.generate(prompts, options);
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
    std::uniform_int_distribution<int64_t> token(0, model->info().vocab_size - 1);
    std::vector<std::vector<int64_t>> prompts(settings.batch, std::vector<int64_t>(settings.prompt));
    for (auto& prompt : prompts)
      for (auto& id : prompt) id = token(random);

    alignkit::GenerationOptions options;
    options.max_new_tokens = settings.new_tokens;
    options.stop_token_ids = {-1};  // never produced: every run makes the same number of tokens
    options.use_cache = true;
    const double cached = time_generation(*model, prompts, options, settings.repeats);
    options.use_cache = false;
    const double uncached = time_generation(*model, prompts, options, settings.repeats);

    const double tokens = static_cast<double>(settings.batch * settings.new_tokens);
    const double cached_rate = tokens / cached;
    const double uncached_rate = tokens / uncached;
    std::cout << "generation: batch " << settings.batch << ", prompt " << settings.prompt << ", new "
              << settings.new_tokens << ", threads " << settings.threads << ": KV cache " << cached_rate
              << " tokens/s, no cache " << uncached_rate << " tokens/s, speed-up " << cached_rate / uncached_rate
              << "x (median of " << settings.repeats << ")\n";
    nlohmann::json report = {{"benchmark", "generation"},
                             {"model", settings.model_dir.empty() ? "random-llama-h256-l4-v8000" : settings.model_dir},
                             {"parameters", model->info().num_parameters},
                             {"batch", settings.batch},
                             {"prompt_tokens", settings.prompt},
                             {"new_tokens", settings.new_tokens},
                             {"repeats", settings.repeats},
                             {"threads", settings.threads},
                             {"blas", blas},
                             {"cache_tokens_per_s", cached_rate},
                             {"no_cache_tokens_per_s", uncached_rate},
                             {"cache_speedup", cached_rate / uncached_rate}};
    std::cout << report.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_generation: " << e.what() << "\n";
    return 1;
  }
}
