// `alignkit tokenizer train`: writes a tokenizer the plugin opens, and reports
// bad options (exit 2) and bad input (exit 1) with clear messages.
#include <doctest/doctest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "alignkit/tokenizer.hpp"
#include "data_test_util.hpp"

using namespace alignkit;
using test::run_command;
using test::ScratchDir;

TEST_CASE("alignkit tokenizer train writes a tokenizer the plugin can open") {
  ScratchDir dir;
  const std::string out = dir / "model/tokenizer.model";
  const std::string command = std::string(ALIGNKIT_CLI) + " tokenizer train --input " + test::fixture("corpus.txt") +
                              " --vocab-size 360 --out " + out;
  const test::CommandResult result = run_command(command);
  CHECK_MESSAGE(result.exit_code == 0, result.output);
  CHECK(result.output == "wrote " + out + ": 360 pieces, bos 1, eos 2, pad 3\n");

  const TokenizerProvider* provider = test::plugin_host().registry().tokenizer("sentencepiece");
  REQUIRE(provider);
  std::unique_ptr<Tokenizer> tokenizer = provider->open(out);
  CHECK(tokenizer->vocab_size() == 360);
  CHECK(tokenizer->decode(tokenizer->encode("The capital of France is Paris.")) == "The capital of France is Paris.");

  // Same options, same seed: the same bytes.
  const std::string again = dir / "again.model";
  CHECK(run_command(std::string(ALIGNKIT_CLI) + " tokenizer train --input " + test::fixture("corpus.txt") +
                    " --vocab-size 360 --out " + again)
            .exit_code == 0);
  CHECK(test::read_bytes(again) == test::read_bytes(out));
}

TEST_CASE("alignkit tokenizer train: usage errors exit 2, bad input exits 1") {
  ScratchDir dir;
  const std::string cli = std::string(ALIGNKIT_CLI) + " tokenizer train";
  const std::string corpus = " --input " + test::fixture("corpus.txt");
  const std::string out = " --out " + (dir / "t.model");

  const test::CommandResult missing_input = run_command(cli + out);
  CHECK(missing_input.exit_code == 2);
  CHECK(missing_input.output.find("'--input' is required") != std::string::npos);

  const test::CommandResult bad_type =
      run_command(cli + corpus + out + " --model-type wordpiece");
  CHECK(bad_type.exit_code == 2);
  CHECK(bad_type.output.find("--model-type must be bpe or unigram, found wordpiece") != std::string::npos);

  const test::CommandResult no_corpus = run_command(cli + " --input " + (dir / "none.txt") + out);
  CHECK(no_corpus.exit_code == 1);
  CHECK(no_corpus.output == "alignkit: " + (dir / "none.txt") + ": training corpus not found\n");

  const test::CommandResult too_big =
      run_command(cli + corpus + out + " --vocab-size 90000");
  CHECK(too_big.exit_code == 1);
  CHECK(too_big.output.find("Vocabulary size too high (90000)") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "t.model"));
}
