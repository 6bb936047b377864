// JSON Lines loading: record type detection, validation, chat-template
// rendering and tokenization (the rules are in jsonl_dataset.hpp).
#include "jsonl_dataset.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "alignkit/tokenizer.hpp"

namespace alignkit::jsonl {
namespace {

using nlohmann::json;

// A problem with one record; the loader adds "FILE:LINE: " or skips the line.
class BadRecord : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A located problem that skipping lines cannot fix.
class LoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Form { Standard, Conversational, Tokenized };

const char* form_name(Form form) {
  switch (form) {
    case Form::Standard: return "standard form (strings)";
    case Form::Conversational: return "conversational form (lists of {\"role\", \"content\"} messages)";
    case Form::Tokenized: return "pre-tokenized form (lists of token ids)";
  }
  return "?";
}

// A record's type: what the first record of a file fixes for all others.
struct Layout {
  DataKind kind = DataKind::LanguageModeling;
  Form form = Form::Standard;
  bool has_prompt = true;  // false only for implicit-prompt preference records

  bool operator==(const Layout& other) const {
    return kind == other.kind && form == other.form && has_prompt == other.has_prompt;
  }
  bool operator!=(const Layout& other) const { return !(*this == other); }

  std::vector<std::string> fields() const {
    const bool ids = form == Form::Tokenized;
    switch (kind) {
      case DataKind::LanguageModeling:
        return {form == Form::Tokenized ? "input_ids" : form == Form::Conversational ? "messages" : "text"};
      case DataKind::PromptCompletion:
        return ids ? std::vector<std::string>{"prompt_ids", "completion_ids"}
                   : std::vector<std::string>{"prompt", "completion"};
      case DataKind::Preference: {
        std::vector<std::string> names = ids ? std::vector<std::string>{"chosen_ids", "rejected_ids"}
                                             : std::vector<std::string>{"chosen", "rejected"};
        if (has_prompt) names.insert(names.begin(), ids ? "prompt_ids" : "prompt");
        return names;
      }
      case DataKind::UnpairedPreference:
        return ids ? std::vector<std::string>{"prompt_ids", "completion_ids", "label"}
                   : std::vector<std::string>{"prompt", "completion", "label"};
      case DataKind::PromptOnly: return {ids ? "prompt_ids" : "prompt"};
    }
    return {};
  }

  // "preference records in standard form (strings), fields prompt, chosen, rejected"
  std::string describe(bool plural = true) const {
    std::string names;
    for (const std::string& name : fields()) names += (names.empty() ? "" : ", ") + name;
    return std::string(plural ? "" : "a ") + data_kind_name(kind) +
           (kind == DataKind::Preference && !has_prompt ? " (implicit prompt)" : "") +
           (plural ? " records in " : " record in ") + form_name(form) + ", fields " + names;
  }
};

const char* json_type(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "a list";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a float";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    default: return "a binary value";
  }
}

const char* kTypesHelp =
    "TRL's types have the fields text | messages | input_ids (language modelling), prompt + completion "
    "(prompt-completion), prompt + chosen + rejected or chosen + rejected (preference), prompt + completion + label "
    "(unpaired preference), prompt (prompt-only), or the *_ids forms of these";

// The form a text field is written in: a string, or a list of messages.
Form text_form(const json& record, const char* key) {
  const json& value = record.at(key);
  if (value.is_string()) return Form::Standard;
  if (value.is_array()) return Form::Conversational;
  throw BadRecord(std::string("field '") + key + "' must be a string or a list of messages, found " + json_type(value));
}

Layout detect(const json& record) {
  if (!record.is_object()) throw BadRecord(std::string("expected a JSON object, found ") + json_type(record));
  auto has = [&record](const char* key) { return record.contains(key); };
  if (has("chosen_ids") || has("rejected_ids")) return {DataKind::Preference, Form::Tokenized, has("prompt_ids")};
  if (has("chosen") || has("rejected"))
    return {DataKind::Preference, text_form(record, has("chosen") ? "chosen" : "rejected"), has("prompt")};
  if (has("label")) {
    if (has("prompt_ids") || has("completion_ids")) return {DataKind::UnpairedPreference, Form::Tokenized, true};
    if (has("completion") || has("prompt"))
      return {DataKind::UnpairedPreference, text_form(record, has("completion") ? "completion" : "prompt"), true};
  }
  if (has("completion_ids")) return {DataKind::PromptCompletion, Form::Tokenized, true};
  if (has("completion")) return {DataKind::PromptCompletion, text_form(record, "completion"), true};
  if (has("prompt_ids")) return {DataKind::PromptOnly, Form::Tokenized, true};
  if (has("prompt")) return {DataKind::PromptOnly, text_form(record, "prompt"), true};
  if (has("input_ids")) return {DataKind::LanguageModeling, Form::Tokenized, true};
  if (has("text")) return {DataKind::LanguageModeling, Form::Standard, true};
  if (has("messages")) return {DataKind::LanguageModeling, Form::Conversational, true};

  std::string names;
  for (auto it = record.begin(); it != record.end(); ++it) names += (names.empty() ? "" : ", ") + it.key();
  throw BadRecord("cannot tell the dataset type from the fields (" + (names.empty() ? std::string("none") : names) +
                  "); " + kTypesHelp);
}

// Reads one record's fields, checked against the file's layout.
class RecordReader {
 public:
  RecordReader(const json& record, const Layout& layout) : record_(record), layout_(layout) {}

