// The "sentencepiece" tokenizer plugin: opens and trains SentencePiece
// `tokenizer.model` files (Llama, Mistral and our own).
//
// Debian's libsentencepiece carries its own protobuf, which crashes next to
// LibTorch's, so this library never links LibTorch and is opened in isolation
// (ALIGNKIT_PLUGIN_ISOLATED: RTLD_LOCAL | RTLD_DEEPBIND). Only torch-free SDK
// types cross its boundary.
//
// Trained tokenizers follow Llama's tokenizer.model settings, except for the
// dummy prefix (see train()):
//   unk = 0, bos = 1 (<s>), eos = 2 (</s>), pad = 3 (<pad>);
//   user-defined pieces 4..7: <|im_start|> <|user|> <|assistant|> <|system|>,
//     the chat-template markers (plugins/jsonl), each kept as one token;
//   byte_fallback: any UTF-8 text encodes, unseen characters as <0xNN> bytes;
//   identity normalisation, spaces kept as written, digits split;
//   no dummy prefix: encode(a) + encode(b) decodes to a + b, so a prompt and a
//     completion tokenized apart join without an invented space.
// Training is deterministic: one thread, no sentence sampling or shuffling,
// the random generator seeded from the options.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "alignkit/plugin.hpp"
#include "alignkit/tokenizer.hpp"

namespace {

// SentencePiece statuses read "Internal: ./src/x.cc(660) [check] message";
// users need only the message.
std::string status_message(const sentencepiece::util::Status& status) {
  std::string message = status.ToString();
  const size_t source_note = message.find(") [");
  const size_t end_of_check = message.find("] ", source_note == std::string::npos ? 0 : source_note);
  if (source_note != std::string::npos && end_of_check != std::string::npos) message = message.substr(end_of_check + 2);
  return message;
}

class SentencePieceTokenizer final : public alignkit::Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    std::error_code error;
    if (!std::filesystem::is_regular_file(path, error))
      throw std::runtime_error(path + ": tokenizer file not found");
    const sentencepiece::util::Status status = processor_.Load(path);
    if (!status.ok())
      throw std::runtime_error(path + ": not a readable SentencePiece model (" + status_message(status) + ")");
    if (processor_.GetPieceSize() <= 0) throw std::runtime_error(path + ": the SentencePiece model has no pieces");
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    const sentencepiece::util::Status status =
        processor_.Encode(text, &ids);
    if (!status.ok()) throw std::runtime_error(path_ + ": cannot encode text: " + status_message(status));
    return std::vector<int32_t>(ids.begin(), ids.end());
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    const int32_t size = vocab_size();
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= size)
        throw std::runtime_error(path_ + ": cannot decode token id " + std::to_string(ids[i]) + " at position " +
                                 std::to_string(i) + ": the vocabulary has ids 0.." + std::to_string(size - 1));
    std::string text;
    const sentencepiece::util::Status status = processor_.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    if (!status.ok()) throw std::runtime_error(path_ + ": cannot decode: " + status_message(status));
    return text;
  }

  int32_t vocab_size() const override { return processor_.GetPieceSize(); }
  int32_t bos_id() const override { return processor_.bos_id(); }
  int32_t eos_id() const override { return processor_.eos_id(); }
  int32_t pad_id() const override { return processor_.pad_id(); }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor processor_;
};

class SentencePieceProvider final : public alignkit::TokenizerProvider {
 public:
  std::string file_name() const override { return "tokenizer.model"; }

  std::unique_ptr<alignkit::Tokenizer> open(const std::string& path) const override {
    return std::make_unique<SentencePieceTokenizer>(path);
  }

  void train(const alignkit::TokenizerTrainOptions& options) const override {
    if (options.model_type != "bpe" && options.model_type != "unigram")
      throw std::runtime_error("tokenizer model_type must be \"bpe\" or \"unigram\", found \"" + options.model_type +
                               "\"");
    if (options.vocab_size <= 0)
      throw std::runtime_error("tokenizer vocab_size must be positive, found " + std::to_string(options.vocab_size));
    if (options.output_file.empty()) throw std::runtime_error("tokenizer training needs an output file");
    std::error_code error;
    if (!std::filesystem::is_regular_file(options.input_file, error))
      throw std::runtime_error(options.input_file + ": training corpus not found");
    if (std::filesystem::file_size(options.input_file, error) == 0)
      throw std::runtime_error(options.input_file + ": the training corpus is empty");

    const std::unordered_map<std::string, std::string> arguments = {
        {"input", options.input_file},
        {"model_type", options.model_type},
        {"vocab_size", std::to_string(options.vocab_size)},
        {"unk_id", "0"},
        {"bos_id", "1"},
        {"eos_id", "2"},
        {"pad_id", "3"},
        {"user_defined_symbols", "<|im_start|>,<|user|>,<|assistant|>,<|system|>"},
        {"byte_fallback", "true"},
        {"character_coverage", "0.9995"},
        {"normalization_rule_name", "identity"},
        {"add_dummy_prefix", "false"},
        {"remove_extra_whitespaces", "false"},
        {"allow_whitespace_only_pieces", "true"},
        {"split_digits", "true"},
        {"num_threads", "1"},
        {"input_sentence_size", "0"},
        {"shuffle_input_sentence", "false"},
        {"minloglevel", "2"},
    };
    // The trainer's random generator is process-global; seeding it right before
    // training is what makes two runs with one seed write identical files.
    sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned int>(options.seed));
    std::string model;
    const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(arguments, nullptr, &model);
    if (!status.ok())
      throw std::runtime_error("training a tokenizer on " + options.input_file + " failed: " + status_message(status));
    write_atomically(options.output_file, model);
  }

 private:
  // A reader never sees half a model: write beside the target, then rename.
  static void write_atomically(const std::string& path, const std::string& bytes) {
    const std::filesystem::path target(path);
    std::error_code error;
    if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), error);
    const std::string temporary = path + ".tmp";
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      out.close();
      if (!out) throw std::runtime_error(temporary + ": cannot write the tokenizer model: " + std::strerror(errno));
    }
    std::filesystem::rename(temporary, target, error);
    if (error) {
      std::error_code ignored;
      std::filesystem::remove(temporary, ignored);
      throw std::runtime_error(path + ": cannot write the tokenizer model: " + error.message());
    }
  }
};

void register_sentencepiece(alignkit::Registry& registry) {
  alignkit::ComponentInfo info;
  info.kind = alignkit::ComponentKind::Tokenizer;
  info.name = "sentencepiece";
  info.version = ALIGNKIT_VERSION_STRING;
  info.description = "SentencePiece tokenizer.model files (BPE or unigram): open, encode/decode, train";
  registry.add_tokenizer(std::move(info), std::make_shared<SentencePieceProvider>());
}

}  // namespace

ALIGNKIT_PLUGIN("sentencepiece", ALIGNKIT_VERSION_STRING, "SentencePiece tokenizers (opened in isolation)",
                register_sentencepiece)
ALIGNKIT_PLUGIN_ISOLATED()
