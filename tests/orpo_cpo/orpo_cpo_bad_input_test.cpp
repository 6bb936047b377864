// Bad input to the orpo and cpo recipes, through the CLI: a reference model
// (neither uses one) and bad loss settings stop with exit code 2 and a message
// naming the key, before any training step.
#include "algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// No step ran: no metric line, no final model.
bool nothing_trained(const std::string& stage_dir) {
  if (fs::exists(stage_dir + "/metrics.jsonl") && !read_text(stage_dir + "/metrics.jsonl").empty()) return false;
  return !fs::exists(stage_dir + "/final");
}

struct Fixture {
  ScratchDir dir;
  Fixture() {
    make_tiny_model(dir / "base", 3);
    write_preference_jsonl(dir / "pairs.jsonl", make_pairs(8, 1));
  }
  std::string pipeline(const std::string& algorithm, const std::string& body) const {
    write_text(dir / "pipeline.toml",
               pipeline_head(dir / "run", dir / "base") +
                   stage(algorithm, "algorithm = \"" + algorithm + "\"\nmodel = \"base\"\nmax_steps = 2\ndata = { path = " +
                                        quoted(dir / "pairs.jsonl") + " }\n" + body));
    return dir / "pipeline.toml";
  }
  // Runs the CLI on `file`; returns its exit code and leaves the log in `log`.
  int run(const std::string& file, std::string& log) const {
    const int code = run_cli({"run", file}, dir / "run.log");
    log = read_text(dir / "run.log");
    return code;
  }
};

}  // namespace

TEST_CASE("an orpo or cpo stage that names a reference model stops with exit code 2: neither uses one") {
  Fixture f;
  std::string log;
  CHECK(f.run(f.pipeline("orpo", "reference = \"base\"\n"), log) == 2);
  CHECK_MESSAGE(contains(log, "stages.orpo.reference: ORPO uses no reference model"), log);
  CHECK_MESSAGE(contains(log, "pipeline.toml:"), log);
  CHECK(nothing_trained(f.dir / "run/orpo"));

  CHECK(f.run(f.pipeline("cpo", "loss_type = \"simpo\"\nreference = \"base\"\n"), log) == 2);
  CHECK_MESSAGE(contains(log, "stages.cpo.reference: CPO uses no reference model"), log);
  CHECK(nothing_trained(f.dir / "run/cpo"));
}

TEST_CASE("bad orpo and cpo settings stop with exit code 2, naming the key") {
  Fixture f;
  std::string log;
  SUBCASE("orpo beta 0") {
    CHECK(f.run(f.pipeline("orpo", "beta = 0.0\n"), log) == 2);
    CHECK_MESSAGE(contains(log, "stages.orpo.beta: must be greater than 0"), log);
    CHECK(nothing_trained(f.dir / "run/orpo"));
  }
  SUBCASE("cpo unknown loss_type") {
    CHECK(f.run(f.pipeline("cpo", "loss_type = \"kto\"\n"), log) == 2);
    CHECK_MESSAGE(contains(log, "loss_type"), log);
    CHECK_MESSAGE(contains(log, "kto"), log);
    CHECK(nothing_trained(f.dir / "run/cpo"));
  }
  SUBCASE("cpo label_smoothing above 0.5") {
    CHECK(f.run(f.pipeline("cpo", "label_smoothing = 0.75\n"), log) == 2);
    CHECK_MESSAGE(contains(log, "stages.cpo.label_smoothing: label_smoothing must lie in [0, 0.5]"), log);
    CHECK(nothing_trained(f.dir / "run/cpo"));
  }
}
