// The llama model plugin, loaded through the plugin host: random init, load
// and save (bit-identical, sharded, dtype conversion), config and checkpoint
// errors, padding, heads and generation (cache vs no cache, sampling, stops).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "alignkit/core/safetensors.hpp"
#include "model_test_util.hpp"

using namespace alignkit;
using alignkit::test::llama_provider;
using alignkit::test::read_bytes;
using alignkit::test::ScratchDir;
using alignkit::test::tiny_config;
using alignkit::test::write_bytes;
using json = nlohmann::json;

namespace {

std::shared_ptr<CausalLM> create(const std::string& config, uint64_t seed = 1, HeadKind head = HeadKind::LanguageModel,
                                 c10::ScalarType dtype = at::kFloat) {
  ModelOptions options;
  options.head = head;
  options.dtype = dtype;
  return llama_provider().create(config, seed, options);
}

std::shared_ptr<CausalLM> load(const std::string& dir, HeadKind head = HeadKind::LanguageModel,
                               c10::ScalarType dtype = at::kFloat) {
  ModelOptions options;
  options.head = head;
  options.dtype = dtype;
  return llama_provider().load(dir, options);
}

// Moves every parameter away from its init (norms 1, biases 0), so tests see them.
void perturb(CausalLM& model, uint64_t seed) {
  at::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [name, tensor] : model.named_parameters())
    tensor.add_(at::randn(tensor.sizes(), generator, at::kFloat).to(tensor.scalar_type()) * 0.1);
}

std::string message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void expect_message(const std::string& message, const std::vector<std::string>& fragments) {
  REQUIRE_MESSAGE(!message.empty(), "no error was raised");
  for (const std::string& fragment : fragments)
    CHECK_MESSAGE(message.find(fragment) != std::string::npos, "'" << fragment << "' not in: " << message);
}

// Log-probability of each next token: (B, T - 1).
at::Tensor next_token_logprobs(CausalLM& model, const at::Tensor& ids, const at::Tensor& mask,
                               const at::Tensor& positions) {
  at::Tensor logprobs = at::log_softmax(model.forward(ids, mask, positions), -1);  // (B, T, V)
  const int64_t length = ids.size(1);
  return logprobs.narrow(1, 0, length - 1).gather(-1, ids.narrow(1, 1, length - 1).unsqueeze(-1)).squeeze(-1);
}

at::Tensor row(const std::vector<int64_t>& ids) { return at::tensor(ids, at::kLong).unsqueeze(0); }

std::map<std::string, at::Tensor> parameters_of(CausalLM& model) {
  std::map<std::string, at::Tensor> out;
  for (auto& [name, tensor] : model.named_parameters()) out[name] = tensor;
  return out;
}

}  // namespace

TEST_CASE("llama: the plugin registers a model provider for three model types") {
  CHECK(llama_provider().model_types() == std::vector<std::string>{"llama", "mistral", "qwen2"});
}

TEST_CASE("llama: create gives HF names, HF init and the same model for the same seed") {
  auto model = create(tiny_config({{"attention_bias", true}}), 7);
  auto parameters = parameters_of(*model);
  // 2 layers x (4 attention weights + 4 biases + 3 MLP + 2 norms) + embeddings + final norm + lm_head
  CHECK(parameters.size() == 2 * 13 + 3);
  CHECK(parameters.at("model.embed_tokens.weight").sizes() == at::IntArrayRef({128, 32}));
  CHECK(parameters.at("model.layers.1.self_attn.k_proj.weight").sizes() == at::IntArrayRef({16, 32}));  // 2 kv heads x 8
  CHECK(parameters.at("model.layers.0.self_attn.o_proj.bias").sizes() == at::IntArrayRef({32}));
  CHECK(parameters.at("model.layers.0.mlp.gate_proj.weight").sizes() == at::IntArrayRef({64, 32}));
  CHECK(parameters.at("lm_head.weight").sizes() == at::IntArrayRef({128, 32}));
  CHECK(at::equal(parameters.at("model.norm.weight"), at::ones({32})));
  CHECK(at::equal(parameters.at("model.layers.0.input_layernorm.weight"), at::ones({32})));
  CHECK(at::equal(parameters.at("model.layers.0.self_attn.q_proj.bias"), at::zeros({32})));
  const double std = parameters.at("model.layers.0.mlp.up_proj.weight").std().item<double>();
  CHECK(std == doctest::Approx(0.2).epsilon(0.1));  // initializer_range of tiny_config

  const ModelInfo& info = model->info();
  CHECK(info.architecture == "llama");
  CHECK(info.model_type == "llama");
  CHECK(info.vocab_size == 128);
  CHECK(info.hidden_size == 32);
  CHECK(info.num_layers == 2);
  CHECK(info.eos_token_id == 2);
  CHECK(info.bos_token_id == 1);
  CHECK(info.pad_token_id == -1);
  int64_t count = 0;
  for (auto& [name, tensor] : parameters) count += tensor.numel();
  CHECK(info.num_parameters == count);

  auto same = parameters_of(*create(tiny_config({{"attention_bias", true}}), 7));
  auto other = parameters_of(*create(tiny_config({{"attention_bias", true}}), 8));
  for (auto& [name, tensor] : parameters) {
    CAPTURE(name);
    CHECK(at::equal(tensor, same.at(name)));
  }
  CHECK_FALSE(at::equal(parameters.at("lm_head.weight"), other.at("lm_head.weight")));
}

