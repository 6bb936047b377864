// Rule-based rewards (see rule_rewards.hpp).
#include "rule_rewards.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <stdexcept>

namespace alignkit::rewards {
namespace {

// An optional sign, digits with optional thousands separators, an optional fraction.
const std::regex& number_pattern() {
  static const std::regex pattern(R"(-?\d+(?:,\d{3})*(?:\.\d+)?)");
  return pattern;
}

std::string trim(const std::string& text) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  auto begin = std::find_if(text.begin(), text.end(), not_space);
  auto end = std::find_if(text.rbegin(), text.rend(), not_space).base();
  return begin < end ? std::string(begin, end) : std::string();
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The value of `text` when all of it is one number (thousands separators allowed).
std::optional<double> as_number(const std::string& text) {
  const std::string trimmed = trim(text);
  if (trimmed.empty() || !std::regex_match(trimmed, number_pattern())) return std::nullopt;
  std::string digits;
  for (char c : trimmed)
    if (c != ',') digits += c;
  return std::strtod(digits.c_str(), nullptr);
}

std::regex compile(const std::string& pattern, const char* what) {
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw std::invalid_argument(std::string(what) + " '" + pattern + "' is not a valid regular expression (" +
                                e.what() + ")");
  }
}

}  // namespace

Extraction parse_extraction(const std::string& name) {
  if (name == "first_number") return Extraction::FirstNumber;
  if (name == "last_number") return Extraction::LastNumber;
  if (name == "regex") return Extraction::Regex;
  if (name == "after_marker") return Extraction::AfterMarker;
  if (name == "full") return Extraction::Full;
  throw std::invalid_argument("extract: expected first_number, last_number, regex, after_marker or full, found \"" +
                              name + "\"");
}

std::optional<std::string> extract_answer(const std::string& completion, const ExactAnswerOptions& options,
                                          const std::regex* pattern) {
  switch (options.extraction) {
    case Extraction::FirstNumber:
    case Extraction::LastNumber: {
      std::optional<std::string> found;
      for (auto it = std::sregex_iterator(completion.begin(), completion.end(), number_pattern());
           it != std::sregex_iterator(); ++it) {
        found = it->str();
        if (options.extraction == Extraction::FirstNumber) break;
      }
      return found;
    }
    case Extraction::Regex: {
      if (!pattern) throw std::invalid_argument("extract = \"regex\" needs a pattern");
      std::smatch match;
      if (!std::regex_search(completion, match, *pattern)) return std::nullopt;
      return trim(match.size() > 1 ? match[1].str() : match[0].str());
    }
    case Extraction::AfterMarker: {
      const size_t at = completion.rfind(options.marker);
      if (options.marker.empty() || at == std::string::npos) return std::nullopt;
      std::string rest = completion.substr(at + options.marker.size());
      rest = rest.substr(0, rest.find('\n'));
      rest = trim(rest);
      if (rest.empty()) return std::nullopt;
      return rest;
    }
    case Extraction::Full: {
      std::string all = trim(completion);
      if (all.empty()) return std::nullopt;
      return all;
    }
  }
  return std::nullopt;
}

bool answers_match(const std::string& found, const std::string& reference, bool ignore_case) {
  const std::optional<double> a = as_number(found);
  const std::optional<double> b = as_number(reference);
  if (a && b) return *a == *b;
  if (ignore_case) return lower(trim(found)) == lower(trim(reference));
  return trim(found) == trim(reference);
}

ExactAnswer::ExactAnswer(ExactAnswerOptions options) : options_(std::move(options)) {
  if (options_.extraction == Extraction::Regex) {
    if (options_.pattern.empty()) throw std::invalid_argument("extract = \"regex\" needs a `pattern`");
    pattern_ = compile(options_.pattern, "pattern");
  }
  if (options_.extraction == Extraction::AfterMarker && options_.marker.empty())
    throw std::invalid_argument("extract = \"after_marker\" needs a non-empty `marker`");
}

double ExactAnswer::score(const RewardInput& input) const {
  if (trim(input.answer).empty())
    throw std::invalid_argument("exact_answer: the example has no reference answer (an `answer` field) for prompt \"" +
                                input.prompt.substr(0, 60) + "\"");
  const std::optional<std::string> found =
      extract_answer(input.completion, options_, pattern_ ? &*pattern_ : nullptr);
  return found && answers_match(*found, input.answer, options_.ignore_case) ? options_.correct_score
                                                                             : options_.wrong_score;
}

RegexMatch::RegexMatch(RegexMatchOptions options)
    : options_(std::move(options)), pattern_(compile(options_.pattern, "pattern")) {}

double RegexMatch::score(const RewardInput& input) const {
  const bool matched = options_.full_match ? std::regex_match(input.completion, pattern_)
                                           : std::regex_search(input.completion, pattern_);
  return matched ? options_.match_score : options_.miss_score;
}

double length_penalty(const std::string& completion, const LengthPenaltyOptions& options) {
  int64_t length = 0;
  if (options.unit == LengthUnit::Characters) {
    // UTF-8: count code points, not bytes (continuation bytes are 10xxxxxx).
    for (unsigned char c : completion) length += (c & 0xC0) != 0x80;
  } else {
    bool in_word = false;
    for (unsigned char c : completion) {
      const bool space = std::isspace(c) != 0;
      if (!space && !in_word) ++length;
      in_word = !space;
    }
  }
  double penalty = options.penalty_per_unit * static_cast<double>(std::max<int64_t>(0, length - options.target_length));
  if (options.max_penalty > 0) penalty = std::min(penalty, options.max_penalty);
  return -penalty;
}

}  // namespace alignkit::rewards
