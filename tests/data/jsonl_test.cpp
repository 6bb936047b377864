// The jsonl dataset plugin, loaded by the host: every TRL type in standard,
// conversational and pre-tokenized form, the four chat templates, BOS/EOS
// rules, implicit prompts, and errors naming FILE:LINE (or skipped and counted).
// A byte tokenizer makes every id sequence readable as text (see spell()).
#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "alignkit/dataset.hpp"
#include "data_test_util.hpp"

using namespace alignkit;
using test::ByteTokenizer;
using test::DataTable;
using test::fixture;
using test::ScratchDir;
using test::spell;

namespace {

const DatasetProvider& jsonl() {
  const DatasetProvider* provider = test::plugin_host().registry().dataset("jsonl");
  REQUIRE_MESSAGE(provider, "the jsonl plugin did not load");
  return *provider;
}

std::unique_ptr<Dataset> load(const std::string& path, const Tokenizer* tokenizer,
                              const DataTable& table = DataTable()) {
  return jsonl().load({path, table.view(), tokenizer});
}

std::unique_ptr<Dataset> load_with_template(const std::string& path, const std::string& chat_template,
                                            const Tokenizer& tokenizer) {
  DataTable table;
  table.set("chat_template", ConfigValue::of_string(chat_template));
  return load(path, &tokenizer, table);
}

std::string load_error(const std::string& path, const Tokenizer* tokenizer, const DataTable& table = DataTable()) {
  try {
    load(path, tokenizer, table);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no exception)";
}

const ByteTokenizer kTokenizer;

}  // namespace

TEST_CASE("the jsonl plugin declares the data settings") {
  const ComponentInfo* info = test::plugin_host().registry().info(ComponentKind::Dataset, "jsonl");
  REQUIRE(info);
  std::vector<std::string> names;
  for (const SettingSpec& spec : info->settings) names.push_back(spec.name);
  CHECK(names == std::vector<std::string>{"path", "eval_path", "eval_fraction", "chat_template", "skip_bad_records"});
  CHECK(info->settings[0].required);
  CHECK(info->settings[2].default_value.floating == 0.0);
  CHECK(info->settings[3].default_value.string == "chatml");
  CHECK(info->settings[3].choices == std::vector<std::string>{"chatml", "llama2", "zephyr", "plain"});
  CHECK(info->settings[4].default_value.boolean == false);
}

TEST_CASE("standard form: BOS starts prompts and texts, EOS ends completions") {
  SUBCASE("language modelling") {
    auto data = load(fixture("lm_standard.jsonl"), &kTokenizer);
    CHECK(data->kind() == DataKind::LanguageModeling);
    REQUIRE(data->size() == 2);
    CHECK(data->at(0).prompt.empty());
    CHECK(spell(data->at(0).completion) == "[BOS]The sky is blue.[EOS]");
    CHECK(spell(data->at(1).completion) == "[BOS]Fire is hot.[EOS]");
    CHECK(data->at(1).source_line == 2);
    CHECK(data->skipped_records() == 0);
    CHECK(data->source() == fixture("lm_standard.jsonl"));
  }
  SUBCASE("prompt-completion") {
    auto data = load(fixture("prompt_completion_standard.jsonl"), &kTokenizer);
    CHECK(data->kind() == DataKind::PromptCompletion);
    CHECK(spell(data->at(0).prompt) == "[BOS]The sky is");
    CHECK(spell(data->at(0).completion) == " blue.[EOS]");
    CHECK(data->at(0).prompt_text == "The sky is");
  }
  SUBCASE("preference with an explicit prompt and an optional margin") {
    auto data = load(fixture("preference_standard.jsonl"), &kTokenizer);
    CHECK(data->kind() == DataKind::Preference);
    REQUIRE(data->size() == 2);
    CHECK(spell(data->at(0).prompt) == "[BOS]The sky is");
    CHECK(spell(data->at(0).completion) == " blue.[EOS]");
    CHECK(spell(data->at(0).rejected) == " green.[EOS]");
    CHECK(data->at(0).margin == 1.5);
    CHECK(data->at(1).margin == 0.0);
  }
  SUBCASE("unpaired preference") {
    auto data = load(fixture("unpaired_standard.jsonl"), &kTokenizer);
    CHECK(data->kind() == DataKind::UnpairedPreference);
    CHECK(data->at(0).label);
    CHECK_FALSE(data->at(1).label);
    CHECK(spell(data->at(1).completion) == " green.[EOS]");
  }
  SUBCASE("prompt-only with reference answers") {
    auto data = load(fixture("prompt_only_standard.jsonl"), &kTokenizer);
    CHECK(data->kind() == DataKind::PromptOnly);
    CHECK(spell(data->at(0).prompt) == "[BOS]What is 6 times 7?");
    CHECK(data->at(0).completion.empty());
    CHECK(data->at(0).answer == "42");
    CHECK(data->at(1).answer == "4");
  }
  SUBCASE("a tokenizer without BOS or EOS adds neither") {
    const ByteTokenizer bare(false, false);
    auto data = load(fixture("preference_standard.jsonl"), &bare);
    CHECK(spell(data->at(0).prompt) == "The sky is");
    CHECK(spell(data->at(0).completion) == " blue.");
  }
}

