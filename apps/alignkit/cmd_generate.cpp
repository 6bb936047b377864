// `alignkit generate`: continues prompts with a model (greedy or sampling,
// with the KV cache), from --prompt text or a JSONL file of prompts.
#include <iostream>

#include <boost/program_options/value_semantic.hpp>
#include <nlohmann/json.hpp>

#include "alignkit/core/runner.hpp"
#include "alignkit/model.hpp"
#include "commands.hpp"

namespace po = boost::program_options;

namespace alignkit::cli {

int cmd_generate(const std::vector<std::string>& args) {
  po::options_description options("generate");
  PluginOptions plugin_options;
  add_plugin_options(options, plugin_options);
  std::string model_dir, data, chat_template;
  std::vector<std::string> prompts;
  GenerationOptions generation;
  int64_t threads = 0;
  bool json = false, no_cache = false;
  options.add_options()("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout)")(
      "prompt", po::value(&prompts)->composing(), "prompt text (repeatable; BOS is added when the tokenizer has one)")(
      "data", po::value(&data), "JSONL prompts (prompt-only records, strings, conversations or prompt_ids)")(
      "chat-template", po::value(&chat_template), "for conversational records")(
      "max-new-tokens", po::value(&generation.max_new_tokens)->default_value(generation.max_new_tokens), "tokens to add at most")(
      "do-sample", po::bool_switch(&generation.do_sample), "sample instead of greedy decoding")(
      "temperature", po::value(&generation.temperature)->default_value(1.0), "sampling temperature")(
      "top-k", po::value(&generation.top_k)->default_value(0), "keep the k most likely tokens (0: off)")(
      "top-p", po::value(&generation.top_p)->default_value(1.0), "nucleus sampling mass (1: off)")(
      "seed", po::value(&generation.seed)->default_value(0), "sampling seed")(
      "no-cache", po::bool_switch(&no_cache), "recompute the whole sequence each token (for comparison)")(
      "threads", po::value(&threads)->default_value(0), "CPU threads (0: every core)")(
      "json", po::bool_switch(&json), "print {\"prompt\", \"completion\", \"token_ids\"} lines");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit generate --model DIR (--prompt TEXT | --data FILE.jsonl) [sampling options]",
                          options, {}, values, exit_code))
    return exit_code;
  if (prompts.empty() == data.empty()) {
    std::cerr << "alignkit: give --prompt TEXT (repeatable) or --data FILE.jsonl\n";
    return kExitUsage;
  }
  generation.use_cache = !no_cache;
  set_threads(threads);
  auto host = open_plugins(plugin_options);
  try {
    std::shared_ptr<CausalLM> model = core::load_model(host->registry(), model_dir, {});
    model->set_training(false);
    std::unique_ptr<Tokenizer> tokenizer = core::load_tokenizer(host->registry(), model_dir);
    std::vector<std::vector<int64_t>> ids;
    std::vector<std::string> texts;
    if (!data.empty()) {
      std::unique_ptr<Dataset> dataset = load_records(*host, data, tokenizer.get(), chat_template);
      for (size_t i = 0; i < dataset->size(); ++i) {
        const Example& example = dataset->at(i);
        ids.emplace_back(example.prompt.begin(), example.prompt.end());
        texts.push_back(example.prompt_text);
      }
    } else {
      if (!tokenizer) throw ConfigError(model_dir + ": no tokenizer.model here; --prompt needs one (use --data with prompt_ids)");
      for (const std::string& text : prompts) {
        std::vector<int64_t> row;
        if (tokenizer->bos_id() >= 0) row.push_back(tokenizer->bos_id());
        for (int32_t id : tokenizer->encode(text)) row.push_back(id);
        ids.push_back(std::move(row));
        texts.push_back(text);
      }
    }
    std::vector<std::vector<int64_t>> outputs = model->generate(ids, generation);
    for (size_t i = 0; i < outputs.size(); ++i) {
      std::vector<int32_t> tokens(outputs[i].begin(), outputs[i].end());
      if (tokenizer && !tokens.empty() && tokens.back() == tokenizer->eos_id()) tokens.pop_back();
      std::string completion = tokenizer ? tokenizer->decode(tokens) : "";
      if (json) {
        std::cout << nlohmann::json{{"prompt", texts[i]}, {"completion", completion}, {"token_ids", outputs[i]}}.dump() << '\n';
      } else {
        std::cout << texts[i] << completion << '\n';
      }
    }
  } catch (const ConfigError& e) {
    std::cerr << e.what() << '\n';
    return kExitUsage;
  }
  return kExitOk;
}

}  // namespace alignkit::cli
