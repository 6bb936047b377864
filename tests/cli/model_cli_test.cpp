// End-to-end tests of the model commands, each running the alignkit binary as
// a subprocess on a tiny model: tokenizer train -> model init -> generate,
// score (log-probs and rewards) and evaluate, and the errors (file, key or
// tensor named, exit code) for truncated weights, a config.json missing a key,
// a tensor of the wrong shape, a tokenizer larger than the model, a JSONL line
// that is not JSON and `model init` without a vocabulary.
#include <doctest/doctest.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <vector>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kVocabSize = 320;  // the trained tokenizer's; byte fallback alone takes 256 ids
constexpr int kEosId = 2;

struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// Runs `alignkit ARGUMENTS` through the shell, stdout and stderr kept apart.
CliResult alignkit(const std::string& arguments) {
  const std::string err_path =
      (fs::temp_directory_path() / ("alignkit-cli-test-" + std::to_string(::getpid()) + ".stderr")).string();
  CliResult result;
  FILE* pipe = ::popen((std::string(ALIGNKIT_CLI) + " " + arguments + " 2>" + err_path).c_str(), "r");
  if (!pipe) throw std::runtime_error("popen failed for alignkit " + arguments);
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.err = read_file(err_path);
  fs::remove(err_path);
  return result;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// One JSON value per line of `out`; a line that does not parse fails the test.
std::vector<json> json_lines(const std::string& out) {
  std::vector<json> values;
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(start, end - start);
    start = end + 1;
    REQUIRE_MESSAGE(json::accept(line), ("not a JSON line: " + line));
    values.push_back(json::parse(line));
  }
  return values;
}

json read_json(const std::string& path) { return json::parse(read_file(path)); }
void write_json(const std::string& path, const json& value) { write_file(path, value.dump(2) + "\n"); }

// Copies config.json and model.safetensors of `from` into a new folder
// `to` (no tokenizer.model), optionally editing the config.
template <typename Edit>
std::string copy_model(const std::string& from, const std::string& to, Edit edit) {
  fs::create_directories(to);
  fs::copy_file(fs::path(from) / "model.safetensors", fs::path(to) / "model.safetensors");
  json config = read_json((fs::path(from) / "config.json").string());
  edit(config);
  write_json((fs::path(to) / "config.json").string(), config);
  return to;
}
std::string copy_model(const std::string& from, const std::string& to) {
  return copy_model(from, to, [](json&) {});
}

