// Dataset interface: examples of one of TRL's dataset types, already rendered
// (chat template) and tokenized. Torch-free: batching happens in batch.hpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "alignkit/config.hpp"

namespace alignkit {

class Tokenizer;

enum class DataKind { LanguageModeling, PromptCompletion, Preference, UnpairedPreference, PromptOnly };

inline const char* data_kind_name(DataKind kind) {
  switch (kind) {
    case DataKind::LanguageModeling: return "language-modeling";
    case DataKind::PromptCompletion: return "prompt-completion";
    case DataKind::Preference: return "preference";
    case DataKind::UnpairedPreference: return "unpaired-preference";
    case DataKind::PromptOnly: return "prompt-only";
  }
  return "?";
}

// One tokenized example. Which fields are used depends on the kind:
//   language-modeling:    completion (the whole text; prompt empty)
//   prompt-completion:    prompt, completion
//   preference:           prompt, completion (= chosen), rejected
//   unpaired-preference:  prompt, completion, label
//   prompt-only:          prompt
struct Example {
  std::vector<int32_t> prompt;
  std::vector<int32_t> completion;
  std::vector<int32_t> rejected;
  bool label = true;          // unpaired: true when the completion is desirable
  double margin = 0.0;        // preference: optional margin (reward modelling)
  std::string prompt_text;    // rendered prompt, for generation and rule-based rewards
  std::string answer;         // optional reference answer (verifiable rewards)
  int64_t source_line = 0;    // 1-based line in the source file
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual DataKind kind() const = 0;
  virtual size_t size() const = 0;
  virtual const Example& at(size_t index) const = 0;
  // Records skipped because they were malformed (only with skip_bad_records).
  virtual size_t skipped_records() const = 0;
  virtual std::string source() const = 0;
};

// Everything a dataset plugin needs to load one file.
struct DataRequest {
  std::string path;
  ConfigView options;                     // the stage's `data` table, defaults filled in
  const Tokenizer* tokenizer = nullptr;   // may be null for pre-tokenized records
};

class DatasetProvider {
 public:
  virtual ~DatasetProvider() = default;
  // Throws std::runtime_error naming the file and line of the first bad record.
  virtual std::unique_ptr<Dataset> load(const DataRequest& request) const = 0;
};

}  // namespace alignkit
