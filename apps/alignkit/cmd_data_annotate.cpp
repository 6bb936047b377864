// `alignkit data annotate`: a terminal UI for pairwise preference annotation.
//
// Items are the pairs of completions of each input record (completion_a vs
// completion_b, or every pair of a `completions` list), in file order. Each
// item's left/right placement is drawn from (seed, item), so a resumed or
// undone item shows the same way again. Judgements go to two files, each
// line appended and fsynced before the next key is read: preference pairs to
// --out (usable by DPO as they are) and ties to --ties. Undo removes the
// judgement with the highest item number (items are judged in order) by
// rewriting that file atomically (temporary file, fsync, rename), so a crash
// at any point leaves either the old or the new file, never a torn one.
// Running again resumes after the last judged item.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <boost/program_options/value_semantic.hpp>
#include <nlohmann/json.hpp>

#include "alignkit/core/atomic_file.hpp"
#include "commands.hpp"
#include "data_common.hpp"

namespace fs = std::filesystem;
namespace po = boost::program_options;
using nlohmann::json;

namespace alignkit::cli {
namespace {

constexpr int kMinColumns = 40;
constexpr int kMinRows = 12;
constexpr int kSideBySideColumns = 80;  // narrower terminals stack the two completions

struct Item {
  int64_t source_line = 0;
  json prompt;
  json first, second;                // the two completions, in input order
  std::string first_name, second_name;  // "completion_a" or "completions[2]"
};

std::vector<Item> read_items(const std::string& path) {
  std::vector<Item> items;
  for (const JsonLine& line : read_json_lines(path)) {
    const json& r = line.value;
    const std::string where = at_line(path, line.line);
    if (!r.is_object() || !r.contains("prompt"))
      throw ConfigError(where + ": expected {\"prompt\", \"completion_a\", \"completion_b\"} or {\"prompt\", \"completions\": [...]}");
    auto text_ok = [](const json& v) { return v.is_string() || v.is_array(); };
    if (r.contains("completion_a") || r.contains("completion_b")) {
      if (!r.contains("completion_a") || !r.contains("completion_b") || !text_ok(r["completion_a"]) || !text_ok(r["completion_b"]))
        throw ConfigError(where + ": completion_a and completion_b must both be strings (or lists of messages)");
      items.push_back({line.line, r["prompt"], r["completion_a"], r["completion_b"], "completion_a", "completion_b"});
    } else if (r.contains("completions") && r["completions"].is_array()) {
      const json& list = r["completions"];
      if (list.size() < 2) throw ConfigError(where + ": 'completions' needs at least two entries to compare");
      for (size_t i = 0; i < list.size(); ++i) {
        const json& c = list[i].is_object() && list[i].contains("text") ? list[i]["text"] : list[i];
        if (!text_ok(c)) throw ConfigError(where + ": completions[" + std::to_string(i) + "] must be a string, messages or {\"text\": ...}");
      }
      auto text_of = [&](size_t i) { return list[i].is_object() ? list[i]["text"] : list[i]; };
      for (size_t i = 0; i < list.size(); ++i)
        for (size_t j = i + 1; j < list.size(); ++j)
          items.push_back({line.line, r["prompt"], text_of(i), text_of(j), "completions[" + std::to_string(i) + "]",
                           "completions[" + std::to_string(j) + "]"});
    } else {
      throw ConfigError(where + ": no completions to compare (expected completion_a and completion_b, or completions)");
    }
  }
  if (items.empty()) throw ConfigError(path + ": no records to annotate");
  return items;
}

// SplitMix64's finaliser: neighbouring inputs give unrelated outputs (the
// first draw of mt19937_64 from neighbouring seeds does not).
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// True when item `index` shows its second completion on the left.
bool swapped(uint64_t seed, int64_t index) { return (mix(mix(seed) ^ static_cast<uint64_t>(index)) & 1) != 0; }

std::string utc_now() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string as_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  std::string text;
  for (const json& m : value) {
    if (!text.empty()) text += '\n';
    text += (m.contains("role") && m["role"].is_string() ? m["role"].get<std::string>() : "?") + ": " +
            (m.contains("content") && m["content"].is_string() ? m["content"].get<std::string>() : m.dump());
  }
  return text;
}

// ---- the judgement files -------------------------------------------------

struct Judged {
  std::string file;
  int64_t item = -1;
};

// The judgements in `path` (none when it does not exist), checked against the items.
std::vector<Judged> read_judgements(const std::string& path, const std::vector<Item>& items) {
  std::vector<Judged> judged;
  if (!fs::exists(path)) return judged;
  for (const JsonLine& line : read_json_lines(path)) {
    const json& r = line.value;
    if (!r.is_object() || !r.contains("item") || !r["item"].is_number_integer())
      throw ConfigError(at_line(path, line.line) + ": not a judgement written by alignkit data annotate (no 'item')");
    const int64_t item = r["item"].get<int64_t>();
    if (item < 0 || item >= static_cast<int64_t>(items.size()) || r.value("prompt", json()) != items[item].prompt)
      throw ConfigError(at_line(path, line.line) + ": item " + std::to_string(item) +
                        " does not match the input file (was the input changed? use another --out)");
    judged.push_back({path, item});
  }
  return judged;
}

// A crash can leave at most a torn last line (no newline): drop it before resuming.
void drop_torn_tail(const std::string& path) {
  if (!fs::exists(path) || fs::file_size(path) == 0) return;
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  if (text.back() == '\n') return;
  const size_t keep = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  std::cerr << "alignkit: " << path << ": dropping an incomplete last line left by a crash\n";
  core::write_file_atomic(path, text.substr(0, keep));
}

void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(path + ": cannot open for appending (" + std::strerror(errno) + ")");
  const std::string text = line + '\n';
  const ssize_t written = ::write(fd, text.data(), text.size());
  const int sync = ::fsync(fd);
  ::close(fd);
  if (written != static_cast<ssize_t>(text.size()) || sync != 0)
    throw std::runtime_error(path + ": write failed (" + std::strerror(errno) + ")");
}