TEST_CASE("llama: tied embeddings have no lm_head; the output embedding is the input one") {
  auto model = create(tiny_config({{"tie_word_embeddings", true}}));
  auto parameters = parameters_of(*model);
  CHECK(parameters.count("lm_head.weight") == 0);
  CHECK(model->output_embedding().data_ptr() == parameters.at("model.embed_tokens.weight").data_ptr());
}

TEST_CASE("llama: the padding row of the embeddings starts at zero, as HF's init") {
  auto model = create(tiny_config({{"pad_token_id", 5}}));
  CHECK(at::equal(parameters_of(*model).at("model.embed_tokens.weight")[5], at::zeros({32})));
}

TEST_CASE("llama: load then save is bit-identical, in float32 and bfloat16 files") {
  for (const char* dtype : {"float32", "bfloat16"}) {
    CAPTURE(dtype);
    ScratchDir dir;
    auto model = create(tiny_config({{"torch_dtype", dtype}, {"tie_word_embeddings", true}}));
    perturb(*model, 3);
    model->save(dir / "a");
    auto config = json::parse(read_bytes(dir / "a/config.json"));
    CHECK(config["architectures"] == json::array({"LlamaForCausalLM"}));
    CHECK(config["torch_dtype"] == dtype);
    CHECK(config["tie_word_embeddings"] == true);

    auto loaded = load(dir / "a");
    for (auto& [name, tensor] : loaded->named_parameters()) CHECK((tensor.scalar_type() == at::kFloat));
    loaded->save(dir / "b");
    CHECK(read_bytes(dir / "a/model.safetensors") == read_bytes(dir / "b/model.safetensors"));
    CHECK(read_bytes(dir / "a/config.json") == read_bytes(dir / "b/config.json"));
    auto file = core::SafetensorsFile::open(dir / "b/model.safetensors");
    CHECK((file->info("model.norm.weight").dtype == (dtype[0] == 'f' ? at::kFloat : at::kBFloat16)));
    CHECK_FALSE(file->contains("lm_head.weight"));
  }
}

TEST_CASE("llama: ModelOptions.dtype converts on load, and the file keeps its dtype") {
  ScratchDir dir;
  auto model = create(tiny_config());
  perturb(*model, 4);
  model->save(dir.path());
  auto half = load(dir.path(), HeadKind::LanguageModel, at::kBFloat16);
  for (auto& [name, tensor] : half->named_parameters()) CHECK((tensor.scalar_type() == at::kBFloat16));
  auto original = parameters_of(*model);
  for (auto& [name, tensor] : half->named_parameters())
    CHECK(at::equal(tensor, original.at(name).to(at::kBFloat16)));
  half->save(dir / "again");
  CHECK((core::SafetensorsFile::open(dir / "again/model.safetensors")->info("lm_head.weight").dtype == at::kFloat));
}

