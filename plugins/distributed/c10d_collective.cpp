// The c10d implementation of core::Collective (see c10d_collective.hpp).
#include "c10d_collective.hpp"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "alignkit/config.hpp"
#include "c10d_compat.hpp"

namespace alignkit::distributed {
namespace {

using Clock = std::chrono::steady_clock;

std::string seconds_text(std::chrono::milliseconds duration) {
  return std::to_string(duration.count() / 1000) + (duration.count() % 1000 ? "." + std::to_string(duration.count() % 1000 / 100) : "") + " s";
}

std::string message_of(const std::exception& e) {
  if (const auto* error = dynamic_cast<const c10::Error*>(&e)) return error->what_without_backtrace();
  return e.what();
}

std::string heartbeat_key(int rank) { return "alignkit/heartbeat/" + std::to_string(rank); }
constexpr const char* kFailureKey = "alignkit/failure";
constexpr const char* kFailureCountKey = "alignkit/failure/count";
constexpr const char* kRendezvousFailedKey = "alignkit/rendezvous_failed";
std::string arrival_key(int rank) { return "alignkit/arrived/" + std::to_string(rank); }

std::string rank_list(const std::vector<int>& ranks) {
  std::string text;
  for (int r : ranks) text += (text.empty() ? "" : ", ") + std::to_string(r);
  return text;
}

c10::intrusive_ptr<c10d::TCPStore> open_store(const LaunchEnv& env, std::chrono::milliseconds timeout, bool server) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env.master_port);
  options.isServer = server;
  options.numWorkers = env.world_size;
  options.waitWorkers = false;  // arrival is checked below, with a message naming the missing ranks
  options.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
}

}  // namespace

struct C10dCollective::State {
  LaunchEnv env;
  GroupOptions options;
  std::string backend_name;
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<compat::CollectiveBackend> group;
  // Each rank's heartbeat thread bumps its own counter in the store every
  // half second and records when it last saw every rank's counter move,
  // through its own connection. After a failure, the counters that stopped
  // moving name the ranks that died or stalled; the record survives rank 0
  // (and with it the store) going away first.
  struct Heartbeats {
    std::mutex mutex;
    std::vector<int64_t> counters;
    std::vector<Clock::time_point> last_move;
    Clock::time_point last_reply = Clock::now();
    std::string store_error;  // set once the store stopped answering
    // The first rank to diagnose a failure publishes it, so that ranks that
    // notice later (when that rank exits) still learn what went wrong first.
    std::string to_publish;
    bool published = false;
    std::string first_report;
  };
  std::shared_ptr<Heartbeats> heartbeats = std::make_shared<Heartbeats>();
  std::shared_ptr<std::atomic<bool>> stop_heartbeat = std::make_shared<std::atomic<bool>>(false);
  std::thread heartbeat;
  std::string failed_operation;  // set once a collective failed: nothing more is attempted

