// `alignkit launch`: starts the local workers of a data-parallel run with the
// torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT) and supervises them: their output is prefixed
// with the rank, SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1 are forwarded, and
// when one worker fails the others are stopped (SIGTERM, then SIGKILL after
// a grace period) and the launcher exits with the first failure's code.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>

#include "commands.hpp"

namespace po = boost::program_options;

namespace alignkit::cli {
namespace {

constexpr const char* kLaunchUsage =
    "alignkit launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] -- run "
    "PIPELINE.toml [...]";

int g_signal_pipe[2] = {-1, -1};

extern "C" void on_launcher_signal(int number) {
  const unsigned char byte = static_cast<unsigned char>(number);
  [[maybe_unused]] ssize_t ignored = ::write(g_signal_pipe[1], &byte, 1);
}

struct Worker {
  int rank = 0;
  pid_t pid = -1;
  int output = -1;      // read end of the worker's stdout+stderr
  std::string pending;  // an unfinished line
  bool running = true;
  int exit_code = 0;
};

void print_lines(Worker& worker, const char* data, size_t size, bool flush) {
  worker.pending.append(data, size);
  size_t start = 0;
  for (size_t newline; (newline = worker.pending.find('\n', start)) != std::string::npos; start = newline + 1)
    std::cout << "[rank " << worker.rank << "] " << worker.pending.substr(start, newline - start) << '\n';
  worker.pending.erase(0, start);
  if (flush && !worker.pending.empty()) {
    std::cout << "[rank " << worker.rank << "] " << worker.pending << '\n';
    worker.pending.clear();
  }
  std::cout.flush();
}

void drain(Worker& worker, bool flush) {
  char buffer[4096];
  while (worker.output >= 0) {
    const ssize_t got = ::read(worker.output, buffer, sizeof buffer);
    if (got > 0) {
      print_lines(worker, buffer, static_cast<size_t>(got), false);
      continue;
    }
    if (got == 0) {
      ::close(worker.output);
      worker.output = -1;
    }
    break;  // EAGAIN: nothing more now
  }
  if (flush) print_lines(worker, "", 0, true);
}

pid_t start_worker(Worker& worker, const std::vector<std::pair<std::string, std::string>>& env,
                   const std::vector<std::string>& command) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // Its own process group: a terminal's Ctrl-C reaches the launcher only,
    // which forwards it once (a second SIGINT would end a worker at once).
    ::setpgid(0, 0);
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1}) std::signal(s, SIG_DFL);
    for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
    std::vector<char*> argv;
    std::string program = "alignkit";
    argv.push_back(program.data());
    std::vector<std::string> copies = command;
    for (std::string& arg : copies) argv.push_back(arg.data());
    argv.push_back(nullptr);
    ::execv("/proc/self/exe", argv.data());
    std::perror("alignkit launch: exec");
    ::_exit(127);
  }
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  worker.pid = pid;
  worker.output = fds[0];
  return pid;
}

int exit_code_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

}  // namespace