TEST_CASE("implicit prompts are the shared prefix of chosen and rejected") {
  auto data = load(fixture("preference_implicit.jsonl"), &kTokenizer);
  CHECK(data->kind() == DataKind::Preference);
  // The space before the split goes with the completions, as TRL's extract_prompt does.
  CHECK(spell(data->at(0).prompt) == "[BOS]The sky is");
  CHECK(spell(data->at(0).completion) == " blue.[EOS]");
  CHECK(spell(data->at(0).rejected) == " green.[EOS]");
  // "é" and "è" share their first UTF-8 byte; the split stays on a character boundary.
  CHECK(spell(data->at(1).prompt) == "[BOS]Caf");
  CHECK(spell(data->at(1).completion) == "\xC3\xA9[EOS]");
  CHECK(spell(data->at(1).rejected) == "\xC3\xA8[EOS]");

  auto conversation = load(fixture("preference_implicit_conversational.jsonl"), &kTokenizer);
  CHECK(spell(conversation->at(0).prompt) == "[BOS]<|im_start|>user\n2+2?[EOS]\n<|im_start|>assistant\n");
  CHECK(spell(conversation->at(0).completion) == "4[EOS]");
  CHECK(spell(conversation->at(0).rejected) == "5[EOS]");
}

TEST_CASE("conversational records are rendered with each chat template") {
  const std::string path = fixture("prompt_completion_conversational.jsonl");
  struct Expected {
    const char* name;
    const char* prompt;
    const char* completion;
  };
  const Expected cases[] = {
      {"chatml", "[BOS]<|im_start|>system\nBe brief.[EOS]\n<|im_start|>user\nSky colour?[EOS]\n<|im_start|>assistant\n",
       "Blue.[EOS]"},
      {"zephyr", "[BOS]<|system|>\nBe brief.[EOS]\n<|user|>\nSky colour?[EOS]\n<|assistant|>\n", "Blue.[EOS]"},
      {"llama2", "[BOS][INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nSky colour? [/INST]", " Blue. [EOS]"},
      {"plain", "[BOS]System: Be brief.\nUser: Sky colour?\nAssistant:", " Blue.[EOS]"},
  };
  for (const Expected& expected : cases) {
    CAPTURE(expected.name);
    auto data = load_with_template(path, expected.name, kTokenizer);
    CHECK(data->kind() == DataKind::PromptCompletion);
    CHECK(spell(data->at(0).prompt) == expected.prompt);
    CHECK(spell(data->at(0).completion) == expected.completion);
  }
  // The default is chatml; prompt_text writes the template's own end-of-turn marker.
  auto data = load(path, &kTokenizer);
  CHECK(data->at(0).prompt_text ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSky colour?<|im_end|>\n<|im_start|>assistant\n");
  CHECK(load_with_template(path, "llama2", kTokenizer)->at(0).prompt_text ==
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nSky colour? [/INST]");
}

TEST_CASE("every type loads in conversational form") {
  auto lm = load(fixture("lm_conversational.jsonl"), &kTokenizer);
  CHECK(lm->kind() == DataKind::LanguageModeling);
  CHECK(spell(lm->at(0).completion) == "[BOS]<|im_start|>user\nHi[EOS]\n<|im_start|>assistant\nHello![EOS]");
  CHECK(spell(load_with_template(fixture("lm_conversational.jsonl"), "llama2", kTokenizer)->at(0).completion) ==
        "[BOS][INST] Hi [/INST] Hello! [EOS]");

  auto preference = load(fixture("preference_conversational.jsonl"), &kTokenizer);
  CHECK(preference->kind() == DataKind::Preference);
  CHECK(spell(preference->at(1).prompt) == "[BOS]<|im_start|>user\nName a colour.[EOS]\n<|im_start|>assistant\n");
  CHECK(spell(preference->at(1).completion) == "Red.[EOS]");
  CHECK(spell(preference->at(1).rejected) == "Seven.[EOS]");

  auto unpaired = load_with_template(fixture("unpaired_conversational.jsonl"), "zephyr", kTokenizer);
  CHECK(unpaired->kind() == DataKind::UnpairedPreference);
  CHECK(spell(unpaired->at(0).prompt) == "[BOS]<|user|>\nSky colour?[EOS]\n<|assistant|>\n");
  CHECK(spell(unpaired->at(0).completion) == "Green.[EOS]");
  CHECK_FALSE(unpaired->at(0).label);

  auto prompts = load_with_template(fixture("prompt_only_conversational.jsonl"), "plain", kTokenizer);
  CHECK(prompts->kind() == DataKind::PromptOnly);
  CHECK(spell(prompts->at(0).prompt) == "[BOS]User: What is 6 times 7?\nAssistant:");
  CHECK(prompts->at(0).prompt_text == "User: What is 6 times 7?\nAssistant:");
  CHECK(prompts->at(0).answer == "42");
}

TEST_CASE("multi-turn conversations follow each template") {
  ScratchDir dir;
  const std::string path =
      dir.write("chat.jsonl",
                R"({"messages": [{"role": "user", "content": " Hi "}, {"role": "assistant", "content": "Hello!"},)"
                R"( {"role": "user", "content": "More"}, {"role": "assistant", "content": "Sure."}]})"
                "\n");
  CHECK(spell(load_with_template(path, "llama2", kTokenizer)->at(0).completion) ==
        "[BOS][INST] Hi [/INST] Hello! [EOS][BOS][INST] More [/INST] Sure. [EOS]");
  CHECK(spell(load_with_template(path, "zephyr", kTokenizer)->at(0).completion) ==
        "[BOS]<|user|>\n Hi [EOS]\n<|assistant|>\nHello![EOS]\n<|user|>\nMore[EOS]\n<|assistant|>\nSure.[EOS]");
  CHECK(spell(load_with_template(path, "plain", kTokenizer)->at(0).completion) ==
        "[BOS]User:  Hi \nAssistant: Hello![EOS]\nUser: More\nAssistant: Sure.[EOS]");

  // A conversation ending on a user turn still ends with EOS (TRL's add_eos).
  const std::string open_ended = dir.write("open.jsonl", R"({"messages": [{"role": "user", "content": "Hi"}]})");
  CHECK(spell(load_with_template(open_ended, "plain", kTokenizer)->at(0).completion) == "[BOS]User: Hi[EOS]");
}

TEST_CASE("pre-tokenized records are used exactly as given") {
  auto lm = load(fixture("lm_tokenized.jsonl"), &kTokenizer);
  CHECK(lm->kind() == DataKind::LanguageModeling);
  CHECK(lm->at(0).completion == std::vector<int32_t>{10, 11, 12});

  auto pairs = load(fixture("prompt_completion_tokenized.jsonl"), nullptr);  // no tokenizer needed
  CHECK(pairs->kind() == DataKind::PromptCompletion);
  CHECK(pairs->at(0).prompt == std::vector<int32_t>{5, 6});
  CHECK(pairs->at(0).completion == std::vector<int32_t>{7, 8, 9});
  CHECK(pairs->at(0).prompt_text.empty());

  auto preference = load(fixture("preference_tokenized.jsonl"), &kTokenizer);
  CHECK(preference->kind() == DataKind::Preference);
  CHECK(preference->at(0).prompt == std::vector<int32_t>{5, 6});
  CHECK(preference->at(0).completion == std::vector<int32_t>{7});
  CHECK(preference->at(0).rejected == std::vector<int32_t>{8, 9});
  CHECK(preference->at(0).margin == -0.5);
  CHECK(preference->at(0).prompt_text == "\x01\x02");  // decoded by the tokenizer when there is one

  ScratchDir dir;
  auto implicit = load(dir.write("ids.jsonl", "{\"chosen_ids\": [5, 7], \"rejected_ids\": [5, 8]}\n"), nullptr);
  CHECK(implicit->at(0).prompt.empty());
  CHECK(implicit->at(0).completion == std::vector<int32_t>{5, 7});

  CHECK(load_error(dir.write("big.jsonl", "{\"input_ids\": [1, 260]}\n"), &kTokenizer) ==
        dir / "big.jsonl" + ":1: field 'input_ids' item 1 is 260, outside the tokenizer's vocabulary 0..259");
  CHECK(load_error(dir.write("neg.jsonl", "{\"input_ids\": [-1]}\n"), nullptr) ==
        dir / "neg.jsonl" + ":1: field 'input_ids' item 0 is -1, not a token id");
  CHECK(load_error(dir.write("str.jsonl", "{\"input_ids\": [1, \"2\"]}\n"), nullptr) ==
        dir / "str.jsonl" + ":1: field 'input_ids' item 1 must be a token id, found a string");
}

TEST_CASE("a bad line is an error naming FILE:LINE, or is skipped and counted") {
  const std::string path = fixture("bad_records.jsonl");
  const std::string error = load_error(path, &kTokenizer);
  CHECK(error.rfind(path + ":3: not valid JSON: ", 0) == 0);

  DataTable skip;
  skip.set("skip_bad_records", ConfigValue::of_bool(true));
  auto data = load(path, &kTokenizer, skip);
  CHECK(data->kind() == DataKind::PromptCompletion);
  REQUIRE(data->size() == 3);
  CHECK(data->skipped_records() == 3);
  CHECK(data->at(0).source_line == 1);
  CHECK(data->at(1).source_line == 4);
  CHECK(data->at(2).source_line == 7);
  CHECK(spell(data->at(2).prompt) == "[BOS]h");
}

TEST_CASE("records that do not match the file's type say which fields were expected") {
  ScratchDir dir;
  const std::string good = R"({"prompt": "a", "completion": "b"})" "\n";
  const std::string expected =
      "expected prompt-completion records in standard form (strings), fields prompt, completion";

  const std::string other_kind = dir.write("kind.jsonl", good + R"({"prompt": "e"})" "\n");
  CHECK(load_error(other_kind, &kTokenizer) ==
        other_kind + ":2: " + expected +
            " (as set by line 1), found a prompt-only record in standard form (strings), fields prompt");

  const std::string other_form =
      dir.write("form.jsonl", good + R"({"prompt": "f", "completion": [{"role": "assistant", "content": "g"}]})");
  CHECK(load_error(other_form, &kTokenizer).find(other_form + ":2: " + expected +
                                                 " (as set by line 1), found a prompt-completion record in "
                                                 "conversational form") == 0);

  CHECK(load_error(fixture("missing_field.jsonl"), &kTokenizer) ==
        fixture("missing_field.jsonl") +
            ":2: missing field 'rejected' (expected preference records in standard form (strings), fields prompt, "
            "chosen, rejected)");

  const std::string unknown = load_error(fixture("unknown_fields.jsonl"), &kTokenizer);
  CHECK(unknown.rfind(fixture("unknown_fields.jsonl") +
                          ":1: cannot tell the dataset type from the fields (question, response); TRL's types have",
                      0) == 0);

  const std::string wrong_type = dir.write("type.jsonl", good + R"({"prompt": 3, "completion": "b"})");
  CHECK(load_error(wrong_type, &kTokenizer) ==
        wrong_type + ":2: field 'prompt' must be a string in standard form (strings), found an integer");

  CHECK(load_error(dir.write("array.jsonl", "[1, 2]\n"), &kTokenizer) ==
        dir / "array.jsonl" + ":1: expected a JSON object, found a list");

  CHECK(load_error(dir.write("label.jsonl", R"({"prompt": "p", "completion": "c", "label": "yes"})"), &kTokenizer) ==
        dir / "label.jsonl" + ":1: field 'label' must be true or false, found a string");

  CHECK(load_error(dir.write("margin.jsonl", R"({"chosen": "ab", "rejected": "ac", "margin": "big"})"), &kTokenizer) ==
        dir / "margin.jsonl" + ":1: field 'margin' must be a number, found a string");

  CHECK(load_error(dir.write("same.jsonl", R"({"chosen": "same", "rejected": "same"})"), &kTokenizer) ==
        dir / "same.jsonl" +
            ":1: chosen and rejected are identical, so no prompt can be extracted; add a 'prompt' field");

  CHECK(load_error(dir.write("message.jsonl", R"({"prompt": [{"role": "user"}]})"), &kTokenizer) ==
        dir / "message.jsonl" + ":1: field 'prompt' message 1 must be an object with string \"role\" and \"content\"");

  const std::string user_completion = dir.write(
      "turn.jsonl",
      R"({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "user", "content": "again"}]})");
  CHECK(load_error(user_completion, &kTokenizer) ==
        user_completion + ":1: a completion must start with an assistant message, found role \"user\"");
}

TEST_CASE("the llama2 template rejects conversations it cannot write") {
  ScratchDir dir;
  const std::string path =
      dir.write("roles.jsonl", R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})");
  DataTable table;
  table.set("chat_template", ConfigValue::of_string("llama2"));
  CHECK(load_error(path, &kTokenizer, table) ==
        path + ":1: the llama2 template needs roles alternating user/assistant/... after an optional first system "
               "message; message 2 has role \"user\"");
  // chatml writes any role.
  CHECK(spell(load(path, &kTokenizer)->at(0).completion) ==
        "[BOS]<|im_start|>user\na[EOS]\n<|im_start|>user\nb[EOS]");
}

TEST_CASE("files that cannot be used are errors naming the file") {
  ScratchDir dir;
  const std::string missing = dir / "missing.jsonl";
  CHECK(load_error(missing, &kTokenizer).rfind(missing + ": cannot open: ", 0) == 0);

  const std::string empty = dir.write("empty.jsonl", "\n  \n");
  CHECK(load_error(empty, &kTokenizer) == empty + ": holds no records");

  DataTable skip;
  skip.set("skip_bad_records", ConfigValue::of_bool(true));
  const std::string all_bad = dir.write("bad.jsonl", "{\n[\n");
  CHECK(load_error(all_bad, &kTokenizer, skip) ==
        all_bad + ": all 2 records are malformed (skip_bad_records skipped them)");

  CHECK(load_error(fixture("lm_standard.jsonl"), nullptr) ==
        fixture("lm_standard.jsonl") +
            ":1: the records are text in standard form (strings), so a tokenizer is needed, but none was given");

  // A byte order mark and Windows line ends are accepted.
  auto windows = load(dir.write("crlf.jsonl", "\xEF\xBB\xBF{\"text\": \"a\"}\r\n{\"text\": \"b\"}\r\n"), &kTokenizer);
  CHECK(windows->size() == 2);
  CHECK(spell(windows->at(1).completion) == "[BOS]b[EOS]");
  CHECK_THROWS_AS(windows->at(2), std::out_of_range);
}

TEST_CASE("an unknown chat template is a configuration error at its setting") {
  DataTable table;
  table.set("chat_template", ConfigValue::of_string("vicuna"));
  CHECK_THROWS_WITH_AS(load(fixture("lm_standard.jsonl"), &kTokenizer, table),
                       "stages.test.data.chat_template: expected one of chatml, llama2, zephyr, plain, "
                       "found \"vicuna\"",
                       ConfigError);
}
