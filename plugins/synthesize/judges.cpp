// Judges of the synthesize stage (rule reward, reward model, LM judge asked
// in both orders) and the choice of pairs from their margins.
#include "judges.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

#include "alignkit/batch.hpp"

namespace alignkit::synthesize {
namespace {

MarginMatrix from_scores(const std::vector<double>& scores) {
  MarginMatrix m(scores.size(), std::vector<double>(scores.size(), 0.0));
  for (size_t i = 0; i < scores.size(); ++i)
    for (size_t j = 0; j < scores.size(); ++j) m[i][j] = scores[i] - scores[j];
  return m;
}

int32_t pad_of(const CausalLM& model, const Tokenizer& tokenizer) {
  if (tokenizer.pad_id() >= 0) return tokenizer.pad_id();
  return padding_id(model.info().pad_token_id, tokenizer.eos_id() >= 0 ? tokenizer.eos_id() : model.info().eos_token_id);
}

std::vector<int32_t> with_bos(const Tokenizer& tokenizer, const std::string& text) {
  std::vector<int32_t> ids;
  if (tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  for (int32_t id : tokenizer.encode(text)) ids.push_back(id);
  return ids;
}

class RuleJudge : public Judge {
 public:
  explicit RuleJudge(online::RewardSet rewards) : rewards_(std::move(rewards)) {}
  MarginMatrix judge(const Candidates& c) override {
    std::vector<RewardInput> inputs;
    for (const std::string& completion : c.completions) inputs.push_back({c.prompt_text, completion, c.answer});
    at::Tensor total = rewards_.score(inputs).total.to(at::kDouble);  // (N)
    std::vector<double> scores;
    for (int64_t i = 0; i < total.size(0); ++i) scores.push_back(total[i].item<double>());
    return from_scores(scores);
  }

 private:
  online::RewardSet rewards_;
};

class RewardModelJudge : public Judge {
 public:
  RewardModelJudge(std::shared_ptr<CausalLM> model, std::unique_ptr<Tokenizer> tokenizer, c10::Device device,
                   int64_t batch_size)
      : model_(std::move(model)), tokenizer_(std::move(tokenizer)), device_(device), batch_size_(batch_size) {}
  MarginMatrix judge(const Candidates& c) override {
    at::NoGradGuard no_grad;
    CollateOptions options;
    options.pad_id = pad_of(*model_, *tokenizer_);
    std::vector<Row> rows;
    for (const std::string& completion : c.completions) {
      std::vector<int32_t> ids = tokenizer_->encode(completion);
      if (tokenizer_->eos_id() >= 0) ids.push_back(tokenizer_->eos_id());
      rows.push_back({with_bos(*tokenizer_, c.prompt_text), ids});
    }
    std::vector<double> scores;
    for (size_t start = 0; start < rows.size(); start += static_cast<size_t>(batch_size_)) {
      std::vector<Row> chunk(rows.begin() + static_cast<std::ptrdiff_t>(start),
                             rows.begin() + static_cast<std::ptrdiff_t>(std::min(rows.size(), start + batch_size_)));
      Batch batch = collate(chunk, options).to(device_);
      at::Tensor values = model_->head_values(batch.input_ids, batch.attention_mask, batch.position_ids).cpu();  // (B, T)
      for (int64_t r = 0; r < batch.rows(); ++r) scores.push_back(values[r][batch.lengths[r] - 1].item<double>());
    }
    return from_scores(scores);
  }

 private:
  std::shared_ptr<CausalLM> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  c10::Device device_;
  int64_t batch_size_;
};

class LmJudge : public Judge {
 public:
  LmJudge(std::shared_ptr<CausalLM> model, std::unique_ptr<Tokenizer> tokenizer, std::string template_text,
          c10::Device device, int64_t batch_size)
      : model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        template_(std::move(template_text)),
        answer_a_(tokenizer_->encode(" A")),
        answer_b_(tokenizer_->encode(" B")),
        device_(device),
        batch_size_(batch_size) {}

  MarginMatrix judge(const Candidates& c) override {
    const size_t n = c.completions.size();
    // Rows for every ordered pair (i shown as A, j as B): context + " A", context + " B".
    std::vector<Row> rows;
    std::vector<std::pair<size_t, size_t>> order;
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j) {
        if (i == j) continue;
        std::vector<int32_t> context = with_bos(*tokenizer_, fill_template(template_, c.prompt_text, c.completions[i], c.completions[j]));
        rows.push_back({context, answer_a_});
        rows.push_back({context, answer_b_});
        order.emplace_back(i, j);
      }
    std::vector<double> logps = score(rows);
    MarginMatrix d(n, std::vector<double>(n, 0.0));  // d[i][j]: log p(A) - log p(B) with i as A
    for (size_t k = 0; k < order.size(); ++k) d[order[k].first][order[k].second] = logps[2 * k] - logps[2 * k + 1];
    MarginMatrix m(n, std::vector<double>(n, 0.0));
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j)
        if (i != j) m[i][j] = 0.5 * (d[i][j] - d[j][i]);
    return m;
  }

