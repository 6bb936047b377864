// LoRA on the llama model: fresh adapters leave outputs exactly as they were,
// training moves only adapter tensors, adapter files follow PEFT's layout and
// names, merged checkpoints score as base + adapter, and bad adapters are refused.
#include <set>

#include "alignkit/core/safetensors.hpp"
#include "../algorithms/algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

const ModelProvider& llama() { return *plugin_host().registry().model("llama"); }

ModelOptions with_lora(std::vector<std::string> targets, int64_t r = 4, double alpha = 8.0) {
  ModelOptions options;
  options.lora.r = r;
  options.lora.alpha = alpha;
  options.lora.target_modules = std::move(targets);
  options.lora.seed = 5;
  return options;
}

// A fixed batch of two rows, the second right-padded.
struct Inputs {
  at::Tensor ids = at::tensor({1, 5, 9, 12, 7, 3, 1, 4, 8, 11, 2, 2}, at::kLong).view({2, 6});   // (2, 6)
  at::Tensor mask = at::tensor({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, at::kLong).view({2, 6});  // (2, 6)
  at::Tensor positions = at::arange(6, at::kLong).repeat({2, 1});                              // (2, 6)
};

at::Tensor logits_of(CausalLM& model) {
  Inputs in;
  at::NoGradGuard no_grad;
  return model.forward(in.ids, in.mask, in.positions);  // (2, 6, V)
}

// Some steps of plain gradient descent on the trainable parameters.
void train_a_little(CausalLM& model) {
  Inputs in;
  model.set_training(true);
  for (int step = 0; step < 3; ++step) {
    at::Tensor logits = model.forward(in.ids, in.mask, in.positions);                                  // (2, 6, V)
    at::Tensor loss = -logits.log_softmax(-1).slice(1, 0, 5).gather(2, in.ids.slice(1, 1).unsqueeze(2)).mean();
    loss.backward();
    at::NoGradGuard no_grad;
    for (NamedTensor& p : model.trainable_parameters()) {
      p.tensor.sub_(p.tensor.grad() * 0.5);
      p.tensor.mutable_grad().zero_();
    }
  }
  model.set_training(false);
}

}  // namespace

TEST_CASE("fresh LoRA adapters (B = 0) leave the outputs exactly as the base model's; only adapters train") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 11);
  std::shared_ptr<CausalLM> base = llama().load(dir / "base", {});
  std::shared_ptr<CausalLM> adapted = llama().load(dir / "base", with_lora({"all-linear"}));
  CHECK(adapted->has_adapters());
  CHECK(at::equal(logits_of(*base), logits_of(*adapted)));

  // 7 linear layers x 2 decoder layers, each with lora_A and lora_B.
  const std::vector<NamedTensor> trainable = adapted->trainable_parameters();
  CHECK(trainable.size() == 28);
  for (const NamedTensor& p : trainable) CHECK(p.name.find(".lora_") != std::string::npos);
  for (const NamedTensor& p : adapted->named_parameters())
    CHECK(p.tensor.requires_grad() == (p.name.find(".lora_") != std::string::npos));
  // PEFT's init: B = 0, A ~ U(-1/sqrt(in), 1/sqrt(in)).
  for (const NamedTensor& p : trainable) {
    if (p.name.find("lora_B") != std::string::npos) CHECK(p.tensor.abs().max().item<double>() == 0.0);
    if (p.name.find("q_proj.lora_A") != std::string::npos) {
      CHECK(p.tensor.abs().max().item<double>() <= 1.0 / std::sqrt(32.0));
      CHECK(p.tensor.abs().max().item<double>() > 0.5 / std::sqrt(32.0));
    }
  }
}