// Rewrites `path` without the judgement of `item` (atomically).
void remove_judgement(const std::string& path, int64_t item) {
  std::ifstream in(path, std::ios::binary);
  std::string line, kept;
  while (std::getline(in, line)) {
    json r = json::parse(line, nullptr, false);
    if (r.is_object() && r.value("item", int64_t{-1}) == item) continue;
    kept += line + '\n';
  }
  core::write_file_atomic(path, kept);
}

// ---- the terminal --------------------------------------------------------

volatile std::sig_atomic_t g_resized = 0;
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_winch(int) { g_resized = 1; }
extern "C" void on_stop(int) { g_stop = 1; }

// Raw keys, the alternate screen and a hidden cursor while it lives; the
// terminal as it was afterwards (also on an exception).
class Terminal {
 public:
  Terminal() {
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) throw std::runtime_error("cannot read the terminal's settings");
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO | ISIG);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw);
    struct sigaction action{};
    action.sa_handler = on_winch;
    ::sigaction(SIGWINCH, &action, nullptr);  // no SA_RESTART: read() returns to redraw
    action.sa_handler = on_stop;
    ::sigaction(SIGTERM, &action, nullptr);
    ::sigaction(SIGHUP, &action, nullptr);
    write("\x1b[?1049h\x1b[?25l");
  }
  ~Terminal() {
    write("\x1b[0m\x1b[2J\x1b[H\x1b[?25h\x1b[?1049l");
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
  }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  static void write(const std::string& text) {
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::write(STDOUT_FILENO, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }
  static void size(int& columns, int& rows) {
    winsize ws{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
      columns = ws.ws_col;
      rows = ws.ws_row;
    } else {
      columns = 80;
      rows = 24;
    }
  }
  // A key, or 0 when a signal (resize, stop) interrupted the wait.
  static int read_key() {
    unsigned char c = 0;
    const ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n == 1) return c;
    if (n == 0) return 'q';  // end of input
    return 0;
  }

 private:
  termios saved_{};
};

size_t display_width(const std::string& s) {
  size_t width = 0;
  for (unsigned char c : s) width += (c & 0xC0) != 0x80 ? 1 : 0;
  return width;
}

// The first `width` code points of `s`.
std::string clip(const std::string& s, size_t width) {
  size_t points = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (points == width) break;
      ++points;
    }
  }
  return s.substr(0, i);
}

// Word-wraps `text` to lines of at most `width` code points (long words are cut).
std::vector<std::string> wrap(const std::string& text, size_t width) {
  std::vector<std::string> lines;
  std::istringstream paragraphs(text);
  std::string paragraph;
  while (std::getline(paragraphs, paragraph)) {
    for (char& c : paragraph)
      if (c == '\t' || c == '\r') c = ' ';
    std::string line;
    std::istringstream words(paragraph);
    std::string word;
    while (words >> word) {
      while (display_width(word) > width) {
        if (!line.empty()) lines.push_back(line), line.clear();
        std::string head = clip(word, width);
        lines.push_back(head);
        word = word.substr(head.size());
      }
      if (line.empty()) line = word;
      else if (display_width(line) + 1 + display_width(word) <= width) line += " " + word;
      else lines.push_back(line), line = word;
    }
    lines.push_back(line);
  }
  if (lines.empty()) lines.push_back("");
  return lines;
}

// At most `rows` lines; the last says how many were left out.
std::vector<std::string> fit(std::vector<std::string> lines, size_t rows) {
  if (lines.size() <= rows) return lines;
  const size_t hidden = lines.size() - rows + 1;
  lines.resize(rows - 1);
  lines.push_back("... (" + std::to_string(hidden) + " more lines)");
  return lines;
}

