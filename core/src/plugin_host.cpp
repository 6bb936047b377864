// Plugin discovery and two-phase loading (validate, then register), and the
// registry the plugins fill. See plugin_host.hpp and docs/plugins.md.
#include "alignkit/core/plugin_host.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>

#include <boost/dll/library_info.hpp>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

#include "alignkit/plugin.hpp"

namespace fs = std::filesystem;

namespace alignkit::core {
namespace {

struct Entry {
  ComponentInfo info;
  std::shared_ptr<const void> provider;
  std::string plugin_path;
};

using Key = std::pair<ComponentKind, std::string>;

// The committed components of every loaded plugin.
class RegistryImpl : public Registry {
 public:
  void add_algorithm(ComponentInfo info, std::shared_ptr<const AlgorithmProvider> p) override { add(ComponentKind::Algorithm, std::move(info), std::move(p)); }
  void add_backend(ComponentInfo info, std::shared_ptr<const BackendProvider> p) override { add(ComponentKind::Backend, std::move(info), std::move(p)); }
  void add_model(ComponentInfo info, std::shared_ptr<const ModelProvider> p) override { add(ComponentKind::Model, std::move(info), std::move(p)); }
  void add_tokenizer(ComponentInfo info, std::shared_ptr<const TokenizerProvider> p) override { add(ComponentKind::Tokenizer, std::move(info), std::move(p)); }
  void add_dataset(ComponentInfo info, std::shared_ptr<const DatasetProvider> p) override { add(ComponentKind::Dataset, std::move(info), std::move(p)); }
  void add_reward(ComponentInfo info, std::shared_ptr<const RewardProvider> p) override { add(ComponentKind::Reward, std::move(info), std::move(p)); }

  const AlgorithmProvider* algorithm(const std::string& name) const override { return find<AlgorithmProvider>(ComponentKind::Algorithm, name); }
  const BackendProvider* backend(const std::string& name) const override { return find<BackendProvider>(ComponentKind::Backend, name); }
  const ModelProvider* model(const std::string& name) const override { return find<ModelProvider>(ComponentKind::Model, name); }
  const TokenizerProvider* tokenizer(const std::string& name) const override { return find<TokenizerProvider>(ComponentKind::Tokenizer, name); }
  const DatasetProvider* dataset(const std::string& name) const override { return find<DatasetProvider>(ComponentKind::Dataset, name); }
  const RewardProvider* reward(const std::string& name) const override { return find<RewardProvider>(ComponentKind::Reward, name); }

  const ComponentInfo* info(ComponentKind kind, const std::string& name) const override {
    auto it = entries_.find({kind, name});
    return it == entries_.end() ? nullptr : &it->second.info;
  }
  std::vector<std::string> names(ComponentKind kind) const override {
    std::vector<std::string> out;
    for (const auto& [key, entry] : entries_)
      if (key.first == kind) out.push_back(key.second);
    return out;  // std::map keeps them sorted
  }

  const Entry* entry(ComponentKind kind, const std::string& name) const {
    auto it = entries_.find({kind, name});
    return it == entries_.end() ? nullptr : &it->second;
  }
  void commit(Key key, Entry entry) { entries_.emplace(std::move(key), std::move(entry)); }

  // Where additions go while a plugin registers; null outside registration.
  std::vector<std::pair<Key, Entry>>* staging = nullptr;
  std::string staging_path;

 private:
  void add(ComponentKind kind, ComponentInfo info, std::shared_ptr<const void> provider) {
    if (!staging) throw std::logic_error("components can only be added while a plugin registers");
    info.kind = kind;
    Key key{kind, info.name};
    staging->push_back({std::move(key), Entry{std::move(info), std::move(provider), staging_path}});
  }
  template <typename T>
  const T* find(ComponentKind kind, const std::string& name) const {
    const Entry* e = entry(kind, name);
    return e ? static_cast<const T*>(e->provider.get()) : nullptr;
  }

  std::map<Key, Entry> entries_;
};

// Libraries stay loaded until the process exits: providers, vtables and
// static objects of a plugin may be referenced anywhere, so we never dlclose.
std::vector<boost::dll::shared_library>& loaded_libraries() {
  static auto* libraries = new std::vector<boost::dll::shared_library>();
  return *libraries;
}

std::string host_fingerprint() { return ALIGNKIT_BUILD_FINGERPRINT; }

}  // namespace

struct PluginHost::Impl {
  RegistryImpl registry;
  std::vector<PluginRecord> records;
};

PluginHost::PluginHost() : impl_(std::make_unique<Impl>()) {}
PluginHost::~PluginHost() = default;

Registry& PluginHost::registry() { return impl_->registry; }
const Registry& PluginHost::registry() const { return impl_->registry; }
const std::vector<PluginRecord>& PluginHost::plugins() const { return impl_->records; }

std::vector<std::string> PluginHost::search_path(const std::vector<std::string>& cli_dirs) {
  std::vector<std::string> dirs = cli_dirs;
  if (const char* env = std::getenv("ALIGNKIT_PLUGIN_PATH")) {
    std::stringstream list(env);
    std::string dir;
    while (std::getline(list, dir, ':'))
      if (!dir.empty()) dirs.push_back(dir);
  }
  boost::system::error_code error;
  fs::path program = boost::dll::program_location(error).string();
  if (!error) dirs.push_back((program.parent_path().parent_path() / ALIGNKIT_PLUGIN_SUBDIR).string());
  return dirs;
}

void PluginHost::load_dirs(const std::vector<std::string>& dirs) {
  for (const std::string& dir : dirs) {
    std::error_code error;
    if (!fs::is_directory(dir, error)) continue;  // a folder on the path that does not exist is not an error
    std::vector<fs::path> files;
    for (const fs::directory_entry& entry : fs::directory_iterator(dir, error))
      if (entry.path().extension() == ".so" && !entry.is_directory()) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) load_file(file.string());
  }
}

