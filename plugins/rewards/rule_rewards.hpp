// Rule-based rewards for verifiable tasks, as plain functions of a
// RewardInput (no model): exact_answer extracts an answer from the completion
// and compares it with the example's reference answer, regex_match scores a
// pattern's presence, length_penalty penalises length beyond a target.
#pragma once

#include <optional>
#include <regex>
#include <string>

#include "alignkit/reward.hpp"

namespace alignkit::rewards {

// How exact_answer finds the answer in a completion.
enum class Extraction {
  FirstNumber,  // the first number ("-3", "4.5", "1,000")
  LastNumber,   // the last number ("... so the answer is 7")
  Regex,        // capture group 1 of `pattern` (the whole match when it has no group)
  AfterMarker,  // the text after the last occurrence of `marker`, up to the end of its line
  Full,         // the whole completion
};

// "first_number", "last_number", "regex", "after_marker", "full"; throws std::invalid_argument otherwise.
Extraction parse_extraction(const std::string& name);

struct ExactAnswerOptions {
  Extraction extraction = Extraction::FirstNumber;
  std::string pattern;         // Regex
  std::string marker;          // AfterMarker
  bool ignore_case = false;    // compare text case-insensitively
  double correct_score = 1.0;
  double wrong_score = 0.0;
};

// The answer found in `completion`, trimmed; nullopt when there is none.
std::optional<std::string> extract_answer(const std::string& completion, const ExactAnswerOptions& options,
                                          const std::regex* pattern);

// Two answers agree when both parse as numbers of equal value ("7", "7.0",
// "1,000" and "1000"), else when their trimmed texts are equal (ignoring case
// when asked).
bool answers_match(const std::string& found, const std::string& reference, bool ignore_case);

class ExactAnswer {
 public:
  // Throws std::invalid_argument for a regex that does not compile, or a missing pattern / marker.
  explicit ExactAnswer(ExactAnswerOptions options);
  // correct_score or wrong_score (also when nothing is found). Throws
  // std::invalid_argument when the example has no reference answer.
  double score(const RewardInput& input) const;

 private:
  ExactAnswerOptions options_;
  std::optional<std::regex> pattern_;
};

struct RegexMatchOptions {
  std::string pattern;
  bool full_match = false;  // the whole completion must match (else: the pattern occurs somewhere)
  double match_score = 1.0;
  double miss_score = 0.0;
};

class RegexMatch {
 public:
  // Throws std::invalid_argument for a regex that does not compile.
  explicit RegexMatch(RegexMatchOptions options);
  double score(const RewardInput& input) const;

 private:
  RegexMatchOptions options_;
  std::regex pattern_;
};

enum class LengthUnit { Characters, Words };

struct LengthPenaltyOptions {
  LengthUnit unit = LengthUnit::Characters;
  int64_t target_length = 0;     // no penalty up to this length
  double penalty_per_unit = 0.01;  // per unit beyond the target
  double max_penalty = 0.0;        // cap on the penalty (0: none)
};

// -penalty_per_unit * max(0, length - target_length), no lower than -max_penalty when that is > 0.
double length_penalty(const std::string& completion, const LengthPenaltyOptions& options);

}  // namespace alignkit::rewards
