// What differs between the LibTorch versions the distributed backend builds
// against: Debian's 1.13 (CPU, Gloo) and 2.x (CUDA, NCCL). Everything else
// uses these names only.
#pragma once

#include <torch/version.h>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

// ALIGNKIT_HAVE_NCCL is defined by plugins/distributed/CMakeLists.txt when
// LibTorch was built with CUDA and ships ProcessGroupNCCL (it also defines
// USE_C10D_NCCL, which that header requires).
#if defined(ALIGNKIT_HAVE_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace alignkit::distributed::compat {

// The class collectives are called on: 1.13 puts them on ProcessGroup,
// 2.x on Backend (a ProcessGroup dispatches to one Backend per device type).
#if TORCH_VERSION_MAJOR >= 2
using CollectiveBackend = c10d::Backend;
#else
using CollectiveBackend = c10d::ProcessGroup;
#endif

constexpr bool kHaveNccl =
#if defined(ALIGNKIT_HAVE_NCCL)
    true;
#else
    false;
#endif

}  // namespace alignkit::distributed::compat
