// `alignkit score` (per-token log-probs of completions, or rewards from a
// scalar-head model) and `alignkit evaluate` (held-out preference accuracy
// and implicit reward margins of one or more models).
#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>

#include <boost/program_options/value_semantic.hpp>
#include <nlohmann/json.hpp>

#include "alignkit/batch.hpp"
#include "alignkit/core/runner.hpp"
#include "alignkit/model.hpp"
#include "commands.hpp"

namespace fs = std::filesystem;
namespace po = boost::program_options;

namespace alignkit::cli {
namespace {

struct RowScore {
  double logprob = 0.0;
  int64_t num_tokens = 0;
  std::vector<double> token_logprobs;
};

bool has_scalar_head(const std::string& model_dir) {
  std::ifstream in(fs::path(model_dir) / "config.json");
  nlohmann::json config = nlohmann::json::parse(in, nullptr, false);
  if (!config.is_object() || !config.contains("architectures")) return false;
  for (const auto& name : config["architectures"])
    if (name.is_string() && name.get<std::string>().find("ForSequenceClassification") != std::string::npos) return true;
  return false;
}

int32_t pad_of(const CausalLM& model) {
  const ModelInfo& info = model.info();
  return padding_id(info.pad_token_id, info.eos_token_id >= 0 ? info.eos_token_id : 0);
}

// Log-probs of each row's completion (or every token, for LossOn::All), in batches.
std::vector<RowScore> score_rows(CausalLM& model, const std::vector<Row>& rows, LossOn loss_on, int64_t batch_size) {
  at::NoGradGuard no_grad;
  CollateOptions options;
  options.pad_id = pad_of(model);
  options.loss_on = loss_on;
  std::vector<RowScore> scores;
  for (size_t start = 0; start < rows.size(); start += static_cast<size_t>(batch_size)) {
    std::vector<Row> chunk(rows.begin() + static_cast<std::ptrdiff_t>(start),
                           rows.begin() + static_cast<std::ptrdiff_t>(std::min(rows.size(), start + batch_size)));
    Batch batch = collate(chunk, options);
    at::Tensor logits = model.forward(batch.input_ids, batch.attention_mask, batch.position_ids);  // (B, T, V)
    SequenceLogprobs lp = sequence_logprobs(logits, batch.input_ids, batch.loss_mask);
    at::Tensor per_token = lp.per_token.to(at::kDouble).cpu();
    at::Tensor mask = lp.mask.cpu();
    for (int64_t r = 0; r < batch.rows(); ++r) {
      RowScore score;
      for (int64_t t = 0; t < per_token.size(1); ++t)
        if (mask[r][t].item<bool>()) score.token_logprobs.push_back(per_token[r][t].item<double>());
      score.num_tokens = static_cast<int64_t>(score.token_logprobs.size());
      for (double v : score.token_logprobs) score.logprob += v;
      scores.push_back(std::move(score));
    }
  }
  return scores;
}

// Rewards of a scalar-head model: the head's value at each row's last real token.
std::vector<double> reward_rows(CausalLM& model, const std::vector<Row>& rows, int64_t batch_size) {
  at::NoGradGuard no_grad;
  CollateOptions options;
  options.pad_id = pad_of(model);
  std::vector<double> rewards;
  for (size_t start = 0; start < rows.size(); start += static_cast<size_t>(batch_size)) {
    std::vector<Row> chunk(rows.begin() + static_cast<std::ptrdiff_t>(start),
                           rows.begin() + static_cast<std::ptrdiff_t>(std::min(rows.size(), start + batch_size)));
    Batch batch = collate(chunk, options);
    at::Tensor values = model.head_values(batch.input_ids, batch.attention_mask, batch.position_ids).cpu();  // (B, T)
    for (int64_t r = 0; r < batch.rows(); ++r) rewards.push_back(values[r][batch.lengths[r] - 1].item<double>());
  }
  return rewards;
}

}  // namespace

int cmd_score(const std::vector<std::string>& args) {
  po::options_description options("score");
  PluginOptions plugin_options;
  add_plugin_options(options, plugin_options);
  std::string model_dir, data, out, chat_template;
  int64_t batch_size = 8, threads = 0;
  options.add_options()("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout)")(
      "data", po::value(&data)->required(), "JSONL records: prompt-completion or text, strings or pre-tokenized")(
      "out", po::value(&out), "write the JSON lines here instead of stdout")(
      "chat-template", po::value(&chat_template), "for conversational records (default: the jsonl plugin's)")(
      "batch-size", po::value(&batch_size)->default_value(batch_size), "rows per forward pass")(
      "threads", po::value(&threads)->default_value(0), "CPU threads (0: every core)");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit score --model DIR --data FILE.jsonl [--out FILE]", options, {}, values,
                          exit_code))
    return exit_code;
  set_threads(threads);
  auto host = open_plugins(plugin_options);
  try {
    const bool scalar = has_scalar_head(model_dir);
    ModelOptions model_options;
    model_options.head = scalar ? HeadKind::Scalar : HeadKind::LanguageModel;
    std::shared_ptr<CausalLM> model = core::load_model(host->registry(), model_dir, model_options);
    model->set_training(false);
    std::unique_ptr<Tokenizer> tokenizer = core::load_tokenizer(host->registry(), model_dir);
    std::unique_ptr<Dataset> dataset = load_records(*host, data, tokenizer.get(), chat_template);
    if (dataset->kind() != DataKind::PromptCompletion && dataset->kind() != DataKind::LanguageModeling)
      throw ConfigError(data + ": score reads prompt-completion or language-modeling records, found " +
                        data_kind_name(dataset->kind()) + " records");
    std::vector<Row> rows;
    for (size_t i = 0; i < dataset->size(); ++i) rows.push_back(chosen_row(dataset->at(i)));

    std::ofstream file;
    if (!out.empty()) file.open(out);
    std::ostream& sink = out.empty() ? std::cout : file;
    if (scalar) {
      for (double reward : reward_rows(*model, rows, batch_size)) sink << nlohmann::json{{"reward", reward}}.dump() << '\n';
    } else {
      LossOn loss_on = dataset->kind() == DataKind::LanguageModeling ? LossOn::All : LossOn::Completion;
      for (const RowScore& s : score_rows(*model, rows, loss_on, batch_size))
        sink << nlohmann::json{{"logprob", s.logprob}, {"num_tokens", s.num_tokens}, {"token_logprobs", s.token_logprobs}}
                    .dump()
             << '\n';
    }
  } catch (const ConfigError& e) {
    std::cerr << e.what() << '\n';
    return kExitUsage;
  }
  return kExitOk;
}

