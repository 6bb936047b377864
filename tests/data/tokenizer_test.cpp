// The sentencepiece tokenizer plugin, always through the host's isolated
// loading path (it must never be linked into a binary with LibTorch):
// training, special ids, round trips, determinism, errors, and the jsonl
// plugin rendering chat templates with it.
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "alignkit/dataset.hpp"
#include "alignkit/tokenizer.hpp"
#include "data_test_util.hpp"

using namespace alignkit;
using test::ScratchDir;

namespace {

const TokenizerProvider& sentencepiece() {
  const TokenizerProvider* provider = test::plugin_host().registry().tokenizer("sentencepiece");
  REQUIRE_MESSAGE(provider, "the sentencepiece plugin did not load");
  return *provider;
}

TokenizerTrainOptions corpus_options(const std::string& output, int32_t vocab_size = 400) {
  TokenizerTrainOptions options;
  options.input_file = test::fixture("corpus.txt");
  options.output_file = output;
  options.vocab_size = vocab_size;
  return options;
}

std::string message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

TEST_CASE("the sentencepiece plugin is opened in isolation and registers a tokenizer") {
  bool found = false;
  for (const core::PluginRecord& record : test::plugin_host().plugins()) {
    if (record.name != "sentencepiece") continue;
    found = true;
    CHECK(record.status == core::PluginStatus::Ok);
    CHECK(record.isolated);
  }
  CHECK(found);
  CHECK(sentencepiece().file_name() == "tokenizer.model");
}

TEST_CASE("a trained tokenizer has the documented special ids and round-trips any text") {
  ScratchDir dir;
  const std::string model = dir / "nested/folder/tokenizer.model";
  sentencepiece().train(corpus_options(model));
  std::unique_ptr<Tokenizer> tokenizer = sentencepiece().open(model);

  CHECK(tokenizer->vocab_size() == 400);
  CHECK(tokenizer->bos_id() == 1);
  CHECK(tokenizer->eos_id() == 2);
  CHECK(tokenizer->pad_id() == 3);

  // Byte fallback covers characters the corpus never had; spaces and newlines stay as written.
  for (const std::string& text : {std::string("The capital of France is Paris."), std::string("  two  spaces\n\ttab"),
                                  std::string("Zürich, 東京 and emoji 🎉"), std::string(" leading space")}) {
    const std::vector<int32_t> ids = tokenizer->encode(text);
    CHECK_FALSE(ids.empty());
    for (int32_t id : ids) {
      CHECK(id >= 0);
      CHECK(id < tokenizer->vocab_size());
      CHECK(id != tokenizer->bos_id());
      CHECK(id != tokenizer->eos_id());
    }
    CHECK(tokenizer->decode(ids) == text);
  }
  CHECK(tokenizer->encode("").empty());

  // A frequent word is one piece, a chat marker is one user-defined piece.
  CHECK(tokenizer->encode(" the").size() == 1);
  CHECK(tokenizer->encode("<|im_start|>") == std::vector<int32_t>{4});
  CHECK(tokenizer->encode("<|assistant|>") == std::vector<int32_t>{6});

  // No dummy prefix: a prompt and a completion encoded apart decode to their concatenation.
  std::vector<int32_t> joined = tokenizer->encode("Question: what is 12 plus 30?");
  const std::vector<int32_t> answer = tokenizer->encode(" It is 42.");
  joined.insert(joined.end(), answer.begin(), answer.end());
  CHECK(tokenizer->decode(joined) == "Question: what is 12 plus 30? It is 42.");

  // Special ids decode to nothing; an id outside the vocabulary is an error naming it.
  CHECK(tokenizer->decode({1, tokenizer->encode("A")[0], 2, 3}) == "A");
  const std::string bad_id = message_of([&] { tokenizer->decode({5, 400}); });
  CHECK(bad_id.find("400") != std::string::npos);
  CHECK(bad_id.find(model) != std::string::npos);
}

TEST_CASE("training is deterministic for a seed, and unigram models train too") {
  ScratchDir dir;
  sentencepiece().train(corpus_options(dir / "a.model"));
  sentencepiece().train(corpus_options(dir / "b.model"));
  const std::string first = test::read_bytes(dir / "a.model");
  CHECK(first.size() > 1000);
  CHECK(first == test::read_bytes(dir / "b.model"));
  CHECK_FALSE(std::filesystem::exists(dir / "a.model.tmp"));

  TokenizerTrainOptions unigram = corpus_options(dir / "unigram.model", 350);
  unigram.model_type = "unigram";
  sentencepiece().train(unigram);
  TokenizerTrainOptions again = unigram;
  again.output_file = dir / "unigram-again.model";
  sentencepiece().train(again);
  CHECK(test::read_bytes(unigram.output_file) == test::read_bytes(again.output_file));
  std::unique_ptr<Tokenizer> tokenizer = sentencepiece().open(unigram.output_file);
  CHECK(tokenizer->vocab_size() == 350);
  CHECK(tokenizer->decode(tokenizer->encode("Rewards for the chosen answers")) == "Rewards for the chosen answers");
  CHECK(test::read_bytes(unigram.output_file) != first);
}

TEST_CASE("opening a missing or broken tokenizer file names the file") {
  ScratchDir dir;
  const std::string missing = dir / "missing.model";
  CHECK(message_of([&] { sentencepiece().open(missing); }) == missing + ": tokenizer file not found");

  const std::string garbage = dir.write("garbage.model", "this is not a protobuf \x01\x02\x03");
  const std::string garbage_error = message_of([&] { sentencepiece().open(garbage); });
  CHECK(garbage_error.rfind(garbage + ": not a readable SentencePiece model", 0) == 0);

  const std::string empty = dir.write("empty.model", "");
  CHECK(message_of([&] { sentencepiece().open(empty); }).rfind(empty + ": ", 0) == 0);

  CHECK(message_of([&] { sentencepiece().open(dir / ""); }).find("tokenizer file not found") != std::string::npos);
}

TEST_CASE("bad training options are clear errors") {
  ScratchDir dir;
  TokenizerTrainOptions options = corpus_options(dir / "t.model");

  options.model_type = "wordpiece";
  CHECK(message_of([&] { sentencepiece().train(options); }).find("\"wordpiece\"") != std::string::npos);

  options = corpus_options(dir / "t.model");
  options.input_file = dir / "no-corpus.txt";
  CHECK(message_of([&] { sentencepiece().train(options); }) == options.input_file + ": training corpus not found");

  options.input_file = dir.write("empty.txt", "");
  CHECK(message_of([&] { sentencepiece().train(options); }) == options.input_file + ": the training corpus is empty");

  options = corpus_options(dir / "t.model", 100000);
  const std::string too_big = message_of([&] { sentencepiece().train(options); });
  CHECK(too_big.find(options.input_file) != std::string::npos);
  CHECK(too_big.find("Vocabulary size too high (100000)") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "t.model"));
}

