// alignkit::CausalLM for Llama, Mistral and Qwen2: loading and saving Hugging
// Face folders (config.json + safetensors), random init, forward, heads and
// generation.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "alignkit/model.hpp"
#include "config.hpp"
#include "decoder.hpp"

namespace alignkit::llama {

// A head missing from a loaded checkpoint is initialised from this seed, so
// loading the same folder twice gives the same model.
constexpr uint64_t kMissingHeadSeed = 0;

class LlamaCausalLM : public CausalLM {
 public:
  // Loads `dir`: config.json and model.safetensors (or the sharded index).
  // Parameters take options.dtype; save() writes each tensor back in the
  // dtype it had in the checkpoint, so load -> save is bit-identical.
  static std::shared_ptr<LlamaCausalLM> load(const std::string& dir, const ModelOptions& options);
  // A random model (HF init, deterministic for `seed`) that saves in the
  // config's torch_dtype, or options.dtype when the config names none.
  static std::shared_ptr<LlamaCausalLM> create(const std::string& config_json, uint64_t seed,
                                               const ModelOptions& options);

  const ModelInfo& info() const override { return info_; }
  HeadKind head() const override { return network_->head; }
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                     const at::Tensor& position_ids) override;
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                           const at::Tensor& position_ids) override;
  at::Tensor head_values(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                         const at::Tensor& position_ids) override;
  at::Tensor output_embedding() override { return network_->output_embedding(); }
  std::vector<NamedTensor> named_parameters() override;
  void set_training(bool training) override { network_->train(training); }
  void to(c10::Device device, c10::ScalarType dtype) override;
  void save(const std::string& dir) const override;
  std::vector<std::vector<int64_t>> generate(const std::vector<std::vector<int64_t>>& prompts,
                                             const GenerationOptions& options) override;
  std::vector<NamedTensor> trainable_parameters() override;
  bool has_adapters() const override { return lora_.r > 0; }
  void set_adapters_enabled(bool enabled) override;
  void save_adapter(const std::string& dir, const std::string& base_model) const override;

 private:
  LlamaCausalLM(LlamaConfig config, HeadKind head, c10::ScalarType dtype);
  void refresh_info();
  // Merges options.merge_adapters, attaches options.lora (freezing the rest)
  // and sets gradient checkpointing.
  void apply_adapter_options(const ModelOptions& options);

  LlamaConfig config_;
  Network network_{nullptr};
  ModelInfo info_;
  // The dtype each tensor is saved in: as loaded, else saved_dtype_.
  std::map<std::string, c10::ScalarType> loaded_dtypes_;
  c10::ScalarType saved_dtype_ = c10::kFloat;
  LoraOptions lora_;  // r = 0: no adapters
};

}  // namespace alignkit::llama
