// The `distributed` backend: data-parallel training over LibTorch's c10d.
// Reads who this process is from the torchrun or Slurm variables, joins the
// others (TCPStore rendezvous; Gloo on CPU, NCCL on CUDA when LibTorch has
// it) and runs the shared training loop with a C10dCollective. Any algorithm
// runs on it unchanged.
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <cstdlib>
#include <thread>

#include "alignkit/core/trainer.hpp"
#include "alignkit/plugin.hpp"
#include "alignkit/training.hpp"
#include "c10d_collective.hpp"
#include "c10d_compat.hpp"
#include "launch_env.hpp"

namespace alignkit::distributed {
namespace {

c10::Device choose_device(const ConfigView& settings, const LaunchEnv& launch) {
  const std::string& wanted = settings.get_string("device");
  const bool cuda = torch::cuda::is_available();
  if (wanted == "cuda" && !cuda)
    throw ConfigError(settings.locate("device") + ": CUDA was asked for, but this LibTorch has no usable CUDA device");
  if (wanted == "cuda" || (wanted == "auto" && cuda)) {
    if (!compat::kHaveNccl)
      throw ConfigError(settings.locate("device") + ": CUDA training needs NCCL, which this LibTorch build lacks");
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(launch.local_rank));
  }
  return c10::Device(c10::kCPU);
}

std::chrono::milliseconds seconds_setting(const ConfigView& settings, const char* key) {
  return std::chrono::milliseconds(static_cast<int64_t>(settings.get_float(key) * 1000.0));
}

// One process group per process, made by the first stage that needs it and
// kept for the later stages of the pipeline (a second rendezvous on the same
// port could meet the first one's store). Never destroyed: after a failure its
// threads may still wait on dead peers, and tearing them down at exit could hang.
C10dCollective* g_group = nullptr;

class DistributedBackend : public Backend {
 public:
  TrainOutcome train(Algorithm& algorithm, StageContext& context) override {
    const ConfigView& settings = context.settings();
    // Everything that can be wrong with the input is checked before any work.
    const LaunchEnv launch = read_launch_env([](const char* name) { return std::getenv(name); });
    check_rendezvous_address(launch);
    GroupOptions options;
    options.collective_timeout = seconds_setting(settings, "collective_timeout");
    options.store_timeout = seconds_setting(settings, "store_timeout");
    options.bucket_bytes = static_cast<int64_t>(settings.get_float("bucket_cap_mb") * 1024 * 1024);
    options.device = choose_device(settings, launch);

    int64_t threads = settings.get_int("threads");
    if (threads <= 0)
      threads = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) / launch.local_world_size);
    at::set_num_threads(static_cast<int>(threads));

    if (!g_group)
      g_group = C10dCollective::connect(launch, options, [&](const std::string& line) { context.log(line); }).release();

    TrainEnv env;
    env.device = options.device;
    env.seed = static_cast<uint64_t>(settings.get_int("seed"));
    // The same seed on every rank: rank 0's weights are broadcast anyway, and
    // the data order depends on the seed alone.
    at::manual_seed(env.seed);
    context.log("rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world_size) + " (local " +
                std::to_string(launch.local_rank) + " of " + std::to_string(launch.local_world_size) + "), device " +
                env.device.str() + ", " + std::to_string(threads) + " threads");
    return core::run_training(algorithm, context, env, *g_group);
  }
};

struct DistributedBackendProvider : BackendProvider {
  std::unique_ptr<Backend> create() const override { return std::make_unique<DistributedBackend>(); }
};

void register_distributed(Registry& registry) {
  std::vector<SettingSpec> settings = core::trainer_setting_specs();
  settings.push_back(setting::text("device", "auto", "cpu (Gloo), cuda (NCCL, GPU = LOCAL_RANK), or auto",
                                   {"auto", "cpu", "cuda"}));
  settings.push_back(setting::integer("threads", 0, "intra-op CPU threads per process (0: cores / LOCAL_WORLD_SIZE)", 0));
  settings.push_back(setting::number("collective_timeout", 1800.0,
                                     "seconds any collective (all-reduce, broadcast, barrier) may take before the "
                                     "run fails naming the operation and the missing ranks",
                                     0.1));
  settings.push_back(setting::number("store_timeout", 300.0,
                                     "seconds for the rendezvous (every rank must arrive) and each store operation",
                                     0.1));
  settings.push_back(setting::number("bucket_cap_mb", 25.0, "gradient all-reduce bucket size in MiB (as DDP's)", 0.001));
  registry.add_backend({ComponentKind::Backend, "distributed", ALIGNKIT_VERSION_STRING,
                        "data parallel over c10d (Gloo on CPU, NCCL on CUDA); launch with alignkit launch, torchrun "
                        "conventions or Slurm",
                        std::move(settings)},
                       std::make_shared<DistributedBackendProvider>());
}

}  // namespace
}  // namespace alignkit::distributed

ALIGNKIT_PLUGIN("distributed", ALIGNKIT_VERSION_STRING, "data-parallel training backend over c10d (Gloo, NCCL)",
                alignkit::distributed::register_distributed)
