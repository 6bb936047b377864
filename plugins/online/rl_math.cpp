// KL estimators and TRL's masked statistics (see rl_math.hpp).
#include "rl_math.hpp"

#include <ATen/ATen.h>

#include <stdexcept>

namespace alignkit::online {

KlEstimator parse_kl_estimator(const std::string& name) {
  if (name == "k1") return KlEstimator::K1;
  if (name == "k2") return KlEstimator::K2;
  if (name == "k3") return KlEstimator::K3;
  throw std::invalid_argument("kl estimator: expected \"k1\", \"k2\" or \"k3\", found \"" + name + "\"");
}

const char* kl_estimator_name(KlEstimator estimator) {
  switch (estimator) {
    case KlEstimator::K1: return "k1";
    case KlEstimator::K2: return "k2";
    case KlEstimator::K3: return "k3";
  }
  return "?";
}

at::Tensor kl_penalty(const at::Tensor& logp, const at::Tensor& ref_logp, KlEstimator estimator) {
  at::Tensor log_ratio = ref_logp - logp;  // log(p_ref / p)
  switch (estimator) {
    case KlEstimator::K1: return -log_ratio;
    case KlEstimator::K2: return 0.5 * log_ratio * log_ratio;
    case KlEstimator::K3: return at::exp(log_ratio) - log_ratio - 1;
  }
  throw std::invalid_argument("kl_penalty: unknown estimator");
}

at::Tensor masked_mean(const at::Tensor& values, const at::Tensor& mask, int64_t dim) {
  at::Tensor weights = mask.to(values.scalar_type());
  if (dim < 0) return (values * weights).sum() / weights.sum();
  return (values * weights).sum(dim) / weights.sum(dim);
}

at::Tensor masked_var(const at::Tensor& values, const at::Tensor& mask, bool unbiased) {
  const double count = mask.to(at::kDouble).sum().item<double>();
  if (count == 0) throw std::invalid_argument("masked_var: the mask selects no elements");
  at::Tensor centered = values - masked_mean(values, mask);
  at::Tensor variance = masked_mean(centered * centered, mask);
  if (!unbiased) return variance;
  if (count == 1)
    throw std::invalid_argument("masked_var: the unbiased variance of a single element is undefined");
  return variance * (count / (count - 1));
}

at::Tensor masked_whiten(const at::Tensor& values, const at::Tensor& mask, bool shift_mean) {
  at::Tensor mean = masked_mean(values, mask);
  at::Tensor whitened = (values - mean) * at::rsqrt(masked_var(values, mask) + 1e-8);
  return shift_mean ? whitened : whitened + mean;
}

}  // namespace alignkit::online
