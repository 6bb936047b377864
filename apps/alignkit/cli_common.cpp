// Option parsing and plugin loading shared by the commands.
#include <iostream>

#include <boost/program_options/parsers.hpp>
#include <boost/program_options/positional_options.hpp>
#include <boost/program_options/variables_map.hpp>

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

}  // namespace alignkit::cli
