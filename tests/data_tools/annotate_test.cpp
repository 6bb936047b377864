// `alignkit data annotate` driven through a real terminal: the UI runs in a
// tmux session (its own server socket), keys are sent with send-keys, the
// screen is read with capture-pane, and the output files are checked after
// each key: judgements, ties, skip, undo, a SIGKILL and the resume after it,
// a terminal too small, and input that is not a terminal.
#include <doctest/doctest.h>

#include <csignal>

#include "data_test_util.hpp"

using namespace data_test;

namespace {

class Tmux {
 public:
  explicit Tmux(const std::string& dir) : socket_(dir + "/tmux.sock") {}
  ~Tmux() { shell("tmux -S " + socket_ + " kill-server"); }
  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;

  static bool available() { return shell("tmux -V").exit_code == 0; }

  void start(const std::string& command, int columns, int rows) {
    const Result r = shell("tmux -S " + socket_ + " new-session -d -s ui -x " + std::to_string(columns) + " -y " +
                           std::to_string(rows) + " 'exec " + command + "'");
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  }
  void keys(const std::string& keys) { shell("tmux -S " + socket_ + " send-keys -t ui -l '" + keys + "'"); }
  std::string screen() { return shell("tmux -S " + socket_ + " capture-pane -p -t ui").out; }
  bool shows(const std::string& text, double seconds = 10.0) {
    return wait_for([&] { return contains(screen(), text); }, seconds);
  }
  int pid() { return std::stoi(shell("tmux -S " + socket_ + " list-panes -t ui -F '#{pane_pid}'").out); }
  bool running() { return shell("tmux -S " + socket_ + " has-session -t ui").exit_code == 0; }

 private:
  std::string socket_;
};

size_t line_count(const std::string& path) { return fs::exists(path) ? json_lines_of(path).size() : 0; }

// Four pairs: three completion_a/completion_b records and a `completions` list of three (three pairs).
std::string input_file(const std::string& dir) {
  const std::string path = dir + "/in.jsonl";
  write_file(path, jsonl({
                       {{"prompt", "What is 2+2?"}, {"completion_a", "four"}, {"completion_b", "five"}},
                       {{"prompt", "Capital of France?"}, {"completion_a", "Paris"}, {"completion_b", "Lyon"}},
                       {{"prompt", "Colour of the sky?"}, {"completion_a", "blue"}, {"completion_b", "green"}},
                       {{"prompt", "Say hi"}, {"completions", {"hi", "hello", "hey"}}},
                   }));
  return path;
}

}  // namespace

TEST_CASE("annotate in tmux: judge, tie, skip, undo, kill -9, resume, finish") {
  if (!Tmux::available()) {
    MESSAGE("skipped: tmux is not installed (scripts/setup installs it)");
    return;
  }
  const std::string dir = scratch("annotate");
  const std::string in = input_file(dir), out = dir + "/prefs.jsonl", ties = dir + "/prefs.ties.jsonl";
  const std::string command = std::string(ALIGNKIT_CLI) + " data annotate " + in + " --out " + out +
                              " --annotator tester --seed 3";
  Tmux tmux(dir);
  tmux.start(command, 100, 30);
  REQUIRE(tmux.shows("item 1/6"));
  CHECK(tmux.shows("What is 2+2?"));
  CHECK(tmux.shows("[1] A (left)"));  // 100 columns: side by side

  tmux.keys("1");  // item 1: left wins
  REQUIRE(wait_for([&] { return line_count(out) == 1; }));
  CHECK(tmux.shows("item 2/6"));
  tmux.keys("t");  // item 2: a tie
  REQUIRE(wait_for([&] { return line_count(ties) == 1; }));
  tmux.keys("s");  // item 3: skipped, nothing written
  REQUIRE(tmux.shows("item 4/6"));
  tmux.keys("2");  // item 4: right wins
  REQUIRE(wait_for([&] { return line_count(out) == 2; }));
  tmux.keys("u");  // undo item 4
  REQUIRE(wait_for([&] { return line_count(out) == 1; }));
  CHECK(tmux.shows("item 4/6"));
  CHECK(tmux.shows("undid the judgement of item 4"));

  // A crash: nothing judged so far is lost.
  ::kill(tmux.pid(), SIGKILL);
  REQUIRE(wait_for([&] { return !tmux.running(); }));
  json first = json_lines_of(out).at(0);
  CHECK(first["item"] == 0);
  CHECK(first["annotator"] == "tester");
  CHECK(first["picked"] == "left");
  CHECK(first["prompt"] == "What is 2+2?");
  CHECK(contains(first["timestamp"].get<std::string>(), "T"));
  // The record says which completion was shown on the left, and the left one was chosen.
  CHECK(first["chosen"] == (first["left"] == "completion_a" ? "four" : "five"));
  CHECK(first["rejected"] == (first["left"] == "completion_a" ? "five" : "four"));
  const json tie = json_lines_of(ties).at(0);
  CHECK(tie["tie"] == true);
  CHECK(tie["item"] == 1);
  CHECK_FALSE(tie.contains("chosen"));

  // Resume after the last judged item (the tie, item 2): the skipped item 3 comes back.
  tmux.start(command, 100, 30);
  REQUIRE(tmux.shows("item 3/6"));
  CHECK(tmux.shows("judged 2 (ties 1)"));
  for (const char* key : {"2", "1", "b", "a"}) {
    const size_t before = line_count(out);
    tmux.keys(key);
    REQUIRE(wait_for([&] { return line_count(out) == before + 1; }));
  }
  REQUIRE(tmux.shows("Every item is judged"));
  tmux.keys("q");
  REQUIRE(wait_for([&] { return !tmux.running(); }));

  const std::vector<json> pairs = json_lines_of(out);
  REQUIRE(pairs.size() == 5);
  std::vector<int> items;
  int left_first = 0;
  for (const json& p : pairs) {
    items.push_back(p["item"].get<int>());
    // Names order as the input does: completion_a < completion_b, completions[i] < completions[j] for i < j.
    left_first += p["left"].get<std::string>() < p["right"].get<std::string>() ? 1 : 0;
    CHECK(p["chosen"] != p["rejected"]);
  }
  CHECK(items == std::vector<int>{0, 2, 3, 4, 5});
  // Seeded placement: both orders occur.
  CHECK(left_first > 0);
  CHECK(left_first < 5);
  const Result check = alignkit("data validate " + out + " --type preference");
  CHECK_MESSAGE(check.exit_code == 0, check.err);
}

