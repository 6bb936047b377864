// Plugin loading: good plugins register, every kind of bad file is reported
// with its path and skipped while the others still load.
#include <doctest/doctest.h>

#include <filesystem>

#include "alignkit/core/plugin_host.hpp"
#include "alignkit/registry.hpp"
#include "alignkit/version.hpp"
#include "test_util.hpp"

using namespace alignkit;
using alignkit::test::TempDir;

namespace {

const core::PluginRecord& record_for(const core::PluginHost& host, const std::string& file_name) {
  for (const core::PluginRecord& record : host.plugins())
    if (std::filesystem::path(record.path).filename() == file_name) return record;
  FAIL("no record for " << file_name);
  throw std::logic_error("unreachable");
}

void copy_fixture(const std::string& name, const TempDir& dir) {
  std::filesystem::copy_file(test::fixture_plugin(name), dir / ("libfixture_" + name + ".so"));
}

}  // namespace

TEST_CASE("a good plugin registers its components") {
  TempDir dir;
  copy_fixture("good_components", dir);
  core::PluginHost host;
  host.load_dirs({dir.path().string()});
  REQUIRE(host.plugins().size() == 1);
  const core::PluginRecord& record = host.plugins()[0];
  CHECK(record.status == core::PluginStatus::Ok);
  CHECK(record.name == "fixture-good");
  CHECK(record.error.empty());
  CHECK(host.registry().algorithm("fixture_algo") != nullptr);
  CHECK(host.registry().backend("fixture_backend") != nullptr);
  CHECK(host.registry().info(ComponentKind::Algorithm, "fixture_algo")->settings.size() == 4);
  CHECK(host.registry().names(ComponentKind::Algorithm) == std::vector<std::string>{"fixture_algo"});
}

TEST_CASE("bad files are reported with their path and skipped; the rest still load") {
  TempDir dir;
  copy_fixture("good_components", dir);
  copy_fixture("wrong_abi", dir);
  copy_fixture("throwing_register", dir);
  copy_fixture("failing_register", dir);
  std::filesystem::copy_file(std::string(ALIGNKIT_FIXTURE_PLUGIN_DIR) + "/libfixture_no_entry.so", dir / "libno_entry.so");
  test::write_text(dir / "garbage.so", "this is not an ELF file at all, just text\n");
  test::write_text(dir / "empty.so", "");
  test::write_text(dir / "README.txt", "not a .so: ignored");

  core::PluginHost host;
  host.load_dirs({dir.path().string()});
  CHECK(host.plugins().size() == 7);

  CHECK(record_for(host, "libfixture_good_components.so").status == core::PluginStatus::Ok);
  CHECK(host.registry().algorithm("fixture_algo") != nullptr);

  const auto& wrong = record_for(host, "libfixture_wrong_abi.so");
  CHECK(wrong.status == core::PluginStatus::Error);
  CHECK(wrong.error.find(wrong.path) == 0);
  CHECK(wrong.error.find("wrong API version: plugin " + std::to_string(ALIGNKIT_ABI_VERSION + 41) + ", host " +
                         std::to_string(ALIGNKIT_ABI_VERSION)) != std::string::npos);

  const auto& throwing = record_for(host, "libfixture_throwing_register.so");
  CHECK(throwing.status == core::PluginStatus::Error);
  CHECK(throwing.error.find("deliberate failure in register") != std::string::npos);

  const auto& failing = record_for(host, "libfixture_failing_register.so");
  CHECK(failing.error.find("registration failed: no GPU found (fixture)") != std::string::npos);

  const auto& no_entry = record_for(host, "libno_entry.so");
  CHECK(no_entry.error.find("no 'alignkit_plugin_entry' symbol") != std::string::npos);

  const auto& garbage = record_for(host, "garbage.so");
  CHECK(garbage.error.find(garbage.path + ": not a shared library") == 0);

  const auto& empty = record_for(host, "empty.so");
  CHECK(empty.error == empty.path + ": empty file, not a shared library");
}

TEST_CASE("two plugins with the same component name: the second is refused, naming both files") {
  TempDir first, second;
  copy_fixture("good_components", first);
  copy_fixture("duplicate_component", second);
  core::PluginHost host;
  host.load_dirs({first.path().string(), second.path().string()});
  REQUIRE(host.plugins().size() == 2);
  const auto& duplicate = host.plugins()[1];
  CHECK(duplicate.status == core::PluginStatus::Error);
  CHECK(duplicate.error.find(duplicate.path) == 0);
  CHECK(duplicate.error.find("duplicate algorithm 'fixture_algo': already provided by " + host.plugins()[0].path) !=
        std::string::npos);
  // The first provider is the one in the registry.
  CHECK(host.provider_of(ComponentKind::Algorithm, "fixture_algo") == &host.plugins()[0]);
}

TEST_CASE("search path: --plugin-dir first, then ALIGNKIT_PLUGIN_PATH, then next to the binary") {
  setenv("ALIGNKIT_PLUGIN_PATH", "/env/one::/env/two", 1);
  std::vector<std::string> dirs = core::PluginHost::search_path({"/cli/dir"});
  unsetenv("ALIGNKIT_PLUGIN_PATH");
  REQUIRE(dirs.size() == 4);
  CHECK(dirs[0] == "/cli/dir");
  CHECK(dirs[1] == "/env/one");
  CHECK(dirs[2] == "/env/two");
  CHECK(dirs[3].find("lib/alignkit/plugins") != std::string::npos);
}

TEST_CASE("the same file found twice is loaded once") {
  TempDir dir;
  copy_fixture("good_components", dir);
  core::PluginHost host;
  host.load_dirs({dir.path().string(), dir.path().string()});
  CHECK(host.plugins().size() == 1);
  CHECK(host.plugins()[0].status == core::PluginStatus::Ok);
}
