// Pure tensor maths of online RL shared by grpo, rloo and ppo: the KL
// estimators between per-token log-probs (Schulman's k1, k2, k3, as TRL and
// verl name them) and TRL's masked statistics (masked_mean, masked_var with
// Bessel's correction, masked_whiten).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace alignkit::online {

enum class KlEstimator { K1, K2, K3 };

// "k1", "k2" or "k3"; throws std::invalid_argument listing them otherwise.
KlEstimator parse_kl_estimator(const std::string& name);
const char* kl_estimator_name(KlEstimator estimator);

// Per-token estimate of KL(policy || reference) from log-probs of the sampled
// tokens, elementwise (any shape). With r = ref - logp:
//   k1 = -r = logp - ref                (unbiased, high variance, may be negative)
//   k2 = r^2 / 2                        (biased, low variance)
//   k3 = exp(r) - r - 1                 (unbiased, low variance, >= 0; GRPO's KL)
at::Tensor kl_penalty(const at::Tensor& logp, const at::Tensor& ref_logp, KlEstimator estimator);

// TRL's masked_mean: sum(values * mask) / sum(mask), over everything (dim < 0)
// or along `dim`. `mask` is bool or 0/1 of the same shape.
at::Tensor masked_mean(const at::Tensor& values, const at::Tensor& mask, int64_t dim = -1);
// TRL's masked_var: the masked mean of squared deviations, times n / (n - 1)
// when `unbiased`. Throws std::invalid_argument when the mask is empty, or
// (unbiased) holds a single element.
at::Tensor masked_var(const at::Tensor& values, const at::Tensor& mask, bool unbiased = true);
// TRL's masked_whiten: (values - mean) / sqrt(var + 1e-8) with the unbiased
// masked variance; with shift_mean = false the mean is added back.
at::Tensor masked_whiten(const at::Tensor& values, const at::Tensor& mask, bool shift_mean = true);

}  // namespace alignkit::online
