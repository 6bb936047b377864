// Loads one JSON Lines file of TRL-format records into tokenized Examples.
//
// The first record's fields decide the file's type, every later record must
// have the same type and form:
//   language modelling     text | messages | input_ids
//   prompt-completion      prompt, completion | prompt_ids, completion_ids
//   preference             prompt, chosen, rejected | chosen, rejected (implicit prompt)
//                          | [prompt_ids,] chosen_ids, rejected_ids
//   unpaired preference    prompt, completion, label | prompt_ids, completion_ids, label
//   prompt-only            prompt | prompt_ids
// Text fields come in TRL's standard form (strings) or conversational form
// (lists of {"role", "content"}, rendered with the chat template); *_ids
// fields are used exactly as given. Optional fields: `margin` (a number, for
// preference records) and `answer` (a string or number, any type); other
// fields are ignored.
//
// Special tokens, as TRL adds them:
//   - a prompt (or a language-modelling text) starts with BOS when the
//     tokenizer has one (once: the llama2 template writes its own);
//   - a completion (chosen, rejected, a language-modelling text) ends with EOS:
//     appended in standard form, written by the template's end of turn in
//     conversational form (appended when the rendering does not end with it);
//   - conversational prompts end with the template's generation prompt.
// Without a prompt field, a preference record's prompt is the longest common
// prefix of chosen and rejected (TRL's extract_prompt: whole messages in
// conversational form; in standard form a space before the split goes to the
// completions). Pre-tokenized preference records without prompt_ids get an
// empty prompt.
#pragma once

#include <memory>
#include <string>

#include "alignkit/dataset.hpp"
#include "chat_template.hpp"

namespace alignkit::jsonl {

struct LoadOptions {
  ChatTemplate chat_template = ChatTemplate::ChatML;
  // Skip (and count) lines that are not JSON objects or do not match the
  // file's type, instead of failing on the first.
  bool skip_bad_records = false;
};

// Throws std::runtime_error "FILE:LINE: ..." for the first bad record, and
// "FILE: ..." when the file cannot be read or holds no usable record.
// `tokenizer` may be null only for pre-tokenized records.
std::unique_ptr<Dataset> load_jsonl(const std::string& path, const LoadOptions& options, const Tokenizer* tokenizer);

}  // namespace alignkit::jsonl
