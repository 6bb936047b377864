// Loading, saving, forward and heads of the Llama-family CausalLM.
#include "causal_lm.hpp"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/linear.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "alignkit/core/atomic_file.hpp"
#include "alignkit/core/safetensors.hpp"
#include "generation.hpp"
#include "lora.hpp"

namespace alignkit::llama {
namespace {

namespace fs = std::filesystem;

std::string shape_string(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::string read_config(const std::string& dir) {
  const fs::path path = fs::path(dir) / "config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(dir + ": no readable config.json in the model folder");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Inputs may come in any integer dtype and on any device; the model wants int64 on its own.
void check_inputs(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions, int64_t vocab_size) {
  auto fail = [](const std::string& message) { throw std::runtime_error("llama: forward: " + message); };
  if (!ids.defined() || ids.dim() != 2) fail("input_ids must be a (batch, length) tensor");
  if (!mask.defined() || mask.sizes() != ids.sizes())
    fail("attention_mask must have the shape of input_ids " + shape_string(ids.sizes()));
  if (!positions.defined() || positions.sizes() != ids.sizes())
    fail("position_ids must have the shape of input_ids " + shape_string(ids.sizes()));
  if (at::isFloatingType(ids.scalar_type()) || at::isFloatingType(positions.scalar_type()))
    fail("input_ids and position_ids must be integer tensors");
  if (ids.numel() == 0) fail("input_ids is empty");
  const int64_t low = ids.min().item<int64_t>();
  const int64_t high = ids.max().item<int64_t>();
  if (low < 0 || high >= vocab_size)
    fail("token id " + std::to_string(low < 0 ? low : high) + " is outside the vocabulary of " +
         std::to_string(vocab_size));
}

}  // namespace

LlamaCausalLM::LlamaCausalLM(LlamaConfig config, HeadKind head, c10::ScalarType dtype) : config_(std::move(config)) {
  network_ = Network(config_, head, at::TensorOptions().dtype(dtype).device(c10::kCPU));
}

std::shared_ptr<LlamaCausalLM> LlamaCausalLM::load(const std::string& dir, const ModelOptions& options) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  LlamaConfig config = parse_config(read_config(dir), config_path);
  core::SafetensorsCheckpoint checkpoint = core::SafetensorsCheckpoint::open_dir(dir);
  std::shared_ptr<LlamaCausalLM> model(new LlamaCausalLM(std::move(config), options.head, options.dtype));
  NetworkImpl& network = *model->network_;

  at::NoGradGuard no_grad;
  std::vector<std::string> missing_head;
  std::set<std::string> used;
  for (const auto& item : network.named_parameters()) {
    const std::string& name = item.key();
    at::Tensor parameter = item.value();
    if (!checkpoint.contains(name)) {
      if (network.is_head_parameter(name)) {
        missing_head.push_back(name);
        continue;
      }
      std::string files;
      for (const std::string& file : checkpoint.files()) files += (files.empty() ? "" : ", ") + file;
      throw std::runtime_error(dir + ": tensor '" + name + "' is missing from the checkpoint (" + files + ")");
    }
    const core::SafetensorsTensorInfo& stored = checkpoint.info(name);
    if (!at::isFloatingType(stored.dtype))
      throw std::runtime_error(checkpoint.file_of(name) + ": tensor '" + name + "' has dtype " +
                               core::safetensors_dtype_name(stored.dtype) + "; a parameter must be floating point");
    if (parameter.sizes() != at::IntArrayRef(stored.shape))
      throw std::runtime_error(checkpoint.file_of(name) + ": tensor '" + name + "': expected shape " +
                               shape_string(parameter.sizes()) + " (from " + config_path + "), found " +
                               shape_string(stored.shape));
    parameter.copy_(checkpoint.tensor(name));
    model->loaded_dtypes_[name] = stored.dtype;
    used.insert(name);
  }
  const std::string embeddings = "model.embed_tokens.weight";
  model->saved_dtype_ = model->config_.torch_dtype.value_or(model->loaded_dtypes_.at(embeddings));

  if (!missing_head.empty()) {
    initialise_parameters(network, model->config_.initializer_range, kMissingHeadSeed, &missing_head);
    std::string names;
    for (const std::string& name : missing_head) names += (names.empty() ? "" : ", ") + name;
    std::cerr << "llama: " << dir << ": the checkpoint has no " << names << "; initialised it (normal, std "
              << model->config_.initializer_range << ", bias 0, seed " << kMissingHeadSeed << ")\n";
  }
  std::vector<std::string> unused;
  for (const std::string& name : checkpoint.names())
    if (!used.count(name)) unused.push_back(name);
  if (!unused.empty()) {
    std::string names;
    for (size_t i = 0; i < unused.size() && i < 5; ++i) names += (i ? ", " : "") + unused[i];
    if (unused.size() > 5) names += ", ...";
    std::cerr << "llama: " << dir << ": ignored " << unused.size() << " checkpoint tensor(s) this "
              << (options.head == HeadKind::Scalar ? "Scalar-head " : "") << "model does not use: " << names << "\n";
  }
  model->apply_adapter_options(options);
  model->network_->to(options.device);
  model->refresh_info();
  return model;
}

std::shared_ptr<LlamaCausalLM> LlamaCausalLM::create(const std::string& config_json, uint64_t seed,
                                                     const ModelOptions& options) {
  LlamaConfig config = parse_config(config_json, "config.json given to create");
  const c10::ScalarType saved = config.torch_dtype.value_or(options.dtype);
  std::shared_ptr<LlamaCausalLM> model(new LlamaCausalLM(std::move(config), options.head, at::kFloat));
  initialise_parameters(*model->network_, model->config_.initializer_range, seed);
  model->saved_dtype_ = saved;
  model->apply_adapter_options(options);
  model->network_->to(options.device, options.dtype);
  model->refresh_info();
  return model;
}

void LlamaCausalLM::apply_adapter_options(const ModelOptions& options) {
  NetworkImpl& network = *network_;
  for (const std::string& adapter : options.merge_adapters) merge_adapter_folder(network, adapter);
  network.model->recompute_blocks = options.gradient_checkpointing;
  if (options.lora.r == 0 && options.lora.target_modules.empty()) return;
  attach_adapters(network, options.lora);  // throws for r <= 0 or an unknown module
  lora_ = options.lora;
  for (const auto& item : network.named_parameters())
    item.value().requires_grad_(is_adapter_parameter(item.key()) || network.is_head_parameter(item.key()));
}

void LlamaCausalLM::refresh_info() {
  info_.architecture = "llama";
  info_.model_type = config_.model_type;
  info_.vocab_size = config_.vocab_size;
  info_.hidden_size = config_.hidden_size;
  info_.num_layers = config_.num_hidden_layers;
  info_.max_position_embeddings = config_.max_position_embeddings;
  info_.bos_token_id = config_.bos_token_id;
  info_.eos_token_id = config_.eos_token_ids.empty() ? -1 : config_.eos_token_ids.front();
  info_.pad_token_id = config_.pad_token_id;
  info_.num_parameters = 0;
  for (const auto& item : network_->named_parameters()) info_.num_parameters += item.value().numel();
}

at::Tensor LlamaCausalLM::hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                        const at::Tensor& position_ids) {
  check_inputs(input_ids, attention_mask, position_ids, config_.vocab_size);
  const c10::Device device = network_->model->embed_tokens->weight.device();
  return network_->model->forward(input_ids.to(device, at::kLong), attention_mask.to(device),
                                  position_ids.to(device, at::kLong));  // (B, T, H)
}

at::Tensor LlamaCausalLM::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                  const at::Tensor& position_ids) {
  at::Tensor output_weight = network_->output_embedding();  // throws first for a Scalar head
  return at::linear(hidden_states(input_ids, attention_mask, position_ids), output_weight);  // (B, T, V)
}

