// Faults of a data-parallel run on CPU/Gloo, with the fixture_regression
// algorithm: a rank killed or stalled mid-run, a rank that never arrives, a
// NaN on one rank, SIGTERM agreement, resume across world sizes, the
// launcher's supervision, and bad launch environments (exit 2, no work).
#include "dist_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

constexpr double kTimeout = 4.0;  // collective_timeout and store_timeout of these runs, seconds

std::string timeouts() {
  return "collective_timeout = " + std::to_string(kTimeout) + "\nstore_timeout = " + std::to_string(kTimeout) + "\n";
}

// Starts ranks 0..world-1 (those in `ranks`) of `pipeline` directly, as torchrun would.
std::vector<std::unique_ptr<Process>> start_ranks(const ScratchDir& dir, const std::string& pipeline, int world,
                                                  int port, const std::vector<int>& ranks) {
  std::vector<std::unique_ptr<Process>> processes;
  for (int rank : ranks)
    processes.push_back(std::make_unique<Process>(run_args(dir / (pipeline + ".toml")), rank_env(rank, world, port),
                                                  dir / (pipeline + ".rank" + std::to_string(rank) + ".log")));
  return processes;
}

// Waits until `path` exists (or `deadline_seconds` pass); false if not.
bool wait_for_file(const std::string& path, double deadline_seconds) {
  const auto start = std::chrono::steady_clock::now();
  while (!fs::exists(path) && seconds_since(start) < deadline_seconds)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return fs::exists(path);
}

void check_survivors_fail(std::vector<std::unique_ptr<Process>>& processes, const std::vector<int>& survivors,
                          std::chrono::steady_clock::time_point fault, const std::string& missing) {
  for (int rank : survivors) {
    Process& process = *processes[static_cast<size_t>(rank)];
    CAPTURE(rank);
    const int code = process.wait_until(fault + std::chrono::seconds(static_cast<int>(kTimeout) + 10));
    const std::string log = process.log();
    INFO(log);
    REQUIRE_MESSAGE(code != -1, "still running " << kTimeout + 10 << " s after the fault");
    CHECK(code != 0);
    const double took = std::chrono::duration<double>(process.ended_at() - fault).count();
    MESSAGE("rank " << rank << " exited with " << code << " " << took << " s after the fault");
    CHECK(took <= kTimeout + 10);
    // The message names the operation and the missing rank.
    CHECK((contains(log, "all_reduce") || contains(log, "barrier") || contains(log, "broadcast")));
    CHECK(contains(log, missing));
  }
}

}  // namespace

TEST_CASE("with 3 ranks, killing one makes the other two exit non-zero in time, naming the operation and the rank") {
  ScratchDir dir;
  write_fixture_pipeline(dir, "killed", "max_steps = 100000\nstep_sleep_ms = 20\n" + timeouts());
  auto processes = start_ranks(dir, "killed", 3, free_port(), {0, 1, 2});
  REQUIRE_MESSAGE(wait_for_file(dir / "killed/fit/metrics.jsonl", 60), processes[0]->log());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto fault = std::chrono::steady_clock::now();
  processes[2]->signal(SIGKILL);
  check_survivors_fail(processes, {0, 1}, fault, "missing rank(s): 2");
  CHECK_FALSE(fs::exists(dir / "killed/fit/final"));
  CHECK(core::list_committed_checkpoints(dir / "killed/fit").empty());
}

TEST_CASE("with 3 ranks, a stalled rank makes the other two time out, naming the operation and the rank") {
  ScratchDir dir;
  write_fixture_pipeline(dir, "stalled", "max_steps = 100000\nstep_sleep_ms = 20\n" + timeouts());
  auto processes = start_ranks(dir, "stalled", 3, free_port(), {0, 1, 2});
  REQUIRE_MESSAGE(wait_for_file(dir / "stalled/fit/metrics.jsonl", 60), processes[0]->log());
  const auto fault = std::chrono::steady_clock::now();
  processes[1]->signal(SIGSTOP);
  check_survivors_fail(processes, {0, 2}, fault, "missing rank(s): 1");
  for (int rank : {0, 2}) CHECK(contains(processes[static_cast<size_t>(rank)]->log(), "timed out"));
  processes[1]->signal(SIGKILL);
}

