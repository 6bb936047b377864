// The judges of the synthesize stage and how their verdicts become pairs.
//
// A judge gives, for the completions of one prompt, a matrix of margins:
// margin[i][j] > 0 means completion i is better than j by that much, and
// margin[j][i] == -margin[i][j]. Scoring judges (a reward model, a rule
// reward) give margin[i][j] = score[i] - score[j]; the LM judge compares each
// pair in both orders.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "alignkit/model.hpp"
#include "alignkit/tokenizer.hpp"
#include "reward_set.hpp"

namespace alignkit::synthesize {

using MarginMatrix = std::vector<std::vector<double>>;  // (N, N)

struct Candidates {
  std::string prompt_text;               // as the dataset rendered it
  std::string answer;                    // reference answer, when the data has one
  std::vector<std::string> completions;  // N decoded completions
};

class Judge {
 public:
  virtual ~Judge() = default;
  virtual MarginMatrix judge(const Candidates& candidates) = 0;
};

// Scores from the stage's reward plugins (rule rewards such as exact_answer):
// the weighted sum of a RewardSet, as GRPO's total reward.
std::unique_ptr<Judge> rule_judge(online::RewardSet rewards);

// Scores from a scalar-head reward model: its value at the last token of
// BOS + prompt + completion + EOS, encoded with `tokenizer`.
std::unique_ptr<Judge> reward_model_judge(std::shared_ptr<CausalLM> model, std::unique_ptr<Tokenizer> tokenizer,
                                          c10::Device device, int64_t batch_size);

// An LM judge: `template_text` with {prompt}, {a} and {b} filled in, then the
// log-probabilities of the continuations " A" and " B". For completions x, y:
// d(x, y) = log p(A) - log p(B) with x shown as A; the margin of x over y is
// (d(x, y) - d(y, x)) / 2, which cancels a preference for a position.
std::unique_ptr<Judge> lm_judge(std::shared_ptr<CausalLM> model, std::unique_ptr<Tokenizer> tokenizer,
                                std::string template_text, c10::Device device, int64_t batch_size);

// Fills {prompt}, {a}, {b}; throws std::invalid_argument when one is missing.
std::string fill_template(const std::string& template_text, const std::string& prompt, const std::string& a,
                          const std::string& b);

struct Pair {
  size_t chosen = 0, rejected = 0;
  double margin = 0.0;
};

// The pairs to keep: "best-vs-worst" (the completion with the highest total
// margin against the one with the lowest) or "all-pairs" (every pair), each
// kept only when its margin exceeds `threshold` and the texts differ.
std::vector<Pair> select_pairs(const MarginMatrix& margins, const std::vector<std::string>& completions,
                               const std::string& strategy, double threshold);

}  // namespace alignkit::synthesize
