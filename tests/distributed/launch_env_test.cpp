// The launch environment as torchrun and Slurm give it (plugins/distributed/launch_env.cpp).
#include <doctest/doctest.h>

#include <map>

#include "alignkit/config.hpp"
#include "launch_env.hpp"

using namespace alignkit;
using namespace alignkit::distributed;

namespace {

LaunchEnv read(const std::map<std::string, std::string>& variables) {
  return read_launch_env([&](const char* name) -> const char* {
    auto it = variables.find(name);
    return it == variables.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const std::map<std::string, std::string>& variables) {
  try {
    read(variables);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("no variables: one process") {
  const LaunchEnv env = read({});
  CHECK(env.rank == 0);
  CHECK(env.world_size == 1);
  CHECK(env.master_addr == "127.0.0.1");
  CHECK(env.master_port == 29500);
}

TEST_CASE("torchrun variables") {
  const LaunchEnv env = read({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                              {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "1234"}});
  CHECK(env.rank == 3);
  CHECK(env.world_size == 4);
  CHECK(env.local_rank == 1);
  CHECK(env.local_world_size == 2);
  CHECK(env.master_addr == "node0");
  CHECK(env.master_port == 1234);
}

TEST_CASE("Slurm variables, with the master taken from the node list") {
  const LaunchEnv env = read({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                              {"SLURM_NTASKS_PER_NODE", "4(x2)"}, {"SLURM_JOB_NODELIST", "gpu[03-04]"}});
  CHECK(env.rank == 5);
  CHECK(env.world_size == 8);
  CHECK(env.local_rank == 1);
  CHECK(env.local_world_size == 4);
  CHECK(env.master_addr == "gpu03");
  CHECK(env.source == "Slurm");
  CHECK(first_slurm_host("a1,b2") == "a1");
  CHECK(first_slurm_host("n[7,9],m1") == "n7");
  CHECK(first_slurm_host("single") == "single");
}

TEST_CASE("bad launch variables name the variable") {
  CHECK(error_of({{"WORLD_SIZE", "2"}}).find("WORLD_SIZE is set but RANK is not") != std::string::npos);
  CHECK(error_of({{"RANK", "0"}}).find("RANK is set but WORLD_SIZE is not") != std::string::npos);
  CHECK(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("outside the world of 2") != std::string::npos);
  CHECK(error_of({{"RANK", "-1"}, {"WORLD_SIZE", "2"}}).find("RANK=-1") != std::string::npos);
  CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2x"}}).find("WORLD_SIZE=2x") != std::string::npos);
  CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_PORT", "70000"}}).find("MASTER_PORT=70000") !=
        std::string::npos);
  CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}})
            .find("local rank 2") != std::string::npos);
}
