// Runs a resolved pipeline: one stage after another in dependency order, each
// in its own folder, skipping stages that already finished with the same
// settings, and stopping cleanly on SIGINT/SIGTERM.
#pragma once

#include <memory>
#include <string>

#include "alignkit/model.hpp"
#include "alignkit/registry.hpp"
#include "alignkit/tokenizer.hpp"

namespace alignkit::core {

class Pipeline;
class PluginHost;

struct RunOptions {
  bool resume = false;  // every unfinished stage must continue from a committed checkpoint
};

enum class RunOutcome { Completed, Preempted };

// Throws ConfigError for bad input found while setting a stage up (exit code 2)
// and std::runtime_error for failures while running (exit code 1).
RunOutcome run_pipeline(const Pipeline& pipeline, PluginHost& host, const RunOptions& options);

// The name of the marker file that says a stage finished; it holds the stage's fingerprint.
inline constexpr const char* kStageDoneMarker = "DONE";

// Loads a Hugging Face model folder with the model plugin whose model_types()
// include config.json's `model_type`. Throws std::runtime_error naming the folder.
std::shared_ptr<CausalLM> load_model(const Registry& registry, const std::string& dir, const ModelOptions& options);
// Opens the tokenizer file of a model folder with the first tokenizer plugin
// whose file is there; nullptr when the folder has none. Throws
// std::runtime_error naming both files and sizes when the tokenizer has more
// ids than the folder's config.json `vocab_size`.
std::unique_ptr<Tokenizer> load_tokenizer(const Registry& registry, const std::string& dir);

}  // namespace alignkit::core
