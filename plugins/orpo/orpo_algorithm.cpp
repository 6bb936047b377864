// The `orpo` algorithm plugin: TRL's ORPOTrainer as a recipe. Odds Ratio
// Preference Optimization needs no reference model: the chosen rows' NLL
// teaches the task while -beta * logsigmoid(log odds ratio) of the
// length-averaged completion log-probs pushes the rejected completion down.
#include "alignkit/plugin.hpp"
#include "pair_recipe.hpp"

namespace alignkit::pairs {
namespace {

std::vector<SettingSpec> orpo_settings() {
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 1e-6, "peak learning rate of AdamW (TRL's ORPO default)", 0.0),
      setting::number("beta", 0.1, "weight of the odds-ratio term against the NLL (lambda in the paper; > 0)", 0.0),
  };
  for (SettingSpec& spec : pair_truncation_settings()) settings.push_back(std::move(spec));
  return settings;
}

class OrpoAlgorithm : public ReferenceFreePairRecipe {
 public:
  OrpoAlgorithm() : ReferenceFreePairRecipe("ORPO", "orpo") {}

 protected:
  void read_loss_settings(StageContext& context) override {
    const ConfigView& settings = context.settings();
    beta_ = settings.get_float("beta");
    if (!(beta_ > 0))
      throw ConfigError(settings.locate("beta") + ": must be greater than 0 (0 leaves only the NLL: use sft)");
  }
  bool averages_logps() const override { return true; }
  PairLossOutput loss(const at::Tensor& chosen_logps, const at::Tensor& rejected_logps,
                      const at::Tensor& chosen_nll) override {
    return orpo_loss(chosen_logps, rejected_logps, chosen_nll, beta_);
  }

 private:
  double beta_ = 0.1;
};

struct OrpoProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<OrpoAlgorithm>(); }
};

void register_orpo(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "orpo", ALIGNKIT_VERSION_STRING,
                          "Odds Ratio Preference Optimization, reference-free (TRL's ORPOTrainer)", orpo_settings()},
                         std::make_shared<OrpoProvider>());
}

}  // namespace
}  // namespace alignkit::pairs

ALIGNKIT_PLUGIN("orpo", ALIGNKIT_VERSION_STRING, "ORPO preference training without a reference model",
                alignkit::pairs::register_orpo)
