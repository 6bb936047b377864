// Plugin host: finds plugin libraries in folders, validates them without
// running their code, loads them (never unloading), and keeps the registry of
// the components they add.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "alignkit/registry.hpp"

namespace alignkit::core {

enum class PluginStatus { Ok, Error };

struct PluginRecord {
  std::string path;         // absolute
  std::string name;         // from the descriptor; empty when it could not be read
  std::string version;
  std::string description;
  PluginStatus status = PluginStatus::Error;
  std::string error;        // why it was skipped, naming the file
  bool isolated = false;    // opened with RTLD_LOCAL | RTLD_DEEPBIND
  std::vector<std::pair<ComponentKind, std::string>> components;
};

class PluginHost {
 public:
  PluginHost();
  ~PluginHost();
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  // The folders searched, in order: `cli_dirs`, then ALIGNKIT_PLUGIN_PATH
  // (colon-separated), then <binary>/../lib/alignkit/plugins.
  static std::vector<std::string> search_path(const std::vector<std::string>& cli_dirs);

  // Loads every *.so in `dirs`, in order. Never throws: a bad file becomes a
  // record with status Error and the others still load.
  void load_dirs(const std::vector<std::string>& dirs);
  // Loads one library file; returns its record.
  const PluginRecord& load_file(const std::string& path);

  Registry& registry();
  const Registry& registry() const;
  const std::vector<PluginRecord>& plugins() const;
  // The record of the plugin that provides a component, or of the failed plugin
  // whose file name suggests it; nullptr when unknown. Used to explain why a
  // component the pipeline needs is missing.
  const PluginRecord* provider_of(ComponentKind kind, const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Convenience for tools and tests: a host loaded from the default search path
// plus `cli_dirs`.
std::unique_ptr<PluginHost> load_plugins(const std::vector<std::string>& cli_dirs = {});

}  // namespace alignkit::core