  const json& field(const char* key) const {
    auto found = record_.find(key);
    if (found == record_.end() || found->is_null())
      throw BadRecord(std::string("missing field '") + key + "' (expected " + layout_.describe() + ")");
    return *found;
  }

  const std::string& text(const char* key) const {
    const json& value = field(key);
    if (!value.is_string())
      throw BadRecord(std::string("field '") + key + "' must be a string in " + form_name(layout_.form) + ", found " +
                      json_type(value));
    return value.get_ref<const std::string&>();
  }

  std::vector<Message> messages(const char* key) const {
    const json& value = field(key);
    if (!value.is_array())
      throw BadRecord(std::string("field '") + key + "' must be a list of messages in " + form_name(layout_.form) +
                      ", found " + json_type(value));
    std::vector<Message> out;
    for (size_t i = 0; i < value.size(); ++i) {
      const json& item = value[i];
      const auto role = item.is_object() ? item.find("role") : item.end();
      const auto content = item.is_object() ? item.find("content") : item.end();
      if (!item.is_object() || role == item.end() || !role->is_string() || content == item.end() ||
          !content->is_string())
        throw BadRecord(std::string("field '") + key + "' message " + std::to_string(i + 1) +
                        " must be an object with string \"role\" and \"content\"");
      out.push_back({role->get<std::string>(), content->get<std::string>()});
    }
    return out;
  }

  std::vector<int32_t> ids(const char* key, int64_t vocab_size) const {
    const json& value = field(key);
    if (!value.is_array())
      throw BadRecord(std::string("field '") + key + "' must be a list of token ids, found " + json_type(value));
    std::vector<int32_t> out;
    out.reserve(value.size());
    for (size_t i = 0; i < value.size(); ++i) {
      const json& item = value[i];
      if (!item.is_number_integer())
        throw BadRecord(std::string("field '") + key + "' item " + std::to_string(i) + " must be a token id, found " +
                        json_type(item));
      const bool negative = item.is_number_unsigned() ? false : item.get<int64_t>() < 0;
      const uint64_t id = negative ? 0 : item.get<uint64_t>();
      const uint64_t limit = vocab_size > 0 ? static_cast<uint64_t>(vocab_size)
                                            : static_cast<uint64_t>(std::numeric_limits<int32_t>::max()) + 1;
      if (negative || id >= limit)
        throw BadRecord(std::string("field '") + key + "' item " + std::to_string(i) + " is " + item.dump() +
                        (vocab_size > 0 ? ", outside the tokenizer's vocabulary 0.." + std::to_string(vocab_size - 1)
                                        : ", not a token id"));
      out.push_back(static_cast<int32_t>(id));
    }
    return out;
  }

