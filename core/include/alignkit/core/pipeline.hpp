// The pipeline graph: a TOML file of [run], [models.*] and [stages.*]. Loading
// applies --set overrides; resolving checks every table against the plugins'
// declared settings (all problems at once, with locations), fills defaults,
// and orders the stages by their `stages.X.output` edges.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "alignkit/config.hpp"
#include "alignkit/core/config_check.hpp"

namespace alignkit::core {

class PluginHost;

// The stage keys that name a model: a [models.X] entry or "stages.X.output".
extern const std::vector<std::string> kModelRoles;

struct StagePlan {
  std::string name;
  std::string algorithm;
  std::string backend;
  std::string dir;                                 // <run.output_dir>/<name>
  std::vector<std::string> depends_on;             // stage names
  std::map<std::string, std::string> model_dirs;   // role -> resolved folder
};

class Pipeline {
 public:
  // Parses `file` and applies `overrides` ("stages.dpo.beta=0.2"). Throws ConfigError.
  static Pipeline load(const std::string& file, const std::vector<std::string>& overrides);

  // Checks the pipeline against the loaded plugins, fills defaults and orders
  // the stages. Returns every problem found; empty means valid.
  std::vector<Diagnostic> resolve(const PluginHost& host);

  const std::string& file() const { return file_; }
  const ConfigValue& root() const { return root_; }
  std::string output_dir() const;
  // In run order (valid after a successful resolve()).
  const std::vector<StagePlan>& stages() const { return stages_; }
  ConfigView stage_settings(const std::string& stage) const;
  // A digest of the stage's resolved settings and those of the stages it
  // depends on: a finished stage is skipped only when this is unchanged.
  std::string stage_fingerprint(const std::string& stage) const;
  // The whole resolved pipeline as TOML (every default filled in).
  std::string resolved_toml() const;

  // The folder a stage's final model is written to.
  static std::string stage_output_dir(const std::string& stage_dir) { return stage_dir + "/final"; }
  // The dataset a data-producing stage (synthesize) writes into its output
  // folder; "stages.X.output" as a later stage's data.path resolves to it.
  static std::string stage_data_file(const std::string& stage_dir) { return stage_output_dir(stage_dir) + "/data.jsonl"; }

 private:
  std::string file_;
  ConfigValue root_;
  std::vector<StagePlan> stages_;
};

}  // namespace alignkit::core
