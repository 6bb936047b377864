// Helpers for the multi-process tests (the MultiProcessTestCase pattern in
// C++): worker processes started with their own environment and log file,
// a per-test deadline after which every process left is killed, exit codes
// and durations checked by the caller, free TCP ports, and pipelines for the
// fixture_regression algorithm.
#pragma once

#include <netinet/in.h>
#include <iostream>
#include <sys/socket.h>

#include "../algorithms/algorithm_test_util.hpp"
#include "alignkit/core/atomic_file.hpp"
#include "alignkit/core/safetensors.hpp"

namespace alignkit::test {

// A TCP port that was free a moment ago (the kernel's choice).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

using Env = std::vector<std::pair<std::string, std::string>>;

// One child process: `argv[0]` is executed with `env` added, stdout and
// stderr into `log_path`. Killed (SIGKILL) if still running when destroyed.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const Env& env, const std::string& log_path) : log_(log_path) {
    start_ = std::chrono::steady_clock::now();
    std::cout.flush();
    std::fflush(nullptr);  // or the child would write the parent's buffered output again
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::setpgid(0, 0);
      FILE* log = std::freopen(log_path.c_str(), "a", stdout);
      if (log) ::dup2(::fileno(stdout), STDERR_FILENO);
      for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
      std::vector<std::string> copies = argv;
      std::vector<char*> args;
      for (std::string& arg : copies) args.push_back(arg.data());
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Process() {
    if (pid_ > 0 && !ended_) {
      ::kill(pid_, SIGKILL);
      wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(10));
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  void signal(int number) const { ::kill(pid_, number); }
  bool ended() {
    poll();
    return ended_;
  }
  // The exit code (128 + signal when killed), or -1 when the deadline passed first.
  int wait_until(std::chrono::steady_clock::time_point deadline) {
    while (!poll() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return ended_ ? exit_code_ : -1;
  }
  double seconds_alive() const { return std::chrono::duration<double>(end_ - start_).count(); }
  std::chrono::steady_clock::time_point ended_at() const { return end_; }
  std::string log() const { return read_text(log_); }

 private:
  bool poll() {
    if (ended_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
    ended_ = true;
    end_ = std::chrono::steady_clock::now();
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }

  std::string log_;
  pid_t pid_ = -1;
  bool ended_ = false;
  int exit_code_ = -1;
  std::chrono::steady_clock::time_point start_, end_;
};

inline std::string fixture_plugin_dir() { return std::string(ALIGNKIT_BINARY_DIR) + "/tests/distributed_fixtures"; }

// The environment torchrun would give rank `rank` of `world`.
inline Env rank_env(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(world)},
          {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", std::to_string(port)}};
}

// `alignkit run` of `pipeline` with the fixture plugins found.
inline std::vector<std::string> run_args(const std::string& pipeline) {
  return {ALIGNKIT_CLI, "run", pipeline, "--plugin-dir", fixture_plugin_dir()};
}

// A pipeline of one fixture_regression stage on the distributed backend.
inline void write_fixture_pipeline(const ScratchDir& dir, const std::string& name, const std::string& settings) {
  if (!fs::exists(dir / "base/config.json")) make_tiny_model(dir / "base", 1);
  write_text(dir / (name + ".toml"),
             pipeline_head(dir / name, dir / "base") +
                 stage("fit", "algorithm = \"fixture_regression\"\nbackend = \"distributed\"\nmodel = \"base\"\n"
                              "learning_rate = 0.05\nper_device_train_batch_size = 4\nlogging_steps = 1\n"
                              "save_steps = 0\nshuffle = true\n" +
                                  settings));
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace alignkit::test

namespace alignkit::test {

// A DPO stage on the distributed backend over fixed-length pairs (no padding,
// so batch shapes do not change the numbers), with precomputed reference
// log-probs (computed shard by shard and gathered) and an eval split that
// does not divide evenly between ranks.
inline void write_dpo_pipeline(const ScratchDir& dir, const std::string& name, int per_device_batch) {
  if (!fs::exists(dir / "base/config.json")) {
    make_tiny_model(dir / "base", 9);
    write_preference_jsonl(dir / "train.jsonl", make_pairs(48, 7));
    write_preference_jsonl(dir / "eval.jsonl", make_pairs(11, 8));
  }
  write_text(dir / (name + ".toml"),
             pipeline_head(dir / name, dir / "base") +
                 stage("dpo", "algorithm = \"dpo\"\nbackend = \"distributed\"\nmodel = \"base\"\ndata = { path = " +
                                  quoted(dir / "train.jsonl") + ", eval_path = " + quoted(dir / "eval.jsonl") +
                                  " }\nprecompute_ref_log_probs = true\nlearning_rate = 0.003\nmax_steps = 6\n"
                                  "logging_steps = 1\neval_steps = 3\nsave_steps = 0\ndevice = \"cpu\"\n"
                                  "per_device_train_batch_size = " +
                                  std::to_string(per_device_batch) + "\nper_device_eval_batch_size = 4\n"));
}

// Largest |a - b| over every tensor of two safetensors files with the same names.
inline double max_weight_difference(const std::string& a, const std::string& b) {
  auto first = core::load_safetensors(a);
  auto second = core::load_safetensors(b);
  REQUIRE(first.size() == second.size());
  double largest = 0.0;
  for (const auto& [name, tensor] : first) {
    REQUIRE_MESSAGE(second.count(name) == 1, name);
    largest = std::max(largest, (tensor.to(at::kDouble) - second.at(name).to(at::kDouble)).abs().max().item<double>());
  }
  return largest;
}

// Every step's loss and reward margin (train and eval) agree within
// `tolerance`; returns the largest difference. (rewards/accuracies is left
// out: at step 1 the policy equals the reference, every margin is rounding
// noise around 0, and its sign decides the accuracy.)
inline double max_loss_difference(const std::string& stage_a, const std::string& stage_b, double tolerance) {
  double largest = 0.0;
  for (const std::string split : {"train", "eval"}) {
    CAPTURE(split);
    const MetricRows a = read_metrics(stage_a, split);
    const MetricRows b = read_metrics(stage_b, split);
    REQUIRE(a.size() == b.size());
    REQUIRE_FALSE(a.empty());
    for (const auto& [step, row] : a) {
      CAPTURE(step);
      for (const std::string metric : {"loss", "rewards/margins", "logps/chosen"}) {
        CAPTURE(metric);
        const double difference = std::abs(row.at(metric).get<double>() - b.at(step).at(metric).get<double>());
        largest = std::max(largest, difference);
        CHECK(difference <= tolerance);
      }
    }
  }
  return largest;
}

inline std::vector<std::string> launch_args(int nproc, int port, const std::string& pipeline) {
  return {ALIGNKIT_CLI, "launch", "--nproc-per-node", std::to_string(nproc), "--master-port", std::to_string(port),
          "--", "run", pipeline};
}

}  // namespace alignkit::test