int cmd_launch(const std::vector<std::string>& args) {
  auto separator = std::find(args.begin(), args.end(), "--");
  const std::vector<std::string> own(args.begin(), separator);
  const std::vector<std::string> command(separator == args.end() ? args.end() : separator + 1, args.end());

  int nproc = 0, nnodes = 1, node_rank = 0, master_port = 29500;
  double grace = 30.0;
  std::string master_addr;
  po::options_description options("launch");
  options.add_options()("nproc-per-node", po::value(&nproc)->required(), "worker processes on this node")(
      "nnodes", po::value(&nnodes)->default_value(1), "nodes in the run")(
      "node-rank", po::value(&node_rank)->default_value(0), "this node's index, 0..nnodes-1")(
      "master-addr", po::value(&master_addr), "address of node 0, where rank 0 hosts the rendezvous store "
                                              "(default 127.0.0.1 for one node)")(
      "master-port", po::value(&master_port)->default_value(29500), "TCP port of the rendezvous store")(
      "grace-seconds", po::value(&grace)->default_value(30.0),
      "after a failure or a forwarded signal, how long workers may take to exit before SIGKILL");
  po::variables_map vm;
  int exit_code = kExitOk;
  if (!parse_command_line(own, kLaunchUsage, options, {}, vm, exit_code)) return exit_code;
  auto usage_error = [](const std::string& message) {
    std::cerr << "alignkit launch: " << message << "\nusage: " << kLaunchUsage << '\n';
    return kExitUsage;
  };
  if (command.empty()) return usage_error("no worker command after '--' (for example: -- run pipeline.toml)");
  if (nproc < 1) return usage_error("--nproc-per-node must be at least 1");
  if (nnodes < 1) return usage_error("--nnodes must be at least 1");
  if (node_rank < 0 || node_rank >= nnodes)
    return usage_error("--node-rank " + std::to_string(node_rank) + " is outside 0.." + std::to_string(nnodes - 1));
  if (master_port < 1 || master_port > 65535) return usage_error("--master-port must be a TCP port (1..65535)");
  if (master_addr.empty()) {
    if (nnodes > 1) return usage_error("--master-addr is required with --nnodes > 1 (the address of node 0)");
    master_addr = "127.0.0.1";
  }
  if (grace < 0) return usage_error("--grace-seconds must not be negative");

  if (::pipe(g_signal_pipe) != 0) throw std::runtime_error("pipe failed");
  ::fcntl(g_signal_pipe[0], F_SETFL, O_NONBLOCK);
  ::fcntl(g_signal_pipe[1], F_SETFL, O_NONBLOCK);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1}) std::signal(s, on_launcher_signal);

  const int world = nproc * nnodes;
  std::vector<Worker> workers(static_cast<size_t>(nproc));
  for (int local = 0; local < nproc; ++local) {
    Worker& worker = workers[static_cast<size_t>(local)];
    worker.rank = node_rank * nproc + local;
    start_worker(worker,
                 {{"RANK", std::to_string(worker.rank)},
                  {"WORLD_SIZE", std::to_string(world)},
                  {"LOCAL_RANK", std::to_string(local)},
                  {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
                  {"GROUP_RANK", std::to_string(node_rank)},
                  {"MASTER_ADDR", master_addr},
                  {"MASTER_PORT", std::to_string(master_port)}},
                 command);
  }
  std::cerr << "alignkit launch: " << nproc << " worker(s) on node " << node_rank << " of " << nnodes << ", ranks "
            << node_rank * nproc << ".." << node_rank * nproc + nproc - 1 << " of " << world << ", rendezvous "
            << master_addr << ':' << master_port << '\n';

  using Clock = std::chrono::steady_clock;
  int first_failure = 0;
  bool stopping = false;
  Clock::time_point kill_at;
  auto stop_all = [&](int signal_number) {
    for (Worker& w : workers)
      if (w.running) ::kill(w.pid, signal_number);
    if (!stopping) kill_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(grace * 1000));
    stopping = true;
  };

  while (std::any_of(workers.begin(), workers.end(), [](const Worker& w) { return w.running || w.output >= 0; })) {
    std::vector<pollfd> fds{{g_signal_pipe[0], POLLIN, 0}};
    for (const Worker& w : workers)
      if (w.output >= 0) fds.push_back({w.output, POLLIN, 0});
    ::poll(fds.data(), fds.size(), 200);

    unsigned char received = 0;
    while (::read(g_signal_pipe[0], &received, 1) == 1) {
      std::cerr << "alignkit launch: forwarding " << ::strsignal(received) << " to the workers\n";
      stop_all(received);
    }
    for (Worker& w : workers) drain(w, false);
    for (Worker& w : workers) {
      int status = 0;
      if (!w.running || ::waitpid(w.pid, &status, WNOHANG) != w.pid) continue;
      w.running = false;
      w.exit_code = exit_code_of(status);
      drain(w, true);
      if (w.exit_code != 0 && first_failure == 0) {
        first_failure = w.exit_code;
        std::cerr << "alignkit launch: rank " << w.rank << " exited with code " << w.exit_code
                  << "; stopping the other workers\n";
        if (!stopping) stop_all(SIGTERM);
      }
    }
    if (stopping && Clock::now() > kill_at)
      for (Worker& w : workers)
        if (w.running) {
          std::cerr << "alignkit launch: rank " << w.rank << " did not exit within " << grace << " s; killing it\n";
          ::kill(w.pid, SIGKILL);
        }
  }
  for (Worker& w : workers)
    if (w.exit_code != 0) std::cerr << "alignkit launch: rank " << w.rank << " exit code " << w.exit_code << '\n';
  return first_failure;
}

}  // namespace alignkit::cli