TEST_CASE("after training only adapter tensors changed; the PEFT adapter merges to base + adapter within 1e-5") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 12);
  std::shared_ptr<CausalLM> model = llama().load(dir / "base", with_lora({"q_proj", "v_proj", "down_proj"}, 4, 16.0));
  std::map<std::string, at::Tensor> before;
  for (const NamedTensor& p : model->named_parameters()) before[p.name] = p.tensor.detach().clone();
  train_a_little(*model);
  int adapters_changed = 0;
  for (const NamedTensor& p : model->named_parameters()) {
    const bool adapter = p.name.find(".lora_") != std::string::npos;
    if (!adapter) CHECK_MESSAGE(at::equal(p.tensor, before.at(p.name)), p.name);
    if (adapter && p.name.find("lora_B") != std::string::npos && !at::equal(p.tensor, before.at(p.name)))
      ++adapters_changed;
  }
  CHECK(adapters_changed == 6);  // every lora_B of q_proj, v_proj, down_proj in 2 layers

  // Disabled adapters give back the base model.
  std::shared_ptr<CausalLM> base = llama().load(dir / "base", {});
  at::Tensor adapted_logits = logits_of(*model);
  model->set_adapters_enabled(false);
  CHECK(at::equal(logits_of(*model), logits_of(*base)));
  model->set_adapters_enabled(true);
  CHECK_FALSE(at::allclose(adapted_logits, logits_of(*base)));

  // PEFT's layout: adapter_config.json and tensors named base_model.model.<module>.lora_{A,B}.weight.
  model->save_adapter(dir / "adapter", dir / "base");
  const nlohmann::json config = nlohmann::json::parse(read_text(dir / "adapter/adapter_config.json"));
  CHECK(config.at("peft_type") == "LORA");
  CHECK(config.at("task_type") == "CAUSAL_LM");
  CHECK(config.at("r") == 4);
  CHECK(config.at("lora_alpha").get<double>() == 16.0);
  CHECK(config.at("base_model_name_or_path") == dir / "base");
  CHECK(config.at("target_modules") == nlohmann::json({"q_proj", "v_proj", "down_proj"}));
  auto file = core::SafetensorsFile::open(dir / "adapter/adapter_model.safetensors");
  std::set<std::string> names;
  for (const std::string& name : file->names()) names.insert(name);
  std::set<std::string> expected;
  for (int layer = 0; layer < 2; ++layer)
    for (const std::string module : {"self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"})
      for (const std::string ab : {"lora_A", "lora_B"})
        expected.insert("base_model.model.model.layers." + std::to_string(layer) + "." + module + "." + ab + ".weight");
  CHECK(names == expected);
  CHECK(file->info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").shape == std::vector<int64_t>{4, 32});
  CHECK(file->info("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").shape == std::vector<int64_t>{16, 4});
  CHECK(file->info("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight").shape == std::vector<int64_t>{4, 64});

  // Base + adapter merged at load, and the merged checkpoint save() writes.
  ModelOptions merge;
  merge.merge_adapters = {dir / "adapter"};
  std::shared_ptr<CausalLM> merged = llama().load(dir / "base", merge);
  CHECK(at::allclose(logits_of(*merged), adapted_logits, 0.0, 1e-5));
  model->save(dir / "merged");
  CHECK_FALSE(fs::exists(dir / "merged/adapter_config.json"));
  auto merged_file = core::SafetensorsFile::open(dir / "merged/model.safetensors");
  for (const std::string& name : merged_file->names()) CHECK(name.find("lora") == std::string::npos);
  CHECK(at::allclose(logits_of(*llama().load(dir / "merged", {})), adapted_logits, 0.0, 1e-5));
  // An adapter folder is a model: the host loads its base and merges it.
  CHECK(at::allclose(logits_of(*load_model(dir / "adapter")), adapted_logits, 0.0, 1e-5));
}

TEST_CASE("bad adapters: an unknown target module lists the valid names; r = 0; a base of another shape") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 13);
  CHECK_THROWS_WITH(llama().load(dir / "base", with_lora({"q_proj", "qkv_proj"})),
                    doctest::Contains("no module 'qkv_proj'; valid names: q_proj, k_proj, v_proj, o_proj, gate_proj, "
                                      "up_proj, down_proj, all-linear"));
  CHECK_THROWS_WITH(llama().load(dir / "base", with_lora({"q_proj"}, 0)), doctest::Contains("must be at least 1"));

  llama().load(dir / "base", with_lora({"q_proj"}))->save_adapter(dir / "adapter", dir / "base");
  nlohmann::json wider = nlohmann::json::parse(read_text(dir / "base/config.json"));
  wider["hidden_size"] = 48;
  wider["num_attention_heads"] = 4;
  wider["num_key_value_heads"] = 2;
  llama().create(wider.dump(), 1, {})->save(dir / "wider");
  ModelOptions merge;
  merge.merge_adapters = {dir / "adapter"};
  CHECK_THROWS_WITH(llama().load(dir / "wider", merge),
                    doctest::Contains("tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': "
                                      "shape [4, 32] but 'model.layers.0.self_attn.q_proj' takes 48 inputs"));
}
