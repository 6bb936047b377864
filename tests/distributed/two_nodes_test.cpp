// Two "nodes" on one machine: two network namespaces joined by a veth pair,
// each with its own address, one `alignkit launch --nnodes 2` per namespace.
// The 2-rank DPO run must match the 1-process run as in equivalence_test.
// Needs root, `ip` and network namespaces; otherwise the test prints why and
// exits 77, which CTest reports as skipped (never as a pass).
#include "dist_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

int shell(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()); }

[[noreturn]] void skip(const std::string& reason) {
  std::cout << "SKIPPED test_distributed_two_nodes: " << reason << std::endl;
  std::exit(77);
}

// Two namespaces ak<id>a (10.233.0.1) and ak<id>b (10.233.0.2), removed on destruction.
class VethPair {
 public:
  VethPair() : id_(std::to_string(::getpid() % 100000)) {
    if (::geteuid() != 0) skip("needs root to create network namespaces (running as uid " + std::to_string(::geteuid()) + ")");
    if (shell("command -v ip") != 0) skip("the `ip` tool (iproute2) is not installed");
    const std::vector<std::string> setup = {
        "ip netns add " + ns(0),
        "ip netns add " + ns(1),
        "ip link add " + link(0) + " type veth peer name " + link(1),
        "ip link set " + link(0) + " netns " + ns(0),
        "ip link set " + link(1) + " netns " + ns(1),
        "ip -n " + ns(0) + " addr add " + address(0) + "/24 dev " + link(0),
        "ip -n " + ns(1) + " addr add " + address(1) + "/24 dev " + link(1),
        "ip -n " + ns(0) + " link set " + link(0) + " up",
        "ip -n " + ns(1) + " link set " + link(1) + " up",
        "ip -n " + ns(0) + " link set lo up",
        "ip -n " + ns(1) + " link set lo up",
    };
    for (const std::string& command : setup)
      if (shell(command) != 0) {
        cleanup();
        skip("this machine does not allow it: `" + command + "` failed");
      }
  }
  ~VethPair() { cleanup(); }
  std::string ns(int node) const { return "ak" + id_ + (node == 0 ? "a" : "b"); }
  std::string link(int node) const { return "vak" + id_ + (node == 0 ? "a" : "b"); }
  static std::string address(int node) { return node == 0 ? "10.233.0.1" : "10.233.0.2"; }

 private:
  void cleanup() {
    shell("ip netns del " + ns(0));
    shell("ip netns del " + ns(1));
  }
  std::string id_;
};

}  // namespace

TEST_CASE("dpo across two network namespaces (2 nodes x 1 process) matches 1 process") {
  VethPair nodes;
  ScratchDir dir;
  write_dpo_pipeline(dir, "one", 8);
  write_dpo_pipeline(dir, "two", 4);
  const auto deadline = [] { return std::chrono::steady_clock::now() + std::chrono::seconds(120); };
  Process one(launch_args(1, free_port(), dir / "one.toml"), {}, dir / "one.log");
  REQUIRE_MESSAGE(one.wait_until(deadline()) == 0, one.log());

  const int port = 29400 + ::getpid() % 500;  // a fresh namespace has every port free
  std::vector<std::unique_ptr<Process>> launchers;
  for (int node = 0; node < 2; ++node)
    launchers.push_back(std::make_unique<Process>(
        std::vector<std::string>{"ip", "netns", "exec", nodes.ns(node), ALIGNKIT_CLI, "launch", "--nproc-per-node", "1",
                                 "--nnodes", "2", "--node-rank", std::to_string(node), "--master-addr",
                                 VethPair::address(0), "--master-port", std::to_string(port), "--", "run",
                                 dir / "two.toml"},
        Env{{"GLOO_SOCKET_IFNAME", nodes.link(node)}}, dir / ("node" + std::to_string(node) + ".log")));
  for (auto& launcher : launchers) REQUIRE_MESSAGE(launcher->wait_until(deadline()) == 0, launcher->log());
  CHECK(contains(launchers[1]->log(), "[rank 1] "));
  CHECK(contains(launchers[1]->log(), "rendezvous " + VethPair::address(0)));

  const double weights = max_weight_difference(dir / "one/dpo/final/model.safetensors", dir / "two/dpo/final/model.safetensors");
  MESSAGE("two nodes: max |weight difference| " << weights);
  CHECK(weights <= 1e-5);
  MESSAGE("two nodes: max |loss or metric difference| " << max_loss_difference(dir / "one/dpo", dir / "two/dpo", 1e-5));
}