// A fresh folder under the system temp dir, removed with everything in it.
class ScratchRoot {
 public:
  ScratchRoot() {
    std::string pattern = (fs::temp_directory_path() / "alignkit-cli-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~ScratchRoot() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchRoot(const ScratchRoot&) = delete;
  ScratchRoot& operator=(const ScratchRoot&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// What every test starts from, built once per process: a tokenizer trained on
// a small corpus and a tiny model initialised from it.
class Workspace {
 public:
  static Workspace& get() {
    static Workspace workspace;
    return workspace;
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  std::string operator/(const std::string& name) const { return (root_.path() / name).string(); }

  std::string tokenizer;   // the trained tokenizer.model
  std::string model;       // model init --tokenizer: config.json, model.safetensors, tokenizer.model
  std::string bare_model;  // the same weights without tokenizer.model
  CliResult tokenizer_train;
  CliResult model_init;

 private:
  Workspace() {
    const char* words[] = {"the", "cat",  "dog",   "sat", "on",    "a",     "mat",  "and", "ran", "to",
                           "big", "small", "red",  "blue", "house", "tree", "river", "sun", "moon", "hello",
                           "world", "we",  "like", "see", "star",  "Paris", "is",   "of",  "I",   "you"};
    std::mt19937 generator(7);
    std::string corpus;
    for (int line = 0; line < 300; ++line) {
      for (int word = 0; word < 8; ++word)
        corpus += std::string(word ? " " : "") + words[generator() % std::size(words)];
      corpus += ".\n";
    }
    write_file(*this / "corpus.txt", corpus);

    tokenizer = *this / "tok/tokenizer.model";
    tokenizer_train = alignkit("tokenizer train --input " + (*this / "corpus.txt") + " --out " + tokenizer +
                               " --vocab-size " + std::to_string(kVocabSize));
    REQUIRE_MESSAGE(tokenizer_train.exit_code == 0, tokenizer_train.err);
    model = *this / "lm";
    model_init = alignkit("model init --tokenizer " + tokenizer + " --out " + model +
                          " --hidden-size 32 --layers 2 --heads 4 --kv-heads 2 --seed 1");
    REQUIRE_MESSAGE(model_init.exit_code == 0, model_init.err);
    bare_model = copy_model(model, *this / "bare");
  }

  ScratchRoot root_;
};

// Pre-tokenized prompt-completion records with completions of 3, 5 and 1 tokens.
const char* const kPromptCompletion =
    "{\"prompt_ids\": [1, 40, 41, 42], \"completion_ids\": [50, 51, 2]}\n"
    "{\"prompt_ids\": [1, 60], \"completion_ids\": [61, 62, 63, 64, 2]}\n"
    "{\"prompt_ids\": [1, 70, 71, 72, 73, 74, 75], \"completion_ids\": [300]}\n";
const std::vector<size_t> kCompletionLengths = {3, 5, 1};

struct Pair {
  std::vector<int> prompt, chosen, rejected;
};
const std::vector<Pair> kPairs = {
    {{1, 40, 41}, {50, 51, 2}, {52, 2}},
    {{1, 60}, {61, 2}, {62, 63, 64, 2}},
    {{1, 70, 71, 72}, {80, 81, 82, 2}, {83, 2}},
};

std::string preference_records() {
  std::string text;
  for (const Pair& pair : kPairs)
    text += json{{"prompt_ids", pair.prompt}, {"chosen_ids", pair.chosen}, {"rejected_ids", pair.rejected}}.dump() +
            "\n";
  return text;
}

// The pairs as prompt-completion records: every chosen row, then every rejected row.
std::string chosen_then_rejected_records() {
  std::string text;
  for (const Pair& pair : kPairs) text += json{{"prompt_ids", pair.prompt}, {"completion_ids", pair.chosen}}.dump() + "\n";
  for (const Pair& pair : kPairs)
    text += json{{"prompt_ids", pair.prompt}, {"completion_ids", pair.rejected}}.dump() + "\n";
  return text;
}

// Summed completion log-probs from `score` output lines.
std::vector<double> logprobs_of(const std::vector<json>& lines) {
  std::vector<double> out;
  for (const json& line : lines) out.push_back(line.at("logprob").get<double>());
  return out;
}

}  // namespace

TEST_CASE("tokenizer train, then model init --tokenizer takes its vocabulary and special ids") {
  Workspace& ws = Workspace::get();
  CHECK(ws.tokenizer_train.out ==
        "wrote " + ws.tokenizer + ": " + std::to_string(kVocabSize) + " pieces, bos 1, eos 2, pad 3\n");
  // 2 x 320 x 32 (embeddings, lm_head) + 2 layers x (q 1024 + k 512 + v 512 + o 1024
  // + MLP 3 x 32 x 88 + norms 64) + final norm 32.
  CHECK(ws.model_init.out ==
        "wrote " + ws.model + ": llama, 43680 parameters, 2 layers, hidden 32, vocab " + std::to_string(kVocabSize) + "\n");

  const json config = read_json(ws.model + "/config.json");
  CHECK(config.at("vocab_size") == kVocabSize);
  CHECK(config.at("bos_token_id") == 1);
  CHECK(config.at("eos_token_id") == kEosId);
  CHECK(config.at("pad_token_id") == 3);
  CHECK(config.at("architectures") == json::array({"LlamaForCausalLM"}));
  CHECK(config.at("model_type") == "llama");
  CHECK(config.at("num_key_value_heads") == 2);
  CHECK(config.at("head_dim") == 8);
  CHECK(config.at("intermediate_size") == 88);  // 8/3 of 32, rounded up to a multiple of 8
  CHECK(config.at("torch_dtype") == "float32");
  CHECK(fs::file_size(ws.model + "/model.safetensors") > 43680u * 4u);
  CHECK(read_file(ws.model + "/tokenizer.model") == read_file(ws.tokenizer));
}

TEST_CASE("generate: the KV cache changes nothing, a sampling seed reproduces, --json parses") {
  Workspace& ws = Workspace::get();
  const std::vector<std::string> prompts = {"the cat sat", "hello world"};
  const std::string base = "generate --model " + ws.model + " --prompt '" + prompts[0] + "' --prompt '" + prompts[1] +
                           "' --max-new-tokens 6 --threads 1";

  const CliResult greedy = alignkit(base + " --json");
  REQUIRE_MESSAGE(greedy.exit_code == 0, greedy.err);
  const std::vector<json> lines = json_lines(greedy.out);
  REQUIRE(lines.size() == prompts.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    CHECK(lines[i].at("prompt") == prompts[i]);
    CHECK(lines[i].at("completion").is_string());
    const std::vector<int> ids = lines[i].at("token_ids").get<std::vector<int>>();
    REQUIRE(!ids.empty());
    CHECK(ids.size() <= 6u);
    if (ids.size() < 6u) CHECK(ids.back() == kEosId);  // only a stop token ends early
    for (int id : ids) CHECK((id >= 0 && id < kVocabSize));
  }

  const CliResult no_cache = alignkit(base + " --json --no-cache");
  CHECK(no_cache.exit_code == 0);
  CHECK(no_cache.out == greedy.out);

  // Sampling restricted to the single most likely token is greedy decoding.
  const CliResult top1 = alignkit(base + " --json --do-sample --top-k 1 --seed 9");
  CHECK(top1.exit_code == 0);
  CHECK(top1.out == greedy.out);

  const std::string sampling = base + " --json --do-sample --seed 3 --temperature 1.5 --top-k 50 --top-p 0.95";
  const CliResult first = alignkit(sampling);
  const CliResult second = alignkit(sampling);
  REQUIRE_MESSAGE(first.exit_code == 0, first.err);
  CHECK(second.exit_code == 0);
  CHECK(json_lines(first.out).size() == prompts.size());
  CHECK(second.out == first.out);

  // Without --json: the prompt, then its completion, one line each.
  const CliResult plain = alignkit(base);
  CHECK(plain.exit_code == 0);
  std::string expected;
  for (size_t i = 0; i < lines.size(); ++i) expected += prompts[i] + lines[i].at("completion").get<std::string>() + "\n";
  CHECK(plain.out == expected);
}

TEST_CASE("score: pre-tokenized prompt-completion records need no tokenizer, one JSON line per record in order") {
  Workspace& ws = Workspace::get();
  REQUIRE_FALSE(fs::exists(ws.bare_model + "/tokenizer.model"));
  const std::string data = ws / "score/records.jsonl";
  write_file(data, kPromptCompletion);

  // Batches of 2: the second batch holds the last record alone, the first pads.
  const CliResult result = alignkit("score --model " + ws.bare_model + " --data " + data + " --batch-size 2 --threads 1");
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  const std::vector<json> lines = json_lines(result.out);
  REQUIRE(lines.size() == kCompletionLengths.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    CAPTURE(i);
    const std::vector<double> tokens = lines[i].at("token_logprobs").get<std::vector<double>>();
    CHECK(lines[i].at("num_tokens") == kCompletionLengths[i]);
    CHECK(tokens.size() == kCompletionLengths[i]);
    double sum = 0.0;
    for (double value : tokens) {
      CHECK(std::isfinite(value));
      CHECK(value <= 0.0);
      sum += value;
    }
    CHECK(lines[i].at("logprob").get<double>() == doctest::Approx(sum).epsilon(1e-12));
  }

  // Padding never leaks into a row: one row per batch gives the same scores;
  // --out writes the lines to a file instead of stdout.
  const std::string out_file = ws / "score/one_per_batch.jsonl";
  const CliResult alone =
      alignkit("score --model " + ws.bare_model + " --data " + data + " --batch-size 1 --threads 1 --out " + out_file);
  CHECK(alone.exit_code == 0);
  CHECK(alone.out.empty());
  const std::vector<json> alone_lines = json_lines(read_file(out_file));
  REQUIRE(alone_lines.size() == lines.size());
  for (size_t i = 0; i < lines.size(); ++i)
    CHECK(alone_lines[i].at("logprob").get<double>() == doctest::Approx(lines[i].at("logprob").get<double>()).epsilon(1e-5));
}

TEST_CASE("score: a SequenceClassification model prints {\"reward\": r} per record, its missing head initialised") {
  Workspace& ws = Workspace::get();
  const std::string reward_model = copy_model(ws.bare_model, ws / "reward", [](json& config) {
    config["architectures"] = json::array({"LlamaForSequenceClassification"});
    config["num_labels"] = 1;
  });
  const std::string data = ws / "reward/records.jsonl";
  write_file(data, kPromptCompletion);

  const CliResult result = alignkit("score --model " + reward_model + " --data " + data + " --threads 1");
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  CHECK(contains(result.err, "llama: " + reward_model + ": the checkpoint has no score.weight; initialised it"));
  CHECK(contains(result.err, "ignored 1 checkpoint tensor(s) this Scalar-head model does not use: lm_head.weight"));
  const std::vector<json> lines = json_lines(result.out);
  REQUIRE(lines.size() == kCompletionLengths.size());
  std::vector<double> rewards;
  for (const json& line : lines) {
    REQUIRE(line.is_object());
    CHECK(line.size() == 1u);
    REQUIRE(line.contains("reward"));
    CHECK(std::isfinite(line["reward"].get<double>()));
    rewards.push_back(line["reward"].get<double>());
  }
  CHECK(rewards[0] != rewards[1]);

  // The missing head is initialised from a fixed seed, and batching does not change a reward.
  const CliResult again = alignkit("score --model " + reward_model + " --data " + data + " --batch-size 1 --threads 1");
  CHECK(again.exit_code == 0);
  const std::vector<json> again_lines = json_lines(again.out);
  REQUIRE(again_lines.size() == rewards.size());
  for (size_t i = 0; i < rewards.size(); ++i)
    CHECK(again_lines[i].at("reward").get<double>() == doctest::Approx(rewards[i]).epsilon(1e-5));
}

TEST_CASE("evaluate: accuracies and margins of two models against a reference agree with score") {
  Workspace& ws = Workspace::get();
  const std::string other = ws / "eval/other";
  const CliResult init = alignkit("model init --vocab-size " + std::to_string(kVocabSize) + " --out " + other +
                                  " --hidden-size 32 --layers 2 --heads 4 --kv-heads 2 --seed 5");
  REQUIRE_MESSAGE(init.exit_code == 0, init.err);
  const std::string prefs = ws / "eval/prefs.jsonl";
  write_file(prefs, preference_records());
  const double beta = 0.5;
  const std::string command = "evaluate --data " + prefs + " --model " + ws.bare_model + " --model " + other +
                              " --reference " + ws.bare_model + " --beta 0.5 --threads 1";

  const CliResult result = alignkit(command + " --json");
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  const std::vector<json> lines = json_lines(result.out);
  REQUIRE(lines.size() == 2u);
  for (const json& line : lines) {
    CHECK(line.at("pairs") == kPairs.size());
    for (const char* key : {"logp_accuracy", "rewards/accuracies"}) {
      const double value = line.at(key).get<double>();
      CHECK((value >= 0.0 && value <= 1.0));
      CHECK(std::fabs(value * 3 - std::round(value * 3)) < 1e-9);  // a share of 3 pairs
    }
    CHECK(line.contains("logp_margin"));
    CHECK(line.contains("rewards/margins"));
  }
  const json& same = lines[0];
  const json& different = lines[1];
  CHECK(same.at("model") == ws.bare_model);
  CHECK(different.at("model") == other);
  CHECK(same.at("rewards/margins").get<double>() == 0.0);
  CHECK(same.at("rewards/accuracies").get<double>() == 0.0);  // a margin of 0 is not a win
  CHECK(different.at("rewards/margins").get<double>() != 0.0);

  // The same numbers from `score`'s per-record log-probs.
  const std::string rows = ws / "eval/rows.jsonl";
  write_file(rows, chosen_then_rejected_records());
  auto scores = [&](const std::string& model) {
    const CliResult scored = alignkit("score --model " + model + " --data " + rows + " --threads 1");
    REQUIRE_MESSAGE(scored.exit_code == 0, scored.err);
    const std::vector<double> values = logprobs_of(json_lines(scored.out));
    REQUIRE(values.size() == 2 * kPairs.size());
    return values;
  };
  const std::vector<double> reference = scores(ws.bare_model);
  const std::vector<double> policy = scores(other);
  const size_t n = kPairs.size();
  double logp_wins = 0, logp_margin = 0, reward_wins = 0, reward_margin = 0;
  for (size_t i = 0; i < n; ++i) {
    logp_wins += policy[i] > policy[n + i] ? 1 : 0;
    logp_margin += policy[i] - policy[n + i];
    const double margin = beta * ((policy[i] - reference[i]) - (policy[n + i] - reference[n + i]));
    reward_wins += margin > 0 ? 1 : 0;
    reward_margin += margin;
  }
  CHECK(different.at("logp_accuracy").get<double>() == doctest::Approx(logp_wins / n));
  CHECK(different.at("logp_margin").get<double>() == doctest::Approx(logp_margin / n).epsilon(1e-5));
  CHECK(different.at("rewards/accuracies").get<double>() == doctest::Approx(reward_wins / n));
  CHECK(different.at("rewards/margins").get<double>() == doctest::Approx(reward_margin / n).epsilon(1e-5));

  const CliResult table = alignkit(command);
  CHECK(table.exit_code == 0);
  CHECK(contains(table.out, "3 preference pairs from " + prefs));
  for (const char* column : {"logp accuracy", "logp margin", "reward accuracy", "reward margin"})
    CHECK_MESSAGE(contains(table.out, column), column);
  CHECK(contains(table.out, "\n" + ws.bare_model + " "));
  CHECK(contains(table.out, "\n" + other + " "));
}

TEST_CASE("bad input: a truncated model.safetensors names the file and the tensor, exit 1") {
  Workspace& ws = Workspace::get();
  const std::string data = ws / "truncated/records.jsonl";
  write_file(data, kPromptCompletion);

  const std::string cut = copy_model(ws.bare_model, ws / "truncated/half");
  const std::string weights = cut + "/model.safetensors";
  fs::resize_file(weights, fs::file_size(weights) / 2);
  const CliResult half = alignkit("score --model " + cut + " --data " + data);
  CHECK(half.exit_code == 1);
  CHECK(half.out.empty());
  CHECK(contains(half.err, weights + ": tensor '"));
  CHECK(contains(half.err, "of the data buffer, but the file holds only"));
  CHECK(contains(half.err, "truncated file?"));

  // Cut inside the header.
  const std::string stub = copy_model(ws.bare_model, ws / "truncated/header");
  fs::resize_file(stub + "/model.safetensors", 20);
  const CliResult header = alignkit("score --model " + stub + " --data " + data);
  CHECK(header.exit_code == 1);
  CHECK(contains(header.err, stub + "/model.safetensors: header length "));
  CHECK(contains(header.err, "runs past the end of the file (20 bytes): truncated file?"));
}

TEST_CASE("bad input: a config.json without hidden_size names the file and the key, exit 1") {
  Workspace& ws = Workspace::get();
  const std::string dir = copy_model(ws.bare_model, ws / "no_hidden", [](json& config) { config.erase("hidden_size"); });
  const std::string data = ws / "no_hidden/records.jsonl";
  write_file(data, kPromptCompletion);
  const CliResult result = alignkit("score --model " + dir + " --data " + data);
  CHECK(result.exit_code == 1);
  CHECK(result.out.empty());
  CHECK(contains(result.err, dir + "/config.json: missing required key 'hidden_size'"));
}

TEST_CASE("bad input: a tensor of the wrong shape names the tensor, the expected and the found shape, exit 1") {
  Workspace& ws = Workspace::get();
  const std::string dir = copy_model(ws.bare_model, ws / "wrong_shape", [](json& config) {
    config["intermediate_size"] = config["intermediate_size"].get<int>() + 8;
  });
  const std::string data = ws / "wrong_shape/records.jsonl";
  write_file(data, kPromptCompletion);
  const CliResult result = alignkit("score --model " + dir + " --data " + data);
  CHECK(result.exit_code == 1);
  CHECK(contains(result.err, dir + "/model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight': expected shape "
                                   "[96, 32] (from " + dir + "/config.json), found [88, 32]"));
}

TEST_CASE("bad input: a tokenizer with more ids than the model's vocab_size is refused with both sizes, exit 1") {
  Workspace& ws = Workspace::get();
  const std::string dir = ws / "small_vocab";
  const CliResult init = alignkit("model init --vocab-size 64 --out " + dir + " --hidden-size 32 --layers 1 --heads 4");
  REQUIRE_MESSAGE(init.exit_code == 0, init.err);
  fs::copy_file(ws.tokenizer, dir + "/tokenizer.model");
  const std::string expected = dir + "/tokenizer.model: the tokenizer has " + std::to_string(kVocabSize) +
                               " tokens but " + dir + "/config.json has vocab_size 64";

  const CliResult generate = alignkit("generate --model " + dir + " --prompt 'the cat' --max-new-tokens 2");
  CHECK(generate.exit_code == 1);
  CHECK(generate.out.empty());
  CHECK_MESSAGE(contains(generate.err, expected), generate.err);

  const std::string data = dir + "/text.jsonl";
  write_file(data, "{\"prompt\": \"the cat\", \"completion\": \" sat on a mat\"}\n");
  const CliResult score = alignkit("score --model " + dir + " --data " + data);
  CHECK(score.exit_code == 1);
  CHECK(score.out.empty());
  CHECK_MESSAGE(contains(score.err, expected), score.err);
}

TEST_CASE("bad input: a JSONL line that is not JSON is reported as file:line, exit 1") {
  Workspace& ws = Workspace::get();
  const std::string data = ws / "bad_json/records.jsonl";
  write_file(data, "{\"prompt_ids\": [1, 40], \"completion_ids\": [50, 2]}\n\n{\"prompt_ids\": [1, 40\n");
  const CliResult result = alignkit("score --model " + ws.bare_model + " --data " + data);
  CHECK(result.exit_code == 1);
  CHECK(result.out.empty());
  CHECK(contains(result.err, data + ":3: not valid JSON: "));
}

TEST_CASE("bad input: model init without --tokenizer or --vocab-size exits 2 and writes nothing") {
  Workspace& ws = Workspace::get();
  const std::string dir = ws / "no_vocab";
  const CliResult result = alignkit("model init --out " + dir);
  CHECK(result.exit_code == 2);
  CHECK(contains(result.err, "give --tokenizer FILE or --vocab-size N"));
  CHECK_FALSE(fs::exists(dir));
}