TEST_CASE("the jsonl plugin renders conversations with a trained SentencePiece tokenizer") {
  ScratchDir dir;
  sentencepiece().train(corpus_options(dir / "tokenizer.model"));
  std::unique_ptr<Tokenizer> tokenizer = sentencepiece().open(dir / "tokenizer.model");
  const DatasetProvider* jsonl = test::plugin_host().registry().dataset("jsonl");
  REQUIRE(jsonl);

  test::DataTable table;
  std::unique_ptr<Dataset> data =
      jsonl->load({test::fixture("preference_conversational.jsonl"), table.view(), tokenizer.get()});
  REQUIRE(data->size() == 2);
  const Example& example = data->at(0);
  REQUIRE(example.prompt.size() > 2);
  CHECK(example.prompt.front() == 1);  // BOS
  CHECK(example.prompt[1] == 4);       // <|im_start|>, one token
  CHECK(example.completion.back() == 2);
  CHECK(example.rejected.back() == 2);
  CHECK(tokenizer->decode(example.prompt) ==
        "<|im_start|>user\nWhat is the capital of France?\n<|im_start|>assistant\n");
  CHECK(tokenizer->decode(example.completion) == "The capital of France is Paris.");
  CHECK(tokenizer->decode(example.rejected) == "Berlin.");
}
