// `alignkit plugins list` and `alignkit plugins info`.
#include <iomanip>
#include <iostream>

#include <boost/program_options/variables_map.hpp>
#include <nlohmann/json.hpp>

#include "alignkit/core/config_check.hpp"
#include "commands.hpp"

namespace po = boost::program_options;

namespace alignkit::cli {
namespace {

const ComponentKind kAllKinds[] = {ComponentKind::Algorithm, ComponentKind::Backend, ComponentKind::Model,
                                   ComponentKind::Tokenizer, ComponentKind::Dataset, ComponentKind::Reward};

std::string components_text(const core::PluginRecord& record) {
  std::string out;
  for (const auto& [kind, name] : record.components)
    out += (out.empty() ? "" : ", ") + std::string(component_kind_name(kind)) + " " + name;
  return out;
}

void print_settings(const std::vector<SettingSpec>& settings, const std::string& prefix) {
  for (const SettingSpec& spec : settings) {
    std::string type = core::spec_type_name(spec);
    std::string def = spec.required ? "(required)" : core::format_value(spec.default_value);
    std::cout << "  " << std::left << std::setw(34) << (prefix + spec.name) << std::setw(30) << type << std::setw(14)
              << def << spec.doc;
    if (!spec.choices.empty()) {
      std::cout << " [";
      for (size_t i = 0; i < spec.choices.size(); ++i) std::cout << (i ? ", " : "") << spec.choices[i];
      std::cout << "]";
    }
    std::cout << '\n';
    if (spec.type == ValueType::Table) print_settings(spec.fields, prefix + spec.name + ".");
  }
}

}  // namespace

int cmd_plugins_list(const std::vector<std::string>& args) {
  po::options_description options("plugins list");
  PluginOptions plugin_options;
  add_plugin_options(options, plugin_options);
  options.add_options()("json", "print a JSON array (name, kind, version, path, status, error)");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit plugins list [--json] [--plugin-dir DIR]...", options, {}, values, exit_code))
    return exit_code;

  auto host = open_plugins(plugin_options);
  if (values.count("json")) {
    nlohmann::json list = nlohmann::json::array();
    for (const core::PluginRecord& record : host->plugins()) {
      bool ok = record.status == core::PluginStatus::Ok;
      std::string kinds;
      nlohmann::json components = nlohmann::json::array();
      for (const auto& [kind, name] : record.components) {
        components.push_back({{"kind", component_kind_name(kind)}, {"name", name}});
        std::string k = component_kind_name(kind);
        if (kinds.find(k) == std::string::npos) kinds += (kinds.empty() ? "" : ",") + k;
      }
      list.push_back({{"name", record.name},
                      {"kind", kinds},
                      {"version", record.version},
                      {"path", record.path},
                      {"status", ok ? "ok" : "error"},
                      {"error", ok ? nlohmann::json(nullptr) : nlohmann::json(record.error)},
                      {"components", components}});
    }
    std::cout << list.dump(2) << '\n';
    return kExitOk;
  }
  if (host->plugins().empty()) {
    std::cout << "no plugins found in:\n";
    for (const std::string& dir : core::PluginHost::search_path(plugin_options.plugin_dirs)) std::cout << "  " << dir << '\n';
    return kExitOk;
  }
  size_t name_width = 8;
  for (const core::PluginRecord& record : host->plugins()) name_width = std::max(name_width, record.name.size() + 2);
  for (const core::PluginRecord& record : host->plugins()) {
    if (record.status == core::PluginStatus::Ok) {
      std::cout << "ok     " << std::left << std::setw(static_cast<int>(name_width)) << record.name << std::setw(8)
                << record.version
                << components_text(record) << "\n       " << record.path << '\n';
    } else {
      std::cout << "error  " << record.error << '\n';
    }
  }
  return kExitOk;
}

int cmd_plugins_info(const std::vector<std::string>& args) {
  po::options_description options("plugins info");
  PluginOptions plugin_options;
  add_plugin_options(options, plugin_options);
  std::string name;
  options.add_options()("name", po::value(&name)->required(), "component name (positional)");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit plugins info NAME [--plugin-dir DIR]...", options, {"name"}, values, exit_code))
    return exit_code;

  auto host = open_plugins(plugin_options);
  bool found = false;
  for (ComponentKind kind : kAllKinds) {
    const ComponentInfo* info = host->registry().info(kind, name);
    if (!info) continue;
    found = true;
    const core::PluginRecord* record = host->provider_of(kind, name);
    std::cout << component_kind_name(kind) << " " << info->name << " " << info->version << " - " << info->description
              << "\n  from " << (record ? record->path : "?") << "\n\nsettings:\n";
    if (info->settings.empty()) std::cout << "  (none)\n";
    print_settings(info->settings, "");
    std::cout << '\n';
  }
  if (!found) {
    std::vector<std::string> all;
    for (ComponentKind kind : kAllKinds)
      for (const std::string& n : host->registry().names(kind)) all.push_back(n);
    std::string suggestion = core::closest_name(name, all);
    std::cerr << "alignkit: no component named '" << name << "'"
              << (suggestion.empty() ? "" : "; did you mean '" + suggestion + "'?") << '\n';
    return kExitUsage;
  }
  return kExitOk;
}

}  // namespace alignkit::cli
