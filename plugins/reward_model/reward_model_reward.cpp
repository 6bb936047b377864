// The `reward_model` reward (kind `reward`): scores prompt + completion texts
// with a trained reward model, as TRL's PPOTrainer scores with its
// reward_model. The model is the stage's `reward_model` role (a folder or
// "stages.X.output") or the reward's own `path`; it must be a scalar-head
// model (*ForSequenceClassification, one label) whose tokenizer and
// vocabulary are the policy's (the same piece for every id), since it reads the policy's text tokenized as
// the reward stage tokenized its data: BOS + prompt, completion + EOS. A
// sequence's score is the head's value at its last token.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "alignkit/batch.hpp"
#include "alignkit/plugin.hpp"
#include "alignkit/registry.hpp"
#include "alignkit/reward.hpp"
#include "alignkit/training.hpp"
#include "reward_model_check.hpp"

namespace fs = std::filesystem;

namespace alignkit::reward_model {
namespace {

std::vector<SettingSpec> reward_model_settings() {
  return {
      setting::optional_text("path", "a reward-model folder (default: the stage's reward_model)"),
      setting::integer("batch_size", 16, "completions scored in one forward pass", 1),
  };
}

int64_t config_vocab_size(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "config.json");
  const nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains("vocab_size") || !config["vocab_size"].is_number_integer()) return -1;
  return config["vocab_size"].get<int64_t>();
}

// "" when both tokenizers have the same special ids and the same piece for
// every id; otherwise the first difference.
std::string tokenizer_difference(const Tokenizer& ours, const Tokenizer& policys) {
  if (ours.vocab_size() != policys.vocab_size())
    return std::to_string(ours.vocab_size()) + " tokens against " + std::to_string(policys.vocab_size());
  if (ours.bos_id() != policys.bos_id() || ours.eos_id() != policys.eos_id() || ours.pad_id() != policys.pad_id())
    return "other BOS/EOS/padding ids";
  for (int32_t id = 0; id < ours.vocab_size(); ++id)
    if (ours.decode({id}) != policys.decode({id}))
      return "token " + std::to_string(id) + " is '" + ours.decode({id}) + "' against '" + policys.decode({id}) + "'";
  return "";
}

// The device the stage trains on, as the local backend chooses it.
c10::Device stage_device(const ConfigView& stage) {
  const std::string device = stage.has("device") ? stage.get_string("device") : "cpu";
  return device == "cuda" || (device == "auto" && at::hasCUDA()) ? c10::Device(c10::kCUDA) : c10::Device(c10::kCPU);
}

class RewardModelReward : public Reward {
 public:
  RewardModelReward(std::shared_ptr<CausalLM> model, std::unique_ptr<Tokenizer> tokenizer, int64_t batch_size)
      : model_(std::move(model)), tokenizer_(std::move(tokenizer)), batch_size_(batch_size) {
    model_->set_training(false);
    const ModelInfo& info = model_->info();
    pad_id_ = padding_id(tokenizer_->pad_id() >= 0 ? tokenizer_->pad_id() : info.pad_token_id,
                         tokenizer_->eos_id() >= 0 ? tokenizer_->eos_id() : info.eos_token_id);
  }

  std::vector<double> score(const std::vector<RewardInput>& batch) override {
    at::NoGradGuard no_grad;
    CollateOptions options;
    options.pad_id = pad_id_;
    std::vector<double> scores;
    for (size_t start = 0; start < batch.size(); start += static_cast<size_t>(batch_size_)) {
      const size_t end = std::min(batch.size(), start + static_cast<size_t>(batch_size_));
      std::vector<Row> rows;
      for (size_t i = start; i < end; ++i) rows.push_back(row_of(batch[i]));
      const Batch tokens = collate(rows, options);
      const at::Tensor values =
          model_->head_values(tokens.input_ids, tokens.attention_mask, tokens.position_ids).to(at::kDouble).cpu();  // (B, T)
      for (int64_t r = 0; r < tokens.rows(); ++r) scores.push_back(values[r][tokens.lengths[r] - 1].item<double>());
    }
    return scores;
  }

