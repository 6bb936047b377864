// What the `alignkit data` commands share: reading JSON Lines with file:line
// errors, and checking an output path before any work is done.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace alignkit::cli {

struct JsonLine {
  int64_t line = 0;  // 1-based
  nlohmann::json value;
};

// Every non-blank line of `path` as JSON. Throws ConfigError "PATH:LINE: ..."
// for a line that is not JSON, and naming the file when it cannot be read.
std::vector<JsonLine> read_json_lines(const std::string& path);

// Throws ConfigError naming `path` when a file cannot be created or appended
// there (missing folder, no permission, a folder in the way). Creates nothing.
void check_output_path(const std::string& path);

// "PATH:LINE".
std::string at_line(const std::string& path, int64_t line);

}  // namespace alignkit::cli