  bool label() const {
    const json& value = field("label");
    if (value.is_boolean()) return value.get<bool>();
    if (value.is_number_integer() && (value.get<int64_t>() == 0 || value.get<int64_t>() == 1))
      return value.get<int64_t>() == 1;
    throw BadRecord(std::string("field 'label' must be true or false, found ") + json_type(value));
  }

  std::optional<double> margin() const {
    auto found = record_.find("margin");
    if (found == record_.end() || found->is_null()) return std::nullopt;
    if (!found->is_number())
      throw BadRecord(std::string("field 'margin' must be a number, found ") + json_type(*found));
    return found->get<double>();
  }

  std::string answer() const {
    auto found = record_.find("answer");
    if (found == record_.end() || found->is_null()) return {};
    if (found->is_string()) return found->get<std::string>();
    if (found->is_number()) return found->dump();
    throw BadRecord(std::string("field 'answer' must be a string or a number, found ") + json_type(*found));
  }

 private:
  const json& record_;
  const Layout& layout_;
};

// TRL's extract_prompt for strings: the longest common prefix, cut back to a
// UTF-8 character boundary (Python compares characters) and before a space.
std::string shared_prefix(const std::string& chosen, const std::string& rejected) {
  if (chosen == rejected)
    throw BadRecord("chosen and rejected are identical, so no prompt can be extracted; add a 'prompt' field");
  size_t end = 0;
  while (end < chosen.size() && end < rejected.size() && chosen[end] == rejected[end]) ++end;
  auto continuation = [](const std::string& s, size_t at) {
    return at < s.size() && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80;
  };
  while (end > 0 && (continuation(chosen, end) || continuation(rejected, end))) --end;
  if (end > 0 && chosen[end - 1] == ' ') --end;
  return chosen.substr(0, end);
}

size_t shared_messages(const std::vector<Message>& chosen, const std::vector<Message>& rejected) {
  if (chosen == rejected)
    throw BadRecord("chosen and rejected are identical, so no prompt can be extracted; add a 'prompt' field");
  size_t end = 0;
  while (end < chosen.size() && end < rejected.size() && chosen[end] == rejected[end]) ++end;
  return end;
}

// Turns one record into an Example.
class ExampleBuilder {
 public:
  ExampleBuilder(const Tokenizer* tokenizer, ChatTemplate chat_template)
      : tokenizer_(tokenizer), chat_template_(chat_template) {}

  Example build(const json& record, const Layout& layout) const {
    const RecordReader read(record, layout);
    Example example;
    switch (layout.form) {
      case Form::Tokenized: build_tokenized(read, layout, example); break;
      case Form::Standard: build_standard(read, layout, example); break;
      case Form::Conversational: build_conversational(read, layout, example); break;
    }
    if (layout.kind == DataKind::UnpairedPreference) example.label = read.label();
    if (layout.kind == DataKind::Preference) example.margin = read.margin().value_or(0.0);
    example.answer = read.answer();
    return example;
  }

 private:
  void build_tokenized(const RecordReader& read, const Layout& layout, Example& example) const {
    const int64_t vocab = tokenizer_ ? tokenizer_->vocab_size() : 0;
    switch (layout.kind) {
      case DataKind::LanguageModeling: example.completion = read.ids("input_ids", vocab); break;
      case DataKind::PromptCompletion:
      case DataKind::UnpairedPreference:
        example.prompt = read.ids("prompt_ids", vocab);
        example.completion = read.ids("completion_ids", vocab);
        break;
      case DataKind::Preference:
        if (layout.has_prompt) example.prompt = read.ids("prompt_ids", vocab);
        example.completion = read.ids("chosen_ids", vocab);
        example.rejected = read.ids("rejected_ids", vocab);
        break;
      case DataKind::PromptOnly: example.prompt = read.ids("prompt_ids", vocab); break;
    }
    if (tokenizer_) example.prompt_text = tokenizer_->decode(example.prompt);
  }

