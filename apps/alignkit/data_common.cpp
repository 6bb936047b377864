// JSON Lines reading and output-path checks for the `alignkit data` commands.
#include "data_common.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "alignkit/config.hpp"

namespace fs = std::filesystem;

namespace alignkit::cli {

std::string at_line(const std::string& path, int64_t line) { return path + ":" + std::to_string(line); }

std::vector<JsonLine> read_json_lines(const std::string& path) {
  if (fs::is_directory(path)) throw ConfigError(path + ": is a folder, expected a JSON Lines file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open (" + std::strerror(errno) + ")");
  std::vector<JsonLine> lines;
  std::string text;
  for (int64_t number = 1; std::getline(in, text); ++number) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    try {
      lines.push_back({number, nlohmann::json::parse(text)});
    } catch (const nlohmann::json::parse_error& e) {
      std::string reason = e.what();
      // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." -> the part after the position.
      if (size_t colon = reason.find(": "); colon != std::string::npos) reason = reason.substr(colon + 2);
      throw ConfigError(at_line(path, number) + ": not valid JSON (" + reason + ")");
    }
  }
  return lines;
}

void check_output_path(const std::string& path) {
  const fs::path target(path);
  if (fs::is_directory(target)) throw ConfigError(path + ": is a folder; --out needs a file name");
  if (fs::exists(target)) {
    if (::access(path.c_str(), W_OK) != 0) throw ConfigError(path + ": not writable (" + std::strerror(errno) + ")");
    return;
  }
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  if (!fs::is_directory(folder)) throw ConfigError(path + ": cannot be created: the folder " + folder.string() + " does not exist");
  if (::access(folder.c_str(), W_OK) != 0)
    throw ConfigError(path + ": cannot be created in " + folder.string() + " (" + std::strerror(errno) + ")");
}

}  // namespace alignkit::cli