 private:
  // BOS + prompt and completion + EOS, as the jsonl dataset tokenized the reward model's data.
  Row row_of(const RewardInput& input) const {
    Row row;
    row.prompt = tokenizer_->encode(input.prompt);
    if (tokenizer_->bos_id() >= 0 && (row.prompt.empty() || row.prompt.front() != tokenizer_->bos_id()))
      row.prompt.insert(row.prompt.begin(), tokenizer_->bos_id());
    row.completion = tokenizer_->encode(input.completion);
    if (tokenizer_->eos_id() >= 0) row.completion.push_back(tokenizer_->eos_id());
    return row;
  }

  std::shared_ptr<CausalLM> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  int64_t batch_size_;
  int32_t pad_id_ = 0;
};

struct RewardModelProvider : RewardProvider {
  std::unique_ptr<Reward> create(const ConfigView& settings, StageContext& context) const override {
    const ConfigView& stage = context.settings();
    std::string dir;
    std::string where;
    if (settings.has("path")) {
      dir = settings.get_string("path");
      where = settings.locate("path");
      reward::check_reward_model_folder(dir, where);
    } else {
      dir = reward::checked_reward_model_dir(context);
      where = stage.locate("reward_model");
      if (dir.empty())
        throw ConfigError(where + ": the reward_model reward needs a trained reward model: set the stage's "
                                  "reward_model (e.g. \"stages.reward.output\") or the reward's `path`");
    }
    const std::string policy_dir = context.model_dir("model");

    ModelOptions options;
    options.head = HeadKind::Scalar;
    options.device = stage_device(stage);
    std::shared_ptr<CausalLM> model;
    std::unique_ptr<Tokenizer> tokenizer;
    try {
      model = context.load_model(dir, options);
      tokenizer = context.load_tokenizer(dir);
    } catch (const ConfigError&) {
      throw;
    } catch (const std::exception& e) {
      throw ConfigError(where + ": " + e.what());
    }
    if (!tokenizer)
      throw ConfigError(where + ": " + dir + " has no tokenizer file; the reward model scores the policy's text, so "
                                             "its folder needs the tokenizer it was trained with");

    const int64_t policy_vocab = policy_dir.empty() ? -1 : config_vocab_size(policy_dir);
    if (policy_vocab >= 0 && policy_vocab != model->info().vocab_size)
      throw ConfigError(where + ": the reward model " + dir + " has a vocabulary of " +
                        std::to_string(model->info().vocab_size) + " tokens but the policy " + policy_dir + " has " +
                        std::to_string(policy_vocab) + "; train the reward model from the policy's base model so "
                                                       "both share one tokenizer");
    if (!policy_dir.empty()) {
      std::unique_ptr<Tokenizer> policy_tokenizer = context.load_tokenizer(policy_dir);
      const std::string difference = policy_tokenizer ? tokenizer_difference(*tokenizer, *policy_tokenizer) : "";
      if (!difference.empty())
        throw ConfigError(where + ": the reward model's tokenizer (" + dir + ") differs from the policy's (" +
                          policy_dir + "): " + difference +
                          "; a reward model reads the policy's text with the policy's tokenizer, so train it from "
                          "the policy's base model");
    }
    return std::make_unique<RewardModelReward>(std::move(model), std::move(tokenizer), settings.get_int("batch_size"));
  }
};

void register_reward_model(Registry& registry) {
  registry.add_reward({ComponentKind::Reward, "reward_model", ALIGNKIT_VERSION_STRING,
                       "scores completions with a trained reward model (scalar head at the last token)",
                       reward_model_settings()},
                      std::make_shared<RewardModelProvider>());
}

}  // namespace
}  // namespace alignkit::reward_model

ALIGNKIT_PLUGIN("reward_model", ALIGNKIT_VERSION_STRING, "the reward_model reward: scores with a trained reward model",
                alignkit::reward_model::register_reward_model)
