// `alignkit data validate` and `alignkit data stats`: schema checks of a
// JSON Lines data file in TRL's formats (every problem with file:line), and
// its counts, duplicates, `chosen == rejected` pairs, empty fields and
// length percentiles (characters; tokens with --tokenizer, read through the
// jsonl dataset plugin exactly as training reads the file).
#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <map>
#include <set>

#include <boost/program_options/value_semantic.hpp>
#include <nlohmann/json.hpp>

#include "alignkit/core/runner.hpp"
#include "commands.hpp"
#include "data_common.hpp"

namespace po = boost::program_options;
using nlohmann::json;

namespace alignkit::cli {
namespace {

constexpr size_t kShownProblems = 20;

// The text fields of each type, as TRL names them (their *_ids forms are pre-tokenized).
const std::map<std::string, std::vector<std::string>> kFields = {
    {"preference", {"prompt", "chosen", "rejected"}},
    {"unpaired-preference", {"prompt", "completion"}},
    {"prompt-completion", {"prompt", "completion"}},
    {"prompt-only", {"prompt"}},
    {"language-modeling", {"text", "messages"}},
};

bool has(const json& r, const std::string& key) { return r.contains(key); }

// TRL's type detection, from the fields present.
std::string detect_type(const json& r) {
  if (has(r, "chosen") || has(r, "rejected") || has(r, "chosen_ids") || has(r, "rejected_ids")) return "preference";
  if (has(r, "label")) return "unpaired-preference";
  if (has(r, "completion") || has(r, "completion_ids")) return "prompt-completion";
  if (has(r, "prompt") || has(r, "prompt_ids")) return "prompt-only";
  if (has(r, "text") || has(r, "messages") || has(r, "input_ids")) return "language-modeling";
  return "";
}

struct Report {
  std::string type;
  int64_t records = 0;
  std::vector<std::string> errors;    // make the file unusable
  std::vector<std::string> warnings;  // legal records that teach nothing or look wrong
  int64_t error_count = 0, warning_count = 0;
  int64_t duplicates = 0, identical_pairs = 0, empty_fields = 0;
  std::set<std::string> prompts;
  std::map<std::string, std::vector<double>> chars;   // field -> lengths in characters
  std::map<std::string, std::vector<double>> tokens;  // field -> lengths in tokens (with --tokenizer)
  std::string tokenizer_error;
};

void add(std::vector<std::string>& list, int64_t& count, const std::string& text) {
  ++count;
  if (list.size() < kShownProblems) list.push_back(text);
}

// Checks one text field: a string, or a list of {role, content} messages. Returns its length
// in characters (contents summed); -1 when the field has the wrong shape (an error was added).
int64_t check_text(Report& report, const std::string& where, const std::string& key, const json& value) {
  if (value.is_string()) return static_cast<int64_t>(value.get<std::string>().size());
  if (!value.is_array()) {
    add(report.errors, report.error_count, where + ": field '" + key + "' must be a string or a list of messages, found " +
                                               std::string(value.type_name()));
    return -1;
  }
  int64_t length = 0;
  for (size_t i = 0; i < value.size(); ++i) {
    const json& m = value[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      add(report.errors, report.error_count,
          where + ": field '" + key + "' message " + std::to_string(i + 1) + " must be {\"role\": string, \"content\": string}");
      return -1;
    }
    length += static_cast<int64_t>(m["content"].get<std::string>().size());
  }
  return length;
}

bool check_ids(Report& report, const std::string& where, const std::string& key, const json& value) {
  bool ok = value.is_array() && std::all_of(value.begin(), value.end(), [](const json& v) { return v.is_number_integer() && v.get<int64_t>() >= 0; });
  if (!ok) add(report.errors, report.error_count, where + ": field '" + key + "' must be a list of token ids (integers >= 0)");
  return ok;
}

Report analyse(const std::string& path, const std::string& wanted_type) {
  Report report;
  std::map<std::string, int64_t> first_seen;  // record content -> line
  for (const JsonLine& line : read_json_lines(path)) {
    const std::string where = at_line(path, line.line);
    const json& r = line.value;
    ++report.records;
    if (!r.is_object()) {
      add(report.errors, report.error_count, where + ": expected a JSON object, found " + std::string(r.type_name()));
      continue;
    }
    const std::string type = detect_type(r);
    if (type.empty()) {
      add(report.errors, report.error_count, where + ": cannot tell the dataset type from the fields (a preference record has "
                                                     "prompt, chosen, rejected; see docs/datasets.md)");
      continue;
    }
    if (report.type.empty()) report.type = type;
    if (!wanted_type.empty() && type != wanted_type) {
      add(report.errors, report.error_count, where + ": a " + type + " record, but --type is " + wanted_type);
      continue;
    }
    if (type != report.type) {
      add(report.errors, report.error_count, where + ": a " + type + " record in a file of " + report.type + " records");
      continue;
    }
    if (type == "preference") {
      for (const char* key : {"chosen", "rejected"})
        if (!has(r, key) && !has(r, std::string(key) + "_ids"))
          add(report.errors, report.error_count, where + ": missing field '" + key + "'");
      if (has(r, "margin") && !r["margin"].is_number())
        add(report.errors, report.error_count, where + ": field 'margin' must be a number");
    }
    if (type == "unpaired-preference" && !r["label"].is_boolean())
      add(report.errors, report.error_count, where + ": field 'label' must be true or false");
    bool empty = false;
    for (const std::string& key : kFields.at(type)) {
      if (has(r, key + "_ids")) {
        if (check_ids(report, where, key + "_ids", r[key + "_ids"])) {
          report.chars[key].push_back(static_cast<double>(r[key + "_ids"].size()));
          empty = empty || r[key + "_ids"].empty();
        }
        continue;
      }
      if (!has(r, key)) continue;
      const int64_t length = check_text(report, where, key, r[key]);
      if (length < 0) continue;
      report.chars[key].push_back(static_cast<double>(length));
      if (length == 0) {
        empty = true;
        add(report.warnings, report.warning_count, where + ": field '" + key + "' is empty");
      }
    }
    if (empty) ++report.empty_fields;
    if (has(r, "prompt")) report.prompts.insert(r["prompt"].dump());
    if (type == "preference" && has(r, "chosen") && has(r, "rejected") && r["chosen"] == r["rejected"]) {
      ++report.identical_pairs;
      add(report.warnings, report.warning_count, where + ": chosen == rejected (the pair teaches nothing)");
    }
    json key = json::object();
    for (const std::string& field : kFields.at(type)) {
      if (has(r, field)) key[field] = r[field];
      if (has(r, field + "_ids")) key[field + "_ids"] = r[field + "_ids"];
    }
    auto [it, inserted] = first_seen.emplace(key.dump(), line.line);
    if (!inserted) {
      ++report.duplicates;
      add(report.warnings, report.warning_count, where + ": duplicate of line " + std::to_string(it->second));
    }
  }
  if (report.records == 0) add(report.errors, report.error_count, path + ": no records");
  return report;
}

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

json length_table(std::map<std::string, std::vector<double>> lengths) {
  json table = json::object();
  for (auto& [field, values] : lengths) {
    std::sort(values.begin(), values.end());
    double sum = 0;
    for (double v : values) sum += v;
    table[field] = {{"count", values.size()}, {"mean", values.empty() ? 0 : sum / static_cast<double>(values.size())},
                    {"p50", percentile(values, 50)}, {"p90", percentile(values, 90)}, {"p95", percentile(values, 95)},
                    {"p99", percentile(values, 99)}, {"max", values.empty() ? 0 : values.back()}};
  }
  return table;
}

// Token lengths as training sees them: the file read by the jsonl plugin with the tokenizer.
void token_lengths(Report& report, const core::PluginHost& host, const std::string& path, const std::string& tokenizer_dir,
                   const std::string& chat_template) {
  std::unique_ptr<Tokenizer> tokenizer = core::load_tokenizer(host.registry(), tokenizer_dir);
  if (!tokenizer) throw ConfigError(tokenizer_dir + ": no tokenizer file here (--tokenizer takes a model folder)");
  std::unique_ptr<Dataset> dataset;
  try {
    dataset = load_records(host, path, tokenizer.get(), chat_template);
  } catch (const std::runtime_error& e) {
    // The plugin's file:line message: the file cannot be used for training as it is.
    add(report.errors, report.error_count, e.what());
    return;
  }
  for (size_t i = 0; i < dataset->size(); ++i) {
    const Example& e = dataset->at(i);
    report.tokens["prompt"].push_back(static_cast<double>(e.prompt.size()));
    if (dataset->kind() == DataKind::PromptOnly) continue;
    report.tokens[dataset->kind() == DataKind::Preference ? "chosen" : "completion"].push_back(static_cast<double>(e.completion.size()));
    if (dataset->kind() == DataKind::Preference) report.tokens["rejected"].push_back(static_cast<double>(e.rejected.size()));
  }
}

int run(const std::vector<std::string>& args, bool stats) {
  po::options_description options(stats ? "data stats" : "data validate");
  PluginOptions plugin_options;
  add_plugin_options(options, plugin_options);
  std::string file, type, tokenizer_dir, chat_template;
  bool as_json = false;
  options.add_options()("file", po::value(&file)->required(), "the JSON Lines file")(
      "type", po::value(&type), "the type every record must have: preference, prompt-completion, prompt-only, "
                                "unpaired-preference or language-modeling")(
      "tokenizer", po::value(&tokenizer_dir), "a model folder whose tokenizer gives token lengths (read as training reads the file)")(
      "chat-template", po::value(&chat_template), "for conversational records, with --tokenizer");
  if (stats) options.add_options()("json", po::bool_switch(&as_json), "print one JSON object");
  po::variables_map values;
  int exit_code = kExitOk;
  const char* usage = stats ? "alignkit data stats FILE.jsonl [--type TYPE] [--tokenizer MODEL_DIR] [--json]"
                            : "alignkit data validate FILE.jsonl [--type TYPE] [--tokenizer MODEL_DIR]";
  if (!parse_command_line(args, usage, options, {"file"}, values, exit_code)) return exit_code;
  if (!type.empty() && !kFields.count(type)) {
    std::cerr << "alignkit: --type must be preference, prompt-completion, prompt-only, unpaired-preference or "
                 "language-modeling, not '" << type << "'\n";
    return kExitUsage;
  }
  Report report;
  try {
    report = analyse(file, type);
    if (!tokenizer_dir.empty() && report.error_count == 0) {
      auto host = open_plugins(plugin_options);
      token_lengths(report, *host, file, tokenizer_dir, chat_template);
    }
  } catch (const ConfigError& e) {
    std::cerr << "alignkit: " << e.what() << '\n';
    return kExitUsage;
  }
  const bool usable = report.error_count == 0;
  if (as_json) {
    json out = {{"file", file}, {"type", report.type}, {"records", report.records}, {"usable", usable},
                {"errors", report.error_count}, {"warnings", report.warning_count}, {"unique_prompts", report.prompts.size()},
                {"duplicates", report.duplicates}, {"chosen_equals_rejected", report.identical_pairs},
                {"records_with_empty_fields", report.empty_fields}, {"chars", length_table(report.chars)},
                {"problems", report.errors}};
    if (!tokenizer_dir.empty()) out["tokens"] = length_table(report.tokens);
    std::cout << out.dump() << '\n';
    return usable ? kExitOk : kExitUsage;
  }
  for (const std::string& e : report.errors) std::cerr << "error: " << e << '\n';
  if (report.error_count > static_cast<int64_t>(report.errors.size()))
    std::cerr << "... and " << report.error_count - static_cast<int64_t>(report.errors.size()) << " more errors\n";
  for (const std::string& w : report.warnings) std::cerr << "warning: " << w << '\n';
  if (report.warning_count > static_cast<int64_t>(report.warnings.size()))
    std::cerr << "... and " << report.warning_count - static_cast<int64_t>(report.warnings.size()) << " more warnings\n";
  std::cout << file << ": " << report.records << " " << (report.type.empty() ? "" : report.type + " ") << "records, "
            << report.error_count << " errors, " << report.warning_count << " warnings"
            << (usable ? "" : " - not usable as it is") << '\n';
  if (stats) {
    std::cout << "unique prompts: " << report.prompts.size() << "\nduplicates: " << report.duplicates
              << "\nchosen == rejected: " << report.identical_pairs << "\nrecords with an empty field: " << report.empty_fields
              << '\n';
    auto print = [](const char* unit, const json& table) {
      for (auto it = table.begin(); it != table.end(); ++it)
        std::cout << std::left << std::setw(11) << it.key() << unit << ": mean " << std::fixed << std::setprecision(1)
                  << it.value()["mean"].get<double>() << std::setprecision(0) << "  p50 " << it.value()["p50"].get<double>()
                  << "  p90 " << it.value()["p90"].get<double>() << "  p95 " << it.value()["p95"].get<double>() << "  p99 "
                  << it.value()["p99"].get<double>() << "  max " << it.value()["max"].get<double>() << '\n';
    };
    print("chars ", length_table(report.chars));
    if (!tokenizer_dir.empty()) print("tokens", length_table(report.tokens));
  }
  return usable ? kExitOk : kExitUsage;
}

}  // namespace

int cmd_data_validate(const std::vector<std::string>& args) { return run(args, false); }
int cmd_data_stats(const std::vector<std::string>& args) { return run(args, true); }

}  // namespace alignkit::cli
