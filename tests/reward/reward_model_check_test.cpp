// The reward-model folder check that algorithms scoring with `reward_model`
// run before loading weights: a causal LM or a multi-label classifier is
// refused with a message that explains how to train a reward model.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "algorithm_test_util.hpp"
#include "reward_model_check.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

void write_config(const std::string& dir, const nlohmann::json& config) {
  fs::create_directories(dir);
  write_text(dir + "/config.json", config.dump());
}

}  // namespace

TEST_CASE("check_reward_model_folder accepts a one-label ForSequenceClassification model") {
  ScratchDir dir;
  write_config(dir / "rm", {{"architectures", {"LlamaForSequenceClassification"}}, {"num_labels", 1}});
  CHECK_NOTHROW(reward::check_reward_model_folder(dir / "rm", "stages.ppo.reward_model"));
  // transformers writes id2label, not num_labels.
  write_config(dir / "hf", {{"architectures", {"Qwen2ForSequenceClassification"}}, {"id2label", {{"0", "LABEL_0"}}}});
  CHECK_NOTHROW(reward::check_reward_model_folder(dir / "hf", "stages.ppo.reward_model"));
}

TEST_CASE("check_reward_model_folder refuses a causal LM, a two-label classifier and a folder without config.json") {
  ScratchDir dir;
  write_config(dir / "lm", {{"architectures", {"LlamaForCausalLM"}}});
  const std::string what = "stages.ppo.reward_model: " + (dir / "lm") +
                           " is not a reward model: config.json lists architectures [LlamaForCausalLM]";
  CHECK_THROWS_WITH_AS(reward::check_reward_model_folder(dir / "lm", "stages.ppo.reward_model"),
                       doctest::Contains(what.c_str()), ConfigError);
  CHECK_THROWS_WITH_AS(reward::check_reward_model_folder(dir / "lm", "stages.ppo.reward_model"),
                       doctest::Contains("train one first with the `reward` algorithm"), ConfigError);
  // Without labels transformers assumes two.
  write_config(dir / "two", {{"architectures", {"LlamaForSequenceClassification"}}});
  CHECK_THROWS_WITH_AS(reward::check_reward_model_folder(dir / "two", "stages.ppo.reward_model"),
                       doctest::Contains("sequence classifier with 2 labels"), ConfigError);
  CHECK_THROWS_WITH_AS(reward::check_reward_model_folder(dir / "missing", "stages.ppo.reward_model"),
                       doctest::Contains("config.json cannot be read"), ConfigError);
}

TEST_CASE("a causal LM the llama plugin saved is refused; the same model saved with a scalar head is accepted") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 5);
  CHECK_THROWS_WITH_AS(reward::check_reward_model_folder(dir / "base", "reward_model"),
                       doctest::Contains("LlamaForCausalLM"), ConfigError);
  ModelOptions scalar;
  scalar.head = HeadKind::Scalar;
  core::load_model(plugin_host().registry(), dir / "base", scalar)->save(dir / "rm");
  CHECK_NOTHROW(reward::check_reward_model_folder(dir / "rm", "reward_model"));
}
