// `alignkit data synthesize`: the `synthesize` stage run on its own. The
// options become a one-stage pipeline in a temporary run folder (so the
// command and a pipeline stage share one implementation, its checks and its
// messages); the stage's data.jsonl is then copied to --out atomically.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <boost/program_options/value_semantic.hpp>

#include "alignkit/core/atomic_file.hpp"
#include "alignkit/core/pipeline.hpp"
#include "alignkit/core/runner.hpp"
#include "commands.hpp"
#include "data_common.hpp"

namespace fs = std::filesystem;
namespace po = boost::program_options;

namespace alignkit::cli {
namespace {

// A TOML basic string.
std::string toml_string(const std::string& text) {
  std::ostringstream out;
  out << '"';
  for (unsigned char c : text) {
    switch (c) {
      case '"': out << "\\\""; break;
      case '\\': out << "\\\\"; break;
      case '\n': out << "\\n"; break;
      case '\t': out << "\\t"; break;
      case '\r': out << "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) out << "\\u" << std::hex << std::setw(4) << std::setfill('0') << static_cast<int>(c) << std::dec;
        else out << c;
    }
  }
  out << '"';
  return out.str();
}

std::string absolute(const std::string& path) { return fs::absolute(path).lexically_normal().string(); }

}  // namespace

int cmd_data_synthesize(const std::vector<std::string>& args) {
  po::options_description options("data synthesize");
  PluginOptions plugin_options;
  add_plugin_options(options, plugin_options);
  std::string model, data, out, judge = "reward_model", reward_model, judge_model, judge_template, pairs = "best-vs-worst";
  std::vector<std::string> rewards;
  int64_t num_completions = 4, max_new_tokens = 32, top_k = 0, seed = 42, threads = 0;
  double temperature = 1.0, top_p = 1.0, margin_threshold = 0.0;
  bool keep_run = false;
  options.add_options()("model", po::value(&model)->required(), "the policy that writes the completions (model folder)")(
      "data", po::value(&data)->required(), "JSONL prompts (prompt, and answer for rule rewards)")(
      "out", po::value(&out)->required(), "preference pairs (prompt, chosen, rejected, margin, judge) written here")(
      "judge", po::value(&judge)->default_value(judge), "reward_model, rule or lm")(
      "reward", po::value(&rewards)->composing(),
      "for --judge rule: a reward plugin (e.g. exact_answer) with its default settings (repeatable; scores add up)")(
      "reward-model", po::value(&reward_model), "for --judge reward_model: a scalar-head model folder")(
      "judge-model", po::value(&judge_model), "for --judge lm: the judge model folder")(
      "judge-template", po::value(&judge_template), "for --judge lm: the judge prompt with {prompt}, {a}, {b}")(
      "num-completions", po::value(&num_completions)->default_value(num_completions), "completions per prompt")(
      "max-new-tokens", po::value(&max_new_tokens)->default_value(max_new_tokens), "tokens per completion at most")(
      "temperature", po::value(&temperature)->default_value(temperature), "sampling temperature")(
      "top-k", po::value(&top_k)->default_value(top_k), "top-k sampling (0: off)")(
      "top-p", po::value(&top_p)->default_value(top_p), "nucleus sampling (1: off)")(
      "pairs", po::value(&pairs)->default_value(pairs), "best-vs-worst or all-pairs")(
      "margin-threshold", po::value(&margin_threshold)->default_value(margin_threshold), "keep pairs whose margin is above this")(
      "seed", po::value(&seed)->default_value(seed), "sampling seed")(
      "threads", po::value(&threads)->default_value(0), "CPU threads (0: every core)")(
      "keep-run", po::bool_switch(&keep_run), "keep the temporary run folder (logs, summary.json) and print its path");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args,
                          "alignkit data synthesize --model DIR --data PROMPTS.jsonl --out PAIRS.jsonl "
                          "[--judge reward_model|rule|lm] [--reward NAME | --reward-model DIR | --judge-model DIR]",
                          options, {}, values, exit_code))
    return exit_code;
  try {
    check_output_path(out);
  } catch (const ConfigError& e) {
    std::cerr << "alignkit: " << e.what() << '\n';
    return kExitUsage;
  }

  std::string run_dir = (fs::temp_directory_path() / "alignkit-synthesize-XXXXXX").string();
  if (!::mkdtemp(run_dir.data())) {
    std::cerr << "alignkit: cannot create a temporary run folder in " << fs::temp_directory_path() << '\n';
    return kExitFailure;
  }
  std::ostringstream toml;
  toml << "# Written by alignkit data synthesize from its options.\n[run]\noutput_dir = " << toml_string(run_dir)
       << "\nseed = " << seed << "\n\n[models.policy]\npath = " << toml_string(absolute(model)) << '\n';
  if (!reward_model.empty()) toml << "\n[models.reward]\npath = " << toml_string(absolute(reward_model)) << '\n';
  if (!judge_model.empty()) toml << "\n[models.judge]\npath = " << toml_string(absolute(judge_model)) << '\n';
  toml << "\n[stages.synthesize]\nalgorithm = \"synthesize\"\nmodel = \"policy\"\n";
  if (!reward_model.empty()) toml << "reward_model = \"reward\"\n";
  if (!judge_model.empty()) toml << "judge_model = \"judge\"\n";
  toml << "data = { path = " << toml_string(absolute(data)) << " }\njudge = " << toml_string(judge)
       << "\nnum_completions = " << num_completions << "\nmax_new_tokens = " << max_new_tokens
       << "\ntemperature = " << std::setprecision(17) << temperature << "\ntop_k = " << top_k << "\ntop_p = " << top_p
       << "\npairs = " << toml_string(pairs) << "\nmargin_threshold = " << margin_threshold << "\nthreads = " << threads
       << '\n';
  if (!judge_template.empty()) toml << "judge_template = " << toml_string(judge_template) << '\n';
  for (const std::string& name : rewards) toml << "\n[[stages.synthesize.rewards]]\nname = " << toml_string(name) << '\n';
  const std::string pipeline_file = (fs::path(run_dir) / "synthesize.toml").string();
  std::ofstream(pipeline_file) << toml.str();

  int result = kExitOk;
  try {
    auto host = open_plugins(plugin_options);
    core::Pipeline pipeline = core::Pipeline::load(pipeline_file, {});
    std::vector<core::Diagnostic> problems = pipeline.resolve(*host);
    for (const core::Diagnostic& problem : problems)
      std::cerr << "alignkit: " << problem.message << " (from the options)\n";
    if (!problems.empty()) {
      result = kExitUsage;
    } else if (core::run_pipeline(pipeline, *host, {}) == core::RunOutcome::Preempted) {
      result = kExitPreempted;
    } else {
      const fs::path stage_dir = fs::path(run_dir) / "synthesize";
      std::ifstream produced(core::Pipeline::stage_data_file(stage_dir.string()), std::ios::binary);
      std::string text((std::istreambuf_iterator<char>(produced)), {});
      core::write_file_atomic(out, text);
      std::ifstream summary(stage_dir / "final" / "summary.json");
      std::cout << std::string((std::istreambuf_iterator<char>(summary)), {}) << "pairs written to " << out << '\n';
    }
  } catch (const ConfigError& e) {
    std::cerr << "alignkit: " << e.what() << '\n';
    result = kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "alignkit: " << e.what() << '\n';
    result = kExitFailure;
  }
  if (keep_run) std::cerr << "run folder kept: " << run_dir << '\n';
  else fs::remove_all(run_dir);
  return result;
}

}  // namespace alignkit::cli