int cmd_evaluate(const std::vector<std::string>& args) {
  po::options_description options("evaluate");
  PluginOptions plugin_options;
  add_plugin_options(options, plugin_options);
  std::vector<std::string> models;
  std::string reference, data, chat_template;
  double beta = 0.1;
  int64_t batch_size = 8, threads = 0, generations = 0, max_new_tokens = 24;
  bool json = false;
  options.add_options()("model", po::value(&models)->composing()->required(), "model folder to evaluate (repeatable)")(
      "reference", po::value(&reference), "reference model for DPO's implicit rewards beta*(logp - logp_ref)")(
      "data", po::value(&data)->required(), "JSONL preference records (prompt, chosen, rejected)")(
      "beta", po::value(&beta)->default_value(beta), "beta of the implicit reward")(
      "generate", po::value(&generations)->default_value(0), "also show greedy continuations of the first N prompts")(
      "max-new-tokens", po::value(&max_new_tokens)->default_value(max_new_tokens), "for --generate")(
      "chat-template", po::value(&chat_template), "for conversational records")(
      "batch-size", po::value(&batch_size)->default_value(batch_size), "rows per forward pass")(
      "threads", po::value(&threads)->default_value(0), "CPU threads (0: every core)")(
      "json", po::bool_switch(&json), "print one JSON object per model");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit evaluate --data PREFS.jsonl --model DIR [--model DIR]... [--reference DIR]",
                          options, {}, values, exit_code))
    return exit_code;
  set_threads(threads);
  auto host = open_plugins(plugin_options);
  try {
    std::unique_ptr<Tokenizer> tokenizer = core::load_tokenizer(host->registry(), models.front());
    std::unique_ptr<Dataset> dataset = load_records(*host, data, tokenizer.get(), chat_template);
    if (dataset->kind() != DataKind::Preference)
      throw ConfigError(data + ": evaluate needs preference records (prompt, chosen, rejected), found " +
                        data_kind_name(dataset->kind()) + " records");
    std::vector<Row> chosen, rejected;
    for (size_t i = 0; i < dataset->size(); ++i) {
      chosen.push_back(chosen_row(dataset->at(i)));
      rejected.push_back(rejected_row(dataset->at(i)));
    }
    auto sums = [&](CausalLM& model, const std::vector<Row>& rows) {
      std::vector<double> out;
      for (const RowScore& s : score_rows(model, rows, LossOn::Completion, batch_size)) out.push_back(s.logprob);
      return out;
    };
    std::vector<double> ref_chosen, ref_rejected;
    if (!reference.empty()) {
      std::shared_ptr<CausalLM> ref = core::load_model(host->registry(), reference, {});
      ref->set_training(false);
      ref_chosen = sums(*ref, chosen);
      ref_rejected = sums(*ref, rejected);
    }
    if (!json) {
      std::cout << dataset->size() << " preference pairs from " << data << "\n\n"
                << std::left << std::setw(44) << "model" << std::setw(20) << "logp accuracy" << std::setw(18)
                << "logp margin";
      if (!reference.empty()) std::cout << std::setw(18) << "reward accuracy" << "reward margin";
      std::cout << '\n';
    }
    for (const std::string& dir : models) {
      std::shared_ptr<CausalLM> model = core::load_model(host->registry(), dir, {});
      model->set_training(false);
      std::vector<double> c = sums(*model, chosen), r = sums(*model, rejected);
      const double n = static_cast<double>(c.size());
      double logp_accuracy = 0, logp_margin = 0, reward_accuracy = 0, reward_margin = 0;
      for (size_t i = 0; i < c.size(); ++i) {
        logp_accuracy += c[i] > r[i] ? 1.0 : 0.0;
        logp_margin += c[i] - r[i];
        if (!reference.empty()) {
          const double margin = beta * ((c[i] - ref_chosen[i]) - (r[i] - ref_rejected[i]));
          reward_accuracy += margin > 0 ? 1.0 : 0.0;
          reward_margin += margin;
        }
      }
      nlohmann::json result = {{"model", dir}, {"pairs", c.size()}, {"logp_accuracy", logp_accuracy / n},
                               {"logp_margin", logp_margin / n}};
      if (!reference.empty()) {
        result["rewards/accuracies"] = reward_accuracy / n;
        result["rewards/margins"] = reward_margin / n;
      }
      if (generations > 0 && tokenizer) {
        std::vector<std::vector<int64_t>> prompts;
        for (size_t i = 0; i < std::min<size_t>(static_cast<size_t>(generations), dataset->size()); ++i)
          prompts.emplace_back(dataset->at(i).prompt.begin(), dataset->at(i).prompt.end());
        GenerationOptions generation;
        generation.max_new_tokens = max_new_tokens;
        auto outputs = model->generate(prompts, generation);
        nlohmann::json samples = nlohmann::json::array();
        for (size_t i = 0; i < outputs.size(); ++i) {
          std::vector<int32_t> ids(outputs[i].begin(), outputs[i].end());
          if (!ids.empty() && ids.back() == tokenizer->eos_id()) ids.pop_back();
          samples.push_back({{"prompt", dataset->at(i).prompt_text}, {"completion", tokenizer->decode(ids)}});
        }
        result["generations"] = samples;
      }
      if (json) {
        std::cout << result.dump() << '\n';
        continue;
      }
      std::cout << std::left << std::setw(44) << dir << std::setw(20) << std::fixed << std::setprecision(3)
                << logp_accuracy / n << std::setw(18) << logp_margin / n;
      if (!reference.empty()) std::cout << std::setw(18) << reward_accuracy / n << reward_margin / n;
      std::cout << '\n';
      if (result.contains("generations"))
        for (const auto& sample : result["generations"])
          std::cout << "    " << sample["prompt"].get<std::string>() << " -> " << sample["completion"].get<std::string>()
                    << '\n';
    }
  } catch (const ConfigError& e) {
    std::cerr << e.what() << '\n';
    return kExitUsage;
  }
  return kExitOk;
}

}  // namespace alignkit::cli
