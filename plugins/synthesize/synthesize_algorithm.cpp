// The `synthesize` algorithm plugin: a data-producing stage. For each prompt
// of the stage's data it samples N completions from the policy (`model`),
// judges them (rule reward plugins, a reward model, or an LM judge asked in
// both orders), and writes preference pairs whose judge margin exceeds
// `margin_threshold` to <stage>/final/data.jsonl, which a later stage reads
// with `data = { path = "stages.NAME.output" }` (synthesize -> dpo).
//
// It makes no optimizer steps: it is a DataProducer, so the backend runs
// setup() and produce() and no training loop (see training.hpp).
#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "alignkit/plugin.hpp"
#include "alignkit/registry.hpp"
#include "alignkit/training.hpp"
#include "judges.hpp"
#include "recipe_support.hpp"

namespace fs = std::filesystem;

namespace alignkit::synthesize {
namespace {

constexpr const char* kDefaultTemplate =
    "Which answer to the question is better?\nQuestion: {prompt}\nAnswer A: {a}\nAnswer B: {b}\nThe better answer is";

std::vector<SettingSpec> synthesize_settings() {
  return {
      setting::integer("num_completions", 4, "completions sampled from the policy for each prompt", 2),
      setting::integer("max_new_tokens", 32, "tokens each completion may have at most", 1),
      setting::number("temperature", 1.0, "sampling temperature of the policy", 0.0),
      setting::integer("top_k", 0, "keep the k most likely tokens when sampling (0: off)", 0),
      setting::number("top_p", 1.0, "nucleus sampling mass (1: off)", 0.0),
      setting::text("judge", "reward_model",
                    "reward_model (the stage's reward_model, a scalar-head folder), rule (the reward plugins of "
                    "`rewards`) or lm (the stage's judge_model compares two completions by p(\" A\") vs p(\" B\"))",
                    {"reward_model", "rule", "lm"}),
      online::rewards_setting("for judge = \"rule\": [[stages.NAME.rewards]] tables as GRPO's (name = a reward plugin "
                              "such as exact_answer, weight, its own settings); the score is their weighted sum"),
      setting::text("judge_template", kDefaultTemplate, "for judge = \"lm\": the judge's prompt, with {prompt}, {a} and {b}"),
      setting::text("pairs", "best-vs-worst",
                    "best-vs-worst: one pair a prompt (highest against lowest total margin); all-pairs: every pair",
                    {"best-vs-worst", "all-pairs"}),
      setting::number("margin_threshold", 0.0, "keep pairs whose judge margin is greater than this", 0.0),
      setting::integer("generation_batch_size", 8, "prompts generated at once (each with num_completions rows)", 1),
      setting::integer("judge_batch_size", 16, "rows per forward pass of a judge model", 1),
  };
}

class SynthesizeAlgorithm final : public Algorithm, public DataProducer {
 public:
  void setup(StageContext& context, const TrainEnv& env) override {
    context_ = &context;
    env_ = env;
    const ConfigView& s = context.settings();
    num_completions_ = s.get_int("num_completions");
    generation_.max_new_tokens = s.get_int("max_new_tokens");
    generation_.do_sample = true;
    generation_.temperature = s.get_float("temperature");
    if (!(generation_.temperature > 0)) throw ConfigError(s.locate("temperature") + ": must be greater than 0 (sampling)");
    generation_.top_k = s.get_int("top_k");
    generation_.top_p = s.get_float("top_p");
    pairs_ = s.get_string("pairs");
    threshold_ = s.get_float("margin_threshold");
    batch_size_ = s.get_int("generation_batch_size");

    const std::string model_dir = recipe::require_model_dir(context, "model");
    tokenizer_ = recipe::load_tokenizer(context, "model", model_dir);
    if (!tokenizer_)
      throw ConfigError(s.locate("model") + ": " + model_dir + " has no tokenizer file; synthesize decodes completions to text");
    policy_ = recipe::load_model(context, "model", model_dir, env);
    policy_->set_training(false);

    recipe::DataRequirements requirements;
    requirements.algorithm = "synthesize";
    requirements.kinds = {DataKind::PromptOnly, DataKind::PromptCompletion, DataKind::Preference};
    requirements.fields = "prompt, and answer for rule rewards";
    requirements.vocab_size = policy_->info().vocab_size;
    data_ = recipe::load_stage_data(context, tokenizer_.get(), env.seed, requirements);

    judge_name_ = s.get_string("judge");
    const int64_t judge_batch = s.get_int("judge_batch_size");
    if (judge_name_ != "rule" && s.has("rewards"))
      throw ConfigError(s.locate("rewards") + ": rewards judge only with judge = \"rule\" (judge is \"" + judge_name_ + "\")");
    if (judge_name_ == "rule") {
      online::RewardSet rewards = online::RewardSet::create(context, "rewards", true);
      judge_name_ = "rule:";
      for (size_t i = 0; i < rewards.labels().size(); ++i) judge_name_ += (i ? "+" : "") + rewards.labels()[i];
      judge_ = rule_judge(std::move(rewards));
    } else if (judge_name_ == "reward_model") {
      const std::string dir = recipe::require_model_dir(context, "reward_model");
      ModelOptions options;
      options.dtype = env.dtype;
      options.device = env.device;
      options.head = HeadKind::Scalar;
      std::shared_ptr<CausalLM> model;
      try {
        model = context.load_model(dir, options);
      } catch (const ConfigError&) {
        throw;
      } catch (const std::exception& e) {
        throw ConfigError(s.locate("reward_model") + ": " + e.what());
      }
      model->set_training(false);
      std::unique_ptr<Tokenizer> tokenizer = recipe::load_tokenizer(context, "reward_model", dir);
      if (!tokenizer) tokenizer = context.load_tokenizer(model_dir);
      judge_ = reward_model_judge(std::move(model), std::move(tokenizer), env.device, judge_batch);
    } else {
      const std::string dir = recipe::require_model_dir(context, "judge_model");
      std::shared_ptr<CausalLM> model = recipe::load_model(context, "judge_model", dir, env);
      model->set_training(false);
      std::unique_ptr<Tokenizer> tokenizer = recipe::load_tokenizer(context, "judge_model", dir);
      if (!tokenizer) throw ConfigError(s.locate("judge_model") + ": " + dir + " has no tokenizer file; an LM judge reads text");
      const std::string template_text = s.get_string("judge_template");
      try {
        fill_template(template_text, "", "", "");
      } catch (const std::invalid_argument& e) {
        throw ConfigError(s.locate("judge_template") + ": " + e.what());
      }
      judge_ = lm_judge(std::move(model), std::move(tokenizer), template_text, env.device, judge_batch);
    }
    context.log("synthesize: " + std::to_string(data_.train.size()) + " prompts x " + std::to_string(num_completions_) +
                " completions, judge " + judge_name_ + ", " + pairs_ + ", margin > " + std::to_string(threshold_));
  }