std::string pad(const std::string& s, size_t width) {
  const size_t w = display_width(s);
  return w >= width ? clip(s, width) : s + std::string(width - w, ' ');
}

struct Screen {
  std::string header;  // progress
  json prompt;
  std::string left, right;
  std::string status;
  bool finished = false;
};

// Returns false when the terminal is too small to show an item (only q works then).
bool draw(const Screen& screen) {
  int columns = 0, rows = 0;
  Terminal::size(columns, rows);
  std::string out = "\x1b[H\x1b[2J";
  if (columns < kMinColumns || rows < kMinRows) {
    // Short lines only, so nothing wraps on a tiny terminal.
    const std::string message = "Terminal too small: " + std::to_string(columns) + "x" + std::to_string(rows) +
                                ", needs " + std::to_string(kMinColumns) + "x" + std::to_string(kMinRows) +
                                ". Enlarge it, or press q to quit.";
    const auto lines = wrap(message, static_cast<size_t>(std::max(columns, 1)));
    for (size_t i = 0; i < lines.size() && i < static_cast<size_t>(std::max(rows, 1)); ++i)
      out += "\x1b[" + std::to_string(i + 1) + ";1H" + lines[i];
    Terminal::write(out);
    return false;
  }
  const size_t width = static_cast<size_t>(columns);
  std::vector<std::string> lines;
  lines.push_back("\x1b[7m" + pad(screen.header, width) + "\x1b[0m");
  const std::string keys = screen.finished ? "u undo  q quit"
                                           : "1/a left better  2/b right better  t tie  s skip  u undo  q quit";
  const size_t body_rows = static_cast<size_t>(rows) - 3;  // header, status, keys
  if (screen.finished) {
    lines.push_back("");
    lines.push_back("Every item is judged. Press u to undo the last judgement or q to quit.");
  } else {
    std::vector<std::string> prompt = fit(wrap("Prompt: " + as_text(screen.prompt), width), std::max<size_t>(2, body_rows / 4));
    for (const std::string& l : prompt) lines.push_back(l);
    lines.push_back(std::string(width, '-'));
    const size_t room = body_rows - prompt.size() - 1;
    if (columns >= kSideBySideColumns) {
      const size_t half = (width - 3) / 2;
      auto left = fit(wrap(screen.left, half), room - 1), right = fit(wrap(screen.right, half), room - 1);
      lines.push_back(pad("[1] A (left)", half) + " | " + "[2] B (right)");
      for (size_t i = 0; i < std::max(left.size(), right.size()); ++i)
        lines.push_back(pad(i < left.size() ? left[i] : "", half) + " | " + (i < right.size() ? right[i] : ""));
    } else {
      const size_t each = (room - 2) / 2;
      lines.push_back("[1] A (top)");
      for (const std::string& l : fit(wrap(screen.left, width), each)) lines.push_back(l);
      lines.push_back("[2] B (bottom)");
      for (const std::string& l : fit(wrap(screen.right, width), each)) lines.push_back(l);
    }
  }
  for (size_t i = 0; i < lines.size() && i < body_rows + 1; ++i) out += "\x1b[" + std::to_string(i + 1) + ";1H" + lines[i];
  out += "\x1b[" + std::to_string(rows - 1) + ";1H" + clip(screen.status, width);
  out += "\x1b[" + std::to_string(rows) + ";1H\x1b[7m" + pad(keys, width) + "\x1b[0m";
  Terminal::write(out);
  return true;
}

}  // namespace

