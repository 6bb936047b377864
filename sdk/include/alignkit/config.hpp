// Config values and the read-only view plugins get of their settings.
//
// The host parses TOML into a ConfigValue tree (each node keeps its source
// location), checks it against the SettingSpec list a plugin declares, fills
// in defaults and hands the plugin a ConfigView. No TOML++ type crosses the
// plugin boundary: only this header-only tree.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace alignkit {

struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;

  // Overrides from the command line have a source ("--set key=value") but no line.
  bool known() const { return !file.empty(); }
  // "file:line:col", just "file" when there is no line, or "" when nothing is known.
  std::string str() const {
    if (line <= 0) return file;
    return file + ":" + std::to_string(line) + ":" + std::to_string(column);
  }
};

enum class ValueType { Null, Bool, Int, Float, String, Array, Table };

inline const char* value_type_name(ValueType type) {
  switch (type) {
    case ValueType::Null: return "nothing";
    case ValueType::Bool: return "a boolean";
    case ValueType::Int: return "an integer";
    case ValueType::Float: return "a float";
    case ValueType::String: return "a string";
    case ValueType::Array: return "an array";
    case ValueType::Table: return "a table";
  }
  return "?";
}

// One node of the configuration tree. Tables keep their keys in file order.
struct ConfigValue {
  ValueType type = ValueType::Null;
  bool boolean = false;
  int64_t integer = 0;
  double floating = 0.0;
  std::string string;
  std::vector<ConfigValue> array;
  std::vector<std::pair<std::string, ConfigValue>> table;
  SourceLocation where;

  static ConfigValue of_bool(bool v) { ConfigValue c; c.type = ValueType::Bool; c.boolean = v; return c; }
  static ConfigValue of_int(int64_t v) { ConfigValue c; c.type = ValueType::Int; c.integer = v; return c; }
  static ConfigValue of_float(double v) { ConfigValue c; c.type = ValueType::Float; c.floating = v; return c; }
  static ConfigValue of_string(std::string v) { ConfigValue c; c.type = ValueType::String; c.string = std::move(v); return c; }
  static ConfigValue of_array(std::vector<ConfigValue> v) { ConfigValue c; c.type = ValueType::Array; c.array = std::move(v); return c; }
  static ConfigValue empty_table() { ConfigValue c; c.type = ValueType::Table; return c; }

  const ConfigValue* find(const std::string& key) const {
    for (const auto& [name, value] : table)
      if (name == key) return &value;
    return nullptr;
  }
  ConfigValue* find(const std::string& key) {
    for (auto& [name, value] : table)
      if (name == key) return &value;
    return nullptr;
  }
  // Inserts or replaces `key` in a table.
  ConfigValue& set(const std::string& key, ConfigValue value) {
    if (ConfigValue* existing = find(key)) return *existing = std::move(value);
    table.emplace_back(key, std::move(value));
    return table.back().second;
  }
};

// Raised for a setting that is missing or has the wrong type. `what()` reads
// "pipeline.toml:14:9: stages.dpo.beta: expected a float, found a string".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A read-only view of one table, with the dotted path used in messages.
class ConfigView {
 public:
  ConfigView() = default;
  ConfigView(const ConfigValue* node, std::string path) : node_(node), path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  const ConfigValue* node() const { return node_; }
  SourceLocation where() const { return node_ ? node_->where : SourceLocation{}; }

  bool has(const std::string& key) const {
    const ConfigValue* v = lookup(key);
    return v && v->type != ValueType::Null;
  }

  bool get_bool(const std::string& key) const { return require(key, ValueType::Bool).boolean; }
  int64_t get_int(const std::string& key) const { return require(key, ValueType::Int).integer; }
  // Accepts an integer literal where a float is expected (TOML users write `epochs = 1`, `lr = 1`).
  double get_float(const std::string& key) const {
    const ConfigValue& v = require_present(key);
    if (v.type == ValueType::Int) return static_cast<double>(v.integer);
    if (v.type != ValueType::Float) fail(key, v, ValueType::Float);
    return v.floating;
  }
  const std::string& get_string(const std::string& key) const { return require(key, ValueType::String).string; }
  // A string or an array of strings, as TRL's `loss_type = ["sigmoid", "sft"]`.
  std::vector<std::string> get_string_list(const std::string& key) const {
    const ConfigValue& v = require_present(key);
    if (v.type == ValueType::String) return {v.string};
    if (v.type != ValueType::Array) fail(key, v, ValueType::Array);
    std::vector<std::string> out;
    for (const ConfigValue& item : v.array) {
      if (item.type != ValueType::String) fail(key, item, ValueType::String);
      out.push_back(item.string);
    }
    return out;
  }
  std::vector<double> get_float_list(const std::string& key) const {
    const ConfigValue& v = require_present(key);
    if (v.type == ValueType::Int || v.type == ValueType::Float) return {get_float(key)};
    if (v.type != ValueType::Array) fail(key, v, ValueType::Array);
    std::vector<double> out;
    for (const ConfigValue& item : v.array) {
      if (item.type == ValueType::Int) out.push_back(static_cast<double>(item.integer));
      else if (item.type == ValueType::Float) out.push_back(item.floating);
      else fail(key, item, ValueType::Float);
    }
    return out;
  }
  ConfigView table(const std::string& key) const {
    const ConfigValue& v = require(key, ValueType::Table);
    return ConfigView(&v, child_path(key));
  }