  bool produce(const std::string& dir) override {
    at::NoGradGuard no_grad;
    std::ofstream out(fs::path(dir) / "data.jsonl", std::ios::binary);
    if (!out) throw std::runtime_error(dir + "/data.jsonl: cannot be created");
    int64_t prompts = 0, completions = 0, pairs = 0, judged_pairs = 0, no_pair = 0;
    double margin_sum = 0;
    const int64_t total = data_.train.size();
    for (int64_t start = 0; start < total; start += batch_size_) {
      if (context_->stop_requested()) return false;
      const int64_t end = std::min(total, start + batch_size_);
      std::vector<std::vector<int64_t>> batch;
      for (int64_t p = start; p < end; ++p) {
        const Example& e = data_.train.at(p);
        for (int64_t k = 0; k < num_completions_; ++k) batch.emplace_back(e.prompt.begin(), e.prompt.end());
      }
      GenerationOptions generation = generation_;
      generation.seed = env_.seed + static_cast<uint64_t>(start);
      const std::vector<std::vector<int64_t>> outputs = policy_->generate(batch, generation);
      for (int64_t p = start; p < end; ++p) {
        const Example& e = data_.train.at(p);
        Candidates candidates{e.prompt_text, e.answer, {}};
        for (int64_t k = 0; k < num_completions_; ++k) {
          std::vector<int32_t> ids(outputs[(p - start) * num_completions_ + k].begin(),
                                   outputs[(p - start) * num_completions_ + k].end());
          if (!ids.empty() && ids.back() == tokenizer_->eos_id()) ids.pop_back();
          candidates.completions.push_back(tokenizer_->decode(ids));
        }
        completions += num_completions_;
        ++prompts;
        const MarginMatrix margins = judge_->judge(candidates);
        judged_pairs += pairs_ == "all-pairs" ? num_completions_ * (num_completions_ - 1) / 2 : 1;
        const std::vector<Pair> kept = select_pairs(margins, candidates.completions, pairs_, threshold_);
        if (kept.empty()) ++no_pair;
        for (const Pair& pair : kept) {
          out << nlohmann::json{{"prompt", e.prompt_text},
                                {"chosen", candidates.completions[pair.chosen]},
                                {"rejected", candidates.completions[pair.rejected]},
                                {"margin", pair.margin},
                                {"judge", judge_name_}}
                     .dump()
              << '\n';
          margin_sum += pair.margin;
          ++pairs;
        }
      }
      context_->log("synthesize: " + std::to_string(end) + "/" + std::to_string(total) + " prompts, " +
                    std::to_string(pairs) + " pairs");
    }
    out.close();
    if (!out) throw std::runtime_error(dir + "/data.jsonl: write failed");
    const double mean_margin = pairs > 0 ? margin_sum / static_cast<double>(pairs) : 0.0;
    nlohmann::json summary = {{"prompts", prompts}, {"completions", completions}, {"pairs", pairs},
                              {"prompts_without_pair", no_pair}, {"candidate_pairs", judged_pairs},
                              {"mean_margin", mean_margin}, {"judge", judge_name_}, {"strategy", pairs_},
                              {"margin_threshold", threshold_}};
    std::ofstream(fs::path(dir) / "summary.json") << summary.dump(2) << '\n';
    context_->log_metrics(0, Split::Train,
                          {{"synthesize/prompts", static_cast<double>(prompts)},
                           {"synthesize/pairs", static_cast<double>(pairs)},
                           {"synthesize/prompts_without_pair", static_cast<double>(no_pair)},
                           {"synthesize/mean_margin", mean_margin}});
    if (pairs == 0)
      throw std::runtime_error("synthesize: no pair had a judge margin above " + std::to_string(threshold_) + " (" +
                               std::to_string(prompts) + " prompts); lower margin_threshold or sample more completions");
    return true;
  }

