// Whether a model folder is a reward model (a *ForSequenceClassification with
// one label, as the `reward` algorithm saves it), for every algorithm that
// scores with the stage's `reward_model` role (PPO and later ones). Only
// config.json is read, before any weights are loaded.
#pragma once

#include <string>

#include "alignkit/training.hpp"

namespace alignkit::reward {

// Throws ConfigError "<where>: <dir> is not a reward model ..." unless
// <dir>/config.json lists a *ForSequenceClassification architecture with one
// label (`num_labels`, else the size of `id2label`). The message says how to
// train one with the `reward` algorithm. `where` locates the setting
// ("stages.ppo.reward_model").
void check_reward_model_folder(const std::string& dir, const std::string& where);

// The stage's `reward_model` folder after that check; "" when the stage names none.
std::string checked_reward_model_dir(StageContext& context);

}  // namespace alignkit::reward