  void build_standard(const RecordReader& read, const Layout& layout, Example& example) const {
    switch (layout.kind) {
      case DataKind::LanguageModeling:
        example.completion = with_eos(with_bos(encode(read.text("text"))));
        return;
      case DataKind::PromptCompletion:
      case DataKind::UnpairedPreference:
        set_prompt(example, read.text("prompt"));
        example.completion = with_eos(encode(read.text("completion")));
        return;
      case DataKind::Preference: {
        std::string prompt;
        std::string chosen = read.text("chosen");
        std::string rejected = read.text("rejected");
        if (layout.has_prompt) {
          prompt = read.text("prompt");
        } else {
          prompt = shared_prefix(chosen, rejected);
          chosen.erase(0, prompt.size());
          rejected.erase(0, prompt.size());
        }
        set_prompt(example, prompt);
        example.completion = with_eos(encode(chosen));
        example.rejected = with_eos(encode(rejected));
        return;
      }
      case DataKind::PromptOnly: set_prompt(example, read.text("prompt")); return;
    }
  }

  void build_conversational(const RecordReader& read, const Layout& layout, Example& example) const {
    switch (layout.kind) {
      case DataKind::LanguageModeling:
        example.completion = with_eos(with_bos(encode(render(read.messages("messages"), false))));
        return;
      case DataKind::PromptCompletion:
      case DataKind::UnpairedPreference: {
        const std::vector<Message> prompt = read.messages("prompt");
        set_prompt(example, prompt);
        example.completion = completion(prompt, read.messages("completion"));
        return;
      }
      case DataKind::Preference: {
        std::vector<Message> prompt;
        std::vector<Message> chosen = read.messages("chosen");
        std::vector<Message> rejected = read.messages("rejected");
        if (layout.has_prompt) {
          prompt = read.messages("prompt");
        } else {
          const auto shared = static_cast<std::ptrdiff_t>(shared_messages(chosen, rejected));
          prompt.assign(chosen.begin(), chosen.begin() + shared);
          chosen.erase(chosen.begin(), chosen.begin() + shared);
          rejected.erase(rejected.begin(), rejected.begin() + shared);
        }
        set_prompt(example, prompt);
        example.completion = completion(prompt, chosen);
        example.rejected = completion(prompt, rejected);
        return;
      }
      case DataKind::PromptOnly: set_prompt(example, read.messages("prompt")); return;
    }
  }

  void set_prompt(Example& example, const std::string& prompt) const {
    example.prompt = with_bos(encode(prompt));
    example.prompt_text = prompt;
  }

  void set_prompt(Example& example, const std::vector<Message>& prompt) const {
    const Rendering rendering = render(prompt, true);
    example.prompt = with_bos(encode(rendering));
    example.prompt_text = rendering_text(rendering);
  }

  std::vector<int32_t> completion(const std::vector<Message>& prompt, const std::vector<Message>& completion) const {
    try {
      return with_eos(encode(render_completion(chat_template_, prompt, completion)));
    } catch (const std::invalid_argument& e) {
      throw BadRecord(e.what());
    }
  }

  Rendering render(const std::vector<Message>& messages, bool add_generation_prompt) const {
    try {
      return render_conversation(chat_template_, messages, add_generation_prompt);
    } catch (const std::invalid_argument& e) {
      throw BadRecord(e.what());
    }
  }

  std::vector<int32_t> encode(const std::string& text) const { return tokenizer_->encode(text); }

  // Text runs are encoded whole; BOS/EOS pieces become the tokenizer's ids
  // (and vanish when it has none).
  std::vector<int32_t> encode(const Rendering& rendering) const {
    std::vector<int32_t> ids;
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      const std::vector<int32_t> encoded = tokenizer_->encode(run);
      ids.insert(ids.end(), encoded.begin(), encoded.end());
      run.clear();
    };
    for (const Piece& piece : rendering) {
      if (piece.kind == Piece::Text) {
        run += piece.text;
        continue;
      }
      flush();
      const int32_t id = piece.kind == Piece::Bos ? tokenizer_->bos_id() : tokenizer_->eos_id();
      if (id >= 0) ids.push_back(id);
    }
    flush();
    return ids;
  }