TEST_CASE("llama: a sharded checkpoint loads like a single file") {
  ScratchDir dir;
  auto model = create(tiny_config());
  perturb(*model, 5);
  std::vector<std::pair<std::string, at::Tensor>> first, second;
  json weight_map = json::object();
  for (auto& [name, tensor] : model->named_parameters()) {
    const bool early = name.find("layers.1.") == std::string::npos && name != "lm_head.weight";
    (early ? first : second).emplace_back(name, tensor);
    weight_map[name] = early ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  model->save(dir.path());
  std::filesystem::remove(dir / "model.safetensors");
  core::save_safetensors(dir / "model-00001-of-00002.safetensors", first);
  core::save_safetensors(dir / "model-00002-of-00002.safetensors", second);
  write_bytes(dir / "model.safetensors.index.json", json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump());

  auto loaded = parameters_of(*load(dir.path()));
  for (auto& [name, tensor] : model->named_parameters()) CHECK(at::equal(tensor, loaded.at(name)));
}

TEST_CASE("llama: config errors name the key and what is supported") {
  auto error = [](const json& overrides) { return message_of([&] { create(tiny_config(overrides)); }); };
  expect_message(error({{"hidden_size", nullptr}}), {"missing required key 'hidden_size'", "required: model_type"});
  expect_message(error({{"num_hidden_layers", nullptr}}), {"'num_hidden_layers'"});
  expect_message(error({{"model_type", "gpt2"}}), {"model_type 'gpt2'", "supported: llama, mistral, qwen2"});
  expect_message(error({{"model_type", nullptr}}), {"'model_type'", "supported: llama, mistral, qwen2"});
  expect_message(error({{"hidden_act", "gelu"}}), {"hidden_act 'gelu'", "supported: silu"});
  expect_message(error({{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 2.0}}}}),
                 {"rope_scaling.rope_type", "'yarn'", "supported: default, linear, llama3"});
  expect_message(error({{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"high_freq_factor", 4.0},
                                          {"original_max_position_embeddings", 64}}}}),
                 {"'rope_scaling.low_freq_factor'", "llama3"});
  expect_message(error({{"rope_parameters", {{"rope_type", "dynamic"}, {"rope_theta", 1e4}}}}),
                 {"rope_parameters.rope_type", "'dynamic'"});
  expect_message(error({{"num_key_value_heads", 3}}), {"num_key_value_heads (3)"});
  expect_message(error({{"vocab_size", "many"}}), {"'vocab_size' must be an integer"});
  expect_message(error({{"torch_dtype", "int8"}}), {"torch_dtype", "'int8'", "supported: float32"});
  expect_message(error({{"model_type", "qwen2"}, {"use_sliding_window", true}}), {"use_sliding_window"});
  expect_message(error({{"model_type", "mistral"}, {"attention_bias", true}}), {"attention_bias", "mistral"});
  expect_message(error({{"partial_rotary_factor", 0.5}}), {"partial_rotary_factor"});
  expect_message(message_of([] { llama_provider().create("{not json", 0, {}); }), {"not valid JSON"});
}

TEST_CASE("llama: checkpoint errors name the tensor, the shapes and the files") {
  ScratchDir dir;
  auto model = create(tiny_config());
  model->save(dir.path());
  const std::string weights = dir / "model.safetensors";
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [name, tensor] : model->named_parameters()) tensors.emplace_back(name, tensor);

  SUBCASE("wrong shape") {
    for (auto& [name, tensor] : tensors)
      if (name == "model.layers.1.self_attn.q_proj.weight") tensor = at::zeros({16, 32});
    core::save_safetensors(weights, tensors);
    expect_message(message_of([&] { load(dir.path()); }),
                   {weights, "'model.layers.1.self_attn.q_proj.weight'", "expected shape [32, 32]", "found [16, 32]"});
  }
  SUBCASE("missing tensor") {
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [](auto& t) { return t.first == "model.norm.weight"; }),
                  tensors.end());
    core::save_safetensors(weights, tensors);
    expect_message(message_of([&] { load(dir.path()); }), {"'model.norm.weight' is missing", weights});
  }
  SUBCASE("integer tensor") {
    for (auto& [name, tensor] : tensors)
      if (name == "model.norm.weight") tensor = at::zeros({32}, at::kLong);
    core::save_safetensors(weights, tensors);
    expect_message(message_of([&] { load(dir.path()); }), {"'model.norm.weight'", "I64", "floating point"});
  }
  SUBCASE("no config.json") {
    std::filesystem::remove(dir / "config.json");
    expect_message(message_of([&] { load(dir.path()); }), {dir.path(), "config.json"});
  }
  SUBCASE("a bad config.json names its file") {
    write_bytes(dir / "config.json", tiny_config({{"intermediate_size", -4}}));
    expect_message(message_of([&] { load(dir.path()); }), {dir / "config.json", "'intermediate_size' must be positive"});
  }
  SUBCASE("no weights") {
    std::filesystem::remove(weights);
    expect_message(message_of([&] { load(dir.path()); }), {dir.path(), "model.safetensors"});
  }
}

