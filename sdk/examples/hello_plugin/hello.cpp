// hello: the smallest complete AlignKit plugin, and the code of the plugin
// tutorial (docs/plugins.md). It registers one algorithm, `hello`, that fits a
// line y = w*x + b to points generated from its settings: no language model and
// no data file, only the contract every algorithm meets (alignkit/training.hpp).
// Any backend can run it; the in-tree `local` backend supplies the optimizer,
// batching, logging, checkpoints and resume.
#include <ATen/TensorOperators.h>
#include <ATen/ops/linspace.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "alignkit/plugin.hpp"    // ALIGNKIT_PLUGIN, the one exported entry
#include "alignkit/training.hpp"  // Algorithm, StageContext, TrainEnv

namespace hello {

using namespace alignkit;

// The one trainable tensor, (2) float32: [w, b]. Its name is how the host finds
// it again in a checkpoint when a stage resumes.
const char* const kWeightName = "hello.weight";
// Held-out points just past the training range [-1, 1]: a good fit of the
// line still predicts them, a memorised one would not.
constexpr int64_t kHeldOutPoints = 4;

// Writes one float32 vector as a .safetensors file, the format the host reads
// checkpoints in (a plugin cannot link the host's core library, so it writes
// the few bytes itself):
//   8 bytes    header length N, unsigned little-endian
//   N bytes    JSON header {"NAME":{"dtype":"F32","shape":[n],"data_offsets":[0,4n]}},
//              padded with spaces to a multiple of 8
//   4n bytes   the values, little-endian IEEE floats
void write_safetensors(const std::string& path, const std::string& name, const at::Tensor& values) {
  const int64_t count = values.numel();
  std::string header = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(count) +
                       "],\"data_offsets\":[0," + std::to_string(4 * count) + "]}}";
  header.resize((header.size() + 7) / 8 * 8, ' ');

  std::ofstream out(path, std::ios::binary);
  auto put_little_endian = [&out](uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out.put(static_cast<char>((value >> (8 * i)) & 0xff));
  };
  put_little_endian(header.size(), 8);
  out << header;
  const float* data = values.data_ptr<float>();
  for (int64_t i = 0; i < count; ++i) {
    uint32_t bits = 0;
    std::memcpy(&bits, &data[i], sizeof bits);
    put_little_endian(bits, 4);
  }
  if (!out.flush()) throw std::runtime_error(path + ": cannot write");
}

class HelloAlgorithm : public Algorithm {
 public:
  // Called once by the backend before training (or resuming). Settings arrive
  // checked against the SettingSpecs below, with defaults filled in.
  void setup(StageContext& context, const TrainEnv& env) override {
    const ConfigView& settings = context.settings();
    const double slope = settings.get_float("slope");
    const double intercept = settings.get_float("intercept");
    const int64_t num_points = settings.get_int("num_points");
    const at::TensorOptions on_device = at::TensorOptions().dtype(at::kFloat).device(env.device);

    train_x_ = at::linspace(-1.0, 1.0, num_points, on_device);  // (N)
    train_y_ = train_x_ * slope + intercept;                     // (N)
    eval_x_ = at::linspace(1.1, 1.4, kHeldOutPoints, on_device);  // (4)
    eval_y_ = eval_x_ * slope + intercept;                       // (4)
    line_ = at::zeros({2}, on_device).requires_grad_(true);      // (2): [w, b], starting flat
    context.log("fitting y = " + std::to_string(slope) + " * x + " + std::to_string(intercept) + " to " +
                std::to_string(num_points) + " points");
  }

  // What the backend's optimizer updates, by name.
  std::vector<NamedTensor> trainable_parameters() override { return {{kWeightName, line_}}; }

  int64_t num_examples(Split split) const override {
    return (split == Split::Train ? train_x_ : eval_x_).numel();
  }

  // One micro-batch: the mean squared error of the line on the points at
  // `indices`. The backend calls backward() on the loss when training.
  StepOutput step(const std::vector<int64_t>& indices, Split split) override {
    const bool train = split == Split::Train;
    at::Tensor picked = at::tensor(indices, at::TensorOptions().dtype(at::kLong).device(line_.device()));  // (B)
    at::Tensor x = (train ? train_x_ : eval_x_).index_select(0, picked);  // (B)
    at::Tensor y = (train ? train_y_ : eval_y_).index_select(0, picked);  // (B)
    at::Tensor prediction = x * line_[0] + line_[1];                       // (B)

    StepOutput out;
    out.loss = (prediction - y).pow(2).mean();
    // Metrics are plain numbers (detached); the host averages and logs them.
    out.metrics = {{"fit/slope", line_[0].item<double>()}, {"fit/intercept", line_[1].item<double>()}};
    return out;
  }

  // A line has no dropout or other train/eval difference.
  void set_training(bool) override {}

  // Shown on the progress line beside the loss.
  std::vector<std::string> progress_metrics() const override { return {"fit/slope", "fit/intercept"}; }

  // Called for every checkpoint (<stage>/checkpoint-N/model) and for the final
  // result (<stage>/final). model.safetensors must hold every tensor of
  // trainable_parameters() under its name: resuming reads them back from it.
  void save(const std::string& dir) override {
    std::filesystem::create_directories(dir);
    at::Tensor line = line_.detach().to(at::kCPU).contiguous();  // (2)
    write_safetensors(dir + "/model.safetensors", kWeightName, line);

    const std::string result = dir + "/hello.json";
    std::ofstream out(result);
    out << std::setprecision(9) << "{\"slope\": " << line[0].item<float>() << ", \"intercept\": " << line[1].item<float>()
        << "}\n";
    if (!out.flush()) throw std::runtime_error(result + ": cannot write");
  }

 private:
  at::Tensor train_x_, train_y_, eval_x_, eval_y_;
  at::Tensor line_;
};

struct HelloProvider : AlgorithmProvider {
  std::unique_ptr<Algorithm> create() const override { return std::make_unique<HelloAlgorithm>(); }
};

// Called once by the host when it loads the plugin. Every setting a pipeline
// may write for this algorithm is declared here: the host rejects unknown keys,
// checks types and minimums, fills in defaults, and prints this table in
// `alignkit plugins info hello`.
void register_components(Registry& registry) {
  std::vector<SettingSpec> settings = {
      setting::number("slope", 2.0, "slope w of the line the points lie on"),
      setting::number("intercept", -0.5, "intercept b of the line the points lie on"),
      setting::integer("num_points", 64, "training points, evenly spaced on [-1, 1]", 2),
      // A setting the backend reads, declared again to give it this
      // algorithm's own default: the backend's 5e-5 suits language models.
      setting::number("learning_rate", 0.1, "peak learning rate of AdamW", 0.0),
  };
  registry.add_algorithm({ComponentKind::Algorithm, "hello", "1.0.0", "fits a line y = w*x + b (the plugin tutorial)",
                          std::move(settings)},
                         std::make_shared<HelloProvider>());
}

}  // namespace hello

// The plugin's name, version and description, and its register function.
ALIGNKIT_PLUGIN("hello", "1.0.0", "example plugin: an algorithm that fits a line", hello::register_components)