TEST_CASE("a rendezvous where one rank never arrives times out with a clear message") {
  ScratchDir dir;
  write_fixture_pipeline(dir, "absent", "max_steps = 3\n" + timeouts());
  const auto start = std::chrono::steady_clock::now();
  auto processes = start_ranks(dir, "absent", 3, free_port(), {0, 1});
  for (auto& process : processes) {
    const int code = process->wait_until(start + std::chrono::seconds(static_cast<int>(kTimeout) + 20));
    const std::string log = process->log();
    INFO(log);
    CHECK(code != 0);
    CHECK(code != -1);
    CHECK(contains(log, "rendezvous"));
    CHECK(contains(log, "rank(s) 2 never arrived"));
  }
}

TEST_CASE("a NaN loss on one rank makes every rank skip that step") {
  ScratchDir dir;
  write_fixture_pipeline(dir, "nan", "max_steps = 6\nnan_rank = 1\nnan_step = 3\n" + timeouts());
  auto processes = start_ranks(dir, "nan", 2, free_port(), {0, 1});
  for (auto& process : processes) {
    INFO(process->log());
    REQUIRE(process->wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(90)) == 0);
    // Rank 0 saw a finite loss and gradient; it skips only because the decision is shared.
    CHECK(contains(process->log(), "step 3: non-finite loss or gradient norm; update skipped"));
  }
  const MetricRows rows = read_metrics(dir / "nan/fit", "train");
  REQUIRE(rows.size() == 6);
  CHECK_FALSE(rows.at(2).contains("skipped_steps"));
  CHECK(rows.at(3).at("skipped_steps").get<double>() == 1.0);
  CHECK(rows.at(6).at("skipped_steps").get<double>() == 1.0);
  auto weights = core::load_safetensors(dir / "nan/fit/final/model.safetensors");
  CHECK(at::isfinite(weights.at("weights")).all().item<bool>());
}

TEST_CASE("SIGTERM on one rank: every rank stops after the same step, saves, and exits 75") {
  ScratchDir dir;
  write_fixture_pipeline(dir, "term", "max_steps = 100000\nstep_sleep_ms = 20\n" + timeouts());
  auto processes = start_ranks(dir, "term", 2, free_port(), {0, 1});
  REQUIRE_MESSAGE(wait_for_file(dir / "term/fit/metrics.jsonl", 60), processes[0]->log());
  processes[1]->signal(SIGTERM);
  for (auto& process : processes) {
    INFO(process->log());
    CHECK(process->wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(30)) == 75);
  }
  const auto committed = core::list_committed_checkpoints(dir / "term/fit");
  REQUIRE(committed.size() == 1);
  for (int rank : {0, 1}) {
    auto state = core::SafetensorsFile::open(committed[0].path + "/rng_state_" + std::to_string(rank) + ".safetensors");
    CHECK(state->metadata().at("micro_batches") == std::to_string(committed[0].step));
  }
}

