// The `local` backend: one process on one device (CPU now, CUDA when LibTorch
// has it). It picks the device, precision and thread count, then runs the
// shared training loop (core/trainer) with a single-process Collective.
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <thread>

#include "alignkit/core/trainer.hpp"
#include "alignkit/plugin.hpp"
#include "alignkit/training.hpp"

namespace alignkit::local {
namespace {

c10::Device choose_device(const ConfigView& settings) {
  const std::string& wanted = settings.get_string("device");
  const bool cuda = torch::cuda::is_available();
  if (wanted == "cuda" && !cuda)
    throw ConfigError(settings.locate("device") + ": CUDA was asked for, but this LibTorch has no usable CUDA device");
  return (wanted == "cuda" || (wanted == "auto" && cuda)) ? c10::Device(c10::kCUDA) : c10::Device(c10::kCPU);
}

// bf16 autocast for CUDA forward passes; restores the previous state.
class AutocastScope {
 public:
  explicit AutocastScope(bool enable) : enabled_(enable) {
    if (!enabled_) return;
#if TORCH_VERSION_MAJOR >= 2
    previous_ = at::autocast::is_autocast_enabled(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
    previous_ = at::autocast::is_enabled();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
  }
  ~AutocastScope() {
    if (!enabled_) return;
#if TORCH_VERSION_MAJOR >= 2
    at::autocast::set_autocast_enabled(at::kCUDA, previous_);
#else
    at::autocast::set_enabled(previous_);
#endif
    at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  bool previous_ = false;
};

class LocalBackend : public Backend {
 public:
  TrainOutcome train(Algorithm& algorithm, StageContext& context) override {
    const ConfigView& settings = context.settings();
    int64_t threads = settings.get_int("threads");
    if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
    at::set_num_threads(static_cast<int>(threads));

    TrainEnv env;
    env.device = choose_device(settings);
    env.seed = static_cast<uint64_t>(settings.get_int("seed"));
    const bool bf16 = settings.get_bool("bf16");
    if (bf16 && !env.device.is_cuda()) context.log("bf16 autocast applies on CUDA only; training in float32 on CPU");
    at::manual_seed(env.seed);
    context.log(std::string("device ") + env.device.str() + ", " + std::to_string(threads) + " threads");

    AutocastScope autocast(bf16 && env.device.is_cuda());
    core::Collective single_process;
    return core::run_training(algorithm, context, env, single_process);
  }
};

struct LocalBackendProvider : BackendProvider {
  std::unique_ptr<Backend> create() const override { return std::make_unique<LocalBackend>(); }
};

void register_local(Registry& registry) {
  std::vector<SettingSpec> settings = core::trainer_setting_specs();
  settings.push_back(setting::text("device", "auto", "cpu, cuda, or auto (cuda when available)", {"auto", "cpu", "cuda"}));
  settings.push_back(setting::integer("threads", 0, "intra-op CPU threads (0: every core)", 0));
  settings.push_back(setting::boolean("bf16", false, "bf16 autocast on CUDA"));
  registry.add_backend({ComponentKind::Backend, "local", ALIGNKIT_VERSION_STRING,
                        "one process on one device (CPU or CUDA)", std::move(settings)},
                       std::make_shared<LocalBackendProvider>());
}

}  // namespace
}  // namespace alignkit::local

ALIGNKIT_PLUGIN("local", ALIGNKIT_VERSION_STRING, "single-device training backend", alignkit::local::register_local)
