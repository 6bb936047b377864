// The plugin ABI: one exported C entry returning a constant descriptor.
//
//   ALIGNKIT_PLUGIN("my-plugin", "1.0.0", "What it adds", register_my_plugin)
//
// where `void register_my_plugin(alignkit::Registry&)` adds components. The
// host reads the entry symbol without running plugin code, checks the ABI
// version, descriptor size and build fingerprint, and only then calls the
// register function. Exceptions never cross: the macro catches them and
// returns the message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>

#include "alignkit/registry.hpp"
#include "alignkit/version.hpp"

#define ALIGNKIT_PLUGIN_ENTRY_SYMBOL "alignkit_plugin_entry"
// A plugin that exports this symbol is opened with RTLD_LOCAL | RTLD_DEEPBIND,
// for libraries that carry their own copy of a dependency the host also has.
#define ALIGNKIT_PLUGIN_ISOLATION_SYMBOL "alignkit_plugin_isolated"

extern "C" {

// Returns 0 on success; otherwise writes a message into `error` (always terminated).
typedef int (*alignkit_register_fn)(alignkit::Registry* registry, char* error, size_t error_size);

struct alignkit_plugin_descriptor {
  uint32_t abi_version;      // ALIGNKIT_ABI_VERSION; checked before any other field is read
  uint32_t descriptor_size;  // sizeof(alignkit_plugin_descriptor) of the plugin's SDK
  const char* name;
  const char* version;
  const char* description;
  const char* build_fingerprint;  // ALIGNKIT_BUILD_FINGERPRINT
  alignkit_register_fn register_components;
};

typedef const alignkit_plugin_descriptor* (*alignkit_plugin_entry_fn)(void);
}

#define ALIGNKIT_EXPORT __attribute__((visibility("default")))

namespace alignkit::detail {
template <typename Fn>
int call_register(Fn&& fn, Registry* registry, char* error, size_t error_size) noexcept {
  auto report = [&](const char* message) {
    if (error && error_size > 0) {
      std::strncpy(error, message, error_size - 1);
      error[error_size - 1] = '\0';
    }
  };
  try {
    fn(*registry);
    return 0;
  } catch (const std::exception& e) {
    report(e.what());
  } catch (...) {
    report("unknown exception");
  }
  return 1;
}
}  // namespace alignkit::detail

#define ALIGNKIT_PLUGIN(NAME, VERSION, DESCRIPTION, REGISTER_FUNCTION)                                   \
  extern "C" {                                                                                            \
  static int alignkit_register_trampoline(alignkit::Registry* registry, char* error, size_t size) {       \
    return alignkit::detail::call_register(REGISTER_FUNCTION, registry, error, size);                     \
  }                                                                                                       \
  ALIGNKIT_EXPORT const alignkit_plugin_descriptor* alignkit_plugin_entry(void) {                         \
    static const alignkit_plugin_descriptor descriptor = {                                                \
        ALIGNKIT_ABI_VERSION,  sizeof(alignkit_plugin_descriptor), NAME, VERSION, DESCRIPTION,            \
        ALIGNKIT_BUILD_FINGERPRINT, &alignkit_register_trampoline};                                       \
    return &descriptor;                                                                                   \
  }                                                                                                       \
  }

// Put next to ALIGNKIT_PLUGIN in a plugin that must be opened in isolation.
#define ALIGNKIT_PLUGIN_ISOLATED() \
  extern "C" ALIGNKIT_EXPORT const int alignkit_plugin_isolated = 1;
