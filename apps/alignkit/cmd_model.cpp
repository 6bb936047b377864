// `alignkit model init`: a randomly initialised model in the Hugging Face
// layout (config.json + model.safetensors, and tokenizer.model when given),
// for tests, the quick start and experiments that start from scratch.
// `alignkit model merge`: a base model with a PEFT LoRA adapter folded in,
// written as a full Hugging Face checkpoint.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <boost/program_options/value_semantic.hpp>
#include <nlohmann/json.hpp>

#include "alignkit/core/runner.hpp"
#include "alignkit/model.hpp"
#include "alignkit/registry.hpp"
#include "commands.hpp"

namespace fs = std::filesystem;
namespace po = boost::program_options;

namespace alignkit::cli {
namespace {

std::unique_ptr<Tokenizer> open_tokenizer_file(const core::PluginHost& host, const std::string& path) {
  const Registry& registry = host.registry();
  for (const std::string& name : registry.names(ComponentKind::Tokenizer)) {
    const TokenizerProvider* provider = registry.tokenizer(name);
    if (fs::path(path).filename() == provider->file_name() || registry.names(ComponentKind::Tokenizer).size() == 1)
      return provider->open(path);
  }
  throw ConfigError(path + ": no tokenizer plugin reads this file (alignkit plugins list)");
}

}  // namespace

int cmd_model_init(const std::vector<std::string>& args) {
  po::options_description options("model init");
  PluginOptions plugin_options;
  add_plugin_options(options, plugin_options);
  std::string arch, out, config_file, tokenizer_file, model_type;
  int64_t hidden = 64, layers = 2, heads = 4, kv_heads = 0, intermediate = 0, vocab = 0, max_positions = 512;
  int64_t seed = 0;
  bool tie = false;
  options.add_options()
      ("arch", po::value(&arch)->default_value("llama"), "model plugin")
      ("model-type", po::value(&model_type)->default_value("llama"), "config.json model_type: llama, mistral or qwen2")
      ("out", po::value(&out)->required(), "folder to write")
      ("config", po::value(&config_file), "a config.json to use instead of the size options")
      ("hidden-size", po::value(&hidden)->default_value(hidden), "hidden size")
      ("layers", po::value(&layers)->default_value(layers), "decoder layers")
      ("heads", po::value(&heads)->default_value(heads), "attention heads")
      ("kv-heads", po::value(&kv_heads)->default_value(0), "key/value heads (0: as many as --heads)")
      ("intermediate-size", po::value(&intermediate)->default_value(0), "MLP size (0: about 8/3 of hidden, rounded to 8)")
      ("vocab-size", po::value(&vocab)->default_value(0), "vocabulary size (needed without --tokenizer)")
      ("max-position-embeddings", po::value(&max_positions)->default_value(max_positions), "longest sequence")
      ("tie-word-embeddings", po::bool_switch(&tie), "share the input embedding with lm_head")
      ("tokenizer", po::value(&tokenizer_file), "a tokenizer.model: sets vocab size and special ids, copied into --out")
      ("seed", po::value(&seed)->default_value(0), "initialisation seed");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit model init --out DIR [--tokenizer FILE | --vocab-size N] [size options]",
                          options, {}, values, exit_code))
    return exit_code;

  auto host = open_plugins(plugin_options);
  const ModelProvider* provider = host->registry().model(arch);
  if (!provider) {
    std::cerr << "alignkit: no model plugin named '" << arch << "'\n";
    return kExitUsage;
  }
  nlohmann::json config;
  if (!config_file.empty()) {
    std::ifstream in(config_file);
    if (!in) {
      std::cerr << "alignkit: cannot read " << config_file << '\n';
      return kExitUsage;
    }
    try {
      config = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      std::cerr << config_file << ": not valid JSON (" << e.what() << ")\n";
      return kExitUsage;
    }
  } else {
    if (hidden % heads != 0) {
      std::cerr << "alignkit: --hidden-size " << hidden << " is not a multiple of --heads " << heads << '\n';
      return kExitUsage;
    }
    if (intermediate <= 0) intermediate = ((hidden * 8 / 3) + 7) / 8 * 8;
    config = {{"architectures", {model_type == "qwen2" ? "Qwen2ForCausalLM" : model_type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"}},
              {"model_type", model_type},
              {"hidden_size", hidden},
              {"intermediate_size", intermediate},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", kv_heads > 0 ? kv_heads : heads},
              {"max_position_embeddings", max_positions},
              {"rms_norm_eps", 1e-6},
              {"rope_theta", 10000.0},
              {"hidden_act", "silu"},
              {"initializer_range", 0.02},
              {"tie_word_embeddings", tie},
              {"attention_bias", false},
              {"torch_dtype", "float32"}};
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (!tokenizer_file.empty()) {
    tokenizer = open_tokenizer_file(*host, tokenizer_file);
    config["vocab_size"] = tokenizer->vocab_size();
    if (tokenizer->bos_id() >= 0) config["bos_token_id"] = tokenizer->bos_id();
    if (tokenizer->eos_id() >= 0) config["eos_token_id"] = tokenizer->eos_id();
    if (tokenizer->pad_id() >= 0) config["pad_token_id"] = tokenizer->pad_id();
  } else if (vocab > 0) {
    config["vocab_size"] = vocab;
  } else if (!config.contains("vocab_size")) {
    std::cerr << "alignkit: give --tokenizer FILE or --vocab-size N\n";
    return kExitUsage;
  }

  std::shared_ptr<CausalLM> model = provider->create(config.dump(), static_cast<uint64_t>(seed), ModelOptions{});
  model->save(out);
  if (tokenizer) fs::copy_file(tokenizer_file, fs::path(out) / "tokenizer.model", fs::copy_options::overwrite_existing);
  const ModelInfo& info = model->info();
  std::cout << "wrote " << out << ": " << info.model_type << ", " << info.num_parameters << " parameters, "
            << info.num_layers << " layers, hidden " << info.hidden_size << ", vocab " << info.vocab_size << '\n';
  return kExitOk;
}

int cmd_model_merge(const std::vector<std::string>& args) {
  po::options_description options("model merge");
  PluginOptions plugin_options;
  add_plugin_options(options, plugin_options);
  std::string base, adapter, out;
  options.add_options()
      ("base", po::value(&base)->required(), "the base model folder (Hugging Face layout)")
      ("adapter", po::value(&adapter)->required(), "a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)")
      ("out", po::value(&out)->required(), "folder to write the merged model to");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit model merge --base DIR --adapter DIR --out DIR", options, {}, values,
                          exit_code))
    return exit_code;

  auto host = open_plugins(plugin_options);
  std::shared_ptr<CausalLM> model;
  ModelOptions model_options;
  model_options.merge_adapters = {adapter};
  try {
    model = core::load_model(host->registry(), base, model_options);
  } catch (const std::exception& e) {
    // A missing folder, an adapter that does not fit the base: bad input.
    std::cerr << "alignkit: model merge: " << e.what() << '\n';
    return kExitUsage;
  }
  model->save(out);
  // The tokenizer and generation files come with the base.
  for (const char* file : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "generation_config.json"}) {
    const fs::path source = fs::path(base) / file;
    if (fs::is_regular_file(source)) fs::copy_file(source, fs::path(out) / file, fs::copy_options::overwrite_existing);
  }
  std::cout << "wrote " << out << ": " << base << " with " << adapter << " merged\n";
  return kExitOk;
}

}  // namespace alignkit::cli
