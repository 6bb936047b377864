// The memory-saving paths compute what the plain paths compute: chunked label
// log-probs (values, the vocabulary-mean logit and gradients) and decoder
// blocks recomputed in backward (gradients, dropout included), within 1e-5.
#include <ATen/ops/linear.h>
#include <torch/csrc/autograd/function.h>

#include <set>

#include "alignkit/batch.hpp"
#include "chunked_logprobs.hpp"
#include "../algorithms/algorithm_test_util.hpp"

using namespace alignkit;
using namespace alignkit::test;

namespace {

const ModelProvider& llama() { return *plugin_host().registry().model("llama"); }

struct Grads {
  at::Tensor loss;
  std::map<std::string, at::Tensor> by_name;
  int64_t recomputed_blocks = 0;  // nodes of the recomputing Function in the loss's graph
};

int64_t count_recomputed_blocks(const at::Tensor& loss) {
  std::set<torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> pending = {loss.grad_fn().get()};
  int64_t count = 0;
  while (!pending.empty()) {
    torch::autograd::Node* node = pending.back();
    pending.pop_back();
    if (!node || !seen.insert(node).second) continue;
    if (node->name().find("RecomputedLayer") != std::string::npos) ++count;
    for (const torch::autograd::Edge& edge : node->next_edges()) pending.push_back(edge.function.get());
  }
  return count;
}

// A loss over every output of a training forward with dropout; the global
// generator is seeded first so two models draw the same masks.
Grads training_grads(CausalLM& model) {
  at::manual_seed(17);
  at::Tensor ids = at::tensor({1, 5, 9, 12, 7, 3, 1, 4, 8, 11, 2, 2}, at::kLong).view({2, 6});   // (2, 6)
  at::Tensor mask = at::tensor({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, at::kLong).view({2, 6});  // (2, 6)
  at::Tensor positions = at::arange(6, at::kLong).repeat({2, 1});                              // (2, 6)
  model.set_training(true);
  at::Tensor logits = model.forward(ids, mask, positions);  // (2, 6, V)
  Grads out;
  out.loss = -sequence_logprobs(logits, ids, mask).sum.sum();
  out.recomputed_blocks = count_recomputed_blocks(out.loss);
  out.loss.backward();
  for (NamedTensor& p : model.trainable_parameters()) out.by_name[p.name] = p.tensor.grad().clone();
  return out;
}

// Fresh adapters have B = 0, so A would get no gradient: give every lora_B
// the same nonzero values in both models.
void set_adapter_b(CausalLM& model) {
  at::NoGradGuard no_grad;
  for (NamedTensor& p : model.trainable_parameters())
    if (p.name.find("lora_B") != std::string::npos)
      p.tensor.copy_(at::linspace(-0.1, 0.1, p.tensor.numel()).view(p.tensor.sizes()));
}

void check_same_grads(const std::string& dir, ModelOptions plain) {
  ModelOptions recompute = plain;
  recompute.gradient_checkpointing = true;
  std::shared_ptr<CausalLM> a = llama().load(dir, plain);
  std::shared_ptr<CausalLM> b = llama().load(dir, recompute);
  set_adapter_b(*a);
  set_adapter_b(*b);
  const Grads expected = training_grads(*a);
  const Grads got = training_grads(*b);
  CHECK(expected.recomputed_blocks == 0);
  CHECK(got.recomputed_blocks == 2);  // both decoder blocks went through the recomputing Function
  CHECK(got.loss.item<double>() == doctest::Approx(expected.loss.item<double>()).epsilon(1e-6));
  REQUIRE(got.by_name.size() == expected.by_name.size());
  for (const auto& [name, grad] : expected.by_name) {
    REQUIRE_MESSAGE(got.by_name.at(name).defined(), name);
    CHECK_MESSAGE(at::allclose(got.by_name.at(name), grad, 1e-5, 1e-5), name);
  }
}

}  // namespace

TEST_CASE("chunked log-probs equal sequence_logprobs of the full logits, values and gradients") {
  at::manual_seed(3);
  const int64_t batch = 3, length = 7, hidden_size = 16, vocab = 50;
  at::Tensor hidden = at::randn({batch, length, hidden_size}).requires_grad_(true);  // (B, T, H)
  at::Tensor weight = at::randn({vocab, hidden_size}).requires_grad_(true);          // (V, H)
  at::Tensor ids = at::randint(0, vocab, {batch, length}, at::kLong);               // (B, T)
  at::Tensor mask = at::ones({batch, length}, at::kLong);                           // (B, T)
  mask[0].slice(0, 5).fill_(0);  // padding, holding an id outside the vocabulary
  ids[0][6] = 999;
  mask[2].slice(0, 0, 2).fill_(0);
  at::Tensor row_weights = at::randn({batch, length - 1});  // (B, T-1): a loss using every position

  const SequenceLogprobs plain = sequence_logprobs(at::linear(hidden, weight), ids, mask);
  (plain.per_token * row_weights).sum().backward();
  const at::Tensor plain_hidden_grad = hidden.grad().clone();
  const at::Tensor plain_weight_grad = weight.grad().clone();
  const at::Tensor plain_mean_logit = at::linear(hidden, weight).detach().slice(1, 0, length - 1).mean(-1);

  for (int64_t chunk : {1, 4, 100}) {
    CAPTURE(chunk);
    hidden.mutable_grad().zero_();
    weight.mutable_grad().zero_();
    const recipe::ChunkedLogprobs chunked = recipe::chunked_sequence_logprobs(hidden, weight, ids, mask, chunk);
    CHECK(at::allclose(chunked.tokens.per_token, plain.per_token, 1e-5, 1e-5));
    CHECK(at::allclose(chunked.tokens.sum, plain.sum, 1e-5, 1e-5));
    CHECK(at::equal(chunked.tokens.mask, plain.mask));
    CHECK(at::equal(chunked.tokens.count, plain.count));
    CHECK(at::allclose(chunked.mean_logit, plain_mean_logit, 1e-5, 1e-5));
    (chunked.tokens.per_token * row_weights).sum().backward();
    CHECK(at::allclose(hidden.grad(), plain_hidden_grad, 1e-5, 1e-5));
    CHECK(at::allclose(weight.grad(), plain_weight_grad, 1e-5, 1e-5));
  }
  CHECK_THROWS_WITH(recipe::chunked_sequence_logprobs(hidden, weight, ids, mask, 0),
                    doctest::Contains("chunk_size must be at least 1"));
}

TEST_CASE("gradient checkpointing gives the gradients of the plain backward, with dropout, full and LoRA") {
  ScratchDir dir;
  make_tiny_model(dir / "base", 21);
  // Attention dropout on, so the recomputation must replay the forward's random masks.
  nlohmann::json config = nlohmann::json::parse(read_text(dir / "base/config.json"));
  config["attention_dropout"] = 0.2;
  write_text(dir / "base/config.json", config.dump());

  SUBCASE("full fine-tuning") { check_same_grads(dir / "base", {}); }
  SUBCASE("LoRA on every linear layer, adapter dropout, frozen embeddings") {
    ModelOptions lora;
    lora.lora.r = 4;
    lora.lora.alpha = 8;
    lora.lora.dropout = 0.3;
    lora.lora.target_modules = {"all-linear"};
    check_same_grads(dir / "base", lora);
  }
}
