// Reward interface: scores completions for online RL (rule-based functions,
// a trained reward model, a judge model).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "alignkit/config.hpp"

namespace alignkit {

struct RewardInput {
  std::string prompt;
  std::string completion;
  std::string answer;  // reference answer, when the dataset has one
};

class Reward {
 public:
  virtual ~Reward() = default;
  virtual std::vector<double> score(const std::vector<RewardInput>& batch) = 0;
};

class RewardProvider {
 public:
  virtual ~RewardProvider() = default;
  virtual std::unique_ptr<Reward> create(const ConfigView& settings) const = 0;
};

}  // namespace alignkit
