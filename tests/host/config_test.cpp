// Config checking and TOML: locations, did-you-mean, types, defaults, overrides.
#include <doctest/doctest.h>

#include "alignkit/config.hpp"
#include "alignkit/core/config_check.hpp"
#include "alignkit/core/toml_config.hpp"

using namespace alignkit;

namespace {

std::vector<SettingSpec> dpo_like_specs() {
  return {setting::number("beta", 0.1, "temperature", 0.0),
          setting::integer("per_device_train_batch_size", 8, "batch", 1),
          setting::number("learning_rate", 1e-6, "lr", 0.0),
          setting::text_list("loss_type", {"sigmoid"}, "losses", {"sigmoid", "ipo", "hinge"}),
          setting::required_text("algorithm", "which algorithm"),
          setting::table("data", {setting::required_text("path", "file"), setting::boolean("skip_bad_records", false, "skip")},
                         "data")};
}

std::vector<core::Diagnostic> check(const std::string& toml_text, ConfigValue& root) {
  root = core::parse_toml_text(toml_text, "p.toml");
  std::vector<core::Diagnostic> problems;
  core::check_table(*root.find("stage"), "stages.dpo", dpo_like_specs(), problems);
  return problems;
}

}  // namespace

TEST_CASE("unknown key: line, column and a did-you-mean") {
  ConfigValue root;
  auto problems = check("[stage]\nalgorithm = \"dpo\"\nlerning_rate = 1e-5\n", root);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].str() == "p.toml:3:1: stages.dpo.lerning_rate: unknown key 'lerning_rate'; did you mean 'learning_rate'?");
}

TEST_CASE("every problem is reported at once, each with its location") {
  ConfigValue root;
  auto problems = check(
      "[stage]\n"
      "beta = \"high\"\n"
      "per_device_train_batch_size = 0\n"
      "loss_type = [\"sigmoid\", \"dpo\"]\n"
      "data = { skip_bad_records = 1 }\n",
      root);
  std::string all = core::join(problems);
  CHECK(problems.size() == 6);
  CHECK(all.find("p.toml:2:1: stages.dpo.beta: expected a float, found a string") != std::string::npos);
  CHECK(all.find("p.toml:3:1: stages.dpo.per_device_train_batch_size: must be at least 1, found 0") != std::string::npos);
  CHECK(all.find("stages.dpo.loss_type: 'dpo' is not one of: sigmoid, ipo, hinge") != std::string::npos);
  CHECK(all.find("stages.dpo.data.skip_bad_records: expected a boolean, found an integer") != std::string::npos);
  CHECK(all.find("stages.dpo.data.path: missing required key") != std::string::npos);
  CHECK(all.find("stages.dpo.algorithm: missing required key") != std::string::npos);
}

TEST_CASE("defaults are filled in and integers are accepted for floats") {
  ConfigValue root;
  auto problems = check("[stage]\nalgorithm = \"dpo\"\nbeta = 1\n", root);
  CHECK(problems.empty());
  ConfigView view(root.find("stage"), "stages.dpo");
  CHECK(view.get_float("beta") == 1.0);
  CHECK(root.find("stage")->find("beta")->type == ValueType::Float);
  CHECK(view.get_float("learning_rate") == doctest::Approx(1e-6));
  CHECK(view.get_int("per_device_train_batch_size") == 8);
  CHECK(view.get_string_list("loss_type") == std::vector<std::string>{"sigmoid"});
}

TEST_CASE("ConfigView getters name the key and its location on a wrong type") {
  ConfigValue root = core::parse_toml_text("[stage]\nbeta = \"x\"\n", "p.toml");
  ConfigView view(root.find("stage"), "stages.dpo");
  CHECK_THROWS_WITH_AS(view.get_float("beta"), "p.toml:2:1: stages.dpo.beta: expected a float, found a string", ConfigError);
  CHECK_THROWS_WITH_AS(view.get_int("missing"), "p.toml:1:2: stages.dpo.missing: missing required setting", ConfigError);
  CHECK(view.locate("beta") == "p.toml:2:1: stages.dpo.beta");
}

TEST_CASE("a TOML syntax error names file, line and column") {
  CHECK_THROWS_WITH_AS(core::parse_toml_text("[run]\noutput_dir = \"x\"\nbeta = = 1\n", "bad.toml"),
                       doctest::Contains("bad.toml:3:"), ConfigError);
}

TEST_CASE("--set overrides are typed values, creating tables as needed") {
  ConfigValue root = core::parse_toml_text("[stages.dpo]\nbeta = 0.1\n", "p.toml");
  core::apply_override(root, "stages.dpo.beta=0.2");
  core::apply_override(root, "stages.dpo.loss_type=ipo");
  core::apply_override(root, "stages.dpo.loss_type2=[\"a\", \"b\"]");
  core::apply_override(root, "run.output_dir=runs/x");
  const ConfigValue* dpo = root.find("stages")->find("dpo");
  CHECK(dpo->find("beta")->type == ValueType::Float);
  CHECK(dpo->find("beta")->floating == 0.2);
  CHECK(dpo->find("loss_type")->string == "ipo");
  CHECK(dpo->find("loss_type2")->array.size() == 2);
  CHECK(root.find("run")->find("output_dir")->string == "runs/x");
  CHECK_THROWS_AS(core::apply_override(root, "no_equals_sign"), ConfigError);
  CHECK_THROWS_WITH_AS(core::apply_override(root, "stages.dpo.beta.x=1"),
                       doctest::Contains("'stages.dpo.beta' is a float, not a table"), ConfigError);
}

TEST_CASE("an override of the wrong type is caught like one in the file") {
  ConfigValue root = core::parse_toml_text("[stage]\nalgorithm = \"dpo\"\n", "p.toml");
  core::apply_override(root, "stage.beta=\"big\"");
  std::vector<core::Diagnostic> problems;
  core::check_table(*root.find("stage"), "stages.dpo", dpo_like_specs(), problems);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].str() == "--set stage.beta=\"big\": stages.dpo.beta: expected a float, found a string");
}

TEST_CASE("resolved TOML round-trips") {
  ConfigValue root = core::parse_toml_text("[run]\noutput_dir = \"r\"\n[stages.a]\nx = [1, 2]\ny = { z = true }\n", "p.toml");
  ConfigValue again = core::parse_toml_text(core::to_toml(root), "again.toml");
  CHECK(again.find("stages")->find("a")->find("x")->array[1].integer == 2);
  CHECK(again.find("stages")->find("a")->find("y")->find("z")->boolean);
}

TEST_CASE("did-you-mean stays quiet for unrelated names") {
  CHECK(core::closest_name("lerning_rate", {"learning_rate", "beta"}) == "learning_rate");
  CHECK(core::closest_name("completely_different", {"beta", "seed"}).empty());
}
