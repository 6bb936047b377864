// The rewards an online stage names, built through the registry and combined
// with weights. In a pipeline:
//
//   [[stages.grpo.rewards]]
//   name = "exact_answer"      # a reward plugin (alignkit plugins list)
//   weight = 1.0               # its share of the total (default 1.0)
//   default_score = 0.0        # the score of a completion the reward throws on (default 0.0)
//   label = "answer"           # metric name rewards/<label>/... (default: name)
//   extract = "first_number"   # ... and the reward's own settings
//
// Each table is checked against the reward plugin's ComponentInfo settings
// plus the four common keys above when the stage is set up: an unknown reward
// or key is a ConfigError at its file:line. A reward that throws on a batch is
// retried one completion at a time; every completion it still throws on
// scores default_score, is counted (metric rewards/<label>/failures) and
// logged as a warning, never a crash.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "alignkit/config.hpp"
#include "alignkit/reward.hpp"
#include "alignkit/training.hpp"

namespace alignkit::online {

// The `rewards` setting an algorithm declares: an array of tables (the host
// checks its shape; RewardSet::create checks each table).
SettingSpec rewards_setting(const std::string& doc);

struct RewardScores {
  std::vector<std::string> labels;      // one per reward, in the order the stage names them
  at::Tensor per_reward;                // (N, R) float32: each reward's score (default_score where it threw)
  at::Tensor total;                     // (N) float32: sum of weight * score
  std::vector<int64_t> failures;        // per reward: completions it threw on
  // rewards/<label>/mean, rewards/<label>/std (unbiased, as torch.std) and
  // rewards/<label>/failures (the count in this batch).
  Metrics metrics() const;
};

class RewardSet {
 public:
  // Builds the rewards of the stage's `key` array. Throws ConfigError for a
  // missing or empty array (when `required`), an unknown reward name, or a
  // reward table with unknown keys or wrong types (file:line of the key).
  static RewardSet create(StageContext& context, const std::string& key = "rewards", bool required = true);

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  const std::vector<std::string>& labels() const { return labels_; }
  const std::vector<double>& weights() const { return weights_; }

  // Scores every input with every reward.
  RewardScores score(const std::vector<RewardInput>& inputs);

 private:
  struct Entry {
    std::string name;
    double default_score = 0.0;
    std::unique_ptr<Reward> reward;
  };
  StageContext* context_ = nullptr;
  // The checked reward tables: a deque so the views rewards keep stay valid.
  std::shared_ptr<std::deque<ConfigValue>> tables_;
  std::vector<Entry> entries_;
  std::vector<std::string> labels_;
  std::vector<double> weights_;
};

}  // namespace alignkit::online