TEST_CASE("llama: padded keys are masked: left and right padded batches match single sequences") {
  auto model = create(tiny_config());
  perturb(*model, 6);
  const std::vector<std::vector<int64_t>> sequences = {{3, 17, 99, 42, 8}, {1, 5, 9, 13, 21, 34, 55, 89}, {7, 70, 77}};
  const int64_t width = 8;
  for (bool left : {true, false}) {
    CAPTURE(left);
    std::vector<int64_t> ids, mask;
    for (const auto& sequence : sequences) {
      const size_t pad = width - sequence.size();
      std::vector<int64_t> row_ids(width, 0), row_mask(width, 0);
      for (size_t i = 0; i < sequence.size(); ++i) {
        row_ids[left ? pad + i : i] = sequence[i];
        row_mask[left ? pad + i : i] = 1;
      }
      ids.insert(ids.end(), row_ids.begin(), row_ids.end());
      mask.insert(mask.end(), row_mask.begin(), row_mask.end());
    }
    at::Tensor batch_ids = at::tensor(ids, at::kLong).view({3, width});
    at::Tensor batch_mask = at::tensor(mask, at::kLong).view({3, width});
    at::Tensor positions = (batch_mask.cumsum(1) - 1).clamp_min(0);
    at::Tensor logits = model->forward(batch_ids, batch_mask, positions);
    CHECK(at::isfinite(logits).all().item<bool>());  // fully masked (left padding) rows give no NaN
    at::Tensor batch_logprobs = next_token_logprobs(*model, batch_ids, batch_mask, positions);  // (3, 7)
    for (size_t b = 0; b < sequences.size(); ++b) {
      const int64_t length = static_cast<int64_t>(sequences[b].size());
      at::Tensor single = next_token_logprobs(*model, row(sequences[b]), at::ones({1, length}, at::kLong),
                                              at::arange(length, at::kLong).unsqueeze(0))[0];
      at::Tensor padded = batch_logprobs[b].narrow(0, left ? width - length : 0, length - 1);
      CHECK((padded - single).abs().max().item<double>() < 1e-5);
    }
  }
}

TEST_CASE("llama: gradients flow to every parameter") {
  auto model = create(tiny_config({{"attention_bias", true}, {"attention_dropout", 0.1}}));
  model->set_training(true);
  at::Tensor ids = row({4, 8, 15, 16, 23, 42});
  model->forward(ids, at::ones({1, 6}, at::kLong), at::arange(6, at::kLong).unsqueeze(0)).sum().backward();
  for (auto& [name, tensor] : model->named_parameters()) {
    CAPTURE(name);
    REQUIRE(tensor.grad().defined());
    CHECK(tensor.grad().abs().sum().item<double>() > 0);
  }
}

TEST_CASE("llama: bad forward inputs are refused with a message") {
  auto model = create(tiny_config());
  at::Tensor ids = row({1, 2, 3});
  at::Tensor mask = at::ones({1, 3}, at::kLong);
  at::Tensor positions = at::arange(3, at::kLong).unsqueeze(0);
  expect_message(message_of([&] { model->forward(row({1, 200, 3}), mask, positions); }),
                 {"token id 200", "vocabulary of 128"});
  expect_message(message_of([&] { model->forward(ids, at::ones({1, 4}, at::kLong), positions); }), {"attention_mask"});
  expect_message(message_of([&] { model->forward(ids.view({3}), mask, positions); }), {"input_ids"});
  expect_message(message_of([&] { model->head_values(ids, mask, positions); }), {"head_values", "LanguageModel"});
}