const PluginRecord& PluginHost::load_file(const std::string& file) {
  std::error_code fs_error;
  fs::path absolute = fs::weakly_canonical(fs::absolute(file), fs_error);
  if (fs_error) absolute = fs::absolute(file);
  for (const PluginRecord& record : impl_->records)
    if (record.path == absolute.string()) return record;

  PluginRecord& record = impl_->records.emplace_back();
  record.path = absolute.string();
  auto fail = [&](const std::string& why) -> const PluginRecord& {
    record.status = PluginStatus::Error;
    record.error = record.path + ": " + why;
    return record;
  };

  // Phase 1: validate without running any of the plugin's code.
  if (!fs::is_regular_file(absolute, fs_error)) return fail("not a regular file");
  if (fs::file_size(absolute, fs_error) == 0) return fail("empty file, not a shared library");
  std::vector<std::string> symbols;
  try {
    boost::dll::library_info info(absolute.string());
    symbols = info.symbols();
  } catch (const std::exception& e) {
    return fail(std::string("not a shared library (") + e.what() + ")");
  }
  auto exports = [&](const char* symbol) { return std::find(symbols.begin(), symbols.end(), symbol) != symbols.end(); };
  if (!exports(ALIGNKIT_PLUGIN_ENTRY_SYMBOL))
    return fail("no '" ALIGNKIT_PLUGIN_ENTRY_SYMBOL "' symbol: not an AlignKit plugin");
  record.isolated = exports(ALIGNKIT_PLUGIN_ISOLATION_SYMBOL);

  boost::dll::shared_library library;
  try {
    auto mode = boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local;
    if (record.isolated) mode = mode | boost::dll::load_mode::rtld_deepbind;
    library.load(absolute.string(), mode);
  } catch (const std::exception& e) {
    return fail(std::string("cannot load: ") + e.what());
  }
  loaded_libraries().push_back(library);

  const alignkit_plugin_descriptor* descriptor = nullptr;
  try {
    descriptor = library.get<const alignkit_plugin_descriptor*()>(ALIGNKIT_PLUGIN_ENTRY_SYMBOL)();
  } catch (const std::exception& e) {
    return fail(std::string("cannot read the plugin descriptor: ") + e.what());
  }
  if (!descriptor) return fail("the plugin entry returned no descriptor");
  if (descriptor->abi_version != ALIGNKIT_ABI_VERSION)
    return fail("wrong API version: plugin " + std::to_string(descriptor->abi_version) + ", host " +
                std::to_string(ALIGNKIT_ABI_VERSION));
  if (descriptor->descriptor_size != sizeof(alignkit_plugin_descriptor))
    return fail("descriptor size " + std::to_string(descriptor->descriptor_size) + " does not match the host's " +
                std::to_string(sizeof(alignkit_plugin_descriptor)));
  record.name = descriptor->name ? descriptor->name : "";
  record.version = descriptor->version ? descriptor->version : "";
  record.description = descriptor->description ? descriptor->description : "";
  std::string fingerprint = descriptor->build_fingerprint ? descriptor->build_fingerprint : "";
  if (fingerprint != host_fingerprint())
    return fail("built for a different toolchain: plugin '" + fingerprint + "', host '" + host_fingerprint() + "'");
  if (!descriptor->register_components) return fail("the descriptor has no register function");

  // Phase 2: let the plugin register, into a staging area committed only if all is well.
  std::vector<std::pair<Key, Entry>> staged;
  RegistryImpl& registry = impl_->registry;
  registry.staging = &staged;
  registry.staging_path = record.path;
  char message[1024] = {0};
  int status = descriptor->register_components(&registry, message, sizeof message);
  registry.staging = nullptr;
  if (status != 0) return fail(std::string("registration failed: ") + (message[0] ? message : "no reason given"));

  for (size_t i = 0; i < staged.size(); ++i) {
    const Key& key = staged[i].first;
    std::string what = std::string(component_kind_name(key.first)) + " '" + key.second + "'";
    if (const Entry* existing = registry.entry(key.first, key.second))
      return fail("duplicate " + what + ": already provided by " + existing->plugin_path);
    for (size_t j = 0; j < i; ++j)
      if (staged[j].first == key) return fail("registers " + what + " twice");
  }
  for (auto& [key, entry] : staged) {
    record.components.push_back(key);
    registry.commit(key, std::move(entry));
  }
  record.status = PluginStatus::Ok;
  return record;
}

const PluginRecord* PluginHost::provider_of(ComponentKind kind, const std::string& name) const {
  for (const PluginRecord& record : impl_->records)
    for (const auto& component : record.components)
      if (component.first == kind && component.second == name) return &record;
  // A plugin that failed to load cannot say what it provides; match it by its descriptor or file name.
  for (const PluginRecord& record : impl_->records) {
    if (record.status == PluginStatus::Ok) continue;
    std::string stem = fs::path(record.path).stem().string();
    if (record.name == name || stem == "libalignkit_" + name || stem == "lib" + name || stem == name) return &record;
  }
  return nullptr;
}

std::unique_ptr<PluginHost> load_plugins(const std::vector<std::string>& cli_dirs) {
  auto host = std::make_unique<PluginHost>();
  host->load_dirs(PluginHost::search_path(cli_dirs));
  return host;
}

}  // namespace alignkit::core
