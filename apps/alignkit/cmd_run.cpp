// `alignkit run` and `alignkit validate`: load, check and run a pipeline.
#include <iostream>

#include <boost/program_options/variables_map.hpp>

#include "alignkit/core/pipeline.hpp"
#include "alignkit/core/runner.hpp"
#include "commands.hpp"

namespace po = boost::program_options;

namespace alignkit::cli {
namespace {

struct PipelineOptions {
  PluginOptions plugins;
  std::string file;
  std::vector<std::string> overrides;
  bool resume = false;
};

void add_pipeline_options(po::options_description& options, PipelineOptions& values) {
  add_plugin_options(options, values.plugins);
  options.add_options()("pipeline", po::value(&values.file)->required(), "the pipeline TOML file (positional)")(
      "set", po::value(&values.overrides)->composing(),
      "override a setting, type-checked like the file: --set stages.dpo.beta=0.2 (repeatable)");
}

// Loads plugins and the pipeline and checks everything; prints every problem.
// Returns nullopt-like false when invalid.
bool load_and_check(const PipelineOptions& options, std::unique_ptr<core::PluginHost>& host, core::Pipeline& pipeline) {
  host = open_plugins(options.plugins);
  try {
    pipeline = core::Pipeline::load(options.file, options.overrides);
  } catch (const ConfigError& e) {
    std::cerr << e.what() << '\n';
    return false;
  }
  std::vector<core::Diagnostic> problems = pipeline.resolve(*host);
  for (const core::Diagnostic& problem : problems) std::cerr << problem.str() << '\n';
  if (!problems.empty()) {
    std::cerr << "alignkit: " << problems.size() << (problems.size() == 1 ? " problem" : " problems") << " in "
              << options.file << '\n';
    return false;
  }
  return true;
}

}  // namespace

int cmd_validate(const std::vector<std::string>& args) {
  po::options_description options("validate");
  PipelineOptions values;
  add_pipeline_options(options, values);
  po::variables_map vm;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit validate PIPELINE.toml [--set KEY=VALUE]...", options, {"pipeline"}, vm,
                          exit_code))
    return exit_code;
  std::unique_ptr<core::PluginHost> host;
  core::Pipeline pipeline;
  if (!load_and_check(values, host, pipeline)) return kExitUsage;
  std::cout << values.file << ": ok\n";
  for (const core::StagePlan& stage : pipeline.stages()) {
    std::cout << "  " << stage.name << ": " << stage.algorithm << " on " << stage.backend;
    if (!stage.depends_on.empty()) {
      std::cout << " (after";
      for (const std::string& dep : stage.depends_on) std::cout << ' ' << dep;
      std::cout << ')';
    }
    std::cout << " -> " << stage.dir << '\n';
  }
  return kExitOk;
}

int cmd_run(const std::vector<std::string>& args) {
  po::options_description options("run");
  PipelineOptions values;
  add_pipeline_options(options, values);
  options.add_options()("resume", po::bool_switch(&values.resume),
                        "continue each unfinished stage from its newest committed checkpoint (an error if none)");
  po::variables_map vm;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit run PIPELINE.toml [--set KEY=VALUE]... [--resume]", options, {"pipeline"},
                          vm, exit_code))
    return exit_code;
  std::unique_ptr<core::PluginHost> host;
  core::Pipeline pipeline;
  if (!load_and_check(values, host, pipeline)) return kExitUsage;
  try {
    core::RunOptions run_options;
    run_options.resume = values.resume;
    core::RunOutcome outcome = core::run_pipeline(pipeline, *host, run_options);
    return outcome == core::RunOutcome::Preempted ? kExitPreempted : kExitOk;
  } catch (const ConfigError& e) {
    std::cerr << e.what() << '\n';
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "alignkit: " << e.what() << '\n';
    return kExitFailure;
  }
}

}  // namespace alignkit::cli
