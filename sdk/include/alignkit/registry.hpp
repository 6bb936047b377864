// The registry plugins add their components to, and through which components
// find each other (the rlhf algorithm builds reward and ppo through it).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "alignkit/config.hpp"

namespace alignkit {

class AlgorithmProvider;
class BackendProvider;
class ModelProvider;
class TokenizerProvider;
class DatasetProvider;
class RewardProvider;

enum class ComponentKind { Algorithm, Backend, Model, Tokenizer, Dataset, Reward };

inline const char* component_kind_name(ComponentKind kind) {
  switch (kind) {
    case ComponentKind::Algorithm: return "algorithm";
    case ComponentKind::Backend: return "backend";
    case ComponentKind::Model: return "model";
    case ComponentKind::Tokenizer: return "tokenizer";
    case ComponentKind::Dataset: return "dataset";
    case ComponentKind::Reward: return "reward";
  }
  return "?";
}

struct ComponentInfo {
  ComponentKind kind = ComponentKind::Algorithm;
  std::string name;         // what pipelines write: algorithm = "dpo"
  std::string version;
  std::string description;  // one line
  std::vector<SettingSpec> settings;
};

class Registry {
 public:
  virtual ~Registry() = default;
  // A name already taken within a kind makes the host refuse the whole plugin, naming both files.
  virtual void add_algorithm(ComponentInfo info, std::shared_ptr<const AlgorithmProvider> provider) = 0;
  virtual void add_backend(ComponentInfo info, std::shared_ptr<const BackendProvider> provider) = 0;
  virtual void add_model(ComponentInfo info, std::shared_ptr<const ModelProvider> provider) = 0;
  virtual void add_tokenizer(ComponentInfo info, std::shared_ptr<const TokenizerProvider> provider) = 0;
  virtual void add_dataset(ComponentInfo info, std::shared_ptr<const DatasetProvider> provider) = 0;
  virtual void add_reward(ComponentInfo info, std::shared_ptr<const RewardProvider> provider) = 0;

  // nullptr when no plugin provides `name`.
  virtual const AlgorithmProvider* algorithm(const std::string& name) const = 0;
  virtual const BackendProvider* backend(const std::string& name) const = 0;
  virtual const ModelProvider* model(const std::string& name) const = 0;
  virtual const TokenizerProvider* tokenizer(const std::string& name) const = 0;
  virtual const DatasetProvider* dataset(const std::string& name) const = 0;
  virtual const RewardProvider* reward(const std::string& name) const = 0;
  virtual const ComponentInfo* info(ComponentKind kind, const std::string& name) const = 0;
  // Every registered name of a kind, sorted.
  virtual std::vector<std::string> names(ComponentKind kind) const = 0;
};

}  // namespace alignkit
