// Chat templates for conversational records: renders {role, content} messages
// as the named template does, into text pieces and BOS/EOS markers (which a
// SentencePiece tokenizer cannot find in text, so they become ids directly).
//
// Each message ends where the real template ends it, with the template's
// end-of-turn token written as the tokenizer's EOS (in Qwen's ChatML the
// end-of-turn <|im_end|> is the EOS token too). Messages are separated rather
// than terminated by newlines, so a conversation ends on its EOS.
//
//   chatml  <|im_start|>{role}\n{content}EOS  joined by "\n"; generation prompt "<|im_start|>assistant\n"
//   zephyr  <|{role}|>\n{content}EOS          joined by "\n"; generation prompt "<|assistant|>\n"
//   llama2  BOS[INST] {<<SYS>>\n{system}\n<</SYS>>\n\n}{user} [/INST]  then  " {assistant} "EOS;
//           roles must alternate user/assistant after an optional first system message
//   plain   {Role}: {content} (EOS after assistant turns) joined by "\n"; generation prompt "Assistant:"
#pragma once

#include <string>
#include <vector>

namespace alignkit::jsonl {

struct Message {
  std::string role;
  std::string content;
  bool operator==(const Message& other) const { return role == other.role && content == other.content; }
};

enum class ChatTemplate { ChatML, Llama2, Zephyr, Plain };

// The names pipelines write: "chatml", "llama2", "zephyr", "plain".
const std::vector<std::string>& chat_template_names();
// Throws std::invalid_argument naming the accepted names.
ChatTemplate parse_chat_template(const std::string& name);

struct Piece {
  enum Kind { Text, Bos, Eos };
  Kind kind = Text;
  std::string text;  // Text: the text; Bos/Eos: how the template writes the token
  bool operator==(const Piece& other) const { return kind == other.kind && text == other.text; }
};
using Rendering = std::vector<Piece>;

// `messages` as the template writes them, plus the generation prompt when
// asked (TRL's apply_chat_template(add_generation_prompt=...)). Throws
// std::invalid_argument for a conversation the template cannot write.
Rendering render_conversation(ChatTemplate chat_template, const std::vector<Message>& messages,
                              bool add_generation_prompt);

// What `completion` adds after `prompt` rendered with its generation prompt
// (TRL renders both and takes the difference). Throws std::invalid_argument
// when the completion does not continue the generation prompt, e.g. because it
// starts with a user message.
Rendering render_completion(ChatTemplate chat_template, const std::vector<Message>& prompt,
                            const std::vector<Message>& completion);

// The rendering as text, special tokens written as the template writes them.
std::string rendering_text(const Rendering& rendering);

}  // namespace alignkit::jsonl
