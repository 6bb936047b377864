// Validation of config tables against declared SettingSpecs (see config_check.hpp).
#include "alignkit/core/config_check.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace alignkit::core {

std::string Diagnostic::str() const {
  std::string prefix = where.str();
  return prefix.empty() ? message : prefix + ": " + message;
}

std::string join(const std::vector<Diagnostic>& diagnostics) {
  std::string out;
  for (const Diagnostic& d : diagnostics) {
    if (!out.empty()) out += '\n';
    out += d.str();
  }
  return out;
}

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

bool is_number(ValueType type) { return type == ValueType::Int || type == ValueType::Float; }

double number_of(const ConfigValue& v) { return v.type == ValueType::Int ? static_cast<double>(v.integer) : v.floating; }

// Does a single (non-array) value fit `expected`? An integer fits a float.
bool scalar_fits(const ConfigValue& value, ValueType expected) {
  if (value.type == expected) return true;
  return expected == ValueType::Float && value.type == ValueType::Int;
}

std::string choices_text(const std::vector<std::string>& choices) {
  std::string out;
  for (const std::string& c : choices) out += (out.empty() ? "" : ", ") + c;
  return out;
}

void check_value(ConfigValue& value, const std::string& path, const SettingSpec& spec,
                 const SourceLocation& fallback, std::vector<Diagnostic>& problems) {
  const SourceLocation& at = value.where.known() ? value.where : fallback;
  auto problem = [&](const std::string& message) { problems.push_back({at, path + ": " + message}); };

  if (spec.type == ValueType::Table) {
    if (value.type != ValueType::Table) return problem("expected a table, found " + std::string(value_type_name(value.type)));
    check_table(value, path, spec.fields, problems);
    return;
  }

  std::vector<ConfigValue*> items;
  if (spec.type == ValueType::Array) {
    if (value.type == ValueType::Array) {
      for (ConfigValue& item : value.array) items.push_back(&item);
    } else {
      items.push_back(&value);
    }
    for (ConfigValue* item : items) {
      if (!scalar_fits(*item, spec.element_type))
        return problem("expected " + spec_type_name(spec) + ", found " + value_type_name(item->type));
    }
  } else {
    if (!scalar_fits(value, spec.type))
      return problem("expected " + spec_type_name(spec) + ", found " + value_type_name(value.type));
    // Store integers given for floats as floats, so the resolved file is typed as declared.
    if (spec.type == ValueType::Float && value.type == ValueType::Int) {
      value.floating = static_cast<double>(value.integer);
      value.type = ValueType::Float;
    }
    items.push_back(&value);
  }

  for (ConfigValue* item : items) {
    if (!spec.choices.empty() && item->type == ValueType::String &&
        std::find(spec.choices.begin(), spec.choices.end(), item->string) == spec.choices.end())
      problem("'" + item->string + "' is not one of: " + choices_text(spec.choices));
    if (spec.minimum && is_number(item->type) && number_of(*item) < *spec.minimum) {
      std::ostringstream bound;
      bound << *spec.minimum;
      problem("must be at least " + bound.str() + ", found " + format_value(*item));
    }
  }
}

}  // namespace

std::string closest_name(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, name.size() / 3) + 1;
  for (const std::string& candidate : candidates) {
    size_t d = edit_distance(name, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

std::string spec_type_name(const SettingSpec& spec) {
  auto scalar = [](ValueType t) -> std::string {
    switch (t) {
      case ValueType::Bool: return "boolean";
      case ValueType::Int: return "integer";
      case ValueType::Float: return "float";
      case ValueType::String: return "string";
      case ValueType::Table: return "table";
      default: return value_type_name(t);
    }
  };
  if (spec.type == ValueType::Array) return scalar(spec.element_type) + " or array of " + scalar(spec.element_type) + "s";
  return (spec.type == ValueType::Int ? "an " : "a ") + scalar(spec.type);
}

std::string format_value(const ConfigValue& value) {
  std::ostringstream out;
  switch (value.type) {
    case ValueType::Null: return "(none)";
    case ValueType::Bool: return value.boolean ? "true" : "false";
    case ValueType::Int: return std::to_string(value.integer);
    case ValueType::Float: {
      out << value.floating;
      std::string text = out.str();
      if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
      return text;
    }
    case ValueType::String: return "\"" + value.string + "\"";
    case ValueType::Array: {
      out << '[';
      for (size_t i = 0; i < value.array.size(); ++i) out << (i ? ", " : "") << format_value(value.array[i]);
      out << ']';
      return out.str();
    }
    case ValueType::Table: {
      out << '{';
      for (size_t i = 0; i < value.table.size(); ++i)
        out << (i ? ", " : " ") << value.table[i].first << " = " << format_value(value.table[i].second);
      out << (value.table.empty() ? "}" : " }");
      return out.str();
    }
  }
  return "";
}

void check_table(ConfigValue& table, const std::string& path, const std::vector<SettingSpec>& specs,
                 std::vector<Diagnostic>& problems) {
  std::vector<std::string> known;
  for (const SettingSpec& spec : specs) known.push_back(spec.name);

  for (auto& [key, value] : table.table) {
    auto spec = std::find_if(specs.begin(), specs.end(), [&](const SettingSpec& s) { return s.name == key; });
    std::string key_path = path.empty() ? key : path + "." + key;
    if (spec == specs.end()) {
      std::string message = "unknown key '" + key + "'";
      std::string suggestion = closest_name(key, known);
      if (!suggestion.empty()) message += "; did you mean '" + suggestion + "'?";
      problems.push_back({value.where.known() ? value.where : table.where, key_path + ": " + message});
      continue;
    }
    check_value(value, key_path, *spec, table.where, problems);
  }

  for (const SettingSpec& spec : specs) {
    if (table.find(spec.name)) continue;
    std::string key_path = path.empty() ? spec.name : path + "." + spec.name;
    if (spec.required) {
      problems.push_back({table.where, key_path + ": missing required key (" + spec.doc + ")"});
    } else if (spec.type == ValueType::Table && !spec.fields.empty() && spec.default_value.type == ValueType::Null) {
      // Optional tables stay absent; their defaults apply only once the user writes the table.
    } else if (spec.default_value.type != ValueType::Null) {
      ConfigValue filled = spec.default_value;
      filled.where = {};
      table.set(spec.name, std::move(filled));
    }
  }
}

}  // namespace alignkit::core
