// LoRA adapters of the llama plugin: attach, enable, merge, and PEFT's files.
#include "lora.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/matmul.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "alignkit/core/atomic_file.hpp"
#include "alignkit/core/safetensors.hpp"

namespace fs = std::filesystem;

namespace alignkit::llama {
namespace {

// PEFT's prefix of every saved tensor: PeftModel.base_model (LoraModel).model (the HF model).
const std::string kPeftPrefix = "base_model.model.";
const std::string kAdapterConfig = "adapter_config.json";
const std::string kAdapterWeights = "adapter_model.safetensors";

std::string last_component(const std::string& module_name) {
  const size_t dot = module_name.rfind('.');
  return dot == std::string::npos ? module_name : module_name.substr(dot + 1);
}

std::string valid_names_text() {
  std::string text;
  for (const std::string& name : lora_module_names()) text += name + ", ";
  return text + "all-linear";
}

std::string shape_text(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// The decoder's linear layers that adapters may target, by HF module name.
std::map<std::string, LinearImpl*> adaptable_layers(const NetworkImpl& network) {
  std::map<std::string, LinearImpl*> layers;
  const std::vector<std::string>& names = lora_module_names();
  for (const auto& item : network.model->named_modules("model")) {
    if (std::find(names.begin(), names.end(), last_component(item.key())) == names.end()) continue;
    if (auto* linear = item.value()->as<LinearImpl>()) layers[item.key()] = linear;
  }
  return layers;
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot read the file");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": not valid JSON (" + e.what() + ")");
  }
}

}  // namespace

bool is_adapter_parameter(const std::string& name) {
  return name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos;
}

void attach_adapters(NetworkImpl& network, const LoraOptions& options) {
  if (options.r <= 0) throw std::invalid_argument("lora.r: must be at least 1, found " + std::to_string(options.r));
  if (options.target_modules.empty())
    throw std::invalid_argument("lora.target_modules: empty; name modules from: " + valid_names_text());
  std::set<std::string> targets;
  for (const std::string& name : options.target_modules) {
    if (name == "all-linear") {
      targets.insert(lora_module_names().begin(), lora_module_names().end());
      continue;
    }
    const std::vector<std::string>& names = lora_module_names();
    if (std::find(names.begin(), names.end(), name) == names.end())
      throw std::invalid_argument("lora.target_modules: the model has no module '" + name +
                                  "'; valid names: " + valid_names_text());
    targets.insert(name);
  }
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  for (auto& [name, linear] : adaptable_layers(network))
    if (targets.count(last_component(name))) linear->add_adapter(options.r, options.alpha, options.dropout, generator);
}

void set_adapters_enabled(NetworkImpl& network, bool enabled) {
  for (auto& [name, linear] : adaptable_layers(network)) linear->adapter_enabled = enabled;
}

at::Tensor merged_weight(const LinearImpl& linear) {
  at::NoGradGuard no_grad;
  if (!linear.has_adapter()) return linear.weight.detach();
  at::Tensor delta = at::matmul(linear.lora_B->weight.to(at::kFloat), linear.lora_A->weight.to(at::kFloat));  // (out, in)
  return (linear.weight.to(at::kFloat) + delta * linear.lora_scaling).to(linear.weight.scalar_type());
}

void merge_adapter_folder(NetworkImpl& network, const std::string& dir) {
  const fs::path config_path = fs::path(dir) / kAdapterConfig;
  const fs::path weights_path = fs::path(dir) / kAdapterWeights;
  if (!fs::exists(config_path)) throw std::runtime_error(dir + ": no " + kAdapterConfig + " (not a PEFT adapter folder)");
  const nlohmann::json config = read_json(config_path);
  auto number = [&](const char* key) {
    if (!config.contains(key) || !config[key].is_number())
      throw std::runtime_error(config_path.string() + ": missing number '" + key + "'");
    return config[key].get<double>();
  };
  if (config.value("peft_type", std::string("LORA")) != "LORA")
    throw std::runtime_error(config_path.string() + ": peft_type '" + config["peft_type"].get<std::string>() +
                             "' is not supported (only LORA)");
  if (config.value("fan_in_fan_out", false))
    throw std::runtime_error(config_path.string() + ": fan_in_fan_out = true is not supported (Llama has no Conv1D)");
  const double r = number("r");
  const double alpha = number("lora_alpha");
  if (!(r > 0)) throw std::runtime_error(config_path.string() + ": r must be at least 1");
  const double scaling = config.value("use_rslora", false) ? alpha / std::sqrt(r) : alpha / r;

  auto file = core::SafetensorsFile::open(weights_path.string());
  std::map<std::string, LinearImpl*> layers = adaptable_layers(network);
  std::map<std::string, at::Tensor> parameters;
  for (const auto& item : network.named_parameters()) parameters[item.key()] = item.value();

  at::NoGradGuard no_grad;
  auto fail = [&](const std::string& name, const std::string& why) {
    throw std::runtime_error(weights_path.string() + ": tensor '" + name + "': " + why + " (base model mismatch?)");
  };
  std::set<std::string> merged;
  for (const std::string& name : file->names()) {
    if (name.compare(0, kPeftPrefix.size(), kPeftPrefix) != 0) fail(name, "does not start with '" + kPeftPrefix + "'");
    const std::string inner = name.substr(kPeftPrefix.size());
    const size_t at_a = inner.rfind(".lora_A.weight");
    const size_t at_b = inner.rfind(".lora_B.weight");
    if (at_a == std::string::npos && at_b == std::string::npos) {
      // modules_to_save: a whole tensor of the base model (a head).
      auto it = parameters.find(inner);
      if (it == parameters.end()) fail(name, "the model has no parameter '" + inner + "'");
      if (it->second.sizes() != at::IntArrayRef(file->info(name).shape))
        fail(name, "shape " + shape_text(file->info(name).shape) + " but the model's '" + inner + "' is " +
                       shape_text(it->second.sizes()));
      it->second.copy_(file->tensor(name));
      continue;
    }
    if (at_b != std::string::npos) continue;  // handled with its lora_A
    const std::string module = inner.substr(0, at_a);
    auto layer = layers.find(module);
    if (layer == layers.end()) fail(name, "the model has no adaptable module '" + module + "'");
    const std::string b_name = kPeftPrefix + module + ".lora_B.weight";
    if (!file->contains(b_name)) fail(name, "its lora_B '" + b_name + "' is missing");
    at::Tensor a = file->tensor(name).to(at::kFloat);    // (r, in)
    at::Tensor b = file->tensor(b_name).to(at::kFloat);  // (out, r)
    at::Tensor& weight = layer->second->weight;          // (out, in)
    if (a.dim() != 2 || a.size(1) != weight.size(1))
      fail(name, "shape " + shape_text(a.sizes()) + " but '" + module + "' takes " + std::to_string(weight.size(1)) +
                     " inputs");
    if (b.dim() != 2 || b.size(0) != weight.size(0) || b.size(1) != a.size(0))
      fail(b_name, "shape " + shape_text(b.sizes()) + " does not fit '" + module + "' with " +
                       std::to_string(weight.size(0)) + " outputs and r = " + std::to_string(a.size(0)));
    at::Tensor delta = at::matmul(b, a) * scaling;  // (out, in)
    weight.copy_(weight.to(at::kFloat) + delta.to(weight.device()));
    merged.insert(b_name);
  }
  for (const std::string& name : file->names())
    if (name.find(".lora_B.weight") != std::string::npos && !merged.count(name))
      fail(name, "has no matching lora_A");
}

void save_adapter_folder(const NetworkImpl& network, const LoraOptions& options, const std::string& base_model,
                         const std::string& dir) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) throw std::runtime_error(dir + ": cannot create the adapter folder: " + error.message());
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : network.named_parameters())
    if (is_adapter_parameter(item.key()))
      tensors.emplace_back(kPeftPrefix + item.key(), item.value().detach().to(c10::kCPU));
  nlohmann::json modules_to_save = nullptr;
  if (network.head != HeadKind::LanguageModel) {
    modules_to_save = nlohmann::json::array();
    modules_to_save.push_back(network.head == HeadKind::Scalar ? "score" : "v_head");
    for (const auto& item : network.named_parameters())
      if (network.is_head_parameter(item.key()))
        tensors.emplace_back(kPeftPrefix + item.key(), item.value().detach().to(c10::kCPU));
  }
  std::set<std::string> adapted;
  for (auto& [name, linear] : adaptable_layers(network))
    if (linear->has_adapter()) adapted.insert(last_component(name));
  std::vector<std::string> targets;  // in lora_module_names() order
  for (const std::string& module : lora_module_names())
    if (adapted.count(module)) targets.push_back(module);
  if (tensors.empty()) throw std::runtime_error("llama: save_adapter: the model has no adapters");
  // PEFT's LoraConfig as peft 0.x writes it; keys it added later default when absent.
  const nlohmann::json config = {
      {"peft_type", "LORA"},
      {"task_type", network.head == HeadKind::Scalar ? "SEQ_CLS" : "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", options.r},
      {"lora_alpha", options.alpha},
      {"lora_dropout", options.dropout},
      {"target_modules", targets},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", modules_to_save},
      {"use_rslora", false},
      {"use_dora", false},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", nlohmann::json::object()},
      {"alpha_pattern", nlohmann::json::object()},
      {"revision", nullptr},
  };
  core::save_safetensors((fs::path(dir) / kAdapterWeights).string(), tensors);
  core::write_file_atomic((fs::path(dir) / kAdapterConfig).string(), config.dump(2) + "\n");
}

}  // namespace alignkit::llama
