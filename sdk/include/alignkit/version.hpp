// Versions that identify this SDK, and the build fingerprint a plugin must share with the host.
#pragma once

#include <cstdint>

#define ALIGNKIT_VERSION_STRING "0.1.0"

// Raised whenever a type in these headers changes layout or a virtual function
// is added, removed or reordered: a plugin built for another value is refused.
#define ALIGNKIT_ABI_VERSION 3u

#define ALIGNKIT_STRINGIFY_IMPL(x) #x
#define ALIGNKIT_STRINGIFY(x) ALIGNKIT_STRINGIFY_IMPL(x)

#if defined(__clang__)
#define ALIGNKIT_COMPILER_ID "clang-" ALIGNKIT_STRINGIFY(__clang_major__)
#elif defined(__GNUC__)
#define ALIGNKIT_COMPILER_ID "gcc-" ALIGNKIT_STRINGIFY(__GNUC__)
#else
#define ALIGNKIT_COMPILER_ID "unknown"
#endif

#if defined(_GLIBCXX_USE_CXX11_ABI)
#define ALIGNKIT_CXX11_ABI ALIGNKIT_STRINGIFY(_GLIBCXX_USE_CXX11_ABI)
#else
#define ALIGNKIT_CXX11_ABI "n/a"
#endif

// Plugins and host share C++ types (std::string, torch::Tensor), so they must
// agree on the SDK, the standard library ABI and the compiler family. The
// LibTorch version is part of it too; the build passes it as ALIGNKIT_TORCH_VERSION
// (torch-free plugins such as the tokenizer are built with the same value).
#ifndef ALIGNKIT_TORCH_VERSION
#define ALIGNKIT_TORCH_VERSION "unknown"
#endif

#define ALIGNKIT_BUILD_FINGERPRINT                                                              \
  "alignkit-sdk=" ALIGNKIT_VERSION_STRING ";abi=" ALIGNKIT_STRINGIFY(ALIGNKIT_ABI_VERSION) \
  ";torch=" ALIGNKIT_TORCH_VERSION ";cxx11abi=" ALIGNKIT_CXX11_ABI ";compiler=" ALIGNKIT_COMPILER_ID
