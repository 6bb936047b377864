// The recipe ORPO and CPO/SimPO share: preference pairs scored by the policy
// alone (no reference model), in one forward of the chosen and rejected rows.
// Each step hands the loss the completions' log-probs (summed or averaged per
// completion token) and the chosen rows' mean token NLL over prompt and
// completion (TRL's ORPOTrainer and CPOTrainer compute it with labels masked
// only by attention), then adds TRL's logits/chosen and logits/rejected.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "alignkit/batch.hpp"
#include "alignkit/config.hpp"
#include "alignkit/model.hpp"
#include "alignkit/tokenizer.hpp"
#include "alignkit/training.hpp"
#include "pair_losses.hpp"
#include "recipe_support.hpp"

namespace alignkit::pairs {

// max_length (TRL's 1024) and truncation_mode, for both recipes.
std::vector<SettingSpec> pair_truncation_settings();

class ReferenceFreePairRecipe : public Algorithm {
 public:
  // `display_name` ("ORPO") names the recipe in messages, `id` ("orpo") in errors of a step.
  ReferenceFreePairRecipe(std::string display_name, std::string id);

  void setup(StageContext& context, const TrainEnv& env) override;
  std::vector<NamedTensor> trainable_parameters() override;
  int64_t num_examples(Split split) const override;
  StepOutput step(const std::vector<int64_t>& indices, Split split) override;
  void set_training(bool training) override;
  std::vector<std::string> progress_metrics() const override;
  void save(const std::string& dir) override;

 protected:
  // Reads the loss settings; throws ConfigError located at the bad key.
  virtual void read_loss_settings(StageContext& context) = 0;
  // True: the loss receives log-probs averaged per completion token; false: summed.
  virtual bool averages_logps() const = 0;
  // chosen/rejected: (B,) with grad; chosen_nll: () with grad.
  virtual PairLossOutput loss(const at::Tensor& chosen_logps, const at::Tensor& rejected_logps,
                              const at::Tensor& chosen_nll) = 0;

 private:
  const recipe::SplitData& split_data(Split split) const;

  std::string display_name_;
  std::string id_;
  StageContext* context_ = nullptr;
  TrainEnv env_;
  std::string model_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<CausalLM> policy_;
  CollateOptions collate_;
  recipe::StageData data_;
};

}  // namespace alignkit::pairs
