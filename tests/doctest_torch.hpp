// Force-included into every doctest translation unit (see tests/CMakeLists.txt).
// Debian's LibTorch logs through glog, whose CHECK/CHECK_EQ/... macros would
// replace doctest's and turn a failed assertion into an abort. Include glog's
// definitions first, drop them, then define doctest's.
#pragma once
#include <c10/util/Logging.h>
#undef CHECK
#undef CHECK_EQ
#undef CHECK_NE
#undef CHECK_LE
#undef CHECK_LT
#undef CHECK_GE
#undef CHECK_GT
#undef CHECK_NOTNULL
#include <doctest/doctest.h>
