// Reading and checking the launch environment (see launch_env.hpp).
#include "launch_env.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "alignkit/config.hpp"

namespace alignkit::distributed {
namespace {

int parse_int(const std::string& name, const char* text, int minimum) {
  const std::string value = text;
  size_t used = 0;
  long parsed = 0;
  try {
    parsed = std::stol(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || parsed < minimum || parsed > 1'000'000)
    throw ConfigError("environment variable " + name + "=" + value + ": expected a whole number >= " +
                      std::to_string(minimum));
  return static_cast<int>(parsed);
}

// "4(x2)" or "4" (SLURM_NTASKS_PER_NODE / SLURM_TASKS_PER_NODE) -> 4.
int slurm_tasks_per_node(const std::string& name, const char* text) {
  std::string value = text;
  const size_t paren = value.find('(');
  if (paren != std::string::npos) value = value.substr(0, paren);
  const size_t comma = value.find(',');
  if (comma != std::string::npos) value = value.substr(0, comma);
  return parse_int(name, value.c_str(), 1);
}

}  // namespace

std::string first_slurm_host(const std::string& node_list) {
  const size_t bracket = node_list.find('[');
  const size_t comma = node_list.find(',');
  if (bracket == std::string::npos || (comma != std::string::npos && comma < bracket))
    return node_list.substr(0, comma);
  // prefix[03-05,07] -> prefix03
  const size_t end = node_list.find_first_of("-,]", bracket + 1);
  return node_list.substr(0, bracket) + node_list.substr(bracket + 1, end - bracket - 1);
}

LaunchEnv read_launch_env(const GetEnv& getenv) {
  LaunchEnv env;
  const char* rank = getenv("RANK");
  const char* world = getenv("WORLD_SIZE");
  if (rank || world) {
    if (!rank) throw ConfigError("environment variable WORLD_SIZE is set but RANK is not (set both, as torchrun does)");
    if (!world) throw ConfigError("environment variable RANK is set but WORLD_SIZE is not (set both, as torchrun does)");
    env.source = "torchrun variables";
    env.rank = parse_int("RANK", rank, 0);
    env.world_size = parse_int("WORLD_SIZE", world, 1);
    env.local_rank = getenv("LOCAL_RANK") ? parse_int("LOCAL_RANK", getenv("LOCAL_RANK"), 0) : env.rank;
    env.local_world_size =
        getenv("LOCAL_WORLD_SIZE") ? parse_int("LOCAL_WORLD_SIZE", getenv("LOCAL_WORLD_SIZE"), 1) : env.world_size;
  } else if (getenv("SLURM_PROCID")) {
    env.source = "Slurm";
    env.rank = parse_int("SLURM_PROCID", getenv("SLURM_PROCID"), 0);
    if (!getenv("SLURM_NTASKS")) throw ConfigError("environment variable SLURM_PROCID is set but SLURM_NTASKS is not");
    env.world_size = parse_int("SLURM_NTASKS", getenv("SLURM_NTASKS"), 1);
    env.local_rank = getenv("SLURM_LOCALID") ? parse_int("SLURM_LOCALID", getenv("SLURM_LOCALID"), 0) : 0;
    if (const char* per_node = getenv("SLURM_NTASKS_PER_NODE"))
      env.local_world_size = slurm_tasks_per_node("SLURM_NTASKS_PER_NODE", per_node);
    else if (const char* tasks = getenv("SLURM_TASKS_PER_NODE"))
      env.local_world_size = slurm_tasks_per_node("SLURM_TASKS_PER_NODE", tasks);
    if (!getenv("MASTER_ADDR")) {
      const char* nodes = getenv("SLURM_JOB_NODELIST") ? getenv("SLURM_JOB_NODELIST") : getenv("SLURM_NODELIST");
      if (!nodes) throw ConfigError("Slurm run without MASTER_ADDR or SLURM_JOB_NODELIST: cannot tell where rank 0 is");
      env.master_addr = first_slurm_host(nodes);
    }
  }
  if (env.rank >= env.world_size)
    throw ConfigError("rank " + std::to_string(env.rank) + " (from the " + env.source + ") is outside the world of " +
                      std::to_string(env.world_size) + " process(es): ranks are 0.." +
                      std::to_string(env.world_size - 1));
  if (env.local_rank >= env.local_world_size)
    throw ConfigError("local rank " + std::to_string(env.local_rank) + " is outside the " +
                      std::to_string(env.local_world_size) + " process(es) of this node (LOCAL_RANK, LOCAL_WORLD_SIZE)");
  if (const char* addr = getenv("MASTER_ADDR")) env.master_addr = addr;
  if (env.master_addr.empty()) throw ConfigError("environment variable MASTER_ADDR is empty");
  if (const char* port = getenv("MASTER_PORT")) {
    env.master_port = parse_int("MASTER_PORT", port, 1);
    if (env.master_port > 65535)
      throw ConfigError("environment variable MASTER_PORT=" + std::string(port) + ": not a TCP port (1..65535)");
  }
  return env;
}

void check_rendezvous_address(const LaunchEnv& env) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int status = ::getaddrinfo(env.master_addr.c_str(), nullptr, &hints, &found);
  if (status != 0)
    throw ConfigError("MASTER_ADDR=" + env.master_addr + " does not resolve (" + ::gai_strerror(status) + ")");
  ::freeaddrinfo(found);
  if (env.rank != 0) return;
  // Rank 0 hosts the store: find out now, with a clear message, whether the
  // port is free (the store binds every interface, as torch's TCPStore does).
  const int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  const int domain_fd = fd >= 0 ? fd : ::socket(AF_INET, SOCK_STREAM, 0);
  if (domain_fd < 0) return;
  const int one = 1;
  ::setsockopt(domain_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int bound = 0;
  int error = 0;
  if (fd >= 0) {
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_port = htons(static_cast<uint16_t>(env.master_port));
    address.sin6_addr = in6addr_any;
    bound = ::bind(domain_fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  } else {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(env.master_port));
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    bound = ::bind(domain_fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  }
  if (bound != 0) error = errno;
  ::close(domain_fd);
  if (bound != 0 && error == EADDRINUSE)
    throw ConfigError("MASTER_PORT=" + std::to_string(env.master_port) +
                      " is already in use on this machine; rank 0 hosts the rendezvous store there (choose a free port)");
}

}  // namespace alignkit::distributed
