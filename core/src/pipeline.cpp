// Pipeline loading, checking and ordering (see pipeline.hpp and docs/pipelines.md).
#include "alignkit/core/pipeline.hpp"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <set>
#include <sstream>

#include "alignkit/core/plugin_host.hpp"
#include "alignkit/core/toml_config.hpp"
#include "alignkit/model.hpp"
#include "alignkit/registry.hpp"

namespace fs = std::filesystem;

namespace alignkit::core {

const std::vector<std::string> kModelRoles = {"model", "reference", "reward_model", "value_model", "judge_model"};

namespace {

const std::string kStageOutputPrefix = "stages.";
const std::string kStageOutputSuffix = ".output";

std::vector<SettingSpec> run_settings() {
  return {
      setting::required_text("output_dir", "folder that receives one subfolder per stage"),
      setting::integer("seed", 42, "default random seed of every stage"),
  };
}

std::vector<SettingSpec> model_settings() {
  return {setting::required_text("path", "a model folder in the Hugging Face layout (config.json, *.safetensors)")};
}

// The `[stages.X.lora]` table: PEFT's LoraConfig (with its defaults) plus merge_on_save.
SettingSpec lora_settings() {
  std::vector<std::string> modules = lora_module_names();
  modules.push_back("all-linear");
  return setting::table(
      "lora",
      {
          setting::integer("r", 8, "rank of each adapter (at least 1)", 1.0),
          setting::number("lora_alpha", 8.0, "adapter scale numerator: the update is (lora_alpha / r) B A x", 0.0),
          setting::number("lora_dropout", 0.0, "dropout on the adapter's input while training, in [0, 1)", 0.0),
          setting::text_list("target_modules", {"q_proj", "v_proj"},
                             "linear layers that get adapters (all-linear: every one but lm_head)", modules),
          setting::boolean("merge_on_save", false,
                           "final/ also holds the merged model (config.json + model.safetensors) beside the adapter"),
      },
      "LoRA adapters on the trained model: only they train; without a named reference the reference is the model "
      "with its adapters disabled (docs/lora.md)");
}

// Settings every stage has, whatever its algorithm and backend.
std::vector<SettingSpec> host_stage_settings(int64_t run_seed, std::vector<SettingSpec> data_fields) {
  std::vector<SettingSpec> specs = {
      setting::required_text("algorithm", "the algorithm plugin (alignkit plugins list)"),
      setting::text("backend", "local", "the backend plugin that runs the stage"),
      setting::required_text("model", "the model to train: a [models] name or \"stages.X.output\""),
      setting::optional_text("reference", "the frozen reference model: a [models] name or \"stages.X.output\""),
      setting::optional_text("reward_model", "the reward model: a [models] name or \"stages.X.output\""),
      setting::optional_text("value_model", "the value model: a [models] name or \"stages.X.output\""),
      setting::optional_text("judge_model", "an LM judge model: a [models] name or \"stages.X.output\""),
      setting::integer("seed", run_seed, "random seed of this stage (default: run.seed)"),
      setting::boolean("gradient_checkpointing", false,
                       "recompute each decoder block's activations in backward instead of keeping them"),
      lora_settings(),
  };
  data_fields.insert(data_fields.begin(), setting::text("format", "jsonl", "the dataset plugin that reads `path`"));
  specs.push_back(setting::table("data", std::move(data_fields), "the training data"));
  return specs;
}

// "stages.sft.output" -> "sft"; "" when `ref` is not a stage reference.
std::string referenced_stage(const std::string& ref) {
  if (ref.size() <= kStageOutputPrefix.size() + kStageOutputSuffix.size()) return "";
  if (ref.compare(0, kStageOutputPrefix.size(), kStageOutputPrefix) != 0) return "";
  if (ref.compare(ref.size() - kStageOutputSuffix.size(), kStageOutputSuffix.size(), kStageOutputSuffix) != 0) return "";
  return ref.substr(kStageOutputPrefix.size(), ref.size() - kStageOutputPrefix.size() - kStageOutputSuffix.size());
}

std::string why_missing(const PluginHost& host, ComponentKind kind, const std::string& name) {
  std::string message = std::string("no ") + component_kind_name(kind) + " plugin named '" + name + "'";
  if (const PluginRecord* record = host.provider_of(kind, name); record && record->status == PluginStatus::Error)
    return message + " (its plugin failed to load: " + record->error + ")";
  std::vector<std::string> names = host.registry().names(kind);
  std::string suggestion = closest_name(name, names);
  if (!suggestion.empty()) return message + "; did you mean '" + suggestion + "'?";
  std::string available;
  for (const std::string& n : names) available += (available.empty() ? "" : ", ") + n;
  return message + " (available: " + (available.empty() ? "none" : available) + ")";
}

// FNV-1a, 64 bit: a stable digest of text (not security-relevant).
std::string digest(const std::string& text) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  std::ostringstream out;
  out << std::hex << std::setw(16) << std::setfill('0') << hash;
  return out.str();
}

}  // namespace

