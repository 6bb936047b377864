// Safetensors I/O: a validating, memory-mapped reader (single files and
// sharded checkpoints with model.safetensors.index.json) and an atomic writer
// whose files Python's `safetensors` reads.
//
// Format: 8-byte little-endian header length N, N bytes of UTF-8 JSON
// ({"__metadata__": {...}, "name": {"dtype", "shape", "data_offsets"}}),
// then the data buffer; data_offsets are [begin, end) inside that buffer.
//
// The reader checks the whole header before any tensor is used: the file is
// at least 8 bytes, N <= 100,000,000 and inside the file, the header is a JSON
// object (valid UTF-8, no duplicate key), every dtype is known, shape x dtype
// size does not overflow and equals end - begin, offsets are contiguous from 0
// with no gap or overlap, and no byte follows the last tensor. Every violation
// is a std::runtime_error naming the file and the tensor. Nothing but
// safetensors is ever read: no pickle, no TorchScript, no fallback.
//
// Tensors returned by the reader are zero-copy CPU views of the mapping: the
// file is mapped privately (copy-on-write), so writing to a view never changes
// the file, and each view holds the mapping alive until the last one is freed.
// A tensor whose bytes are not aligned to its element size is copied instead.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace alignkit::core {

// Largest header the reader accepts, as upstream safetensors.
constexpr uint64_t kSafetensorsMaxHeaderSize = 100'000'000;

// "F32" -> kFloat. Throws std::runtime_error listing the supported names.
c10::ScalarType safetensors_dtype_from_name(const std::string& name);
// kFloat -> "F32". Throws std::runtime_error for a dtype safetensors cannot hold.
std::string safetensors_dtype_name(c10::ScalarType dtype);
// "F32, F16, BF16, F64, I8, I16, I32, I64, U8, BOOL"
std::string safetensors_supported_dtypes();

struct SafetensorsTensorInfo {
  std::string name;
  c10::ScalarType dtype = c10::kFloat;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets inside the data buffer, [begin, end)
  uint64_t end = 0;
};

// One validated, memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws std::runtime_error naming the file (and
  // the tensor) for any violation listed at the top of this header.
  static std::shared_ptr<const SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Tensor names in data order.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const;
  // Throws std::runtime_error naming the file and the tensor when absent.
  const SafetensorsTensorInfo& info(const std::string& name) const;
  // A CPU tensor of the stored dtype and shape (see the top of this header for
  // views and copies). Throws when absent.
  at::Tensor tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Mapping;
  SafetensorsFile() = default;

  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  const uint8_t* data_ = nullptr;  // start of the data buffer inside the mapping
  std::vector<SafetensorsTensorInfo> tensors_;  // in data order
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// The weights of a model folder: `model.safetensors` when present, else the
// shards named by `model.safetensors.index.json` (its "weight_map"), as
// Hugging Face's from_pretrained looks for them.
class SafetensorsCheckpoint {
 public:
  // Throws std::runtime_error naming the folder when it holds neither file
  // (mentioning a pickle checkpoint found there, which is never read), naming
  // the index file for a malformed index, and naming the shard and tensor when
  // the index lists a tensor its shard lacks.
  static SafetensorsCheckpoint open_dir(const std::string& dir);
  // Opens a single file as a checkpoint.
  static SafetensorsCheckpoint open_file(const std::string& path);

  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const;
  const SafetensorsTensorInfo& info(const std::string& name) const;
  at::Tensor tensor(const std::string& name) const;
  // The file that holds `name`.
  const std::string& file_of(const std::string& name) const;
  // Every file read, in order (one for an unsharded checkpoint).
  std::vector<std::string> files() const;

 private:
  const SafetensorsFile& owner_of(const std::string& name) const;

  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::map<std::string, size_t> owner_;  // tensor name -> index into files_
};

// Reads every tensor of one file into a map (views, as SafetensorsFile::tensor).
std::map<std::string, at::Tensor> load_safetensors(const std::string& path);

// Writes tensors (any device, dtype among the supported ones) to `path` so
// Python's safetensors reads them: the data buffer ordered by element size
// (largest first, then the given order) so every tensor stays aligned,
// `__metadata__` = `metadata` (default {"format": "pt"}), header padded with
// spaces to a multiple of 8. Atomic (AtomicFileWriter): a temporary file in
// the same folder, fsync, rename over `path`, fsync of the folder. Throws std::runtime_error
// naming the file (and tensor) on a duplicate or empty name, an unsupported
// dtype or an I/O failure; `path` is then left as it was.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace alignkit::core