 private:
  // Summed log-probs of each row's completion tokens.
  std::vector<double> score(const std::vector<Row>& rows) {
    at::NoGradGuard no_grad;
    CollateOptions options;
    options.pad_id = pad_of(*model_, *tokenizer_);
    std::vector<double> out;
    for (size_t start = 0; start < rows.size(); start += static_cast<size_t>(batch_size_)) {
      std::vector<Row> chunk(rows.begin() + static_cast<std::ptrdiff_t>(start),
                             rows.begin() + static_cast<std::ptrdiff_t>(std::min(rows.size(), start + batch_size_)));
      Batch batch = collate(chunk, options).to(device_);
      at::Tensor logits = model_->forward(batch.input_ids, batch.attention_mask, batch.position_ids);  // (B, T, V)
      at::Tensor sums = sequence_logprobs(logits, batch.input_ids, batch.loss_mask).sum.to(at::kDouble).cpu();  // (B)
      for (int64_t r = 0; r < sums.size(0); ++r) out.push_back(sums[r].item<double>());
    }
    return out;
  }

  std::shared_ptr<CausalLM> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string template_;
  std::vector<int32_t> answer_a_, answer_b_;
  c10::Device device_;
  int64_t batch_size_;
};

}  // namespace

std::string fill_template(const std::string& template_text, const std::string& prompt, const std::string& a,
                          const std::string& b) {
  std::string out;
  bool seen_prompt = false, seen_a = false, seen_b = false;
  for (size_t i = 0; i < template_text.size();) {
    auto take = [&](const char* field, const std::string& value, bool& seen) {
      const std::string placeholder = std::string("{") + field + "}";
      if (template_text.compare(i, placeholder.size(), placeholder) != 0) return false;
      out += value;
      i += placeholder.size();
      seen = true;
      return true;
    };
    if (take("prompt", prompt, seen_prompt) || take("a", a, seen_a) || take("b", b, seen_b)) continue;
    out += template_text[i++];
  }
  if (!seen_prompt || !seen_a || !seen_b)
    throw std::invalid_argument("the judge template must contain {prompt}, {a} and {b}");
  return out;
}

std::unique_ptr<Judge> rule_judge(online::RewardSet rewards) { return std::make_unique<RuleJudge>(std::move(rewards)); }

std::unique_ptr<Judge> reward_model_judge(std::shared_ptr<CausalLM> model, std::unique_ptr<Tokenizer> tokenizer,
                                          c10::Device device, int64_t batch_size) {
  return std::make_unique<RewardModelJudge>(std::move(model), std::move(tokenizer), device, batch_size);
}

std::unique_ptr<Judge> lm_judge(std::shared_ptr<CausalLM> model, std::unique_ptr<Tokenizer> tokenizer,
                                std::string template_text, c10::Device device, int64_t batch_size) {
  return std::make_unique<LmJudge>(std::move(model), std::move(tokenizer), std::move(template_text), device, batch_size);
}

std::vector<Pair> select_pairs(const MarginMatrix& margins, const std::vector<std::string>& completions,
                               const std::string& strategy, double threshold) {
  const size_t n = margins.size();
  std::vector<Pair> pairs;
  auto keep = [&](size_t i, size_t j) {
    if (completions[i] == completions[j]) return;
    const bool i_wins = margins[i][j] >= 0;
    Pair pair{i_wins ? i : j, i_wins ? j : i, std::abs(margins[i][j])};
    if (pair.margin > threshold) pairs.push_back(pair);
  };
  if (strategy == "all-pairs") {
    for (size_t i = 0; i < n; ++i)
      for (size_t j = i + 1; j < n; ++j) keep(i, j);
    return pairs;
  }
  // best-vs-worst: rank by total margin against the others (a score difference for scoring judges).
  std::vector<double> total(n, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) total[i] += margins[i][j];
  size_t best = 0, worst = 0;
  for (size_t i = 1; i < n; ++i) {
    if (total[i] > total[best]) best = i;
    if (total[i] < total[worst]) worst = i;
  }
  if (best != worst) keep(best, worst);
  return pairs;
}

}  // namespace alignkit::synthesize
