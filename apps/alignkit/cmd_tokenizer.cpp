// `alignkit tokenizer train`: trains a tokenizer file from a plain-text corpus
// with a tokenizer plugin (SentencePiece by default), then opens the result to
// report its vocabulary and special ids.
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include "alignkit/tokenizer.hpp"
#include "commands.hpp"

namespace po = boost::program_options;

namespace alignkit::cli {

int cmd_tokenizer_train(const std::vector<std::string>& args) {
  TokenizerTrainOptions train;
  std::string tokenizer_name;
  PluginOptions plugins;
  po::options_description options("options");
  options.add_options()
      ("input", po::value(&train.input_file)->required(), "plain-text corpus, one sentence a line")
      ("out", po::value(&train.output_file)->required(), "the tokenizer file to write (e.g. tokenizer.model)")
      ("vocab-size", po::value(&train.vocab_size)->default_value(train.vocab_size), "number of pieces")
      ("model-type", po::value(&train.model_type)->default_value(train.model_type), "bpe or unigram")
      ("seed", po::value(&train.seed)->default_value(train.seed), "random seed (same seed, same file)")
      ("tokenizer", po::value(&tokenizer_name)->default_value("sentencepiece"), "the tokenizer plugin to train with");
  add_plugin_options(options, plugins);
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args,
                          "alignkit tokenizer train --input CORPUS.txt --out tokenizer.model [--vocab-size N] "
                          "[--model-type bpe|unigram] [--seed N]",
                          options, {}, values, exit_code))
    return exit_code;
  if (train.vocab_size <= 0) {
    std::cerr << "alignkit: --vocab-size must be positive, found " << train.vocab_size << '\n';
    return kExitUsage;
  }
  if (train.model_type != "bpe" && train.model_type != "unigram") {
    std::cerr << "alignkit: --model-type must be bpe or unigram, found " << train.model_type << '\n';
    return kExitUsage;
  }

  std::unique_ptr<core::PluginHost> host = open_plugins(plugins);
  const TokenizerProvider* provider = host->registry().tokenizer(tokenizer_name);
  if (!provider) {
    const core::PluginRecord* record = host->provider_of(ComponentKind::Tokenizer, tokenizer_name);
    std::cerr << "alignkit: no plugin provides the tokenizer \"" << tokenizer_name << "\""
              << (record && !record->error.empty() ? ": " + record->error : std::string()) << '\n';
    return kExitFailure;
  }
  provider->train(train);
  std::unique_ptr<Tokenizer> tokenizer = provider->open(train.output_file);
  std::cout << "wrote " << train.output_file << ": " << tokenizer->vocab_size() << " pieces, bos "
            << tokenizer->bos_id() << ", eos " << tokenizer->eos_id() << ", pad " << tokenizer->pad_id() << '\n';
  return kExitOk;
}

}  // namespace alignkit::cli
