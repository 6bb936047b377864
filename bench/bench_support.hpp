// What the C++ benchmarks share: the BLAS check, medians, and parsing of
// positive-integer flags.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace alignkit::bench {

// LibTorch is ~24x slower on the reference BLAS (see notes/platform.md).
inline std::string blas_provider() {
  std::error_code error;
  auto resolved = std::filesystem::canonical("/usr/lib/x86_64-linux-gnu/libblas.so.3", error);
  return error ? "unknown" : resolved.string();
}

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

// The value of `flag`, which must be a positive integer.
inline int64_t positive_integer(const std::string& flag, const std::string& value) {
  size_t used = 0;
  const int64_t parsed = std::stoll(value, &used);
  if (used != value.size() || parsed <= 0) throw std::runtime_error(flag + " wants a positive integer, got " + value);
  return parsed;
}

}  // namespace alignkit::bench