int cmd_data_annotate(const std::vector<std::string>& args) {
  po::options_description options("data annotate");
  std::string in, out, ties, annotator;
  uint64_t seed = 0;
  options.add_options()("in", po::value(&in)->required(), "JSONL records {prompt, completion_a, completion_b} or {prompt, completions}")(
      "out", po::value(&out)->required(), "preference pairs are appended here (prompt, chosen, rejected, annotator, ...)")(
      "ties", po::value(&ties), "ties are appended here (default: OUT with .ties.jsonl)")(
      "annotator", po::value(&annotator), "name recorded with each judgement (default: $USER)")(
      "seed", po::value(&seed)->default_value(0), "seed of the left/right placement of each item");
  po::variables_map values;
  int exit_code = kExitOk;
  if (!parse_command_line(args, "alignkit data annotate IN.jsonl --out PREFS.jsonl [--annotator NAME] [--seed N]", options,
                          {"in"}, values, exit_code))
    return exit_code;
  if (ties.empty()) {
    fs::path p(out);
    ties = (p.parent_path() / (p.stem().string() + ".ties.jsonl")).string();
  }
  if (annotator.empty()) annotator = std::getenv("USER") ? std::getenv("USER") : "anonymous";
  std::vector<Item> items;
  int64_t position = 0, judged_count = 0, tie_count = 0;
  try {
    items = read_items(in);
    check_output_path(out);
    check_output_path(ties);
    drop_torn_tail(out);
    drop_torn_tail(ties);
    const std::vector<Judged> pairs = read_judgements(out, items), tied = read_judgements(ties, items);
    for (const auto* list : {&pairs, &tied})
      for (const Judged& j : *list) position = std::max(position, j.item + 1);
    judged_count = static_cast<int64_t>(pairs.size() + tied.size());
    tie_count = static_cast<int64_t>(tied.size());
  } catch (const ConfigError& e) {
    std::cerr << "alignkit: " << e.what() << '\n';
    return kExitUsage;
  }
  if (!::isatty(STDIN_FILENO) || !::isatty(STDOUT_FILENO)) {
    std::cerr << "alignkit: data annotate needs an interactive terminal (stdin and stdout)\n";
    return kExitUsage;
  }

  const int64_t total = static_cast<int64_t>(items.size());
  std::string status = position > 0 ? "resumed after item " + std::to_string(position) : "";
  {
    Terminal terminal;
    while (!g_stop) {
      Screen screen;
      screen.finished = position >= total;
      screen.header = " item " + std::to_string(std::min(position + 1, total)) + "/" + std::to_string(total) + "  judged " +
                      std::to_string(judged_count) + " (ties " + std::to_string(tie_count) + ")  annotator " + annotator +
                      "  -> " + out;
      const bool swap = !screen.finished && swapped(seed, position);
      if (!screen.finished) {
        const Item& item = items[position];
        screen.prompt = item.prompt;
        screen.left = as_text(swap ? item.second : item.first);
        screen.right = as_text(swap ? item.first : item.second);
      }
      screen.status = status;
      g_resized = 0;
      const bool visible = draw(screen);
      const int key = Terminal::read_key();
      if (key == 0) continue;  // resized or stopped: redraw or leave
      if (key == 'q' || key == 3 /* Ctrl-C */) break;
      if (!visible) continue;  // no judging of an item that cannot be seen
      status.clear();
      try {
        if (key == 'u') {
          const std::vector<Judged> pairs = read_judgements(out, items), tied = read_judgements(ties, items);
          Judged last;
          for (const auto* list : {&pairs, &tied})
            for (const Judged& j : *list)
              if (j.item > last.item) last = j;
          if (last.item < 0) {
            status = "nothing to undo";
            continue;
          }
          remove_judgement(last.file, last.item);
          --judged_count;
          if (last.file == ties) --tie_count;
          position = last.item;
          status = "undid the judgement of item " + std::to_string(last.item + 1);
          continue;
        }
        if (screen.finished) continue;
        const Item& item = items[position];
        const std::string& left_name = swap ? item.second_name : item.first_name;
        const std::string& right_name = swap ? item.first_name : item.second_name;
        const json& left = swap ? item.second : item.first;
        const json& right = swap ? item.first : item.second;
        json record = {{"prompt", item.prompt}};
        if (key == '1' || key == 'a' || key == '2' || key == 'b') {
          const bool left_wins = key == '1' || key == 'a';
          record["chosen"] = left_wins ? left : right;
          record["rejected"] = left_wins ? right : left;
          record["annotator"] = annotator;
          record["timestamp"] = utc_now();
          record["item"] = position;
          record["source_line"] = item.source_line;
          record["left"] = left_name;
          record["right"] = right_name;
          record["picked"] = left_wins ? "left" : "right";
          append_line(out, record.dump());
          ++judged_count;
          status = "item " + std::to_string(position + 1) + ": " + (left_wins ? "left (A)" : "right (B)") + " is better";
          ++position;
        } else if (key == 't') {
          record["completion_a"] = item.first;
          record["completion_b"] = item.second;
          record["tie"] = true;
          record["annotator"] = annotator;
          record["timestamp"] = utc_now();
          record["item"] = position;
          record["source_line"] = item.source_line;
          record["left"] = left_name;
          record["right"] = right_name;
          append_line(ties, record.dump());
          ++judged_count;
          ++tie_count;
          status = "item " + std::to_string(position + 1) + ": tie (written to " + ties + ")";
          ++position;
        } else if (key == 's') {
          status = "skipped item " + std::to_string(position + 1);
          ++position;
        } else {
          status = "unknown key; use 1/a, 2/b, t, s, u or q";
        }
      } catch (const std::exception& e) {
        status = std::string("error: ") + e.what();
      }
    }
  }
  std::cout << "annotated " << judged_count << " of " << total << " items (" << tie_count << " ties) -> " << out << '\n';
  return kExitOk;
}

}  // namespace alignkit::cli
