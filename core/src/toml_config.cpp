// TOML++ to ConfigValue conversion, overrides and serialisation (see toml_config.hpp).
#include "alignkit/core/toml_config.hpp"

#include <fstream>
#include <sstream>

#include <toml++/toml.h>

namespace alignkit::core {
namespace {

SourceLocation location_of(const toml::source_region& region, const std::string& file) {
  return {file, static_cast<int>(region.begin.line), static_cast<int>(region.begin.column)};
}

ConfigValue convert(const toml::node& node, const std::string& file, const SourceLocation& where) {
  ConfigValue out;
  out.where = where;
  switch (node.type()) {
    case toml::node_type::table:
      out.type = ValueType::Table;
      for (auto&& [key, child] : *node.as_table()) {
        SourceLocation at = key.source().begin.line ? location_of(key.source(), file) : location_of(child.source(), file);
        out.table.emplace_back(std::string(key.str()), convert(child, file, at));
      }
      break;
    case toml::node_type::array:
      out.type = ValueType::Array;
      for (const toml::node& item : *node.as_array()) out.array.push_back(convert(item, file, location_of(item.source(), file)));
      break;
    case toml::node_type::string: out = ConfigValue::of_string(node.as_string()->get()); out.where = where; break;
    case toml::node_type::integer: out = ConfigValue::of_int(node.as_integer()->get()); out.where = where; break;
    case toml::node_type::floating_point: out = ConfigValue::of_float(node.as_floating_point()->get()); out.where = where; break;
    case toml::node_type::boolean: out = ConfigValue::of_bool(node.as_boolean()->get()); out.where = where; break;
    default: {
      // Dates and times: kept as their TOML text; no AlignKit setting takes one.
      std::ostringstream text;
      node.visit([&](auto&& value) { text << value; });
      out = ConfigValue::of_string(text.str());
      out.where = where;
    }
  }
  return out;
}

toml::table parse_or_throw(const std::string& text, const std::string& source_name) {
  try {
    return toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    SourceLocation at = location_of(e.source(), source_name);
    throw ConfigError(at.str() + ": TOML syntax error: " + std::string(e.description()));
  }
}

void to_toml_node(const ConfigValue& value, toml::table& parent, const std::string& key);

void append_to_array(const ConfigValue& value, toml::array& array) {
  switch (value.type) {
    case ValueType::Bool: array.push_back(value.boolean); break;
    case ValueType::Int: array.push_back(value.integer); break;
    case ValueType::Float: array.push_back(value.floating); break;
    case ValueType::String: array.push_back(value.string); break;
    case ValueType::Array: {
      toml::array nested;
      for (const ConfigValue& item : value.array) append_to_array(item, nested);
      array.push_back(std::move(nested));
      break;
    }
    case ValueType::Table: {
      toml::table nested;
      for (const auto& [k, v] : value.table) to_toml_node(v, nested, k);
      array.push_back(std::move(nested));
      break;
    }
    case ValueType::Null: break;
  }
}

void to_toml_node(const ConfigValue& value, toml::table& parent, const std::string& key) {
  switch (value.type) {
    case ValueType::Bool: parent.insert_or_assign(key, value.boolean); break;
    case ValueType::Int: parent.insert_or_assign(key, value.integer); break;
    case ValueType::Float: parent.insert_or_assign(key, value.floating); break;
    case ValueType::String: parent.insert_or_assign(key, value.string); break;
    case ValueType::Array: {
      toml::array array;
      for (const ConfigValue& item : value.array) append_to_array(item, array);
      parent.insert_or_assign(key, std::move(array));
      break;
    }
    case ValueType::Table: {
      toml::table table;
      for (const auto& [k, v] : value.table) to_toml_node(v, table, k);
      parent.insert_or_assign(key, std::move(table));
      break;
    }
    case ValueType::Null: break;  // unset optional settings are left out
  }
}

}  // namespace

ConfigValue parse_toml_text(const std::string& text, const std::string& source_name) {
  toml::table table = parse_or_throw(text, source_name);
  return convert(table, source_name, SourceLocation{source_name, 1, 1});
}

ConfigValue parse_toml_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open the pipeline file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_toml_text(text.str(), path);
}

void apply_override(ConfigValue& root, const std::string& assignment) {
  const std::string source = "--set " + assignment;
  size_t equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0)
    throw ConfigError(source + ": expected KEY.PATH=VALUE, e.g. stages.dpo.beta=0.2");
  std::string path = assignment.substr(0, equals);
  std::string text = assignment.substr(equals + 1);

  ConfigValue value;
  try {
    toml::table parsed = toml::parse("v = " + text, source);
    value = convert(*parsed.get("v"), source, {});
  } catch (const toml::parse_error&) {
    value = ConfigValue::of_string(text);  // bare words: --set stages.dpo.loss_type=ipo
  }
  value.where = SourceLocation{source, 0, 0};

  ConfigValue* table = &root;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (key.empty()) throw ConfigError(source + ": empty key in '" + path + "'");
    if (dot == std::string::npos) {
      table->set(key, std::move(value));
      return;
    }
    ConfigValue* next = table->find(key);
    if (!next) {
      ConfigValue fresh = ConfigValue::empty_table();
      fresh.where = SourceLocation{source, 0, 0};
      next = &table->set(key, std::move(fresh));
    }
    if (next->type != ValueType::Table)
      throw ConfigError(source + ": '" + path.substr(0, dot) + "' is " + value_type_name(next->type) + ", not a table");
    table = next;
    start = dot + 1;
  }
}

std::string to_toml(const ConfigValue& root) {
  toml::table table;
  for (const auto& [key, value] : root.table) to_toml_node(value, table, key);
  std::ostringstream out;
  out << table << '\n';
  return out.str();
}

}  // namespace alignkit::core
