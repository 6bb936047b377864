// TOML files to ConfigValue trees (with source locations) and back, and the
// `--set key.path=value` overrides of the CLI.
#pragma once

#include <string>

#include "alignkit/config.hpp"

namespace alignkit::core {

// Throws ConfigError "file:line:col: message" on a syntax error or a missing file.
ConfigValue parse_toml_file(const std::string& path);
ConfigValue parse_toml_text(const std::string& text, const std::string& source_name);

// Applies "stages.dpo.beta=0.2": the value is read as a TOML value when it
// parses as one, else as a string. Creates missing tables. Throws ConfigError
// for a malformed assignment or a path through a non-table.
void apply_override(ConfigValue& root, const std::string& assignment);

// Renders a table tree as a TOML document.
std::string to_toml(const ConfigValue& root);

}  // namespace alignkit::core
