// The synthesize stage's pure parts: which pairs a margin matrix keeps
// (best-vs-worst, all-pairs, threshold, identical texts) and the judge
// template's placeholders.
#include <doctest/doctest.h>

#include "judges.hpp"

using namespace alignkit::synthesize;

namespace {

MarginMatrix from_scores(const std::vector<double>& s) {
  MarginMatrix m(s.size(), std::vector<double>(s.size()));
  for (size_t i = 0; i < s.size(); ++i)
    for (size_t j = 0; j < s.size(); ++j) m[i][j] = s[i] - s[j];
  return m;
}

// "chosen>rejected:margin " for each pair.
std::string text(const std::vector<Pair>& pairs) {
  std::string out;
  for (const Pair& p : pairs) out += std::to_string(p.chosen) + ">" + std::to_string(p.rejected) + ":" + std::to_string(p.margin) + " ";
  return out;
}

}  // namespace

TEST_CASE("select_pairs: best-vs-worst, all-pairs, the threshold and identical completions") {
  const std::vector<std::string> texts = {"a", "b", "c", "d"};
  const MarginMatrix m = from_scores({0.5, 2.0, 1.0, 0.0});
  CHECK(text(select_pairs(m, texts, "best-vs-worst", 0.0)) == "1>3:2.000000 ");
  CHECK(text(select_pairs(m, texts, "all-pairs", 0.6)) == "1>0:1.500000 1>2:1.000000 1>3:2.000000 2>3:1.000000 ");
  CHECK(select_pairs(m, texts, "best-vs-worst", 2.0).empty());  // the margin must exceed the threshold
  // Equal scores (a rule reward that is 0 for every sample) make no pair.
  CHECK(select_pairs(from_scores({0, 0, 0}), {"x", "y", "z"}, "best-vs-worst", 0.0).empty());
  // Identical completions never pair, whatever the judge says.
  CHECK(select_pairs(from_scores({1, 0}), {"same", "same"}, "all-pairs", 0.0).empty());
}

TEST_CASE("fill_template fills {prompt}, {a} and {b} and refuses a template without one of them") {
  CHECK(fill_template("Q: {prompt} A: {a} B: {b}?", "1+1=", "2", "3") == "Q: 1+1= A: 2 B: 3?");
  CHECK(fill_template("{b}{a}{prompt}", "p", "{a}", "x") == "x{a}p");  // values are not expanded again
  CHECK_THROWS_AS(fill_template("{prompt} {a}", "p", "a", "b"), std::invalid_argument);
}
