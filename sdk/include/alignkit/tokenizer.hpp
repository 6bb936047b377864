// Tokenizer interface: text to token ids and back. Torch-free on purpose, so a
// tokenizer plugin can be opened in isolation (see docs/plugins.md).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace alignkit {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of `text` without BOS or EOS.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Throws std::runtime_error for an id outside [0, vocab_size).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the tokenizer has none
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;  // -1 when none: callers pad with eos
};

struct TokenizerTrainOptions {
  std::string input_file;   // plain text, one sentence a line
  std::string output_file;  // where the model file goes
  int32_t vocab_size = 1000;
  std::string model_type = "bpe";  // "bpe" or "unigram"
  uint64_t seed = 0;
};

// What a tokenizer plugin registers: opens tokenizer files and trains new ones.
class TokenizerProvider {
 public:
  virtual ~TokenizerProvider() = default;
  // The file name this tokenizer expects inside a model folder ("tokenizer.model").
  virtual std::string file_name() const = 0;
  // Throws std::runtime_error naming the file when it cannot be read.
  virtual std::unique_ptr<Tokenizer> open(const std::string& path) const = 0;
  // Throws std::runtime_error naming the corpus or option at fault.
  virtual void train(const TokenizerTrainOptions& options) const = 0;
};

}  // namespace alignkit