  void start_heartbeat() {
    c10::intrusive_ptr<c10d::TCPStore> client = open_store(env, options.store_timeout, false);
    heartbeats->counters.assign(static_cast<size_t>(env.world_size), -1);
    heartbeats->last_move.assign(static_cast<size_t>(env.world_size), Clock::now());
    heartbeat = std::thread([client, stop = stop_heartbeat, beats = heartbeats, env = env] {
      try {
        while (!stop->load()) {
          client->add(heartbeat_key(env.rank), 1);
          for (int r = 0; r < env.world_size; ++r) {
            const int64_t value = client->add(heartbeat_key(r), 0);
            std::lock_guard<std::mutex> lock(beats->mutex);
            if (value != beats->counters[static_cast<size_t>(r)]) {
              beats->counters[static_cast<size_t>(r)] = value;
              beats->last_move[static_cast<size_t>(r)] = Clock::now();
            }
            beats->last_reply = Clock::now();
          }
          std::string report;
          {
            std::lock_guard<std::mutex> lock(beats->mutex);
            if (!beats->published) report = beats->to_publish;
          }
          if (!report.empty() && client->add(kFailureCountKey, 1) == 1)
            client->set(kFailureKey, std::vector<uint8_t>(report.begin(), report.end()));
          std::string first;
          if (client->check({kFailureKey})) {
            const std::vector<uint8_t> value = client->get(kFailureKey);
            first.assign(value.begin(), value.end());
          }
          {
            std::lock_guard<std::mutex> lock(beats->mutex);
            beats->published = beats->published || !report.empty();
            if (beats->first_report.empty()) beats->first_report = first;
          }
          for (int i = 0; i < 5 && !stop->load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(beats->mutex);
        beats->store_error = message_of(e);
      }
    });
  }

  // Which ranks stopped answering: after two more seconds of watching, the
  // ranks whose heartbeat has not moved for 1.5 s before the store was last
  // heard from; plus the first failure another rank published, if any.
  std::string diagnose() {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    std::string text;
    {
      std::lock_guard<std::mutex> lock(heartbeats->mutex);
      const Clock::time_point seen = heartbeats->last_reply;
      std::vector<int> silent;
      for (int r = 0; r < env.world_size; ++r)
        if (r != env.rank && seen - heartbeats->last_move[static_cast<size_t>(r)] > std::chrono::milliseconds(1500))
          silent.push_back(r);
      if (!silent.empty()) text = "missing rank(s): " + rank_list(silent) + " (no heartbeat for 1.5 s)";
      const std::string store = env.master_addr + ":" + std::to_string(env.master_port);
      if (!heartbeats->store_error.empty())
        text += (text.empty() ? "missing rank: 0" : "; rank 0") + std::string(" is gone (its store at ") + store +
                " closed: " + heartbeats->store_error + ")";
      else if (Clock::now() - seen > std::chrono::milliseconds(1500))
        text += (text.empty() ? "missing rank: 0" : "; rank 0") + std::string(" does not answer (its store at ") +
                store + " is silent)";
      if (text.empty()) text = "every rank's heartbeat is still moving (a slow rank, or a network problem?)";
      heartbeats->to_publish = "rank " + std::to_string(env.rank) + ": " + text;
    }
    // Give the heartbeat thread a moment to publish this (or learn an earlier report).
    for (int i = 0; i < 15; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::lock_guard<std::mutex> lock(heartbeats->mutex);
      if (heartbeats->published || !heartbeats->store_error.empty()) break;
    }
    std::lock_guard<std::mutex> lock(heartbeats->mutex);
    const std::string& first = heartbeats->first_report;
    if (!first.empty() && first != heartbeats->to_publish) text += "; first failure reported by " + first;
    return text;
  }

  // Runs `body` (which starts or waits for collectives); a failure or timeout
  // becomes a CommunicationError that names the operation and the ranks that
  // stopped answering. After one failure nothing more is attempted.
  void guard(const std::string& operation, const std::function<void()>& body) {
    if (!failed_operation.empty())
      throw CommunicationError("rank " + std::to_string(env.rank) + ": " + operation + " not attempted: " +
                               failed_operation + " failed earlier");
    const auto began = Clock::now();
    try {
      body();
    } catch (const std::exception& e) {
      failed_operation = operation;
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - began);
      throw CommunicationError("rank " + std::to_string(env.rank) + ": " + operation + " failed after " +
                               seconds_text(waited) + " (collective_timeout " + seconds_text(options.collective_timeout) +
                               "); " + diagnose() + "; " + backend_name + ": " + message_of(e));
    }
  }

  void wait(const std::string& operation, const std::function<c10::intrusive_ptr<c10d::Work>()>& start) {
    guard(operation, [&] { start()->wait(options.collective_timeout); });
  }

  at::Tensor on_device(const at::Tensor& t) const { return t.to(options.device); }

  // Consecutive tensors of one dtype, up to bucket_bytes each.
  std::vector<std::vector<at::Tensor>> buckets(const std::vector<at::Tensor>& tensors) const {
    std::vector<std::vector<at::Tensor>> out;
    int64_t bytes = 0;
    for (const at::Tensor& t : tensors) {
      const int64_t size = t.numel() * static_cast<int64_t>(t.element_size());
      if (out.empty() || out.back().front().scalar_type() != t.scalar_type() ||
          out.back().front().device() != t.device() || bytes + size > options.bucket_bytes) {
        out.emplace_back();
        bytes = 0;
      }
      out.back().push_back(t);
      bytes += size;
    }
    return out;
  }

  static at::Tensor flatten(const std::vector<at::Tensor>& bucket) {
    std::vector<at::Tensor> flat;
    for (const at::Tensor& t : bucket) flat.push_back(t.reshape({-1}));
    return at::cat(flat);  // (sum of numel)
  }

  static void unflatten(const at::Tensor& flat, const std::vector<at::Tensor>& bucket) {
    int64_t offset = 0;
    for (const at::Tensor& t : bucket) {
      t.copy_(flat.slice(0, offset, offset + t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }

  at::Tensor all_reduce(at::Tensor tensor, c10d::ReduceOp op, const std::string& operation) {
    std::vector<at::Tensor> tensors{tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = op;
    opts.timeout = options.collective_timeout;
    wait(operation, [&] { return group->allreduce(tensors, opts); });
    return tensors[0];
  }

  std::vector<at::Tensor> all_gather_equal(const at::Tensor& local, const std::string& operation) {
    std::vector<at::Tensor> inputs{local};
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < env.world_size; ++r) outputs[0].push_back(at::empty_like(local));
    c10d::AllgatherOptions opts;
    opts.timeout = options.collective_timeout;
    wait(operation, [&] { return group->allgather(outputs, inputs, opts); });
    return outputs[0];
  }
};

std::unique_ptr<C10dCollective> C10dCollective::connect(const LaunchEnv& env, const GroupOptions& options,
                                                        const std::function<void(const std::string&)>& log) {
  auto state = std::make_unique<State>();
  state->env = env;
  state->options = options;
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  const std::string me = "rank " + std::to_string(env.rank);
  try {
    state->store = open_store(env, options.store_timeout, env.rank == 0);
  } catch (const std::exception& e) {
    throw CommunicationError(me + ": rendezvous failed: could not " +
                             (env.rank == 0 ? "open the store at " + where
                                            : "reach the store of rank 0 at " + where + " within store_timeout " +
                                                  seconds_text(options.store_timeout)) +
                             " (" + message_of(e) + ")");
  }

  // Every rank announces itself with its world size, then waits for the rest.
  const auto deadline = Clock::now() + options.store_timeout;
  std::vector<std::string> keys;
  for (int r = 0; r < env.world_size; ++r) keys.push_back(arrival_key(r));
  try {
    const std::string world_text = std::to_string(env.world_size);
    state->store->set(arrival_key(env.rank), std::vector<uint8_t>(world_text.begin(), world_text.end()));
    while (!state->store->check(keys)) {
      // Rank 0 gave up first: its message names the missing ranks.
      if (env.rank != 0 && state->store->check({kRendezvousFailedKey})) {
        const std::vector<uint8_t> value = state->store->get(kRendezvousFailedKey);
        throw CommunicationError(me + ": " + std::string(value.begin(), value.end()));
      }
      if (Clock::now() > deadline) {
        std::vector<int> missing;
        for (int r = 0; r < env.world_size; ++r)
          if (!state->store->check({arrival_key(r)})) missing.push_back(r);
        const std::string message = "rendezvous at " + where + " timed out after store_timeout " +
                                    seconds_text(options.store_timeout) + ": rank(s) " + rank_list(missing) +
                                    " never arrived (WORLD_SIZE=" + std::to_string(env.world_size) + ")";
        if (env.rank == 0) {
          // Tell the ranks that did arrive, and keep the store up while they read it.
          state->store->set(kRendezvousFailedKey, std::vector<uint8_t>(message.begin(), message.end()));
          std::this_thread::sleep_for(std::chrono::seconds(1));
        }
        throw CommunicationError(me + ": " + message);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (int r = 0; r < env.world_size; ++r) {
      const std::vector<uint8_t> value = state->store->get(arrival_key(r));
      const std::string world(value.begin(), value.end());
      if (world != std::to_string(env.world_size))
        throw ConfigError(me + ": rank " + std::to_string(r) + " was started with WORLD_SIZE=" + world + ", this one with " +
                          std::to_string(env.world_size) + " (every rank needs the same value)");
    }
  } catch (const CommunicationError&) {
    throw;
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw CommunicationError(me + ": rendezvous at " + where + " failed: rank 0's store stopped answering (" +
                             message_of(e) + ")");
  }

  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("alignkit/group", state->store);
  try {
    if (options.device.is_cuda()) {
#if defined(ALIGNKIT_HAVE_NCCL)
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = options.collective_timeout;
      state->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, env.rank, env.world_size, nccl_options);
      state->backend_name = "nccl";
#else
      throw ConfigError("device cuda: this LibTorch has no NCCL process group (built without CUDA/NCCL)");
#endif
    } else {
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.collective_timeout);
      // GLOO_SOCKET_IFNAME picks the interface, as in torch.distributed.
      if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"))
        gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
      else
        gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      gloo_options->threads = 2;
      state->group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, env.rank, env.world_size, gloo_options);
      state->backend_name = "gloo";
    }
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw CommunicationError(me + ": creating the process group failed (" + message_of(e) + ")");
  }
  state->start_heartbeat();
  log(state->backend_name + " process group of " + std::to_string(env.world_size) + " rank(s) ready (" + env.source +
      ", rendezvous " + where + ")");
  return std::unique_ptr<C10dCollective>(new C10dCollective(std::move(state)));
}

C10dCollective::C10dCollective(std::unique_ptr<State> state) : state_(std::move(state)) {}

C10dCollective::~C10dCollective() {
  state_->stop_heartbeat->store(true);
  if (state_->heartbeat.joinable()) state_->heartbeat.join();
}

int C10dCollective::rank() const { return state_->env.rank; }
int C10dCollective::world_size() const { return state_->env.world_size; }
const std::string& C10dCollective::backend_name() const { return state_->backend_name; }

void C10dCollective::broadcast_parameters(const std::vector<NamedTensor>& parameters) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> tensors;
  for (const NamedTensor& p : parameters) tensors.push_back(p.tensor.detach());
  const auto buckets = state_->buckets(tensors);
  for (size_t b = 0; b < buckets.size(); ++b) {
    std::vector<at::Tensor> flat{state_->on_device(State::flatten(buckets[b]))};
    c10d::BroadcastOptions opts;
    opts.rootRank = 0;
    opts.timeout = state_->options.collective_timeout;
    state_->wait("broadcast of the initial weights (bucket " + std::to_string(b + 1) + " of " +
                     std::to_string(buckets.size()) + ")",
                 [&] { return state_->group->broadcast(flat, opts); });
    State::unflatten(flat[0], buckets[b]);
  }
}

void C10dCollective::average_gradients(const std::vector<NamedTensor>& parameters) {
  at::NoGradGuard no_grad;
  // A parameter with a gradient on any rank gets one (zeros) on every rank,
  // so that all ranks reduce the same buckets.
  std::vector<float> present;
  for (const NamedTensor& p : parameters) present.push_back(p.tensor.grad().defined() ? 1.0f : 0.0f);
  at::Tensor anywhere = state_->all_reduce(state_->on_device(at::tensor(present, at::kFloat)), c10d::ReduceOp::MAX,
                                           "all_reduce of which parameters have gradients")
                            .cpu();  // (P)
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < parameters.size(); ++i) {
    if (anywhere[static_cast<int64_t>(i)].item<float>() == 0.0f) continue;
    at::Tensor parameter = parameters[i].tensor;
    if (!parameter.grad().defined()) parameter.mutable_grad() = at::zeros_like(parameter);
    grads.push_back(parameter.grad());
  }
  // Every bucket's all-reduce is started before the first is waited for.
  const auto buckets = state_->buckets(grads);
  std::vector<at::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  c10d::AllreduceOptions opts;
  opts.timeout = state_->options.collective_timeout;
  auto name = [&](size_t b) {
    return "all_reduce of gradients (bucket " + std::to_string(b + 1) + " of " + std::to_string(buckets.size()) + ")";
  };
  for (size_t b = 0; b < buckets.size(); ++b) {
    flats.push_back(state_->on_device(State::flatten(buckets[b])));
    state_->guard(name(b), [&] {
      std::vector<at::Tensor> one{flats.back()};
      works.push_back(state_->group->allreduce(one, opts));
    });
  }
  const double world = static_cast<double>(state_->env.world_size);
  for (size_t b = 0; b < buckets.size(); ++b) {
    state_->wait(name(b), [&] { return works[b]; });
    flats[b].div_(world);
    State::unflatten(flats[b], buckets[b]);
  }
}

std::vector<double> C10dCollective::average(const std::vector<double>& values) {
  if (values.empty()) return values;
  at::Tensor sum = state_->all_reduce(state_->on_device(at::tensor(values, at::kDouble)), c10d::ReduceOp::SUM,
                                      "all_reduce of metrics")
                       .cpu();  // (n)
  std::vector<double> out;
  for (int64_t i = 0; i < sum.numel(); ++i) out.push_back(sum[i].item<double>() / state_->env.world_size);
  return out;
}

bool C10dCollective::any(bool flag) {
  at::Tensor value = state_->all_reduce(state_->on_device(at::tensor({flag ? 1 : 0}, at::kInt)), c10d::ReduceOp::MAX,
                                        "all_reduce of a shared decision (skip a non-finite step, or stop)");
  return value.cpu().item<int>() != 0;
}

void C10dCollective::barrier() {
  // A one-element all-reduce: unlike c10d's barrier it behaves the same on
  // Gloo and NCCL and honours collective_timeout on both.
  state_->all_reduce(state_->on_device(at::zeros({1}, at::kInt)), c10d::ReduceOp::SUM, "barrier");
}

at::Tensor C10dCollective::all_gather(const at::Tensor& local) {
  // Sizes first, then every rank's rows padded to the largest.
  const int64_t rows = local.size(0);
  std::vector<at::Tensor> sizes =
      state_->all_gather_equal(state_->on_device(at::tensor({rows}, at::kLong)), "all_gather of shard sizes");
  int64_t largest = 0;
  std::vector<int64_t> counts;
  for (const at::Tensor& s : sizes) {
    counts.push_back(s.cpu().item<int64_t>());
    largest = std::max(largest, counts.back());
  }
  std::vector<int64_t> padded_shape = local.sizes().vec();
  padded_shape[0] = largest;
  at::Tensor padded = at::zeros(padded_shape, local.options());
  padded.slice(0, 0, rows).copy_(local);
  std::vector<at::Tensor> parts = state_->all_gather_equal(state_->on_device(padded), "all_gather of shards");
  std::vector<at::Tensor> kept;
  for (size_t r = 0; r < parts.size(); ++r) kept.push_back(parts[r].cpu().slice(0, 0, counts[r]));
  return at::cat(kept);
}

}  // namespace alignkit::distributed
