// Building, checking and scoring the rewards of a stage (see reward_set.hpp).
#include "reward_set.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <exception>

#include "alignkit/core/config_check.hpp"
#include "alignkit/registry.hpp"

namespace alignkit::online {
namespace {

std::vector<SettingSpec> common_reward_keys() {
  return {
      setting::required_text("name", "the reward plugin (alignkit plugins list)"),
      setting::number("weight", 1.0, "the reward's weight in the total"),
      setting::number("default_score", 0.0, "the score of a completion the reward throws on"),
      setting::optional_text("label", "metric name: rewards/<label>/mean (default: name)"),
  };
}

std::string names_text(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& name : names) text += (text.empty() ? "" : ", ") + name;
  return text.empty() ? "(none installed)" : text;
}

}  // namespace

SettingSpec rewards_setting(const std::string& doc) {
  SettingSpec spec{"rewards", ValueType::Array, ConfigValue{}, doc, false, {}, {}, {}};
  spec.element_type = ValueType::Table;
  return spec;
}

RewardSet RewardSet::create(StageContext& context, const std::string& key, bool required) {
  const ConfigView& settings = context.settings();
  RewardSet set;
  set.context_ = &context;
  set.tables_ = std::make_shared<std::deque<ConfigValue>>();
  const ConfigValue* list = settings.has(key) ? settings.node()->find(key) : nullptr;
  std::vector<const ConfigValue*> tables;
  if (list && list->type == ValueType::Array)
    for (const ConfigValue& item : list->array) tables.push_back(&item);
  else if (list && list->type == ValueType::Table)
    tables.push_back(list);
  else if (list)
    throw ConfigError(settings.locate(key) + ": expected an array of tables ([[" + settings.path() + "." + key +
                      "]]), found " + value_type_name(list->type));
  if (tables.empty() && required)
    throw ConfigError(settings.locate(key) + ": the stage names no reward; add one or more [[" + settings.path() +
                      "." + key + "]] tables with name = a reward plugin (" +
                      names_text(context.registry().names(ComponentKind::Reward)) + ")");

  Registry& registry = context.registry();
  for (size_t i = 0; i < tables.size(); ++i) {
    const std::string path = settings.path() + "." + key + "[" + std::to_string(i) + "]";
    const ConfigValue& given = *tables[i];
    if (given.type != ValueType::Table)
      throw ConfigError((given.where.known() ? given.where.str() + ": " : settings.locate(key) + ": ") + path +
                        ": expected a table, found " + value_type_name(given.type));
    const ConfigValue* name_value = given.find("name");
    if (!name_value || name_value->type != ValueType::String)
      throw ConfigError((given.where.known() ? given.where.str() + ": " : "") + path +
                        ": missing `name` (the reward plugin: " +
                        names_text(registry.names(ComponentKind::Reward)) + ")");
    const std::string& name = name_value->string;
    const RewardProvider* provider = registry.reward(name);
    const ComponentInfo* info = registry.info(ComponentKind::Reward, name);
    if (!provider || !info) {
      std::string message = (name_value->where.known() ? name_value->where.str() + ": " : "") + path +
                            ".name: no reward plugin named '" + name + "'";
      const std::string suggestion = core::closest_name(name, registry.names(ComponentKind::Reward));
      if (!suggestion.empty()) message += "; did you mean '" + suggestion + "'?";
      throw ConfigError(message + " (installed: " + names_text(registry.names(ComponentKind::Reward)) + ")");
    }

    std::vector<SettingSpec> specs = common_reward_keys();
    for (const SettingSpec& spec : info->settings) specs.push_back(spec);
    ConfigValue& table = set.tables_->emplace_back(given);
    std::vector<core::Diagnostic> problems;
    core::check_table(table, path, specs, problems);
    if (!problems.empty()) throw ConfigError(core::join(problems));

    const ConfigView view(&table, path);
    Entry entry;
    entry.name = name;
    entry.default_score = view.get_float("default_score");
    entry.reward = provider->create(view, context);
    if (!entry.reward) throw std::runtime_error("reward plugin '" + name + "' created no reward");
    set.labels_.push_back(view.has("label") ? view.get_string("label") : name);
    set.weights_.push_back(view.get_float("weight"));
    set.entries_.push_back(std::move(entry));
  }
  for (size_t i = 0; i < set.labels_.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (set.labels_[i] == set.labels_[j])
        throw ConfigError(settings.locate(key) + ": two rewards are labelled '" + set.labels_[i] +
                          "'; give one a `label` so their metrics stay apart");
  return set;
}

RewardScores RewardSet::score(const std::vector<RewardInput>& inputs) {
  const int64_t rows = static_cast<int64_t>(inputs.size());
  const int64_t count = static_cast<int64_t>(entries_.size());
  RewardScores out;
  out.labels = labels_;
  out.per_reward = at::zeros({rows, count}, at::kFloat);  // (N, R)
  out.failures.assign(entries_.size(), 0);
  auto scores = out.per_reward.accessor<float, 2>();
  for (int64_t r = 0; r < count; ++r) {
    Entry& entry = entries_[static_cast<size_t>(r)];
    std::vector<double> values;
    std::string first_error;
    try {
      values = entry.reward->score(inputs);
      if (static_cast<int64_t>(values.size()) != rows)
        throw std::runtime_error("returned " + std::to_string(values.size()) + " scores for " +
                                 std::to_string(rows) + " completions");
    } catch (const std::exception&) {
      // One bad completion must not cost the others their scores: one at a time.
      values.assign(static_cast<size_t>(rows), entry.default_score);
      for (int64_t i = 0; i < rows; ++i) {
        try {
          std::vector<double> one = entry.reward->score({inputs[static_cast<size_t>(i)]});
          if (one.size() != 1) throw std::runtime_error("returned " + std::to_string(one.size()) + " scores for 1");
          values[static_cast<size_t>(i)] = one[0];
        } catch (const std::exception& e) {
          if (first_error.empty()) first_error = e.what();
          ++out.failures[static_cast<size_t>(r)];
        }
      }
    }
    for (int64_t i = 0; i < rows; ++i) {
      double value = values[static_cast<size_t>(i)];
      if (!std::isfinite(value)) {
        if (first_error.empty()) first_error = "a non-finite score";
        ++out.failures[static_cast<size_t>(r)];
        value = entry.default_score;
      }
      scores[i][r] = static_cast<float>(value);
    }
    if (out.failures[static_cast<size_t>(r)] > 0 && context_)
      context_->log("warning: reward '" + labels_[static_cast<size_t>(r)] + "' failed on " +
                    std::to_string(out.failures[static_cast<size_t>(r)]) + " of " + std::to_string(rows) +
                    " completions (first: " + first_error + "); they score default_score " +
                    std::to_string(entry.default_score));
  }
  at::Tensor weights = at::tensor(weights_, at::kDouble).to(at::kFloat);  // (R)
  out.total = count > 0 ? (out.per_reward * weights).sum(1) : at::zeros({rows}, at::kFloat);  // (N)
  return out;
}

Metrics RewardScores::metrics() const {
  Metrics metrics;
  for (size_t r = 0; r < labels.size(); ++r) {
    at::Tensor column = per_reward.select(1, static_cast<int64_t>(r)).to(at::kDouble);  // (N)
    const std::string prefix = "rewards/" + labels[r];
    metrics.push_back({prefix + "/mean", column.mean().item<double>()});
    metrics.push_back({prefix + "/std", column.numel() > 1 ? column.std().item<double>() : 0.0});
    metrics.push_back({prefix + "/failures", static_cast<double>(failures[r])});
  }
  return metrics;
}

}  // namespace alignkit::online
