// Reward-model folder check (see reward_model_check.hpp).
#include "reward_model_check.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace alignkit::reward {
namespace {

const char* const kHowToTrain =
    "; train one first with the `reward` algorithm (a stage with algorithm = \"reward\" on preference data, "
    "model = the base or SFT model; see docs/algorithms/reward.md) and name its output, e.g. "
    "reward_model = \"stages.reward.output\"";

}  // namespace

void check_reward_model_folder(const std::string& dir, const std::string& where) {
  const fs::path config_path = fs::path(dir) / "config.json";
  std::ifstream in(config_path);
  if (!in) throw ConfigError(where + ": " + config_path.string() + " cannot be read" + kHowToTrain);
  nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) throw ConfigError(where + ": " + config_path.string() + " is not a JSON object");

  std::string architectures;
  bool classifier = false;
  if (config.contains("architectures") && config["architectures"].is_array())
    for (const auto& name : config["architectures"]) {
      if (!name.is_string()) continue;
      const std::string text = name.get<std::string>();
      architectures += (architectures.empty() ? "" : ", ") + text;
      classifier = classifier || text.find("ForSequenceClassification") != std::string::npos;
    }
  if (!classifier)
    throw ConfigError(where + ": " + dir + " is not a reward model: config.json lists architectures [" +
                      architectures + "], not a *ForSequenceClassification model with a scalar `score` head" +
                      kHowToTrain);

  int64_t labels = -1;
  if (config.contains("num_labels") && config["num_labels"].is_number_integer())
    labels = config["num_labels"].get<int64_t>();
  else if (config.contains("id2label") && config["id2label"].is_object())
    labels = static_cast<int64_t>(config["id2label"].size());
  else
    labels = 2;  // transformers' default when config.json names no labels
  if (labels != 1)
    throw ConfigError(where + ": " + dir + " is a sequence classifier with " + std::to_string(labels) +
                      " labels, not a reward model (one label, a scalar score)" + kHowToTrain);
}

std::string checked_reward_model_dir(StageContext& context) {
  std::string dir = context.model_dir("reward_model");
  if (!dir.empty()) check_reward_model_folder(dir, context.settings().locate("reward_model"));
  return dir;
}

}  // namespace alignkit::reward
