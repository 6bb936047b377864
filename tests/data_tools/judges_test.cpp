// The synthesize stage's judging without a real model: which pairs a margin
// matrix keeps (best-vs-worst, all-pairs, threshold, identical texts), the
// judge template's placeholders, and the LM judge's two orders cancelling a
// judge that prefers whatever is shown first.
#include <doctest/doctest.h>

#include <ATen/ATen.h>

#include <stdexcept>

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

// One id per byte; no BOS, EOS 0, no pad.
class ByteTokenizer : public alignkit::Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    for (int32_t id : ids) text += static_cast<char>(id);
    return text;
  }
  int32_t vocab_size() const override { return 256; }
  int32_t bos_id() const override { return -1; }
  int32_t eos_id() const override { return 0; }
  int32_t pad_id() const override { return -1; }
};

// A judge under the template "{prompt}:{a}|{b}=" that favours the answer
// shown first by kPositionBias logits and a completion starting with 'g' by
// one: at every position, logit('A') = bias + good(a), logit('B') = good(b).
class BiasedJudgeModel : public alignkit::CausalLM {
 public:
  static constexpr double kPositionBias = 3.0;
  BiasedJudgeModel() { info_.vocab_size = 256; }
  const alignkit::ModelInfo& info() const override { return info_; }
  alignkit::HeadKind head() const override { return alignkit::HeadKind::LanguageModel; }
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor&, const at::Tensor&) override {
    const int64_t rows = input_ids.size(0), length = input_ids.size(1);
    at::Tensor logits = at::zeros({rows, length, 256});  // (B, T, V)
    for (int64_t r = 0; r < rows; ++r) {
      std::string text;
      for (int64_t t = 0; t < length; ++t) text += static_cast<char>(input_ids[r][t].item<int64_t>());
      const bool a_good = text[text.find(':') + 1] == 'g', b_good = text[text.find('|') + 1] == 'g';
      logits[r].select(1, 'A').fill_(kPositionBias + (a_good ? 1.0 : 0.0));
      logits[r].select(1, 'B').fill_(b_good ? 1.0 : 0.0);
    }
    return logits;
  }
  at::Tensor hidden_states(const at::Tensor&, const at::Tensor&, const at::Tensor&) override { throw std::logic_error("unused"); }
  at::Tensor head_values(const at::Tensor&, const at::Tensor&, const at::Tensor&) override { throw std::logic_error("unused"); }
  at::Tensor output_embedding() override { throw std::logic_error("unused"); }
  std::vector<alignkit::NamedTensor> named_parameters() override { return {}; }
  void set_training(bool) override {}
  void to(c10::Device, c10::ScalarType) override {}
  void save(const std::string&) const override { throw std::logic_error("unused"); }
  std::vector<std::vector<int64_t>> generate(const std::vector<std::vector<int64_t>>&,
                                             const alignkit::GenerationOptions&) override {
    throw std::logic_error("unused");
  }
  std::vector<alignkit::NamedTensor> trainable_parameters() override { return {}; }
  bool has_adapters() const override { return false; }
  void set_adapters_enabled(bool) override {}
  void save_adapter(const std::string&, const std::string&) const override { throw std::logic_error("unused"); }

 private:
  alignkit::ModelInfo info_;
};

}  // namespace

TEST_CASE("LM judge: asking in both orders cancels a preference for the first position") {
  auto judge = lm_judge(std::make_shared<BiasedJudgeModel>(), std::make_unique<ByteTokenizer>(), "{prompt}:{a}|{b}=",
                        c10::Device(c10::kCPU), 4);
  // Asked once, the judge prefers whichever is shown first (3 + 0 > 1 with "bad" first);
  // asked both ways, the margin of "good" over "bad" is 1 and the bias is gone.
  const MarginMatrix m = judge->judge({"q", "", {"bad", "good"}});
  CHECK(m[1][0] == doctest::Approx(1.0).epsilon(1e-5));
  CHECK(m[0][1] == doctest::Approx(-1.0).epsilon(1e-5));
  CHECK(text(select_pairs(m, {"bad", "good"}, "best-vs-worst", 0.0)) == "1>0:1.000000 ");
  // Two completions of equal quality: the bias alone makes no margin, so no pair.
  const MarginMatrix equal = judge->judge({"q", "", {"good one", "good two"}});
  CHECK(std::abs(equal[0][1]) < 1e-5);
  CHECK(select_pairs(equal, {"good one", "good two"}, "all-pairs", 1e-3).empty());
}

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