TEST_CASE("the launcher: prefixed output; SIGTERM saves on every rank; resume; world-size change refused") {
  ScratchDir dir;
  write_fixture_pipeline(dir, "preempt", "max_steps = 100000\nstep_sleep_ms = 20\n" + timeouts());
  const int port = free_port();
  {
    Process launcher({ALIGNKIT_CLI, "launch", "--nproc-per-node", "2", "--master-port", std::to_string(port), "--",
                      "run", dir / "preempt.toml", "--plugin-dir", fixture_plugin_dir()},
                     {}, dir / "launch.log");
    REQUIRE_MESSAGE(wait_for_file(dir / "preempt/fit/metrics.jsonl", 60), launcher.log());
    launcher.signal(SIGTERM);
    const int code = launcher.wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(30));
    const std::string log = launcher.log();
    INFO(log);
    CHECK(code == 75);  // preempted after saving
    CHECK(contains(log, "[rank 0] "));
    CHECK(contains(log, "[rank 1] "));
    CHECK(contains(log, "forwarding"));
  }
  const auto committed = core::list_committed_checkpoints(dir / "preempt/fit");
  REQUIRE(committed.size() == 1);
  CHECK(fs::exists(committed[0].path + "/rng_state_0.safetensors"));
  CHECK(fs::exists(committed[0].path + "/rng_state_1.safetensors"));

  // One process cannot resume two processes' checkpoint unless allowed.
  const std::string pipeline = dir / "preempt.toml";
  Process single(run_args(pipeline), {{"MASTER_PORT", std::to_string(free_port())}}, dir / "single.log");
  const int single_code = single.wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(60));
  INFO(single.log());
  CHECK(single_code == 2);
  CHECK(contains(single.log(), "allow_world_size_change"));

  // Allowed, it continues from the checkpoint (to the stop signal sent once it runs).
  Process allowed({ALIGNKIT_CLI, "run", pipeline, "--plugin-dir", fixture_plugin_dir(), "--set",
                   "stages.fit.allow_world_size_change=true"},
                  {{"MASTER_PORT", std::to_string(free_port())}}, dir / "allowed.log");
  const auto started = std::chrono::steady_clock::now();
  while (!contains(allowed.log(), "resuming from") && !allowed.ended() && seconds_since(started) < 60)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  allowed.signal(SIGTERM);
  const int allowed_code = allowed.wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(30));
  INFO(allowed.log());
  CHECK(contains(allowed.log(), "resuming a checkpoint of 2 process(es) with 1"));
  CHECK(allowed_code == 75);
}

TEST_CASE("the launcher stops the other workers when one fails and exits with its code") {
  ScratchDir dir;
  write_fixture_pipeline(dir, "failing", "max_steps = 50\nfail_rank = 1\n" + timeouts());
  const auto start = std::chrono::steady_clock::now();
  Process launcher({ALIGNKIT_CLI, "launch", "--nproc-per-node", "2", "--master-port", std::to_string(free_port()),
                    "--grace-seconds", "5", "--", "run", dir / "failing.toml", "--plugin-dir", fixture_plugin_dir()},
                   {}, dir / "launch.log");
  const int code = launcher.wait_until(start + std::chrono::seconds(60));
  const std::string log = launcher.log();
  INFO(log);
  CHECK(code == 1);
  CHECK(contains(log, "[rank 1] "));
  CHECK(contains(log, "failing on purpose on rank 1"));
  CHECK(contains(log, "rank 1 exited with code 1"));
}

TEST_CASE("bad launch environments are configuration errors (exit 2) before any work") {
  ScratchDir dir;
  write_fixture_pipeline(dir, "bad", "max_steps = 2\n" + timeouts());
  const int port = free_port();
  // A port in use: something listens there.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = 0;
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(listener, 1) == 0);
  socklen_t length = sizeof address;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  const int busy_port = ntohs(address.sin_port);

  struct Case {
    const char* what;
    Env env;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"WORLD_SIZE without RANK", {{"WORLD_SIZE", "2"}}, "WORLD_SIZE is set but RANK is not"},
      {"rank outside the world", rank_env(3, 2, port), "outside the world of 2 process(es)"},
      {"port in use", rank_env(0, 2, busy_port), "is already in use"},
      {"unresolvable address",
       {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "no-such-host.invalid"}, {"MASTER_PORT", "29999"}},
       "MASTER_ADDR=no-such-host.invalid does not resolve"},
      {"non-numeric rank", {{"RANK", "one"}, {"WORLD_SIZE", "2"}}, "RANK=one"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    CAPTURE(c.what);
    Process process(run_args(dir / "bad.toml"), c.env, dir / ("bad-" + std::to_string(i) + ".log"));
    const int code = process.wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(30));
    INFO(process.log());
    CHECK(code == 2);
    CHECK(contains(process.log(), c.message));
  }
  ::close(listener);
  CHECK_FALSE(fs::exists(dir / "bad/fit/metrics.jsonl"));
  CHECK_FALSE(fs::exists(dir / "bad/fit/final"));
}
