// The `cpo` algorithm plugin: TRL's CPOTrainer as a recipe, SimPO included.
// Contrastive Preference Optimization is DPO without a reference model plus
// an NLL term on the chosen rows (weight cpo_alpha); loss_type = "simpo" with
// cpo_alpha = 0 is SimPO (length-averaged log-probs, target margin simpo_gamma).
#include "alignkit/plugin.hpp"
#include "cpo_loss.hpp"
#include "pair_recipe.hpp"

namespace alignkit::cpo {
namespace {

std::vector<SettingSpec> cpo_settings() {
  std::vector<SettingSpec> settings = {
      setting::number("learning_rate", 1e-6, "peak learning rate of AdamW (TRL's CPO default)", 0.0),
      setting::number("beta", 0.1, "scale of the log-prob difference (must be > 0)", 0.0),
      setting::text("loss_type", "sigmoid",
                    "sigmoid or hinge (summed log-probs); ipo or simpo (log-probs averaged per token)",
                    cpo_loss_type_names()),
      setting::number("simpo_gamma", 0.5, "target reward margin of loss_type simpo"),
      setting::number("cpo_alpha", 1.0, "weight of the NLL of the chosen rows (0 for pure SimPO)", 0.0),
      setting::number("label_smoothing", 0.0, "assumed share of flipped labels, sigmoid and simpo (<= 0.5)", 0.0),
  };
  for (SettingSpec& spec : pairs::pair_truncation_settings()) settings.push_back(std::move(spec));
  return settings;
}

class CpoAlgorithm : public pairs::ReferenceFreePairRecipe {
 public:
  CpoAlgorithm() : ReferenceFreePairRecipe("CPO", "cpo") {}

 protected:
  void read_loss_settings(StageContext& context) override {
    const ConfigView& settings = context.settings();
    settings_.loss_type = parse_cpo_loss_type(settings.get_string("loss_type"));
    settings_.beta = settings.get_float("beta");
    settings_.simpo_gamma = settings.get_float("simpo_gamma");
    settings_.cpo_alpha = settings.get_float("cpo_alpha");
    settings_.label_smoothing = settings.get_float("label_smoothing");
    try {
      validate(settings_);
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      const char* key = message.rfind("beta", 0) == 0              ? "beta"
                        : message.rfind("label_smoothing", 0) == 0 ? "label_smoothing"
                                                                   : "cpo_alpha";
      throw ConfigError(settings.locate(key) + ": " + message);
    }
    // TRL warns and ignores it too.
    if (settings_.label_smoothing > 0 && !uses_label_smoothing(settings_.loss_type))
      context.log("warning: " + settings.locate("label_smoothing") + " is ignored by loss_type " +
                  settings.get_string("loss_type"));
  }
  bool averages_logps() const override { return cpo::averages_logps(settings_.loss_type); }
  pairs::PairLossOutput loss(const at::Tensor& chosen_logps, const at::Tensor& rejected_logps,
                             const at::Tensor& chosen_nll) override {
    return cpo_loss(chosen_logps, rejected_logps, chosen_nll, settings_);
  }

 private:
  CpoSettings settings_;
};

struct CpoProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<CpoAlgorithm>(); }
};

void register_cpo(Registry& registry) {
  registry.add_algorithm({ComponentKind::Algorithm, "cpo", ALIGNKIT_VERSION_STRING,
                          "Contrastive Preference Optimization and SimPO, reference-free (TRL's CPOTrainer)",
                          cpo_settings()},
                         std::make_shared<CpoProvider>());
}

}  // namespace
}  // namespace alignkit::cpo

ALIGNKIT_PLUGIN("cpo", ALIGNKIT_VERSION_STRING, "CPO and SimPO preference training without a reference model",
                alignkit::cpo::register_cpo)
