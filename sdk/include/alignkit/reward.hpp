// Reward interface: scores completions for online RL (rule-based functions,
// a trained reward model, a judge model).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "alignkit/config.hpp"

namespace alignkit {

class StageContext;

struct RewardInput {
  std::string prompt;
  std::string completion;
  std::string answer;  // reference answer, when the dataset has one
};

class Reward {
 public:
  virtual ~Reward() = default;
  // One score per input. May throw on an input it cannot score; the caller
  // counts that and substitutes its configured default.
  virtual std::vector<double> score(const std::vector<RewardInput>& batch) = 0;
};

class RewardProvider {
 public:
  virtual ~RewardProvider() = default;
  // `settings` is the reward's own table (checked against its ComponentInfo
  // settings); `context` is the stage using it: model folders, loaders, logging.
  // Throws ConfigError for bad settings or a model that does not fit the policy.
  virtual std::unique_ptr<Reward> create(const ConfigView& settings, StageContext& context) const = 0;
};

}  // namespace alignkit
