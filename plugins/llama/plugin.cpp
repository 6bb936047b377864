// The `llama` model plugin: registers a ModelProvider for Llama, Mistral and
// Qwen2 checkpoints in Hugging Face layout.
#include <c10/util/Exception.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "alignkit/model.hpp"
#include "alignkit/plugin.hpp"
#include "alignkit/registry.hpp"
#include "causal_lm.hpp"

namespace alignkit::llama {
namespace {

// Only std::runtime_error may leave load/create (model.hpp): a LibTorch error
// on the way is rethrown as one, with its message and without the backtrace.
template <typename Build>
std::shared_ptr<CausalLM> guarded(const std::string& what, Build build) {
  try {
    return build();
  } catch (const std::runtime_error&) {
    throw;
  } catch (const c10::Error& e) {
    throw std::runtime_error("llama: " + what + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error("llama: " + what + ": " + e.what());
  }
}

class LlamaProvider : public ModelProvider {
 public:
  std::vector<std::string> model_types() const override { return {"llama", "mistral", "qwen2"}; }

  std::shared_ptr<CausalLM> load(const std::string& dir, const ModelOptions& options) const override {
    return guarded("loading " + dir, [&] { return LlamaCausalLM::load(dir, options); });
  }

  std::shared_ptr<CausalLM> create(const std::string& config_json, uint64_t seed,
                                   const ModelOptions& options) const override {
    return guarded("creating a model", [&] { return LlamaCausalLM::create(config_json, seed, options); });
  }
};

void register_llama(Registry& registry) {
  registry.add_model(ComponentInfo{ComponentKind::Model, "llama", ALIGNKIT_VERSION_STRING,
                                   "Llama, Mistral and Qwen2 decoders from Hugging Face folders (safetensors)", {}},
                     std::make_shared<LlamaProvider>());
}

}  // namespace
}  // namespace alignkit::llama

ALIGNKIT_PLUGIN("llama", ALIGNKIT_VERSION_STRING, "Llama, Mistral and Qwen2 decoders from Hugging Face checkpoints",
                alignkit::llama::register_llama)
