// The CLI's messages and exit codes (0 ok, 1 runtime failure, 2 usage/config).
#include <doctest/doctest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_util.hpp"

using alignkit::test::TempDir;
using alignkit::test::run_command;

namespace {

std::string cli() { return ALIGNKIT_CLI; }

// A plugin folder with the good fixture and a broken one.
void make_plugin_dir(const TempDir& dir) {
  std::filesystem::copy_file(alignkit::test::fixture_plugin("good_components"), dir / "libgood.so");
  std::filesystem::copy_file(alignkit::test::fixture_plugin("wrong_abi"), dir / "libfuture.so");
}

const char* kPipeline =
    "[run]\n"
    "output_dir = \"OUT\"\n"
    "[models.base]\n"
    "path = \"m\"\n"
    "[stages.sft]\n"
    "algorithm = \"fixture_algo\"\n"
    "backend = \"fixture_backend\"\n"
    "model = \"base\"\n";

std::string pipeline_text(const TempDir& dir, const std::string& extra = "") {
  std::string text = kPipeline;
  text.replace(text.find("OUT"), 3, dir / "runs");
  return text + extra;
}

}  // namespace

TEST_CASE("alignkit --version and --help") {
  auto version = run_command(cli() + " --version");
  CHECK(version.exit_code == 0);
  CHECK(version.output.find("alignkit 0.1.0") != std::string::npos);
  CHECK(version.output.find("sdk abi") != std::string::npos);
  CHECK(version.output.find("libtorch") != std::string::npos);
  for (const char* command : {"run", "validate", "plugins list", "plugins info"}) {
    auto help = run_command(cli() + " " + command + " --help");
    CHECK_MESSAGE(help.exit_code == 0, command);
    CHECK_MESSAGE(help.output.find("usage: alignkit") != std::string::npos, command);
  }
  CHECK(run_command(cli() + " frobnicate").exit_code == 2);
  CHECK(run_command(cli() + " validate").exit_code == 2);  // missing pipeline
}

TEST_CASE("validate: an unknown key prints line, column and did-you-mean, and exits 2") {
  TempDir dir;
  make_plugin_dir(dir);
  alignkit::test::write_text(dir / "p.toml", pipeline_text(dir, "bta = 0.5\n"));
  auto result = run_command(cli() + " validate " + (dir / "p.toml") + " --plugin-dir " + dir.path().string());
  CHECK(result.exit_code == 2);
  CHECK(result.output.find(dir / "p.toml" + ":9:1: stages.sft.bta: unknown key 'bta'; did you mean 'beta'?") !=
        std::string::npos);
}

TEST_CASE("validate and run accept typed --set overrides") {
  TempDir dir;
  make_plugin_dir(dir);
  alignkit::test::write_text(dir / "p.toml", pipeline_text(dir));
  std::string base = cli() + " validate " + (dir / "p.toml") + " --plugin-dir " + dir.path().string();
  CHECK(run_command(base + " --set stages.sft.beta=0.2").exit_code == 0);
  auto bad = run_command(base + " --set stages.sft.beta=-1");
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("stages.sft.beta: must be at least 0, found -1") != std::string::npos);

  auto run = run_command(cli() + " run " + (dir / "p.toml") + " --plugin-dir " + dir.path().string() +
                         " --set stages.sft.message=\\\"hi\\\"");
  CHECK(run.exit_code == 0);
  CHECK(alignkit::test::read_text(dir / "runs/sft/final/message.txt") == "hi");
}

TEST_CASE("a TOML syntax error exits 2 with file:line:col") {
  TempDir dir;
  alignkit::test::write_text(dir / "p.toml", "[run]\noutput_dir = \n");
  auto result = run_command(cli() + " validate " + (dir / "p.toml"));
  CHECK(result.exit_code == 2);
  CHECK(result.output.find(dir / "p.toml" + ":2:") != std::string::npos);
}

TEST_CASE("run stops with exit code 2 before any work when the pipeline needs a broken plugin") {
  TempDir dir;
  make_plugin_dir(dir);
  alignkit::test::write_text(dir / "p.toml", pipeline_text(dir, "[stages.x]\nalgorithm = \"future\"\nbackend = \"fixture_backend\"\nmodel = \"base\"\n"));
  auto result = run_command(cli() + " run " + (dir / "p.toml") + " --plugin-dir " + dir.path().string());
  CHECK(result.exit_code == 2);
  CHECK(result.output.find("stages.x.algorithm: no algorithm plugin named 'future' (its plugin failed to load: ") !=
        std::string::npos);
  CHECK(result.output.find("wrong API version") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "runs"));
}

TEST_CASE("plugins list --json reports every plugin with its status") {
  TempDir dir;
  make_plugin_dir(dir);
  auto result = run_command(cli() + " plugins list --json --plugin-dir " + dir.path().string() + " 2>/dev/null");
  REQUIRE(result.exit_code == 0);
  auto list = nlohmann::json::parse(result.output);
  bool saw_good = false, saw_bad = false;
  for (const auto& plugin : list) {
    for (const char* key : {"name", "kind", "version", "path", "status", "error"}) CHECK(plugin.contains(key));
    if (plugin["path"] == dir / "libgood.so") {
      saw_good = true;
      CHECK(plugin["status"] == "ok");
      CHECK(plugin["name"] == "fixture-good");
      CHECK(plugin["kind"] == "algorithm,backend");
    }
    if (plugin["path"] == dir / "libfuture.so") {
      saw_bad = true;
      CHECK(plugin["status"] == "error");
      CHECK(plugin["error"].get<std::string>().find("wrong API version") != std::string::npos);
    }
  }
  CHECK(saw_good);
  CHECK(saw_bad);
}

TEST_CASE("plugins info shows settings with types, defaults and docs") {
  TempDir dir;
  make_plugin_dir(dir);
  auto result = run_command(cli() + " plugins info fixture_algo --plugin-dir " + dir.path().string());
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("beta") != std::string::npos);
  CHECK(result.output.find("a float") != std::string::npos);
  CHECK(result.output.find("a non-negative float") != std::string::npos);
  CHECK(run_command(cli() + " plugins info fixture_algx --plugin-dir " + dir.path().string()).exit_code == 2);
}