  // Message prefix for errors about `key` found by a plugin itself
  // (a negative beta, an unknown loss_type): "file:line:col: stages.dpo.beta".
  std::string locate(const std::string& key) const {
    const ConfigValue* v = lookup(key);
    SourceLocation at = v ? v->where : where();
    std::string prefix = at.str();
    return (prefix.empty() ? "" : prefix + ": ") + child_path(key);
  }

 private:
  const ConfigValue* lookup(const std::string& key) const {
    return node_ && node_->type == ValueType::Table ? node_->find(key) : nullptr;
  }
  std::string child_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const ConfigValue& require_present(const std::string& key) const {
    const ConfigValue* v = lookup(key);
    if (!v || v->type == ValueType::Null) throw ConfigError(locate(key) + ": missing required setting");
    return *v;
  }
  const ConfigValue& require(const std::string& key, ValueType type) const {
    const ConfigValue& v = require_present(key);
    if (v.type != type) fail(key, v, type);
    return v;
  }
  [[noreturn]] void fail(const std::string& key, const ConfigValue& v, ValueType expected) const {
    std::string prefix = v.where.known() ? v.where.str() + ": " : (where().known() ? where().str() + ": " : "");
    throw ConfigError(prefix + child_path(key) + ": expected " + value_type_name(expected) + ", found " +
                      value_type_name(v.type));
  }

  const ConfigValue* node_ = nullptr;
  std::string path_;
};

// One setting a plugin accepts. The host validates stage tables against these,
// fills in defaults, prints them in `alignkit plugins info`, and suggests the
// nearest name for a typo.
struct SettingSpec {
  std::string name;
  ValueType type = ValueType::String;  // Array means "a value or an array of values"
  ConfigValue default_value;           // Null: no default
  std::string doc;
  bool required = false;
  std::vector<std::string> choices;         // for strings (or string arrays): the allowed values
  std::vector<SettingSpec> fields;          // for tables: the keys the table accepts
  std::optional<double> minimum;            // for numbers: the smallest allowed value
  ValueType element_type = ValueType::String;  // for arrays: the type of each item
};

// Builders that read like a settings table in a plugin's source.
namespace setting {
inline SettingSpec boolean(std::string name, bool def, std::string doc) {
  return {std::move(name), ValueType::Bool, ConfigValue::of_bool(def), std::move(doc), false, {}, {}, {}};
}
inline SettingSpec integer(std::string name, int64_t def, std::string doc, std::optional<double> minimum = {}) {
  return {std::move(name), ValueType::Int, ConfigValue::of_int(def), std::move(doc), false, {}, {}, minimum};
}
inline SettingSpec number(std::string name, double def, std::string doc, std::optional<double> minimum = {}) {
  return {std::move(name), ValueType::Float, ConfigValue::of_float(def), std::move(doc), false, {}, {}, minimum};
}
inline SettingSpec text(std::string name, std::string def, std::string doc, std::vector<std::string> choices = {}) {
  return {std::move(name), ValueType::String, ConfigValue::of_string(std::move(def)), std::move(doc), false,
          std::move(choices), {}, {}};
}
// A string setting with no default that the user may leave out.
inline SettingSpec optional_text(std::string name, std::string doc) {
  return {std::move(name), ValueType::String, ConfigValue{}, std::move(doc), false, {}, {}, {}};
}
inline SettingSpec required_text(std::string name, std::string doc) {
  return {std::move(name), ValueType::String, ConfigValue{}, std::move(doc), true, {}, {}, {}};
}
// A string or list of strings, e.g. loss_type = ["sigmoid", "sft"].
inline SettingSpec text_list(std::string name, std::vector<std::string> def, std::string doc,
                             std::vector<std::string> choices = {}) {
  std::vector<ConfigValue> items;
  for (auto& s : def) items.push_back(ConfigValue::of_string(std::move(s)));
  return {std::move(name), ValueType::Array, ConfigValue::of_array(std::move(items)), std::move(doc), false,
          std::move(choices), {}, {}};
}
// A number or list of numbers with no default (e.g. loss_weights).
inline SettingSpec number_list(std::string name, std::string doc) {
  SettingSpec spec{std::move(name), ValueType::Array, ConfigValue{}, std::move(doc), false, {}, {}, {}};
  spec.element_type = ValueType::Float;
  return spec;
}
inline SettingSpec table(std::string name, std::vector<SettingSpec> fields, std::string doc, bool required = false) {
  return {std::move(name), ValueType::Table, ConfigValue{}, std::move(doc), required, {}, std::move(fields), {}};
}
}  // namespace setting

}  // namespace alignkit
