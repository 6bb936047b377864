// core::Collective over LibTorch's c10d: rendezvous through a TCPStore, a
// Gloo process group (NCCL for CUDA tensors when LibTorch has it), gradients
// averaged with bucketed flat all-reduces, and failure reports that name the
// operation and the ranks that stopped answering.
#pragma once

#include <c10/core/Device.h>

#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "alignkit/core/trainer.hpp"
#include "launch_env.hpp"

namespace alignkit::distributed {

// A collective or store operation failed or timed out. The process group is
// unusable afterwards: the run stops and saves nothing.
class CommunicationError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct GroupOptions {
  std::chrono::milliseconds collective_timeout{std::chrono::minutes(30)};
  std::chrono::milliseconds store_timeout{std::chrono::minutes(5)};
  c10::Device device = c10::Device(c10::kCPU);  // CUDA: NCCL (when built with it)
  int64_t bucket_bytes = 25 << 20;
};

class C10dCollective : public core::Collective {
 public:
  // Rendezvous with every rank, then builds the process group. Throws
  // CommunicationError when a rank does not arrive within store_timeout.
  static std::unique_ptr<C10dCollective> connect(const LaunchEnv& env, const GroupOptions& options,
                                                 const std::function<void(const std::string&)>& log);
  ~C10dCollective() override;

  int rank() const override;
  int world_size() const override;
  void broadcast_parameters(const std::vector<NamedTensor>& parameters) override;
  void average_gradients(const std::vector<NamedTensor>& parameters) override;
  std::vector<double> average(const std::vector<double>& values) override;
  bool any(bool flag) override;
  void barrier() override;
  at::Tensor all_gather(const at::Tensor& local) override;

  const std::string& backend_name() const;

  struct State;

 private:
  explicit C10dCollective(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace alignkit::distributed
