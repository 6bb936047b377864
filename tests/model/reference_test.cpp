// Parity with an independent Python reference (reference_llama.py, written
// from Hugging Face's modelling code): random checkpoints covering GQA and
// MQA, explicit head_dim, llama3 and linear rope scaling (4.x and 5.x config
// forms), tied embeddings, Llama and Qwen2 bias layouts, Mistral's sliding
// window, bfloat16 files and both heads; per-token log-probs within 1e-4.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>

#include <cmath>
#include <cstdio>
#include <sys/wait.h>

#include "model_test_util.hpp"

using namespace alignkit;
using alignkit::test::llama_provider;
using alignkit::test::ScratchDir;
using alignkit::test::tiny_config;
using alignkit::test::write_bytes;
using json = nlohmann::json;

namespace {

const char* const kPython = "/usr/bin/python3";

// Runs the reference on `dir` and returns its JSON output.
json run_reference(const std::string& dir, const std::string& inputs, const std::string& head) {
  const std::string command = std::string(kPython) + " " + ALIGNKIT_SOURCE_DIR + "/tests/model/reference_llama.py '" +
                              dir + "' '" + inputs + "' " + head + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe);
  std::string output;
  char buffer[4096];
  while (size_t read = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, read);
  const int status = ::pclose(pipe);
  REQUIRE_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), command << "\n" << output);
  return json::parse(output);
}

// A model of `config` with every parameter moved off its init, saved to `dir`.
void write_random_checkpoint(const std::string& config, HeadKind head, const std::string& dir) {
  ModelOptions options;
  options.head = head;
  auto model = llama_provider().create(config, 31, options);
  at::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(32);
  for (auto& [name, tensor] : model->named_parameters())
    tensor.add_(at::randn(tensor.sizes(), generator, at::kFloat) * 0.1);
  model->save(dir);
}

void check_against_reference(const std::string& config, HeadKind head = HeadKind::LanguageModel) {
  ScratchDir dir;
  write_random_checkpoint(config, head, dir / "model");
  const std::vector<std::vector<int64_t>> sequences = {
      {1, 17, 42, 99, 3, 3, 64, 127, 0, 8, 15, 16, 23, 42, 108, 77, 5, 31, 62, 2}, {9, 8}, {100, 50, 25, 12, 6}};
  write_bytes(dir / "inputs.json", json{{"sequences", sequences}}.dump());
  const char* head_name = head == HeadKind::Scalar ? "scalar" : head == HeadKind::Value ? "value" : "lm";
  json reference = run_reference(dir / "model", dir / "inputs.json", head_name);

  ModelOptions options;
  options.head = head;
  auto model = llama_provider().load(dir / "model", options);  // the saved file, as Python reads it
  at::NoGradGuard no_grad;
  for (size_t s = 0; s < sequences.size(); ++s) {
    CAPTURE(s);
    const int64_t length = static_cast<int64_t>(sequences[s].size());
    at::Tensor ids = at::tensor(sequences[s], at::kLong).unsqueeze(0);
    at::Tensor mask = at::ones({1, length}, at::kLong);
    at::Tensor positions = at::arange(length, at::kLong).unsqueeze(0);
    if (head != HeadKind::Scalar) {
      at::Tensor logprobs = at::log_softmax(model->forward(ids, mask, positions)[0], -1);  // (T, V)
      const auto& expected = reference["logprobs"][s];
      REQUIRE(expected.size() == static_cast<size_t>(length - 1));
      for (int64_t t = 0; t + 1 < length; ++t)
        CHECK(std::abs(logprobs[t][sequences[s][t + 1]].item<double>() - expected[t].get<double>()) < 1e-4);
    }
    if (head != HeadKind::LanguageModel) {
      at::Tensor values = model->head_values(ids, mask, positions)[0];  // (T)
      const auto& expected = reference["values"][s];
      REQUIRE(expected.size() == static_cast<size_t>(length));
      for (int64_t t = 0; t < length; ++t)
        CHECK(std::abs(values[t].item<double>() - expected[t].get<double>()) < 1e-4);
    }
  }
}

}  // namespace

TEST_CASE("reference: grouped-query attention with an explicit head_dim") {
  check_against_reference(tiny_config({{"head_dim", 16}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}}));
}

TEST_CASE("reference: llama3 rope scaling, tied embeddings, one kv head") {
  check_against_reference(tiny_config({{"num_key_value_heads", 1},
                                       {"head_dim", 16},
                                       {"tie_word_embeddings", true},
                                       {"rope_theta", 10000.0},
                                       // wavelengths 6.3 (< 8: kept), 20 (blended), 63+ (> 32: divided)
                                       {"rope_scaling",
                                        {{"rope_type", "llama3"},
                                         {"factor", 4.0},
                                         {"low_freq_factor", 2.0},
                                         {"high_freq_factor", 8.0},
                                         {"original_max_position_embeddings", 64}}}}));
}

TEST_CASE("reference: Qwen2 biases on q, k, v only") {
  check_against_reference(tiny_config({{"model_type", "qwen2"}, {"rope_theta", 1e6}, {"rms_norm_eps", 1e-6}}));
}

TEST_CASE("reference: Llama attention and MLP biases, linear rope in transformers 5.x form, bfloat16 file") {
  check_against_reference(tiny_config({{"attention_bias", true},
                                       {"mlp_bias", true},
                                       {"torch_dtype", nullptr},
                                       {"dtype", "bfloat16"},
                                       {"rope_parameters", {{"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 500.0}}}}));
}

TEST_CASE("reference: Mistral's sliding window") {
  check_against_reference(tiny_config({{"model_type", "mistral"}, {"sliding_window", 4}}));
}

TEST_CASE("reference: Scalar (score) and Value (v_head.summary) heads") {
  check_against_reference(tiny_config(), HeadKind::Scalar);
  check_against_reference(tiny_config({{"tie_word_embeddings", true}}), HeadKind::Value);
}
