// `alignkit data ratings-to-pairs`: completions rated 1 to 5 (by one or more
// raters, averaged) become preference pairs with the rating gap as `margin`.
#include <iomanip>
#include <iostream>
#include <sstream>

#include <boost/program_options/value_semantic.hpp>
#include <nlohmann/json.hpp>

#include "alignkit/core/atomic_file.hpp"
#include "commands.hpp"
#include "data_common.hpp"

namespace po = boost::program_options;
using nlohmann::json;

namespace alignkit::cli {
namespace {

constexpr double kMinRating = 1.0;
constexpr double kMaxRating = 5.0;

struct Rated {
  json text;      // a string, or a list of messages for conversational data
  double rating;  // the raters' mean
};

struct Summary {
  int64_t records = 0;
  int64_t prompts_used = 0;
  int64_t pairs = 0;
  int64_t bad_ratings = 0;        // completions dropped for a rating outside 1..5 or not a number
  int64_t too_few = 0;            // records left with fewer than two rated completions
  int64_t no_gap = 0;             // records whose ratings were all within --min-gap of each other
  std::vector<std::string> notes; // the first few dropped items, with file:line
};

void note(Summary& summary, const std::string& text) {
  if (summary.notes.size() < 10) summary.notes.push_back(text);
}

// The mean of `rating` (a number or a list of numbers, one per rater); false
// when any value is not a number in [1, 5].
bool mean_rating(const json& rating, double& mean) {
  std::vector<double> values;
  if (rating.is_number()) values.push_back(rating.get<double>());
  else if (rating.is_array() && !rating.empty())
    for (const json& v : rating) {
      if (!v.is_number()) return false;
      values.push_back(v.get<double>());
    }
  else return false;
  double sum = 0;
  for (double v : values) {
    if (!(v >= kMinRating && v <= kMaxRating)) return false;
    sum += v;
  }
  mean = sum / static_cast<double>(values.size());
  return true;
}

json pair_record(const json& prompt, const Rated& chosen, const Rated& rejected) {
  return {{"prompt", prompt}, {"chosen", chosen.text}, {"rejected", rejected.text},
          {"margin", chosen.rating - rejected.rating}, {"chosen_rating", chosen.rating},
          {"rejected_rating", rejected.rating}};
}

}  // namespace

int cmd_data_ratings_to_pairs(const std::vector<std::string>& args) {
  po::options_description options("data ratings-to-pairs");
  std::string in, out, strategy = "all-pairs";
  double min_gap = 1.0;
  options.add_options()("in", po::value(&in)->required(), "JSONL records {prompt, completions: [{text, rating}]}")(
      "out", po::value(&out)->required(), "preference pairs (prompt, chosen, rejected, margin) written here")(
      "strategy", po::value(&strategy)->default_value(strategy),
      "all-pairs: every pair whose gap is at least --min-gap; best-vs-worst: one pair a prompt")(
      "min-gap", po::value(&min_gap)->default_value(min_gap), "smallest rating gap that makes a pair (> 0)");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit data ratings-to-pairs IN.jsonl --out PREFS.jsonl [--strategy all-pairs|best-vs-worst] [--min-gap G]",
                          options, {"in"}, values, exit_code))
    return exit_code;
  if (strategy != "all-pairs" && strategy != "best-vs-worst") {
    std::cerr << "alignkit: --strategy must be all-pairs or best-vs-worst, not '" << strategy << "'\n";
    return kExitUsage;
  }
  if (!(min_gap > 0)) {
    std::cerr << "alignkit: --min-gap must be greater than 0 (equal ratings never make a pair)\n";
    return kExitUsage;
  }
  try {
    check_output_path(out);
    Summary summary;
    std::ostringstream pairs;
    for (const JsonLine& line : read_json_lines(in)) {
      ++summary.records;
      const json& record = line.value;
      const std::string where = at_line(in, line.line);
      if (!record.is_object() || !record.contains("prompt") || !record.contains("completions") ||
          !record["completions"].is_array())
        throw ConfigError(where + ": expected {\"prompt\": ..., \"completions\": [{\"text\": ..., \"rating\": ...}, ...]}");
      std::vector<Rated> rated;
      const json& completions = record["completions"];
      for (size_t i = 0; i < completions.size(); ++i) {
        const json& c = completions[i];
        if (!c.is_object() || !c.contains("text") || !c.contains("rating"))
          throw ConfigError(where + ": completion " + std::to_string(i + 1) + " needs \"text\" and \"rating\"");
        double mean = 0;
        if (!mean_rating(c["rating"], mean)) {
          ++summary.bad_ratings;
          note(summary, where + ": completion " + std::to_string(i + 1) + " dropped: rating " + c["rating"].dump() +
                            " is not a number from 1 to 5");
          continue;
        }
        rated.push_back({c["text"], mean});
      }
      if (rated.size() < 2) {
        ++summary.too_few;
        note(summary, where + ": skipped: " + std::to_string(rated.size()) + " rated completion" +
                          (rated.size() == 1 ? "" : "s") + ", a pair needs two");
        continue;
      }
      int64_t made = 0;
      auto emit = [&](const Rated& a, const Rated& b) {
        const Rated& chosen = a.rating >= b.rating ? a : b;
        const Rated& rejected = a.rating >= b.rating ? b : a;
        if (chosen.rating - rejected.rating < min_gap) return;
        pairs << pair_record(record["prompt"], chosen, rejected).dump() << '\n';
        ++made;
      };
      if (strategy == "all-pairs") {
        for (size_t i = 0; i < rated.size(); ++i)
          for (size_t j = i + 1; j < rated.size(); ++j) emit(rated[i], rated[j]);
      } else {
        // The first completion with the highest mean against the first with the lowest.
        size_t best = 0, worst = 0;
        for (size_t i = 1; i < rated.size(); ++i) {
          if (rated[i].rating > rated[best].rating) best = i;
          if (rated[i].rating < rated[worst].rating) worst = i;
        }
        emit(rated[best], rated[worst]);
      }
      if (made == 0) ++summary.no_gap;
      else ++summary.prompts_used;
      summary.pairs += made;
    }
    core::write_file_atomic(out, pairs.str());
    std::cout << "ratings-to-pairs (" << strategy << ", min gap " << min_gap << "): " << summary.records << " prompts read, "
              << summary.prompts_used << " gave pairs, " << summary.pairs << " pairs written to " << out << '\n'
              << "dropped: " << summary.bad_ratings << " completions with a rating outside 1..5, " << summary.too_few
              << " prompts with fewer than two rated completions, " << summary.no_gap
              << " prompts whose ratings differ by less than the minimum gap\n";
    for (const std::string& text : summary.notes) std::cout << "  " << text << '\n';
  } catch (const ConfigError& e) {
    std::cerr << "alignkit: " << e.what() << '\n';
    return kExitUsage;
  }
  return kExitOk;
}

}  // namespace alignkit::cli