TEST_CASE("llama: a Scalar head is LlamaForSequenceClassification's score") {
  ScratchDir dir;
  auto reward = create(tiny_config(), 2, HeadKind::Scalar);
  auto parameters = parameters_of(*reward);
  CHECK(parameters.at("score.weight").sizes() == at::IntArrayRef({1, 32}));
  CHECK(parameters.count("lm_head.weight") == 0);
  CHECK(parameters.count("score.bias") == 0);
  at::Tensor ids = at::tensor(std::vector<int64_t>{5, 6, 7, 8, 9, 10}, at::kLong).view({2, 3});
  at::Tensor mask = at::ones({2, 3}, at::kLong);
  at::Tensor positions = at::arange(3, at::kLong).repeat({2, 1});
  at::Tensor scores = reward->head_values(ids, mask, positions);
  CHECK(scores.sizes() == at::IntArrayRef({2, 3}));
  at::Tensor expected = at::matmul(reward->hidden_states(ids, mask, positions), parameters.at("score.weight").t()).squeeze(-1);
  CHECK(at::allclose(scores, expected));
  expect_message(message_of([&] { reward->forward(ids, mask, positions); }), {"Scalar"});
  expect_message(message_of([&] { reward->generate({{1, 2}}, {}); }), {"Scalar"});

  reward->save(dir / "reward");
  auto config = json::parse(read_bytes(dir / "reward/config.json"));
  CHECK(config["architectures"] == json::array({"LlamaForSequenceClassification"}));
  CHECK(config["id2label"].size() == 1);
  auto loaded = load(dir / "reward", HeadKind::Scalar);
  CHECK(at::equal(loaded->head_values(ids, mask, positions), scores));
}

TEST_CASE("llama: a missing head is initialised the same way every time; an LM lm_head is ignored") {
  ScratchDir dir;
  auto lm = create(tiny_config());
  lm->save(dir.path());
  auto first = parameters_of(*load(dir.path(), HeadKind::Scalar));
  auto second = parameters_of(*load(dir.path(), HeadKind::Scalar));
  CHECK(at::equal(first.at("score.weight"), second.at("score.weight")));
  CHECK(first.at("score.weight").abs().sum().item<double>() > 0);
  CHECK(at::equal(first.at("model.norm.weight"), parameters_of(*lm).at("model.norm.weight")));

  auto value = parameters_of(*load(dir.path(), HeadKind::Value));
  CHECK(value.at("v_head.summary.weight").sizes() == at::IntArrayRef({1, 32}));
  CHECK(at::equal(value.at("v_head.summary.bias"), at::zeros({1})));
}

TEST_CASE("llama: a Value head is TRL's v_head.summary on top of the LM") {
  ScratchDir dir;
  auto critic = create(tiny_config(), 3, HeadKind::Value);
  perturb(*critic, 9);
  auto parameters = parameters_of(*critic);
  CHECK(parameters.count("lm_head.weight") == 1);
  CHECK(parameters.at("v_head.summary.bias").sizes() == at::IntArrayRef({1}));
  at::Tensor ids = row({9, 8, 7, 6});
  at::Tensor mask = at::ones({1, 4}, at::kLong);
  at::Tensor positions = at::arange(4, at::kLong).unsqueeze(0);
  at::Tensor values = critic->head_values(ids, mask, positions);
  CHECK(values.sizes() == at::IntArrayRef({1, 4}));
  CHECK(critic->forward(ids, mask, positions).sizes() == at::IntArrayRef({1, 4, 128}));

  critic->save(dir.path());
  CHECK(json::parse(read_bytes(dir / "config.json"))["architectures"] == json::array({"LlamaForCausalLM"}));
  CHECK(core::SafetensorsFile::open(dir / "model.safetensors")->contains("v_head.summary.weight"));
  auto loaded = load(dir.path(), HeadKind::Value);
  CHECK(at::equal(loaded->head_values(ids, mask, positions), values));
  // The same folder still loads as a plain LM (the value head is ignored).
  CHECK(at::equal(load(dir.path())->forward(ids, mask, positions), critic->forward(ids, mask, positions)));
}

TEST_CASE("llama: generation with the KV cache gives the same tokens as without") {
  const std::vector<std::vector<int64_t>> prompts = {{5, 6, 7}, {10, 20, 30, 40, 50, 60}, {99}};
  for (const json& overrides : {json::object(),
                                json{{"model_type", "mistral"}, {"sliding_window", 3}},
                                json{{"model_type", "qwen2"}, {"tie_word_embeddings", true}}}) {
    CAPTURE(overrides.dump());
    auto model = create(tiny_config(overrides), 11);
    perturb(*model, 12);
    GenerationOptions options;
    options.max_new_tokens = 10;
    options.stop_token_ids = {-7};  // never produced: full length
    for (bool sample : {false, true}) {
      CAPTURE(sample);
      options.do_sample = sample;
      options.temperature = 0.9;
      options.top_k = 50;
      options.top_p = 0.95;
      options.seed = 21;
      options.use_cache = true;
      auto cached = model->generate(prompts, options);
      options.use_cache = false;
      auto uncached = model->generate(prompts, options);
      CHECK(cached == uncached);
      for (const auto& tokens : cached) CHECK(tokens.size() == 10);
    }
  }
}

