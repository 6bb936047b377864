// alignkit: the command-line entry point. Dispatches to the command table;
// every command parses its own options.
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "alignkit/version.hpp"
#include "commands.hpp"

namespace alignkit::cli {
namespace {

const Command kCommands[] = {
    {"run", "run a pipeline: alignkit run PIPELINE.toml [--set KEY=VALUE]... [--resume]", cmd_run},
    {"launch", "start and supervise data-parallel workers: alignkit launch --nproc-per-node N -- run P.toml", cmd_launch},
    {"validate", "check a pipeline without running it", cmd_validate},
    {"plugins list", "list the plugins found and their status [--json]", cmd_plugins_list},
    {"plugins info", "show a component's settings, types, defaults and docs", cmd_plugins_info},
    {"tokenizer train", "train a tokenizer.model from a text corpus", cmd_tokenizer_train},
    {"model init", "write a randomly initialised model in the Hugging Face layout", cmd_model_init},
    {"model merge", "fold a PEFT LoRA adapter into its base model and write the full checkpoint", cmd_model_merge},
    {"score", "per-token log-probs (or rewards) of JSONL records under a model", cmd_score},
    {"evaluate", "preference accuracy and reward margins of models on held-out pairs", cmd_evaluate},
    {"generate", "continue prompts with a model (greedy or sampling, KV cache)", cmd_generate},
    {"data annotate", "side-by-side preference annotation in the terminal (resumable, undo)", cmd_data_annotate},
    {"data ratings-to-pairs", "turn completions rated 1 to 5 into preference pairs with margins", cmd_data_ratings_to_pairs},
    {"data synthesize", "generate completions and judge them into preference pairs", cmd_data_synthesize},
    {"data validate", "check a JSONL data file's schema (file:line errors; exit 2 when unusable)", cmd_data_validate},
    {"data stats", "counts, duplicates, empty fields and length percentiles of a JSONL data file", cmd_data_stats},
};

void print_help() {
  std::cout << "alignkit " ALIGNKIT_VERSION_STRING " - preference alignment for language models\n\n"
               "usage: alignkit COMMAND [OPTIONS]   (alignkit COMMAND --help for its options)\n\ncommands:\n";
  for (const Command& command : kCommands) {
    std::string name = command.name;
    std::cout << "  " << name << std::string(name.size() < 23 ? 23 - name.size() : 1, ' ') << command.summary << '\n';
  }
  std::cout << "\noptions:\n  --help            this message\n  --version         AlignKit, SDK ABI and LibTorch versions\n"
               "\nexit codes: 0 success, 1 runtime failure, 2 usage or configuration error,\n"
               "            75 interrupted by SIGINT/SIGTERM after saving a checkpoint (see docs/cli.md)\n";
}

}  // namespace
}  // namespace alignkit::cli

int main(int argc, char** argv) {
  using namespace alignkit::cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help();
    return args.empty() ? kExitUsage : kExitOk;
  }
  if (args[0] == "--version") {
    std::cout << "alignkit " ALIGNKIT_VERSION_STRING "\nsdk abi " << ALIGNKIT_ABI_VERSION
              << "\nlibtorch " ALIGNKIT_TORCH_VERSION_STRING "\n";
    return kExitOk;
  }
  // Longest match first: "plugins list" before a hypothetical "plugins".
  const Command* best = nullptr;
  size_t best_words = 0;
  for (const Command& command : kCommands) {
    std::vector<std::string> words;
    for (const char* p = command.name; *p;) {
      const char* space = std::strchr(p, ' ');
      words.emplace_back(p, space ? space - p : std::strlen(p));
      p = space ? space + 1 : p + std::strlen(p);
    }
    if (words.size() > args.size() || words.size() <= best_words) continue;
    if (std::equal(words.begin(), words.end(), args.begin())) {
      best = &command;
      best_words = words.size();
    }
  }
  if (!best) {
    std::cerr << "alignkit: unknown command '" << args[0] << (args.size() > 1 && args[1][0] != '-' ? " " + args[1] : "")
              << "'; see alignkit --help\n";
    return kExitUsage;
  }
  try {
    return best->fn(std::vector<std::string>(args.begin() + best_words, args.end()));
  } catch (const std::exception& e) {
    std::cerr << "alignkit: " << e.what() << '\n';
    return kExitFailure;
  }
}
