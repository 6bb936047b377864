// Shared setup and scored rollouts of the sampling recipes (see policy_stage.hpp).
#include "policy_stage.hpp"

#include <ATen/ATen.h>

namespace alignkit::online {

std::vector<SettingSpec> generation_settings(int64_t default_max_completion_length, double default_temperature) {
  return {
      rewards_setting("the rewards: [[stages.<name>.rewards]] tables with name = a reward plugin, weight, "
                      "default_score, label and the reward's own settings"),
      setting::integer("max_prompt_length", 512, "longest prompt in tokens; longer ones keep their end (0: no limit)",
                       0.0),
      setting::integer("max_completion_length", default_max_completion_length,
                       "most tokens generated per completion", 1.0),
      setting::number("temperature", default_temperature, "sampling temperature (the log-probs use it too)", 0.0),
      setting::integer("top_k", 0, "sample among the k most likely tokens (0: all)", 0.0),
      setting::number("top_p", 1.0, "nucleus sampling: the smallest set of tokens with this probability (1: all)",
                      0.0),
      setting::boolean("eval_do_sample", false,
                       "evaluate on sampled completions (false: greedy, one per held-out prompt)"),
  };
}

void PolicyStage::setup(StageContext& context, const TrainEnv& env, const PolicyStageOptions& options) {
  context_ = &context;
  env_ = env;
  const ConfigView& settings = context.settings();
  max_prompt_length_ = settings.get_int("max_prompt_length");
  max_completion_length_ = settings.get_int("max_completion_length");
  temperature_ = settings.get_float("temperature");
  if (!(temperature_ > 0)) throw ConfigError(settings.locate("temperature") + ": must be greater than 0");
  top_k_ = settings.get_int("top_k");
  top_p_ = settings.get_float("top_p");
  if (!(top_p_ > 0 && top_p_ <= 1)) throw ConfigError(settings.locate("top_p") + ": must be in (0, 1]");
  eval_do_sample_ = settings.get_bool("eval_do_sample");

  model_dir_ = recipe::require_model_dir(context, "model");
  tokenizer_ = recipe::load_tokenizer(context, "model", model_dir_);
  policy_ = recipe::load_model(context, "model", model_dir_, env);
  const ModelInfo& info = policy_->info();
  pad_id_ = recipe::choose_pad_id(tokenizer_.get(), info, model_dir_);
  if (info.eos_token_id < 0 && !(tokenizer_ && tokenizer_->eos_id() >= 0))
    throw ConfigError(settings.locate("model") + ": " + model_dir_ +
                      " names no eos token; completions could never end (set eos_token_id in config.json)");

  recipe::DataRequirements requirements;
  requirements.algorithm = options.algorithm;
  requirements.kinds = {DataKind::PromptOnly, DataKind::PromptCompletion};
  requirements.fields = "prompt, and an optional answer for verifiable rewards";
  requirements.vocab_size = info.vocab_size;
  requirements.truncation.pad_id = pad_id_;
  requirements.truncation.max_prompt_length = max_prompt_length_;
  data_ = recipe::load_stage_data(context, tokenizer_.get(), env.seed, requirements);

  rewards_ = RewardSet::create(context, "rewards", /*required=*/true);

  if (options.with_reference) {
    const std::string reference_dir = context.model_dir("reference");
    const std::string role = reference_dir.empty() ? "model" : "reference";
    const std::string source = reference_dir.empty() ? model_dir_ : reference_dir;
    reference_ = recipe::load_reference(context, role, source, env, policy_, model_dir_);
    context.log("reference model: " + source + " (frozen, eval mode)");
  }
}

RolloutSettings PolicyStage::rollout_settings(int64_t num_generations, bool sample) const {
  RolloutSettings settings;
  settings.num_generations = num_generations;
  settings.max_prompt_length = max_prompt_length_;
  settings.pad_id = pad_id_;
  GenerationOptions& generation = settings.generation;
  generation.max_new_tokens = max_completion_length_;
  generation.do_sample = sample;
  generation.temperature = temperature_;
  generation.top_k = top_k_;
  generation.top_p = top_p_;
  generation.use_cache = true;
  generation.pad_token_id = pad_id_;
  if (tokenizer_ && tokenizer_->eos_id() >= 0) generation.stop_token_ids = {tokenizer_->eos_id()};
  // Greedy evaluation draws nothing, so evaluating does not change what training samples.
  if (sample) generation.seed = static_cast<uint64_t>(at::randint(0, int64_t{1} << 62, {1}, at::kLong).item<int64_t>());
  return settings;
}

ScoredRollout PolicyStage::rollout(Split which, const std::vector<int64_t>& indices, const RolloutSettings& settings) {
  ScoredRollout out;
  out.prompts = split(which).examples(indices);
  out.batch = generate_rollout(*policy_, tokenizer_.get(), out.prompts, settings);
  out.scores = rewards_.score(reward_inputs(out.batch, out.prompts, tokenizer_.get()));
  return out;
}

StepOutput PolicyStage::evaluate(const std::vector<int64_t>& indices) {
  ScoredRollout scored = rollout(Split::Eval, indices, rollout_settings(1, eval_do_sample_));
  StepOutput out;
  out.metrics.push_back({"reward", scored.scores.total.to(at::kDouble).mean().item<double>()});
  for (Metric& m : scored.scores.metrics()) out.metrics.push_back(std::move(m));
  for (Metric& m : completion_metrics(scored.batch)) out.metrics.push_back(std::move(m));
  return out;
}

void PolicyStage::save(const std::string& dir) {
  recipe::save_model_folder(*context_, *policy_, model_dir_, dir);
}

}  // namespace alignkit::online