TEST_CASE("llama: a left-padded batch generates what each prompt generates alone") {
  auto model = create(tiny_config(), 13);
  perturb(*model, 14);
  const std::vector<std::vector<int64_t>> prompts = {{5, 6, 7}, {10, 20, 30, 40, 50, 60}, {99}};
  GenerationOptions options;
  options.max_new_tokens = 8;
  options.stop_token_ids = {-7};
  auto batch = model->generate(prompts, options);
  for (size_t i = 0; i < prompts.size(); ++i) CHECK(batch[i] == model->generate({prompts[i]}, options)[0]);
}

TEST_CASE("llama: sampling is reproducible with the seed; top_k = 1 and a tiny top_p are greedy") {
  auto model = create(tiny_config(), 15);
  perturb(*model, 16);
  const std::vector<std::vector<int64_t>> prompts = {{3, 4}, {8}};
  GenerationOptions options;
  options.max_new_tokens = 12;
  options.stop_token_ids = {-7};
  auto greedy = model->generate(prompts, options);
  options.do_sample = true;
  options.seed = 1;
  auto first = model->generate(prompts, options);
  CHECK(first == model->generate(prompts, options));
  options.seed = 2;
  CHECK(first != model->generate(prompts, options));
  options.top_k = 1;
  CHECK(model->generate(prompts, options) == greedy);
  options.top_k = 0;
  options.top_p = 1e-6;
  CHECK(model->generate(prompts, options) == greedy);
}

TEST_CASE("llama: generation stops at a stop token, includes it, and honours max_new_tokens") {
  auto model = create(tiny_config(), 17);
  perturb(*model, 18);
  GenerationOptions options;
  options.max_new_tokens = 10;
  options.stop_token_ids = {-7};
  auto free_run = model->generate({{12, 13}}, options)[0];
  REQUIRE(free_run.size() == 10);
  const int64_t stop = free_run[3];
  options.stop_token_ids = {stop};
  auto stopped = model->generate({{12, 13}}, options)[0];
  const size_t first = std::find(free_run.begin(), free_run.end(), stop) - free_run.begin();
  CHECK(stopped == std::vector<int64_t>(free_run.begin(), free_run.begin() + first + 1));
  options.max_new_tokens = 0;
  CHECK(model->generate({{12, 13}, {4}}, options) == std::vector<std::vector<int64_t>>{{}, {}});
  options.max_new_tokens = 3;
  options.stop_token_ids = {-7};
  CHECK(model->generate({{12, 13}}, options)[0].size() == 3);

  expect_message(message_of([&] { model->generate({{}}, options); }), {"prompt 0 is empty"});
  expect_message(message_of([&] { model->generate({{500}}, options); }), {"token 500"});
  options.do_sample = true;
  options.temperature = 0;
  expect_message(message_of([&] { model->generate({{1}}, options); }), {"temperature"});
}

TEST_CASE("llama: with no stop tokens given, the config's eos ids stop generation") {
  auto model = create(tiny_config(), 19);
  perturb(*model, 20);
  GenerationOptions options;
  options.max_new_tokens = 10;
  options.stop_token_ids = {-7};
  auto free_run = model->generate({{30, 31}}, options)[0];
  json overrides = {{"eos_token_id", json::array({free_run[2], 127})}};
  ScratchDir dir;
  model->save(dir.path());
  auto config = json::parse(read_bytes(dir / "config.json"));
  config.merge_patch(overrides);
  write_bytes(dir / "config.json", config.dump());
  auto reloaded = load(dir.path());
  CHECK(reloaded->info().eos_token_id == free_run[2]);
  options.stop_token_ids.clear();
  auto stopped = reloaded->generate({{30, 31}}, options)[0];
  const size_t first = std::find(free_run.begin(), free_run.end(), free_run[2]) - free_run.begin();
  CHECK(stopped == std::vector<int64_t>(free_run.begin(), free_run.begin() + first + 1));
}