Pipeline Pipeline::load(const std::string& file, const std::vector<std::string>& overrides) {
  Pipeline pipeline;
  pipeline.file_ = file;
  pipeline.root_ = parse_toml_file(file);
  for (const std::string& assignment : overrides) apply_override(pipeline.root_, assignment);
  return pipeline;
}

std::string Pipeline::output_dir() const {
  const ConfigValue* run = root_.find("run");
  const ConfigValue* dir = run ? run->find("output_dir") : nullptr;
  return dir && dir->type == ValueType::String ? dir->string : "";
}

std::vector<Diagnostic> Pipeline::resolve(const PluginHost& host) {
  std::vector<Diagnostic> problems;
  stages_.clear();
  const Registry& registry = host.registry();
  const SourceLocation file_start{file_, 1, 1};

  // Top level: [run], [models.*], [stages.*] and nothing else.
  for (const auto& [key, value] : root_.table) {
    if (key == "run" || key == "models" || key == "stages") {
      if (value.type != ValueType::Table)
        problems.push_back({value.where, key + ": expected a table, found " + value_type_name(value.type)});
      continue;
    }
    std::string suggestion = closest_name(key, {"run", "models", "stages"});
    problems.push_back({value.where, key + ": unknown top-level table" +
                                         (suggestion.empty() ? "" : "; did you mean '" + suggestion + "'?")});
  }

  ConfigValue* run = root_.find("run");
  if (!run) {
    problems.push_back({file_start, "run: missing the [run] table (run.output_dir is required)"});
  } else if (run->type == ValueType::Table) {
    check_table(*run, "run", run_settings(), problems);
  }
  const ConfigValue* seed = run ? run->find("seed") : nullptr;
  int64_t run_seed = seed && seed->type == ValueType::Int ? seed->integer : 42;

  std::set<std::string> model_names;
  if (ConfigValue* models = root_.find("models"); models && models->type == ValueType::Table) {
    for (auto& [name, model] : models->table) {
      model_names.insert(name);
      if (model.type != ValueType::Table) {
        problems.push_back({model.where, "models." + name + ": expected a table, found " + value_type_name(model.type)});
        continue;
      }
      check_table(model, "models." + name, model_settings(), problems);
    }
  }

  ConfigValue* stages = root_.find("stages");
  if (!stages || stages->type != ValueType::Table || stages->table.empty()) {
    if (!stages) problems.push_back({file_start, "stages: the pipeline has no [stages.*] table"});
    return problems;
  }

  std::map<std::string, StagePlan> plans;
  std::set<std::string> stage_names;
  for (const auto& [name, stage] : stages->table) stage_names.insert(name);

  for (auto& [name, stage] : stages->table) {
    const std::string path = "stages." + name;
    if (stage.type != ValueType::Table) {
      problems.push_back({stage.where, path + ": expected a table, found " + value_type_name(stage.type)});
      continue;
    }
    StagePlan plan;
    plan.name = name;
    plan.dir = (fs::path(output_dir()) / name).string();

    auto component = [&](const char* key, ComponentKind kind, const std::string& fallback) -> const ComponentInfo* {
      const ConfigValue* value = stage.find(key);
      std::string chosen = value && value->type == ValueType::String ? value->string : fallback;
      if (chosen.empty()) return nullptr;  // a missing required key is reported by check_table
      const ComponentInfo* info = registry.info(kind, chosen);
      if (!info) problems.push_back({value ? value->where : stage.where, path + "." + key + ": " + why_missing(host, kind, chosen)});
      return info;
    };
    const ComponentInfo* algorithm = component("algorithm", ComponentKind::Algorithm, "");
    const ComponentInfo* backend = component("backend", ComponentKind::Backend, "local");

    std::vector<SettingSpec> data_fields;
    bool dataset_known = true;
    const ConfigValue* data = stage.find("data");
    const ConfigValue* format = data && data->type == ValueType::Table ? data->find("format") : nullptr;
    std::string data_format = format && format->type == ValueType::String ? format->string : "jsonl";
    if (data) {
      if (const ComponentInfo* dataset = registry.info(ComponentKind::Dataset, data_format)) {
        data_fields = dataset->settings;
      } else {
        dataset_known = false;
        problems.push_back({format ? format->where : data->where,
                            path + ".data.format: " + why_missing(host, ComponentKind::Dataset, data_format)});
      }
    }

    std::vector<SettingSpec> specs = host_stage_settings(run_seed, data_fields);
    std::set<std::string> declared;
    for (const SettingSpec& spec : specs) declared.insert(spec.name);
    // The algorithm's declarations come first, so it may set its own default for a
    // shared setting (DPO's learning_rate is 1e-6, SFT's 2e-5, as in TRL).
    for (const ComponentInfo* info : {algorithm, backend}) {
      if (!info) continue;
      for (const SettingSpec& spec : info->settings)
        if (declared.insert(spec.name).second) specs.push_back(spec);
    }
    // Without the algorithm's or backend's settings every other key would look unknown: skip that noise.
    if (algorithm && backend && dataset_known) {
      check_table(stage, path, specs, problems);
    } else {
      std::vector<Diagnostic> partial;
      check_table(stage, path, specs, partial);
      for (Diagnostic& d : partial)
        if (d.message.find("unknown key") == std::string::npos) problems.push_back(std::move(d));
    }

    if (const ConfigValue* v = stage.find("algorithm"); v && v->type == ValueType::String) plan.algorithm = v->string;
    if (const ConfigValue* v = stage.find("backend"); v && v->type == ValueType::String) plan.backend = v->string;

    for (const std::string& role : kModelRoles) {
      const ConfigValue* ref = stage.find(role);
      if (!ref || ref->type != ValueType::String) continue;
      std::string upstream = referenced_stage(ref->string);
      if (!upstream.empty()) {
        if (!stage_names.count(upstream)) {
          std::string suggestion = closest_name(upstream, {stage_names.begin(), stage_names.end()});
          problems.push_back({ref->where, path + "." + role + ": unknown stage '" + upstream + "'" +
                                              (suggestion.empty() ? "" : "; did you mean '" + suggestion + "'?")});
          continue;
        }
        if (std::find(plan.depends_on.begin(), plan.depends_on.end(), upstream) == plan.depends_on.end())
          plan.depends_on.push_back(upstream);
        plan.model_dirs[role] = stage_output_dir((fs::path(output_dir()) / upstream).string());
      } else if (model_names.count(ref->string)) {
        const ConfigValue* model_path = root_.find("models")->find(ref->string)->find("path");
        if (model_path && model_path->type == ValueType::String) plan.model_dirs[role] = model_path->string;
      } else {
        std::vector<std::string> candidates(model_names.begin(), model_names.end());
        for (const std::string& s : stage_names) candidates.push_back("stages." + s + ".output");
        std::string suggestion = closest_name(ref->string, candidates);
        problems.push_back({ref->where, path + "." + role + ": '" + ref->string +
                                            "' is neither a [models] entry nor \"stages.NAME.output\"" +
                                            (suggestion.empty() ? "" : "; did you mean '" + suggestion + "'?")});
      }
    }
    // A data-producing stage's output as this stage's data: "stages.X.output"
    // in data.path or data.eval_path becomes X's final/data.jsonl (and an edge).
    if (ConfigValue* data_table = stage.find("data"); data_table && data_table->type == ValueType::Table) {
      for (const char* key : {"path", "eval_path"}) {
        ConfigValue* ref = data_table->find(key);
        if (!ref || ref->type != ValueType::String) continue;
        const std::string upstream = referenced_stage(ref->string);
        if (upstream.empty()) continue;
        if (!stage_names.count(upstream)) {
          std::string suggestion = closest_name(upstream, {stage_names.begin(), stage_names.end()});
          problems.push_back({ref->where, path + ".data." + key + ": unknown stage '" + upstream + "'" +
                                              (suggestion.empty() ? "" : "; did you mean '" + suggestion + "'?")});
          continue;
        }
        if (std::find(plan.depends_on.begin(), plan.depends_on.end(), upstream) == plan.depends_on.end())
          plan.depends_on.push_back(upstream);
        ref->string = stage_data_file((fs::path(output_dir()) / upstream).string());
      }
    }
    plans.emplace(name, std::move(plan));
  }

  // Order by dependencies (depth-first, in file order); report a cycle with its stages in order.
  std::vector<std::string> file_order;
  for (const auto& [name, stage] : stages->table)
    if (plans.count(name)) file_order.push_back(name);
  std::map<std::string, int> state;  // 0 new, 1 on the current path, 2 done
  std::vector<std::string> path_stack;
  bool cycle = false;
  std::function<void(const std::string&)> visit = [&](const std::string& name) {
    if (cycle || state[name] == 2) return;
    if (state[name] == 1) {
      auto start = std::find(path_stack.begin(), path_stack.end(), name);
      std::string chain;
      for (auto it = start; it != path_stack.end(); ++it) chain += "stages." + *it + " -> ";
      chain += "stages." + name;
      const ConfigValue* stage = stages->find(name);
      problems.push_back({stage->where, "cycle in the pipeline graph: " + chain});
      cycle = true;
      return;
    }
    state[name] = 1;
    path_stack.push_back(name);
    for (const std::string& dep : plans.at(name).depends_on)
      if (plans.count(dep)) visit(dep);
    path_stack.pop_back();
    state[name] = 2;
    stages_.push_back(plans.at(name));
  };
  for (const std::string& name : file_order) visit(name);
  if (!problems.empty()) stages_.clear();
  return problems;
}

ConfigView Pipeline::stage_settings(const std::string& stage) const {
  const ConfigValue* node = root_.find("stages")->find(stage);
  return ConfigView(node, "stages." + stage);
}

std::string Pipeline::stage_fingerprint(const std::string& stage) const {
  std::string text;
  std::function<void(const std::string&)> add = [&](const std::string& name) {
    ConfigValue wrapper = ConfigValue::empty_table();
    wrapper.set(name, *root_.find("stages")->find(name));
    text += to_toml(wrapper);
    for (const StagePlan& plan : stages_) {
      if (plan.name != name) continue;
      for (const auto& [role, dir] : plan.model_dirs) text += role + "=" + dir + "\n";
      for (const std::string& dep : plan.depends_on) add(dep);
    }
  };
  add(stage);
  return digest(text);
}

std::string Pipeline::resolved_toml() const {
  return "# Written by alignkit from " + file_ + " with every default filled in.\n" + to_toml(root_);
}

}  // namespace alignkit::core
