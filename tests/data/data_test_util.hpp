// Helpers for the data tests: the plugin host loaded once from the build tree,
// fixture paths, scratch folders and a byte-level tokenizer whose ids spell
// the text back, so rendered templates can be compared as strings.
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "alignkit/config.hpp"
#include "alignkit/core/plugin_host.hpp"
#include "alignkit/dataset.hpp"
#include "alignkit/tokenizer.hpp"

namespace alignkit::test {

// One host for the whole binary: plugins are never unloaded anyway.
inline core::PluginHost& plugin_host() {
  static std::unique_ptr<core::PluginHost> host =
      core::load_plugins({std::string(ALIGNKIT_BINARY_DIR) + "/lib/alignkit/plugins"});
  return *host;
}

inline std::string fixture(const std::string& name) {
  return std::string(ALIGNKIT_SOURCE_DIR) + "/tests/data/fixtures/" + name;
}

class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "alignkit-data-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& contents) const {
    const std::string path = *this / name;
    std::ofstream(path, std::ios::binary) << contents;
    return path;
  }

 private:
  std::filesystem::path path_;
};

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run " + command);
  char buffer[4096];
  for (size_t n; (n = ::fread(buffer, 1, sizeof buffer, pipe)) > 0;) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Byte b is id b + 4; 1 and 2 are BOS and EOS (or none, on request), 3 pad.
class ByteTokenizer final : public Tokenizer {
 public:
  explicit ByteTokenizer(bool with_bos = true, bool with_eos = true)
      : bos_(with_bos ? 1 : -1), eos_(with_eos ? 2 : -1) {}
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(static_cast<int32_t>(c) + 4);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    for (int32_t id : ids)
      if (id >= 4) text += static_cast<char>(id - 4);
    return text;
  }
  int32_t vocab_size() const override { return 260; }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return 3; }

 private:
  int32_t bos_;
  int32_t eos_;
};

// Ids as text, BOS and EOS written [BOS] and [EOS]: what a rendering became.
inline std::string spell(const std::vector<int32_t>& ids) {
  std::string text;
  for (int32_t id : ids) {
    if (id == 1) text += "[BOS]";
    else if (id == 2) text += "[EOS]";
    else if (id >= 4 && id < 260) text += static_cast<char>(id - 4);
    else text += "[" + std::to_string(id) + "]";
  }
  return text;
}

// A `data = {...}` table as the host would pass it.
struct DataTable {
  ConfigValue table = ConfigValue::empty_table();
  DataTable& set(const std::string& key, ConfigValue value) {
    table.set(key, std::move(value));
    return *this;
  }
  ConfigView view() const { return ConfigView(&table, "stages.test.data"); }
};

}  // namespace alignkit::test
