// Chat template rendering (see chat_template.hpp for the four templates).
#include "chat_template.hpp"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace alignkit::jsonl {
namespace {

Piece text(std::string value) { return {Piece::Text, std::move(value)}; }
Piece bos() { return {Piece::Bos, "<s>"}; }
Piece eos(const char* written_as) { return {Piece::Eos, written_as}; }

// Jinja's `str.strip()`, which the Llama-2 template applies to every message.
std::string strip(const std::string& value) {
  size_t begin = 0;
  size_t end = value.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(value[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(value[end - 1]))) --end;
  return value.substr(begin, end - begin);
}

// ChatML and Zephyr differ only in how a turn opens.
Rendering render_tagged(const std::vector<Message>& messages, bool add_generation_prompt, bool chatml) {
  auto header = [chatml](const std::string& role) {
    return chatml ? "<|im_start|>" + role + "\n" : "<|" + role + "|>\n";
  };
  const char* end_of_turn = chatml ? "<|im_end|>" : "</s>";
  Rendering out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i > 0) out.push_back(text("\n"));
    out.push_back(text(header(messages[i].role)));
    out.push_back(text(messages[i].content));
    out.push_back(eos(end_of_turn));
  }
  if (add_generation_prompt) {
    if (!messages.empty()) out.push_back(text("\n"));
    out.push_back(text(header("assistant")));
  }
  return out;
}

std::string capitalized(std::string role) {
  if (!role.empty()) role[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(role[0])));
  return role;
}

Rendering render_plain(const std::vector<Message>& messages, bool add_generation_prompt) {
  Rendering out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i > 0) out.push_back(text("\n"));
    out.push_back(text(capitalized(messages[i].role) + ":"));
    out.push_back(text(" " + messages[i].content));
    if (messages[i].role == "assistant") out.push_back(eos("</s>"));
  }
  if (add_generation_prompt) {
    if (!messages.empty()) out.push_back(text("\n"));
    out.push_back(text("Assistant:"));
  }
  return out;
}

// Llama-2-chat has no generation prompt: the model answers right after [/INST].
Rendering render_llama2(const std::vector<Message>& messages) {
  size_t first = 0;
  std::string system;
  if (!messages.empty() && messages[0].role == "system") {
    system = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n";
    first = 1;
  }
  Rendering out;
  for (size_t i = first; i < messages.size(); ++i) {
    const bool user_turn = (i - first) % 2 == 0;
    const std::string& role = messages[i].role;
    if (role != (user_turn ? "user" : "assistant"))
      throw std::invalid_argument("the llama2 template needs roles alternating user/assistant/... after an optional "
                                  "first system message; message " +
                                  std::to_string(i + 1) + " has role \"" + role + "\"");
    if (user_turn) {
      const std::string content = i == first ? system + messages[i].content : messages[i].content;
      out.push_back(bos());
      out.push_back(text("[INST] " + strip(content) + " [/INST]"));
    } else {
      out.push_back(text(" " + strip(messages[i].content) + " "));
      out.push_back(eos("</s>"));
    }
  }
  return out;
}

}  // namespace

const std::vector<std::string>& chat_template_names() {
  static const std::vector<std::string> names = {"chatml", "llama2", "zephyr", "plain"};
  return names;
}

ChatTemplate parse_chat_template(const std::string& name) {
  if (name == "chatml") return ChatTemplate::ChatML;
  if (name == "llama2") return ChatTemplate::Llama2;
  if (name == "zephyr") return ChatTemplate::Zephyr;
  if (name == "plain") return ChatTemplate::Plain;
  throw std::invalid_argument("expected one of chatml, llama2, zephyr, plain, found \"" + name + "\"");
}

Rendering render_conversation(ChatTemplate chat_template, const std::vector<Message>& messages,
                              bool add_generation_prompt) {
  switch (chat_template) {
    case ChatTemplate::ChatML: return render_tagged(messages, add_generation_prompt, true);
    case ChatTemplate::Zephyr: return render_tagged(messages, add_generation_prompt, false);
    case ChatTemplate::Plain: return render_plain(messages, add_generation_prompt);
    case ChatTemplate::Llama2: return render_llama2(messages);
  }
  throw std::invalid_argument("unknown chat template");
}

Rendering render_completion(ChatTemplate chat_template, const std::vector<Message>& prompt,
                            const std::vector<Message>& completion) {
  if (completion.empty() || completion.front().role != "assistant")
    throw std::invalid_argument("a completion must start with an assistant message, found " +
                                (completion.empty() ? std::string("no messages")
                                                    : "role \"" + completion.front().role + "\""));
  std::vector<Message> conversation = prompt;
  conversation.insert(conversation.end(), completion.begin(), completion.end());
  const Rendering head = render_conversation(chat_template, prompt, true);
  const Rendering whole = render_conversation(chat_template, conversation, false);
  // Every template renders the generation prompt exactly as an assistant turn
  // opens, so the head is always a prefix; the check guards that invariant.
  if (whole.size() < head.size() || !std::equal(head.begin(), head.end(), whole.begin()))
    throw std::invalid_argument("the completion does not continue the prompt's generation prompt");
  return Rendering(whole.begin() + static_cast<std::ptrdiff_t>(head.size()), whole.end());
}

std::string rendering_text(const Rendering& rendering) {
  std::string out;
  for (const Piece& piece : rendering) out += piece.text;
  return out;
}

}  // namespace alignkit::jsonl
