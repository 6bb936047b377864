// The alignkit CLI's commands: one file per command group, one entry each in
// the table in main.cpp. Every command parses its own options (Boost.Program_options)
// and returns the process exit code.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/variables_map.hpp>

#include "alignkit/core/plugin_host.hpp"
#include "alignkit/dataset.hpp"
#include "alignkit/tokenizer.hpp"

namespace alignkit::cli {

// Exit codes, documented in docs/cli.md.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;     // runtime failure
constexpr int kExitUsage = 2;       // usage, configuration or validation error
constexpr int kExitPreempted = 75;  // SIGINT/SIGTERM: the step finished, a checkpoint was saved

// `args` are the words after the command name ("run", "model init", ...).
using CommandFn = int (*)(const std::vector<std::string>& args);

struct Command {
  const char* name;     // "run", "plugins list", "model init"
  const char* summary;  // one line for `alignkit --help`
  CommandFn fn;
};

// Options every command that loads plugins accepts.
struct PluginOptions {
  std::vector<std::string> plugin_dirs;
};
void add_plugin_options(boost::program_options::options_description& options, PluginOptions& values);
// Loads plugins from the search path (errors are kept in the records, never thrown).
std::unique_ptr<core::PluginHost> open_plugins(const PluginOptions& options);

// Parses `args` against `options` (and positional names, in order). Prints
// help and returns false with `exit_code` set when the caller should stop.
bool parse_command_line(const std::vector<std::string>& args, const char* usage,
                        boost::program_options::options_description& options,
                        const std::vector<std::string>& positional_names,
                        boost::program_options::variables_map& values, int& exit_code);

// Reads a JSONL data file with the `jsonl` dataset plugin and its default
// settings (chat template `chat_template` when not empty). Throws ConfigError.
std::unique_ptr<Dataset> load_records(const core::PluginHost& host, const std::string& path, const Tokenizer* tokenizer,
                                      const std::string& chat_template = "");
// Sets LibTorch's intra-op threads (0: every core).
void set_threads(int64_t threads);

int cmd_run(const std::vector<std::string>& args);
int cmd_launch(const std::vector<std::string>& args);
int cmd_validate(const std::vector<std::string>& args);
int cmd_plugins_list(const std::vector<std::string>& args);
int cmd_plugins_info(const std::vector<std::string>& args);
int cmd_tokenizer_train(const std::vector<std::string>& args);
int cmd_model_init(const std::vector<std::string>& args);
int cmd_model_merge(const std::vector<std::string>& args);
int cmd_score(const std::vector<std::string>& args);
int cmd_evaluate(const std::vector<std::string>& args);
int cmd_generate(const std::vector<std::string>& args);
int cmd_data_annotate(const std::vector<std::string>& args);
int cmd_data_ratings_to_pairs(const std::vector<std::string>& args);
int cmd_data_synthesize(const std::vector<std::string>& args);
int cmd_data_validate(const std::vector<std::string>& args);
int cmd_data_stats(const std::vector<std::string>& args);

}  // namespace alignkit::cli
