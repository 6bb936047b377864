// The rule rewards: exact_answer's extraction modes and number-aware
// comparison, regex_match, length_penalty, and their refusals.
#include <doctest/doctest.h>

#include <stdexcept>

#include "rule_rewards.hpp"

using namespace alignkit;
using namespace alignkit::rewards;

namespace {

RewardInput input(const std::string& completion, const std::string& answer = "") {
  return RewardInput{"3+4=", completion, answer};
}

ExactAnswerOptions extraction(Extraction how) {
  ExactAnswerOptions options;
  options.extraction = how;
  return options;
}

}  // namespace

TEST_CASE("exact_answer extracts the first or last number and compares numerically") {
  const ExactAnswer first(extraction(Extraction::FirstNumber));
  CHECK(first.score(input("7", "7")) == 1.0);
  CHECK(first.score(input(" 7 because 3+4", "7")) == 1.0);
  CHECK(first.score(input("12", "7")) == 0.0);
  CHECK(first.score(input("7.0", "7")) == 1.0);
  CHECK(first.score(input("-3", "-3")) == 1.0);
  CHECK(first.score(input("1,000 apples", "1000")) == 1.0);
  CHECK(first.score(input("no digits here", "7")) == 0.0);  // nothing found: wrong, not an error
  CHECK(first.score(input("", "7")) == 0.0);
  const ExactAnswer last(extraction(Extraction::LastNumber));
  CHECK(last.score(input("3 plus 4 is 7", "7")) == 1.0);
  CHECK(first.score(input("3 plus 4 is 7", "7")) == 0.0);
}

TEST_CASE("exact_answer with a regex capture, a marker, the full text, case and custom scores") {
  ExactAnswerOptions regex = extraction(Extraction::Regex);
  regex.pattern = R"(<answer>(.*?)</answer>)";
  CHECK(ExactAnswer(regex).score(input("think... <answer> Paris </answer>", "Paris")) == 1.0);
  CHECK(ExactAnswer(regex).score(input("Paris", "Paris")) == 0.0);

  ExactAnswerOptions marker = extraction(Extraction::AfterMarker);
  marker.marker = "####";
  CHECK(ExactAnswer(marker).score(input("work #### 42\nmore text", "42")) == 1.0);
  CHECK(ExactAnswer(marker).score(input("#### 1 then #### 2", "2")) == 1.0);  // the last marker
  CHECK(ExactAnswer(marker).score(input("42", "42")) == 0.0);

  ExactAnswerOptions full = extraction(Extraction::Full);
  full.ignore_case = true;
  full.correct_score = 2.0;
  full.wrong_score = -1.0;
  CHECK(ExactAnswer(full).score(input("  PARIS ", "paris")) == 2.0);
  CHECK(ExactAnswer(full).score(input("Lyon", "paris")) == -1.0);
  full.ignore_case = false;
  CHECK(ExactAnswer(full).score(input("PARIS", "paris")) == -1.0);
}

TEST_CASE("exact_answer refuses bad options and throws on an example with no answer") {
  CHECK(parse_extraction("last_number") == Extraction::LastNumber);
  CHECK_THROWS_AS(parse_extraction("number"), std::invalid_argument);
  ExactAnswerOptions regex = extraction(Extraction::Regex);
  CHECK_THROWS_WITH_AS(ExactAnswer{regex}, doctest::Contains("pattern"), std::invalid_argument);
  regex.pattern = "(unclosed";
  CHECK_THROWS_WITH_AS(ExactAnswer{regex}, doctest::Contains("not a valid regular expression"), std::invalid_argument);
  CHECK_THROWS_AS(ExactAnswer{extraction(Extraction::AfterMarker)}, std::invalid_argument);
  const ExactAnswer first(extraction(Extraction::FirstNumber));
  CHECK_THROWS_WITH_AS(first.score(input("7", "")), doctest::Contains("no reference answer"), std::invalid_argument);
}

TEST_CASE("regex_match scores a pattern found (or matching the whole completion)") {
  RegexMatchOptions options;
  options.pattern = R"(^\d+$)";
  options.match_score = 0.5;
  options.miss_score = -0.5;
  CHECK(RegexMatch(options).score(input("42")) == 0.5);
  CHECK(RegexMatch(options).score(input("42 is it")) == -0.5);
  options.pattern = R"(\d+)";
  CHECK(RegexMatch(options).score(input("it is 42")) == 0.5);
  options.full_match = true;
  CHECK(RegexMatch(options).score(input("it is 42")) == -0.5);
  CHECK(RegexMatch(options).score(input("42")) == 0.5);
  options.pattern = "[";
  CHECK_THROWS_AS(RegexMatch{options}, std::invalid_argument);
}

TEST_CASE("length_penalty penalises characters or words beyond the target, capped") {
  LengthPenaltyOptions options;
  options.target_length = 3;
  options.penalty_per_unit = 0.5;
  CHECK(length_penalty("abc", options) == 0.0);
  CHECK(length_penalty("ab", options) == 0.0);
  CHECK(length_penalty("abcdef", options) == doctest::Approx(-1.5));
  CHECK(length_penalty("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9", options) == doctest::Approx(-0.5));  // 4 code points, 8 bytes
  options.max_penalty = 1.0;
  CHECK(length_penalty("abcdefghij", options) == doctest::Approx(-1.0));
  options.unit = LengthUnit::Words;
  options.max_penalty = 0.0;
  CHECK(length_penalty("one two  three\nfour five", options) == doctest::Approx(-1.0));
}
