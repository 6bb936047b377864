// Checks configuration tables against the settings plugins declare: unknown
// keys (with a did-you-mean), types, required keys, choices and minimums.
// Every problem is collected, so a user sees them all at once.
#pragma once

#include <string>
#include <vector>

#include "alignkit/config.hpp"

namespace alignkit::core {

struct Diagnostic {
  SourceLocation where;
  std::string message;
  // "file:line:col: message"
  std::string str() const;
};

// Joins diagnostics one per line, for a ConfigError.
std::string join(const std::vector<Diagnostic>& diagnostics);

// The candidate nearest to `name` by edit distance, or "" when none is close.
std::string closest_name(const std::string& name, const std::vector<std::string>& candidates);

// Checks `table` (named `path` in messages, e.g. "stages.dpo") against `specs`,
// fills in defaults, and appends every problem to `problems`. `where` locates
// the table itself (for missing keys).
void check_table(ConfigValue& table, const std::string& path, const std::vector<SettingSpec>& specs,
                 std::vector<Diagnostic>& problems);

// Human-readable type of a spec ("float", "string or array of strings").
std::string spec_type_name(const SettingSpec& spec);
// A ConfigValue as TOML writes it ("0.1", "\"sigmoid\"", "[\"a\", \"b\"]").
std::string format_value(const ConfigValue& value);

}  // namespace alignkit::core
