// Option parsing and plugin loading shared by the commands.
#include <iostream>

#include <boost/program_options/parsers.hpp>
#include <boost/program_options/positional_options.hpp>
#include <boost/program_options/variables_map.hpp>

#include <ATen/Parallel.h>

#include <thread>

#include "alignkit/core/config_check.hpp"
#include "alignkit/registry.hpp"
#include "commands.hpp"

namespace po = boost::program_options;

namespace alignkit::cli {

void add_plugin_options(po::options_description& options, PluginOptions& values) {
  options.add_options()("plugin-dir", po::value(&values.plugin_dirs)->composing(),
                        "also search this folder for plugins, before ALIGNKIT_PLUGIN_PATH (repeatable)");
}

std::unique_ptr<core::PluginHost> open_plugins(const PluginOptions& options) {
  return core::load_plugins(options.plugin_dirs);
}

bool parse_command_line(const std::vector<std::string>& args, const char* usage, po::options_description& options,
                        const std::vector<std::string>& positional_names, po::variables_map& values, int& exit_code) {
  options.add_options()("help,h", "show this help");
  po::positional_options_description positional;
  for (const std::string& name : positional_names) positional.add(name.c_str(), 1);
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), values);
    if (values.count("help")) {
      std::cout << "usage: " << usage << "\n\n" << options << '\n';
      exit_code = kExitOk;
      return false;
    }
    po::notify(values);
  } catch (const po::error& e) {
    std::cerr << "alignkit: " << e.what() << "\nusage: " << usage << '\n';
    exit_code = kExitUsage;
    return false;
  }
  return true;
}

std::unique_ptr<Dataset> load_records(const core::PluginHost& host, const std::string& path, const Tokenizer* tokenizer,
                                      const std::string& chat_template) {
  const Registry& registry = host.registry();
  const DatasetProvider* provider = registry.dataset("jsonl");
  if (!provider) throw ConfigError("the jsonl dataset plugin is not available (alignkit plugins list)");
  // Fill the plugin's defaults as a pipeline's data table would get them
  // (DatasetProvider::load reads the options; it does not keep the view).
  ConfigValue table = ConfigValue::empty_table();
  table.set("path", ConfigValue::of_string(path));
  if (!chat_template.empty()) table.set("chat_template", ConfigValue::of_string(chat_template));
  std::vector<core::Diagnostic> problems;
  core::check_table(table, "data", registry.info(ComponentKind::Dataset, "jsonl")->settings, problems);
  if (!problems.empty()) throw ConfigError(core::join(problems));
  DataRequest request;
  request.path = path;
  request.options = ConfigView(&table, "data");
  request.tokenizer = tokenizer;
  return provider->load(request);
}

void set_threads(int64_t threads) {
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(threads));
}

}  // namespace alignkit::cli
