// Who this process is in a data-parallel run, read from the environment as
// torchrun sets it (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT) or, when RANK is absent, from Slurm's srun
// variables. Checked before any work: a bad value is a ConfigError naming it.
#pragma once

#include <functional>
#include <string>

namespace alignkit::distributed {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single process";  // "torchrun variables", "Slurm" or "single process"
};

using GetEnv = std::function<const char*(const char*)>;

// Throws ConfigError for WORLD_SIZE without RANK (or the reverse), a rank
// outside the world, a non-numeric value or a port outside 1..65535.
LaunchEnv read_launch_env(const GetEnv& getenv);

// The first host of a Slurm node list: "gpu[03-05,07],cpu1" -> "gpu03".
std::string first_slurm_host(const std::string& node_list);

// Throws ConfigError when MASTER_ADDR does not resolve, or (rank 0, which
// hosts the rendezvous store) when MASTER_PORT is already in use here.
void check_rendezvous_address(const LaunchEnv& env);

}  // namespace alignkit::distributed