  std::vector<int32_t> with_bos(std::vector<int32_t> ids) const {
    const int32_t bos = tokenizer_->bos_id();
    if (bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
    return ids;
  }

  std::vector<int32_t> with_eos(std::vector<int32_t> ids) const {
    const int32_t eos = tokenizer_->eos_id();
    if (eos >= 0 && (ids.empty() || ids.back() != eos)) ids.push_back(eos);
    return ids;
  }

  const Tokenizer* tokenizer_;
  ChatTemplate chat_template_;
};

class JsonlDataset final : public Dataset {
 public:
  JsonlDataset(std::string source, DataKind kind, std::vector<Example> examples, size_t skipped)
      : source_(std::move(source)), kind_(kind), examples_(std::move(examples)), skipped_(skipped) {}

  DataKind kind() const override { return kind_; }
  size_t size() const override { return examples_.size(); }
  const Example& at(size_t index) const override {
    if (index >= examples_.size())
      throw std::out_of_range(source_ + ": example " + std::to_string(index) + " requested, the dataset has " +
                              std::to_string(examples_.size()));
    return examples_[index];
  }
  size_t skipped_records() const override { return skipped_; }
  std::string source() const override { return source_; }

 private:
  std::string source_;
  DataKind kind_;
  std::vector<Example> examples_;
  size_t skipped_;
};

// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest is what users need.
std::string parse_error_message(const json::parse_error& error) {
  std::string message = error.what();
  const size_t tag_end = message.find("] ");
  return tag_end == std::string::npos ? message : message.substr(tag_end + 2);
}

bool blank(const std::string& line) { return line.find_first_not_of(" \t\r\n") == std::string::npos; }

}  // namespace

std::unique_ptr<Dataset> load_jsonl(const std::string& path, const LoadOptions& options, const Tokenizer* tokenizer) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error))
    throw std::runtime_error(path + ": is a folder, not a JSON Lines file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));

  const ExampleBuilder builder(tokenizer, options.chat_template);
  std::optional<Layout> layout;
  int64_t layout_line = 0;
  std::vector<Example> examples;
  size_t skipped = 0;
  std::string line;
  for (int64_t line_number = 1; std::getline(in, line); ++line_number) {
    if (line_number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 byte order mark
    if (blank(line)) continue;
    const std::string where = path + ":" + std::to_string(line_number) + ": ";
    try {
      json record;
      try {
        record = json::parse(line);
      } catch (const json::parse_error& e) {
        throw BadRecord("not valid JSON: " + parse_error_message(e));
      }
      const Layout found = detect(record);
      if (!layout) {
        if (found.form != Form::Tokenized && !tokenizer)
          throw LoadError(where + "the records are text in " + form_name(found.form) +
                          ", so a tokenizer is needed, but none was given");
        layout = found;
        layout_line = line_number;
      } else if (found != *layout) {
        throw BadRecord("expected " + layout->describe() + " (as set by line " + std::to_string(layout_line) +
                        "), found " + found.describe(false));
      }
      Example example = builder.build(record, *layout);
      example.source_line = line_number;
      examples.push_back(std::move(example));
    } catch (const BadRecord& e) {
      if (!options.skip_bad_records) throw std::runtime_error(where + e.what());
      ++skipped;
    } catch (const LoadError&) {
      throw;
    } catch (const std::exception& e) {  // the tokenizer's own errors
      throw std::runtime_error(where + e.what());
    }
  }
  if (in.bad()) throw std::runtime_error(path + ": read error: " + std::strerror(errno));
  if (examples.empty()) {
    if (skipped > 0)
      throw std::runtime_error(path + ": all " + std::to_string(skipped) +
                               " records are malformed (skip_bad_records skipped them)");
    throw std::runtime_error(path + ": holds no records");
  }
  return std::make_unique<JsonlDataset>(path, layout->kind, std::move(examples), skipped);
}

}  // namespace alignkit::jsonl
