// The pipeline graph: checking against plugins, ordering, cycles, stage folders,
// the resolved file, and skipping finished stages.
#include <doctest/doctest.h>

#include <filesystem>

#include "alignkit/core/pipeline.hpp"
#include "alignkit/core/plugin_host.hpp"
#include "alignkit/core/runner.hpp"
#include "test_util.hpp"

using namespace alignkit;
using alignkit::test::TempDir;

namespace {

core::PluginHost& fixture_host() {
  static core::PluginHost host;
  static bool loaded = false;
  if (!loaded) {
    host.load_file(test::fixture_plugin("good_components"));
    host.load_file(test::fixture_plugin("throwing_register"));
    loaded = true;
  }
  return host;
}

std::vector<core::Diagnostic> resolve(const TempDir& dir, const std::string& text, core::Pipeline& pipeline,
                                      const std::vector<std::string>& overrides = {}) {
  test::write_text(dir / "p.toml", text);
  pipeline = core::Pipeline::load(dir / "p.toml", overrides);
  return pipeline.resolve(fixture_host());
}

std::string stage_block(const std::string& name, const std::string& model, const std::string& extra = "") {
  return "[stages." + name + "]\nalgorithm = \"fixture_algo\"\nbackend = \"fixture_backend\"\nmodel = \"" + model +
         "\"\n" + extra;
}

}  // namespace

TEST_CASE("stages are ordered by their output edges and get folders under output_dir") {
  TempDir dir;
  core::Pipeline pipeline;
  std::string out = dir / "runs";
  auto problems = resolve(dir,
                          "[run]\noutput_dir = \"" + out + "\"\n[models.base]\npath = \"models/tiny\"\n" +
                              stage_block("dpo", "stages.sft.output", "reference = \"stages.sft.output\"\n") +
                              stage_block("sft", "base"),
                          pipeline);
  REQUIRE(core::join(problems) == "");
  REQUIRE(pipeline.stages().size() == 2);
  CHECK(pipeline.stages()[0].name == "sft");
  CHECK(pipeline.stages()[1].name == "dpo");
  CHECK(pipeline.stages()[1].depends_on == std::vector<std::string>{"sft"});
  CHECK(pipeline.stages()[1].model_dirs.at("model") == out + "/sft/final");
  CHECK(pipeline.stages()[0].model_dirs.at("model") == "models/tiny");
  CHECK(pipeline.stages()[0].dir == out + "/sft");
  // Defaults are filled in: the algorithm's and the backend's.
  CHECK(pipeline.stage_settings("sft").get_float("beta") == doctest::Approx(0.1));
  CHECK(pipeline.stage_settings("sft").get_float("learning_rate") == doctest::Approx(1e-4));
  CHECK(pipeline.stage_settings("sft").get_int("seed") == 42);
}

TEST_CASE("a cycle is reported with its stages in order") {
  TempDir dir;
  core::Pipeline pipeline;
  auto problems = resolve(dir,
                          "[run]\noutput_dir = \"r\"\n" + stage_block("a", "stages.c.output") +
                              stage_block("b", "stages.a.output") + stage_block("c", "stages.b.output"),
                          pipeline);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].message == "cycle in the pipeline graph: stages.a -> stages.c -> stages.b -> stages.a");
  CHECK(problems[0].where.line > 0);
}

TEST_CASE("unknown stage, unknown model, unknown plugin and unknown key are all listed together") {
  TempDir dir;
  core::Pipeline pipeline;
  auto problems = resolve(dir,
                          "[run]\noutput_dir = \"r\"\n[models.base]\npath = \"m\"\n" +
                              stage_block("sft", "bsae", "bta = 0.2\n") +
                              stage_block("dpo", "stages.sfx.output") +
                              "[stages.ppo]\nalgorithm = \"fixture_algx\"\nmodel = \"base\"\n",
                          pipeline);
  std::string all = core::join(problems);
  CHECK(all.find("p.toml:9:1: stages.sft.bta: unknown key 'bta'; did you mean 'beta'?") != std::string::npos);
  CHECK(all.find("stages.sft.model: 'bsae' is neither a [models] entry nor \"stages.NAME.output\"; did you mean 'base'?") !=
        std::string::npos);
  CHECK(all.find("stages.dpo.model: unknown stage 'sfx'; did you mean 'sft'?") != std::string::npos);
  CHECK(all.find("stages.ppo.algorithm: no algorithm plugin named 'fixture_algx'; did you mean 'fixture_algo'?") !=
        std::string::npos);
  CHECK(all.find("stages.ppo.backend: no backend plugin named 'local'") != std::string::npos);
  CHECK(pipeline.stages().empty());
}

TEST_CASE("a stage that needs a plugin that failed to load says why") {
  TempDir dir;
  core::Pipeline pipeline;
  auto problems = resolve(dir, "[run]\noutput_dir = \"r\"\n[stages.x]\nalgorithm = \"fixture-throwing\"\nbackend = \"fixture_backend\"\nmodel = \"m\"\n[models.m]\npath = \"p\"\n", pipeline);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].message.find("its plugin failed to load") != std::string::npos);
  CHECK(problems[0].message.find("deliberate failure in register") != std::string::npos);
}

TEST_CASE("missing [run] and unknown top-level tables are reported") {
  TempDir dir;
  core::Pipeline pipeline;
  auto problems = resolve(dir, "[runn]\noutput_dir = \"r\"\n" + stage_block("a", "m") + "[models.m]\npath = \"p\"\n", pipeline);
  std::string all = core::join(problems);
  CHECK(all.find("runn: unknown top-level table; did you mean 'run'?") != std::string::npos);
  CHECK(all.find("run: missing the [run] table") != std::string::npos);
}

TEST_CASE("run: resolved file, stage folders, DONE markers, and skipping finished stages") {
  TempDir dir;
  core::Pipeline pipeline;
  std::string out = dir / "runs";
  std::string text = "[run]\noutput_dir = \"" + out + "\"\n[models.base]\npath = \"m\"\n" +
                     stage_block("first", "base", "message = \"one\"\n") +
                     stage_block("second", "stages.first.output", "message = \"two\"\n");
  REQUIRE(resolve(dir, text, pipeline).empty());
  CHECK(core::run_pipeline(pipeline, fixture_host(), {}) == core::RunOutcome::Completed);
  CHECK(test::read_text(out + "/first/final/message.txt") == "one");
  CHECK(test::read_text(out + "/second/final/message.txt") == "two");
  CHECK(std::filesystem::exists(out + "/first/DONE"));
  std::string resolved = test::read_text(out + "/pipeline.resolved.toml");
  CHECK(resolved.find("learning_rate = 0.0001") != std::string::npos);  // a default written out

  // Same pipeline again: both stages are skipped.
  REQUIRE(resolve(dir, text, pipeline).empty());
  core::run_pipeline(pipeline, fixture_host(), {});
  CHECK(test::read_text(out + "/first/runs.txt") == "1");
  CHECK(test::read_text(out + "/second/runs.txt") == "1");

  // A changed setting reruns that stage and the stages after it, not the ones before.
  REQUIRE(resolve(dir, text, pipeline, {"stages.second.message=\"three\""}).empty());
  core::run_pipeline(pipeline, fixture_host(), {});
  CHECK(test::read_text(out + "/first/runs.txt") == "1");
  CHECK(test::read_text(out + "/second/final/message.txt") == "three");
  // The old results are kept beside, not deleted.
  CHECK(test::read_text(out + "/second.old-1/final/message.txt") == "two");
}
