// Data parallelism changes nothing but the speed: DPO on 2 processes with
// per-device batch B ends with the same weights (max |diff| <= 1e-5) and the
// same loss curve as 1 process with batch 2B, both started by `alignkit launch`.
#include "dist_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

TEST_CASE("dpo on 2 processes x batch 4 matches 1 process x batch 8") {
  ScratchDir dir;
  write_dpo_pipeline(dir, "one", 8);
  write_dpo_pipeline(dir, "two", 4);
  const auto deadline = [] { return std::chrono::steady_clock::now() + std::chrono::seconds(120); };

  Process one(launch_args(1, free_port(), dir / "one.toml"), {}, dir / "one.log");
  REQUIRE_MESSAGE(one.wait_until(deadline()) == 0, one.log());
  Process two(launch_args(2, free_port(), dir / "two.toml"), {}, dir / "two.log");
  REQUIRE_MESSAGE(two.wait_until(deadline()) == 0, two.log());
  MESSAGE("1 process: " << one.seconds_alive() << " s, 2 processes: " << two.seconds_alive() << " s");

  const std::string log = two.log();
  CHECK(contains(log, "[rank 0] "));
  CHECK(contains(log, "[rank 1] "));
  CHECK(contains(log, "gloo process group of 2 rank(s) ready"));
  CHECK(contains(log, "(8 examples a step)"));

  const double weights = max_weight_difference(dir / "one/dpo/final/model.safetensors", dir / "two/dpo/final/model.safetensors");
  MESSAGE("max |weight difference| " << weights);
  CHECK(weights <= 1e-5);
  // The weights moved, so the comparison is not between two untouched copies.
  CHECK(max_weight_difference(dir / "one/dpo/final/model.safetensors", dir / "base/model.safetensors") > 1e-3);
  MESSAGE("max |loss or metric difference| " << max_loss_difference(dir / "one/dpo", dir / "two/dpo", 1e-5));

  // The reference table, computed shard by shard and gathered, equals the single-process one.
  CHECK(max_weight_difference(dir / "one/dpo/ref_logps.safetensors", dir / "two/dpo/ref_logps.safetensors") <= 1e-5);
}
