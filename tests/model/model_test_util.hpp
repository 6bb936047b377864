// Helpers for the model tests: temporary folders, raw files, the llama
// provider loaded through the plugin host, and tiny model configs.
#pragma once

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>

#include "alignkit/core/plugin_host.hpp"
#include "alignkit/model.hpp"

namespace alignkit::test {

// A fresh folder under the system temporary folder, removed with its contents.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "alignkit-model-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

// The llama plugin, loaded once from the build tree as the CLI would.
inline const ModelProvider& llama_provider() {
  static std::unique_ptr<core::PluginHost> host =
      core::load_plugins({std::string(ALIGNKIT_BINARY_DIR) + "/lib/alignkit/plugins"});
  const ModelProvider* provider = host->registry().model("llama");
  if (!provider) throw std::runtime_error("the llama plugin is not in " ALIGNKIT_BINARY_DIR "/lib/alignkit/plugins");
  return *provider;
}

// A tiny Llama config (hidden 32, 2 layers, vocab 128) with `overrides` merged in.
inline std::string tiny_config(const nlohmann::json& overrides = nlohmann::json::object()) {
  nlohmann::json config = {{"model_type", "llama"},
                           {"vocab_size", 128},
                           {"hidden_size", 32},
                           {"intermediate_size", 64},
                           {"num_hidden_layers", 2},
                           {"num_attention_heads", 4},
                           {"num_key_value_heads", 2},
                           {"max_position_embeddings", 256},
                           {"rms_norm_eps", 1e-5},
                           {"initializer_range", 0.2},
                           {"bos_token_id", 1},
                           {"eos_token_id", 2},
                           {"torch_dtype", "float32"}};
  config.merge_patch(overrides);
  return config.dump();
}

}  // namespace alignkit::test
