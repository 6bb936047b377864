// Helpers of the data command tests: running the alignkit binary (or any
// shell command) as a subprocess, files, JSON lines and a scratch folder.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace data_test {

namespace fs = std::filesystem;
using nlohmann::json;

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const std::string& path, const std::string& text) {
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// Runs a shell command line, stdout and stderr kept apart.
inline Result shell(const std::string& command) {
  const std::string err_path = (fs::temp_directory_path() / ("alignkit-data-test-" + std::to_string(::getpid()) + ".stderr")).string();
  Result result;
  FILE* pipe = ::popen((command + " 2>" + err_path).c_str(), "r");
  if (!pipe) throw std::runtime_error("popen failed for " + command);
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.err = read_file(err_path);
  fs::remove(err_path);
  return result;
}

inline Result alignkit(const std::string& arguments) { return shell(std::string(ALIGNKIT_CLI) + " " + arguments); }

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The JSON value of each non-empty line of a file (a line that is not JSON throws).
inline std::vector<json> json_lines_of(const std::string& path) {
  std::vector<json> values;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) values.push_back(json::parse(line));
  return values;
}

inline std::string jsonl(const std::vector<json>& records) {
  std::string text;
  for (const json& r : records) text += r.dump() + "\n";
  return text;
}

// A fresh folder under the build tree, removed first if a previous run left it.
inline std::string scratch(const std::string& name) {
  const fs::path dir = fs::path(ALIGNKIT_BINARY_DIR) / "tests" / "data_tools_scratch" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Polls `condition` every 20 ms for up to `seconds`.
template <typename Condition>
bool wait_for(Condition condition, double seconds = 10.0) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

}  // namespace data_test
