// Safetensors reader and writer: round trips of every dtype, the file layout
// Python's safetensors expects, zero-copy views, one hand-crafted bad file per
// validation rule, and sharded checkpoints.
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstring>
#include <filesystem>
#include <optional>

#include "alignkit/core/safetensors.hpp"
#include "model_test_util.hpp"

using alignkit::core::SafetensorsCheckpoint;
using alignkit::core::SafetensorsFile;
using alignkit::core::save_safetensors;
using alignkit::test::read_bytes;
using alignkit::test::ScratchDir;
using alignkit::test::write_bytes;

namespace {

// 8-byte little-endian length (the header's, unless `declared` says otherwise), header, data.
std::string raw_file(const std::string& header, const std::string& data, std::optional<uint64_t> declared = {}) {
  uint64_t length = declared.value_or(header.size());
  std::string out(8, '\0');
  std::memcpy(out.data(), &length, 8);
  return out + header + data;
}

// Opens `path` (and reads every tensor), expecting a std::runtime_error whose
// message holds each of `fragments`.
void expect_rejected(const std::string& path, const std::vector<std::string>& fragments) {
  std::string message;
  try {
    auto file = SafetensorsFile::open(path);
    for (const std::string& name : file->names()) file->tensor(name);
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  REQUIRE_MESSAGE(!message.empty(), "accepted a bad file: " << path);
  for (const std::string& fragment : fragments)
    CHECK_MESSAGE(message.find(fragment) != std::string::npos, "'" << fragment << "' not in: " << message);
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips, with empty and 0-rank tensors") {
  ScratchDir dir;
  const std::string path = dir / "all.safetensors";
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", at::randn({2, 3})},
      {"f16", at::randn({3}).to(at::kHalf)},
      {"bf16", at::randn({2, 2}).to(at::kBFloat16)},
      {"f64", at::randn({5}, at::kDouble)},
      {"i8", at::arange(-4, 4, at::kChar)},
      {"i16", at::arange(-300, 300, 100, at::kShort)},
      {"i32", at::arange(7, at::kInt).view({7, 1})},
      {"i64", at::arange(3, at::kLong) * (int64_t(1) << 40)},
      {"u8", at::arange(250, 256, at::kByte)},
      {"bool", at::rand({4}) > 0.5},
      {"scalar", at::scalar_tensor(3.5)},
      {"empty", at::empty({0, 4})},
      {"transposed", at::randn({3, 2}).t()},  // not contiguous: saved by value
  };
  save_safetensors(path, tensors);

  auto file = SafetensorsFile::open(path);
  CHECK(file->metadata() == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(file->names().size() == tensors.size());
  for (const auto& [name, original] : tensors) {
    CAPTURE(name);
    at::Tensor loaded = file->tensor(name);
    CHECK((loaded.scalar_type() == original.scalar_type()));
    CHECK(loaded.sizes() == original.sizes());
    CHECK(at::equal(loaded, original.contiguous()));
    // Largest elements first: every view is aligned to its element size.
    if (loaded.numel() > 0) CHECK(reinterpret_cast<uintptr_t>(loaded.data_ptr()) % loaded.element_size() == 0);
  }
  CHECK(file->info("f32").shape == std::vector<int64_t>{2, 3});
  CHECK(alignkit::core::load_safetensors(path).size() == tensors.size());
}

TEST_CASE("safetensors: the writer's layout is the one Python's safetensors reads") {
  ScratchDir dir;
  const std::string path = dir / "layout.safetensors";
  save_safetensors(path, {{"b", at::ones({3}, at::kHalf)}, {"a", at::ones({2}, at::kFloat)}});
  const std::string bytes = read_bytes(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  CHECK(header_size % 8 == 0);
  const std::string header = bytes.substr(8, header_size);
  CHECK(header.front() == '{');
  CHECK(header.find_last_not_of(' ') == header.find_last_of('}'));  // padded with spaces only
  auto json = nlohmann::json::parse(header);
  CHECK(json["__metadata__"] == nlohmann::json{{"format", "pt"}});
  // F32 first (alignment), then F16.
  CHECK(json["a"] == nlohmann::json{{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}});
  CHECK(json["b"] == nlohmann::json{{"dtype", "F16"}, {"shape", {3}}, {"data_offsets", {8, 14}}});
  CHECK(bytes.size() == 8 + header_size + 14);
}

TEST_CASE("safetensors: views are copy-on-write and keep the mapping alive") {
  ScratchDir dir;
  const std::string path = dir / "view.safetensors";
  save_safetensors(path, {{"w", at::zeros({4})}});
  const std::string before = read_bytes(path);
  at::Tensor view;
  {
    auto file = SafetensorsFile::open(path);
    view = file->tensor("w");
  }
  view.fill_(7.0f);  // the file object is gone; the view still owns its mapping
  CHECK(view.sum().item<float>() == 28.0f);
  CHECK(read_bytes(path) == before);
  CHECK(at::equal(SafetensorsFile::open(path)->tensor("w"), at::zeros({4})));
}

TEST_CASE("safetensors: a misaligned tensor is copied, with the right values") {
  ScratchDir dir;
  const std::string path = dir / "misaligned.safetensors";
  std::string header =
      R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  float value = 1.25f;
  std::string data(5, '\0');
  data[0] = 9;
  std::memcpy(data.data() + 1, &value, 4);
  write_bytes(path, raw_file(header, data));
  auto file = SafetensorsFile::open(path);
  CHECK(file->tensor("b").item<float>() == 1.25f);
  CHECK(file->tensor("a").item<int8_t>() == 9);
}

TEST_CASE("safetensors: every malformed file is refused with its own error") {
  ScratchDir dir;
  int counter = 0;
  auto bad = [&](const std::string& bytes) {
    std::string path = dir / ("bad" + std::to_string(counter++) + ".safetensors");
    write_bytes(path, bytes);
    return path;
  };
  const std::string f32_a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  SUBCASE("shorter than the length field") {
    std::string path = bad("abc");
    expect_rejected(path, {path, "shorter than the 8-byte header length"});
  }
  SUBCASE("header longer than 100 MB") {
    std::string path = bad(raw_file("{}", "", 100'000'001));
    expect_rejected(path, {path, "exceeds the limit of 100000000 bytes"});
  }
  SUBCASE("header past the end of the file") {
    std::string path = bad(raw_file("{}", "", 4096));
    expect_rejected(path, {path, "runs past the end of the file", "truncated"});
  }
  SUBCASE("truncated data") {
    std::string path = bad(raw_file("{" + f32_a + "}", std::string(5, '\0')));
    expect_rejected(path, {path, "tensor 'a'", "only 5 data bytes", "truncated"});
  }
  SUBCASE("header not a JSON object") {
    std::string path = bad(raw_file("[1, 2]  ", ""));
    expect_rejected(path, {path, "not a JSON object"});
    std::string text = bad(raw_file("\"text\"  ", ""));
    expect_rejected(text, {text, "not a JSON object"});
  }
  SUBCASE("invalid JSON") {
    std::string path = bad(raw_file("{\"a\": ", ""));
    expect_rejected(path, {path, "not valid JSON"});
  }
  SUBCASE("invalid UTF-8") {
    std::string path = bad(raw_file("{\"\xff\xfe\":{}}", ""));
    expect_rejected(path, {path, "not valid JSON", "UTF-8"});
  }
  SUBCASE("unknown dtype") {
    std::string path = bad(raw_file(R"({"w":{"dtype":"X9","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')));
    expect_rejected(path, {path, "tensor 'w'", "unknown dtype 'X9'", "supported: F32"});
  }
  SUBCASE("a dtype LibTorch cannot hold") {
    std::string path = bad(raw_file(R"({"w":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0')));
    expect_rejected(path, {path, "tensor 'w'", "'U16' is not supported"});
  }
  SUBCASE("duplicate tensor name") {
    std::string path = bad(raw_file("{" + f32_a + "," + f32_a + "}", std::string(8, '\0')));
    expect_rejected(path, {path, "duplicate tensor name 'a'"});
  }
  SUBCASE("duplicate key inside an entry") {
    std::string path = bad(raw_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')));
    expect_rejected(path, {path, "duplicate key 'dtype'", "'a'"});
  }
  SUBCASE("overlapping offsets") {
    std::string path = bad(
        raw_file("{" + f32_a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, '\0')));
    expect_rejected(path, {path, "tensor 'b'", "overlap tensor 'a'"});
  }
  SUBCASE("a hole between tensors") {
    std::string path = bad(
        raw_file("{" + f32_a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", std::string(20, '\0')));
    expect_rejected(path, {path, "tensor 'b'", "contiguous from 0"});
  }
  SUBCASE("offsets not starting at 0") {
    std::string path = bad(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, '\0')));
    expect_rejected(path, {path, "tensor 'a'", "begin at 4"});
  }
  SUBCASE("trailing bytes after the last tensor") {
    std::string path = bad(raw_file("{" + f32_a + "}", std::string(12, '\0')));
    expect_rejected(path, {path, "4 trailing bytes", "'a'"});
  }
  SUBCASE("shape and offsets disagree") {
    std::string path = bad(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')));
    expect_rejected(path, {path, "tensor 'a'", "needs 12 bytes", "span 8"});
  }
  SUBCASE("shape overflow") {
    std::string path = bad(raw_file(
        R"({"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}})",
        std::string(8, '\0')));
    expect_rejected(path, {path, "tensor 'a'", "overflows"});
  }
  SUBCASE("byte size overflow") {
    std::string path = bad(raw_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})",
                                    std::string(8, '\0')));
    expect_rejected(path, {path, "tensor 'a'", "overflows"});
  }
  SUBCASE("negative dimension") {
    std::string path = bad(raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')));
    expect_rejected(path, {path, "tensor 'a'", "not a non-negative integer"});
  }
  SUBCASE("offsets that are not integers") {
    std::string path = bad(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0.5,8]}})", std::string(8, '\0')));
    expect_rejected(path, {path, "tensor 'a'", "not non-negative integers"});
  }
  SUBCASE("offsets that end before they begin") {
    std::string path = bad(raw_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", std::string(8, '\0')));
    expect_rejected(path, {path, "tensor 'a'", "end before they begin"});
  }
  SUBCASE("missing fields") {
    std::string path = bad(raw_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')));
    expect_rejected(path, {path, "tensor 'a'", "'dtype'"});
    std::string no_shape = bad(raw_file(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0')));
    expect_rejected(no_shape, {no_shape, "tensor 'a'", "'shape'"});
    std::string no_offsets = bad(raw_file(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')));
    expect_rejected(no_offsets, {no_offsets, "tensor 'a'", "'data_offsets'"});
  }
  SUBCASE("metadata values must be strings") {
    std::string path = bad(raw_file(R"({"__metadata__":{"format":1}})", ""));
    expect_rejected(path, {path, "__metadata__ value of 'format' is not a string"});
  }
  SUBCASE("an invalid bool byte") {
    std::string path = bad(raw_file(R"({"flags":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x00\x02", 2)));
    expect_rejected(path, {path, "tensor 'flags'", "neither 0 nor 1"});
  }
  SUBCASE("a missing file") {
    std::string path = dir / "absent.safetensors";
    expect_rejected(path, {path, "cannot open"});
  }
}

TEST_CASE("safetensors: zero-size tensors may share an offset, an empty file holds no tensor") {
  ScratchDir dir;
  const std::string path = dir / "zero.safetensors";
  write_bytes(path, raw_file(R"({"e1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                             R"("e2":{"dtype":"I64","shape":[0,3],"data_offsets":[0,0]}})",
                             ""));
  auto file = SafetensorsFile::open(path);
  CHECK(file->tensor("e2").sizes() == at::IntArrayRef({0, 3}));
  const std::string empty = dir / "empty.safetensors";
  save_safetensors(empty, {});
  CHECK(SafetensorsFile::open(empty)->names().empty());
}

TEST_CASE("safetensors: the writer refuses bad input and leaves the old file untouched") {
  ScratchDir dir;
  const std::string path = dir / "keep.safetensors";
  save_safetensors(path, {{"w", at::ones({2})}});
  const std::string before = read_bytes(path);
  auto expect_error = [&](const std::vector<std::pair<std::string, at::Tensor>>& tensors, const std::string& fragment) {
    std::string message;
    try {
      save_safetensors(path, tensors);
    } catch (const std::runtime_error& e) {
      message = e.what();
    }
    CHECK_MESSAGE(message.find(fragment) != std::string::npos, message);
    CHECK_MESSAGE(message.find(path) != std::string::npos, message);
  };
  expect_error({{"w", at::ones({2})}, {"w", at::ones({2})}}, "tensor 'w': given twice");
  expect_error({{"", at::ones({2})}}, "empty name");
  expect_error({{"c", at::ones({2}, at::kComplexFloat)}}, "tensor 'c'");
  CHECK(read_bytes(path) == before);
  size_t entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    (void)entry;
    ++entries;
  }
  CHECK(entries == 1);  // no temporary file left behind
}

TEST_CASE("safetensors: sharded checkpoints follow the index's weight_map") {
  ScratchDir dir;
  at::Tensor a = at::randn({2, 2});
  at::Tensor b = at::randn({3}).to(at::kBFloat16);
  at::Tensor c = at::arange(4, at::kLong);
  save_safetensors(dir / "model-00001-of-00002.safetensors", {{"a", a}, {"b", b}, {"unlisted", at::ones({1})}});
  save_safetensors(dir / "model-00002-of-00002.safetensors", {{"c", c}});
  nlohmann::json index = {{"metadata", {{"total_size", 36}}},
                          {"weight_map",
                           {{"a", "model-00001-of-00002.safetensors"},
                            {"b", "model-00001-of-00002.safetensors"},
                            {"c", "model-00002-of-00002.safetensors"}}}};
  const std::string index_path = dir / "model.safetensors.index.json";
  write_bytes(index_path, index.dump());

  auto checkpoint = SafetensorsCheckpoint::open_dir(dir.path());
  CHECK(checkpoint.names() == std::vector<std::string>{"a", "b", "c"});
  CHECK(checkpoint.files().size() == 2);
  CHECK(at::equal(checkpoint.tensor("a"), a));
  CHECK(at::equal(checkpoint.tensor("b"), b));
  CHECK(at::equal(checkpoint.tensor("c"), c));
  CHECK(checkpoint.file_of("c") == dir / "model-00002-of-00002.safetensors");
  CHECK((checkpoint.info("b").dtype == at::kBFloat16));
  CHECK_FALSE(checkpoint.contains("unlisted"));
  CHECK_THROWS_WITH_AS(checkpoint.tensor("zzz"), doctest::Contains("tensor 'zzz'"), std::runtime_error);

  auto expect_index_error = [&](const nlohmann::json& bad_index, const std::vector<std::string>& fragments) {
    write_bytes(index_path, bad_index.dump());
    std::string message;
    try {
      SafetensorsCheckpoint::open_dir(dir.path());
    } catch (const std::runtime_error& e) {
      message = e.what();
    }
    REQUIRE_MESSAGE(!message.empty(), "accepted " << bad_index.dump());
    for (const std::string& fragment : fragments)
      CHECK_MESSAGE(message.find(fragment) != std::string::npos, "'" << fragment << "' not in: " << message);
  };
  SUBCASE("a shard that does not exist") {
    expect_index_error({{"weight_map", {{"a", "model-00009.safetensors"}}}}, {index_path, "model-00009.safetensors", "'a'"});
  }
  SUBCASE("a tensor missing from its shard") {
    expect_index_error({{"weight_map", {{"c", "model-00001-of-00002.safetensors"}}}},
                       {"model-00001-of-00002.safetensors", "tensor 'c'", "missing from this shard"});
  }
  SUBCASE("a shard outside the folder") {
    expect_index_error({{"weight_map", {{"a", "../model-00001-of-00002.safetensors"}}}}, {index_path, "plain file name"});
  }
  SUBCASE("no weight_map") {
    expect_index_error({{"metadata", {}}}, {index_path, "weight_map"});
  }
  SUBCASE("model.safetensors wins over the index, as in from_pretrained") {
    save_safetensors(dir / "model.safetensors", {{"single", at::ones({1})}});
    CHECK(SafetensorsCheckpoint::open_dir(dir.path()).names() == std::vector<std::string>{"single"});
  }
}

TEST_CASE("safetensors: a folder without safetensors is refused, a pickle is never read") {
  ScratchDir dir;
  write_bytes(dir / "pytorch_model.bin", "not read");
  CHECK_THROWS_WITH_AS(SafetensorsCheckpoint::open_dir(dir.path()),
                       doctest::Contains("pytorch_model.bin is a pickle checkpoint, which is never loaded"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(SafetensorsCheckpoint::open_dir(dir / "absent"), doctest::Contains("does not exist"),
                       std::runtime_error);
}