at::Tensor LlamaCausalLM::head_values(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                      const at::Tensor& position_ids) {
  if (network_->head == HeadKind::LanguageModel)
    throw std::runtime_error("llama: head_values needs a Scalar or Value head; this model was built as a LanguageModel");
  return network_->head_values(hidden_states(input_ids, attention_mask, position_ids));  // (B, T)
}

std::vector<NamedTensor> LlamaCausalLM::trainable_parameters() {
  std::vector<NamedTensor> out;
  for (const auto& item : network_->named_parameters())
    if (!has_adapters() || item.value().requires_grad()) out.push_back({item.key(), item.value()});
  return out;
}

void LlamaCausalLM::set_adapters_enabled(bool enabled) { llama::set_adapters_enabled(*network_, enabled); }

void LlamaCausalLM::save_adapter(const std::string& dir, const std::string& base_model) const {
  if (!has_adapters()) throw std::runtime_error("llama: save_adapter: the model has no LoRA adapters");
  save_adapter_folder(*network_, lora_, base_model, dir);
}

std::vector<NamedTensor> LlamaCausalLM::named_parameters() {
  std::vector<NamedTensor> out;
  for (const auto& item : network_->named_parameters()) out.push_back({item.key(), item.value()});
  return out;
}

void LlamaCausalLM::to(c10::Device device, c10::ScalarType dtype) { network_->to(device, dtype); }

void LlamaCausalLM::save(const std::string& dir) const {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) throw std::runtime_error(dir + ": cannot create the model folder: " + error.message());
  // With adapters, the adapted layers are written merged (W + scaling B A), as `alignkit model merge`.
  std::map<std::string, at::Tensor> merged;
  for (const auto& item : network_->named_modules())
    if (const auto* linear = item.value()->as<LinearImpl>(); linear && linear->has_adapter())
      merged[item.key() + ".weight"] = merged_weight(*linear);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : network_->named_parameters()) {
    if (is_adapter_parameter(item.key())) continue;
    auto loaded = loaded_dtypes_.find(item.key());
    const c10::ScalarType dtype = loaded == loaded_dtypes_.end() ? saved_dtype_ : loaded->second;
    auto merged_tensor = merged.find(item.key());
    const at::Tensor& value = merged_tensor == merged.end() ? item.value() : merged_tensor->second;
    tensors.emplace_back(item.key(), value.detach().to(c10::kCPU, dtype));
  }
  core::save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
  const ConfigHead head = network_->head == HeadKind::Scalar ? ConfigHead::SequenceClassification : ConfigHead::CausalLM;
  core::write_file_atomic((fs::path(dir) / "config.json").string(), serialize_config(config_, head, saved_dtype_));
}

std::vector<std::vector<int64_t>> LlamaCausalLM::generate(const std::vector<std::vector<int64_t>>& prompts,
                                                          const GenerationOptions& options) {
  return generate_tokens(*network_, config_, prompts, options);
}

}  // namespace alignkit::llama