TEST_CASE("annotate: a narrow terminal stacks the completions; a tiny one gets a message and ignores judging keys") {
  if (!Tmux::available()) {
    MESSAGE("skipped: tmux is not installed (scripts/setup installs it)");
    return;
  }
  const std::string dir = scratch("annotate_small");
  const std::string in = input_file(dir), out = dir + "/prefs.jsonl";
  const std::string command = std::string(ALIGNKIT_CLI) + " data annotate " + in + " --out " + out;
  {
    Tmux tmux(dir);
    tmux.start(command, 60, 24);
    REQUIRE(tmux.shows("[1] A (top)"));
    CHECK(tmux.shows("[2] B (bottom)"));
    tmux.keys("q");
    REQUIRE(wait_for([&] { return !tmux.running(); }));
  }
  Tmux tmux(dir);
  tmux.start(command, 30, 8);
  REQUIRE(tmux.shows("Terminal too small"));
  const std::string screen = tmux.screen();
  CHECK_FALSE(contains(screen, "What is 2+2?"));
  tmux.keys("1");
  tmux.keys("q");
  REQUIRE(wait_for([&] { return !tmux.running(); }));
  CHECK(line_count(out) == 0);
}

TEST_CASE("annotate: bad input and no terminal exit 2") {
  const std::string dir = scratch("annotate_bad");
  const std::string in = input_file(dir);
  Result r = alignkit("data annotate " + in + " --out " + dir + "/prefs.jsonl < /dev/null");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "needs an interactive terminal"));
  r = alignkit("data annotate " + in + " --out " + dir + "/missing/prefs.jsonl");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "does not exist"));
  write_file(dir + "/bad.jsonl", "{\"prompt\": \"p\", \"completions\": [\"only one\"]}\n");
  r = alignkit("data annotate " + dir + "/bad.jsonl --out " + dir + "/prefs.jsonl");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "bad.jsonl:1: 'completions' needs at least two entries"));
  // A torn last line (a crash in the middle of an append) is dropped before resuming; the judged line stays.
  const std::string judged = "{\"prompt\": \"What is 2+2?\", \"chosen\": \"four\", \"rejected\": \"five\", \"item\": 0}\n";
  write_file(dir + "/torn.jsonl", judged + "{\"prompt\": \"Capital");
  r = alignkit("data annotate " + in + " --out " + dir + "/torn.jsonl < /dev/null");
  CHECK(contains(r.err, "dropping an incomplete last line"));
  CHECK(read_file(dir + "/torn.jsonl") == judged);
  // An output file from another input is refused, not appended to.
  write_file(dir + "/other.jsonl", "{\"prompt\": \"something else\", \"chosen\": \"a\", \"rejected\": \"b\", \"item\": 0}\n");
  r = alignkit("data annotate " + in + " --out " + dir + "/other.jsonl < /dev/null");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "other.jsonl:1: item 0 does not match the input file"));
}