  DataProducer* producer() override { return this; }
  // A producer has nothing to train: the backend never asks for these.
  std::vector<NamedTensor> trainable_parameters() override { return {}; }
  int64_t num_examples(Split split) const override { return split == Split::Train ? data_.train.size() : 0; }
  StepOutput step(const std::vector<int64_t>&, Split) override {
    throw std::logic_error("synthesize makes no training steps (it is a DataProducer)");
  }
  void set_training(bool) override {}
  std::vector<std::string> progress_metrics() const override { return {}; }
  void save(const std::string&) override {
    throw std::logic_error("synthesize writes data through produce(), not a model");
  }

 private:
  StageContext* context_ = nullptr;
  TrainEnv env_;
  std::shared_ptr<CausalLM> policy_;
  std::unique_ptr<Tokenizer> tokenizer_;
  recipe::StageData data_;
  std::unique_ptr<Judge> judge_;
  std::string judge_name_;
  GenerationOptions generation_;
  int64_t num_completions_ = 4;
  int64_t batch_size_ = 8;
  std::string pairs_;
  double threshold_ = 0.0;
};

struct SynthesizeProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<SynthesizeAlgorithm>(); }
};

void register_synthesize(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "synthesize", ALIGNKIT_VERSION_STRING,
                          "synthetic preference data: sample completions, judge them, write pairs (a data-producing stage)",
                          synthesize_settings()},
                         std::make_shared<SynthesizeProvider>());
}

}  // namespace
}  // namespace alignkit::synthesize

ALIGNKIT_PLUGIN("synthesize", ALIGNKIT_VERSION_STRING, "synthetic preference pairs from a policy and a judge",
                alignkit::synthesize::register_synthesize)
