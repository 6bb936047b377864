// The `rewards` plugin: registers the rule-based rewards of rule_rewards.hpp
// as reward components (kind `reward`) with their settings, so stages name
// them in [[stages.X.rewards]] tables.
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "alignkit/plugin.hpp"
#include "alignkit/reward.hpp"
#include "alignkit/version.hpp"
#include "rule_rewards.hpp"

namespace alignkit::rewards {
namespace {

// Scores a batch one input at a time with `rule`; RewardSet retries a batch
// that throws one completion at a time, so a throwing input costs only itself.
template <typename Rule>
class RuleReward : public Reward {
 public:
  explicit RuleReward(Rule rule) : rule_(std::move(rule)) {}
  std::vector<double> score(const std::vector<RewardInput>& batch) override {
    std::vector<double> scores;
    scores.reserve(batch.size());
    for (const RewardInput& input : batch) scores.push_back(rule_(input));
    return scores;
  }

 private:
  Rule rule_;
};

template <typename Rule>
std::unique_ptr<Reward> make_rule_reward(Rule rule) {
  return std::make_unique<RuleReward<Rule>>(std::move(rule));
}

// A std::invalid_argument from a rule's constructor becomes a ConfigError at `key`.
template <typename Make>
auto configured(const ConfigView& settings, const std::string& key, Make&& make) {
  try {
    return make();
  } catch (const std::invalid_argument& e) {
    throw ConfigError(settings.locate(key) + ": " + e.what());
  }
}

struct ExactAnswerProvider : RewardProvider {
  std::unique_ptr<Reward> create(const ConfigView& settings, StageContext&) const override {
    ExactAnswerOptions options;
    options.extraction = configured(settings, "extract", [&] { return parse_extraction(settings.get_string("extract")); });
    if (settings.has("pattern")) options.pattern = settings.get_string("pattern");
    if (settings.has("marker")) options.marker = settings.get_string("marker");
    options.ignore_case = settings.get_bool("ignore_case");
    options.correct_score = settings.get_float("correct_score");
    options.wrong_score = settings.get_float("wrong_score");
    const char* key = options.extraction == Extraction::AfterMarker ? "marker" : "pattern";
    auto rule = configured(settings, key, [&] { return ExactAnswer(options); });
    return make_rule_reward([rule](const RewardInput& input) { return rule.score(input); });
  }
};

struct RegexMatchProvider : RewardProvider {
  std::unique_ptr<Reward> create(const ConfigView& settings, StageContext&) const override {
    RegexMatchOptions options;
    options.pattern = settings.get_string("pattern");
    options.full_match = settings.get_bool("full_match");
    options.match_score = settings.get_float("match_score");
    options.miss_score = settings.get_float("miss_score");
    auto rule = configured(settings, "pattern", [&] { return RegexMatch(options); });
    return make_rule_reward([rule](const RewardInput& input) { return rule.score(input); });
  }
};

struct LengthPenaltyProvider : RewardProvider {
  std::unique_ptr<Reward> create(const ConfigView& settings, StageContext&) const override {
    LengthPenaltyOptions options;
    options.unit = settings.get_string("unit") == "words" ? LengthUnit::Words : LengthUnit::Characters;
    options.target_length = settings.get_int("target_length");
    options.penalty_per_unit = settings.get_float("penalty_per_unit");
    options.max_penalty = settings.get_float("max_penalty");
    return make_rule_reward([options](const RewardInput& input) { return length_penalty(input.completion, options); });
  }
};

void register_rewards(Registry& registry) {
  registry.add_reward(
      {ComponentKind::Reward, "exact_answer", ALIGNKIT_VERSION_STRING,
       "extracts an answer from the completion and compares it with the example's `answer` (1 or 0)",
       {
           setting::text("extract", "first_number",
                         "how the answer is found: first_number, last_number, regex (capture group 1 of "
                         "`pattern`), after_marker (the rest of the line after the last `marker`) or full",
                         {"first_number", "last_number", "regex", "after_marker", "full"}),
           setting::optional_text("pattern", "regular expression (ECMAScript) for extract = \"regex\""),
           setting::optional_text("marker", "text before the answer for extract = \"after_marker\", e.g. \"####\""),
           setting::boolean("ignore_case", false, "compare non-numeric answers case-insensitively"),
           setting::number("correct_score", 1.0, "score of a right answer"),
           setting::number("wrong_score", 0.0, "score of a wrong or missing answer"),
       }},
      std::make_shared<ExactAnswerProvider>());
  registry.add_reward({ComponentKind::Reward, "regex_match", ALIGNKIT_VERSION_STRING,
                       "scores whether the completion matches a regular expression (format rewards)",
                       {
                           setting::required_text("pattern", "regular expression (ECMAScript)"),
                           setting::boolean("full_match", false,
                                            "the whole completion must match (false: the pattern occurs in it)"),
                           setting::number("match_score", 1.0, "score when it matches"),
                           setting::number("miss_score", 0.0, "score when it does not"),
                       }},
                      std::make_shared<RegexMatchProvider>());
  registry.add_reward({ComponentKind::Reward, "length_penalty", ALIGNKIT_VERSION_STRING,
                       "penalises completions longer than a target: -penalty_per_unit per unit beyond it",
                       {
                           setting::text("unit", "characters", "what length counts", {"characters", "words"}),
                           setting::integer("target_length", 0, "length allowed without penalty", 0.0),
                           setting::number("penalty_per_unit", 0.01, "penalty per unit beyond the target", 0.0),
                           setting::number("max_penalty", 0.0, "largest penalty (0: no cap)", 0.0),
                       }},
                      std::make_shared<LengthPenaltyProvider>());
}

}  // namespace
}  // namespace alignkit::rewards

ALIGNKIT_PLUGIN("rewards", ALIGNKIT_VERSION_STRING, "rule-based rewards: exact_answer, regex_match, length_penalty",
                alignkit::rewards::register_rewards)
