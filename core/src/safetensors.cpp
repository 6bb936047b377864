// Safetensors reader (mmap, full header validation, sharded index) and atomic
// writer. See safetensors.hpp for the format and the guarantees.
#include "alignkit/core/safetensors.hpp"

#include "alignkit/core/atomic_file.hpp"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace alignkit::core {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

struct DtypeName {
  const char* name;
  c10::ScalarType dtype;
};

constexpr DtypeName kDtypes[] = {
    {"F32", c10::kFloat}, {"F16", c10::kHalf},  {"BF16", c10::kBFloat16}, {"F64", c10::kDouble}, {"I8", c10::kChar},
    {"I16", c10::kShort}, {"I32", c10::kInt},   {"I64", c10::kLong},      {"U8", c10::kByte},    {"BOOL", c10::kBool},
};

// Valid safetensors dtypes that this LibTorch cannot represent.
constexpr const char* kUnrepresentableDtypes[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3",
                                                  "F6_E3M2", "C64"};

[[noreturn]] void fail(const std::string& file, const std::string& message) {
  throw std::runtime_error(file + ": " + message);
}

[[noreturn]] void fail_tensor(const std::string& file, const std::string& tensor, const std::string& message) {
  throw std::runtime_error(file + ": tensor '" + tensor + "': " + message);
}

std::string system_error(const std::string& what) { return what + ": " + std::strerror(errno); }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// Parses JSON text, rejecting a duplicate key in any object (nlohmann would
// silently keep the last one). `describe_duplicate(key, top_level_key, depth)`
// builds the message.
template <typename Describe>
json parse_json_without_duplicates(const std::string& text, Describe describe_duplicate) {
  std::vector<std::set<std::string>> open_objects;
  std::string top_level_key;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: open_objects.emplace_back(); break;
      case json::parse_event_t::object_end: open_objects.pop_back(); break;
      case json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (depth == 1) top_level_key = key;
        if (!open_objects.back().insert(key).second) describe_duplicate(key, top_level_key, depth);
        break;
      }
      default: break;
    }
    return true;
  };
  return json::parse(text, callback);
}

std::optional<uint64_t> as_unsigned(const json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) return static_cast<uint64_t>(value.get<int64_t>());
  return std::nullopt;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot be read");
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace

c10::ScalarType safetensors_dtype_from_name(const std::string& name) {
  for (const DtypeName& entry : kDtypes)
    if (name == entry.name) return entry.dtype;
  for (const char* other : kUnrepresentableDtypes)
    if (name == other)
      throw std::runtime_error("dtype '" + name + "' is not supported by this LibTorch (supported: " +
                               safetensors_supported_dtypes() + ")");
  throw std::runtime_error("unknown dtype '" + name + "' (supported: " + safetensors_supported_dtypes() + ")");
}

std::string safetensors_dtype_name(c10::ScalarType dtype) {
  for (const DtypeName& entry : kDtypes)
    if (dtype == entry.dtype) return entry.name;
  throw std::runtime_error(std::string("dtype ") + c10::toString(dtype) + " cannot be stored in safetensors (supported: " +
                           safetensors_supported_dtypes() + ")");
}

std::string safetensors_supported_dtypes() {
  std::string out;
  for (const DtypeName& entry : kDtypes) out += (out.empty() ? "" : ", ") + std::string(entry.name);
  return out;
}

// ---------------------------------------------------------------------------
// Reader

struct SafetensorsFile::Mapping {
  void* address = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (address) ::munmap(address, size);
  }
};

std::shared_ptr<const SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, system_error("cannot open"));
  struct stat status {};
  if (::fstat(fd, &status) != 0) {
    ::close(fd);
    fail(path, system_error("cannot stat"));
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(status.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail(path, "file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  }
  // Private and writable: views handed out may be written to (copy-on-write)
  // without ever touching the file.
  void* address = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (address == MAP_FAILED) fail(path, system_error("mmap failed"));
  file->mapping_ = std::make_shared<Mapping>();
  file->mapping_->address = address;
  file->mapping_->size = file_size;
  const auto* bytes = static_cast<const uint8_t*>(address);

  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes, 8);
  if (header_size > kSafetensorsMaxHeaderSize)
    fail(path, "header length " + std::to_string(header_size) + " exceeds the limit of " +
                   std::to_string(kSafetensorsMaxHeaderSize) + " bytes");
  if (header_size > file_size - 8)
    fail(path, "header length " + std::to_string(header_size) + " runs past the end of the file (" +
                   std::to_string(file_size) + " bytes): truncated file?");
  std::string header_text(reinterpret_cast<const char*>(bytes + 8), header_size);
  if (header_text.empty() || header_text[0] != '{') fail(path, "header is not a JSON object (it must start with '{')");

  json header;
  try {
    header = parse_json_without_duplicates(header_text, [&](const std::string& key, const std::string& top, int depth) {
      if (depth == 1) fail(path, "duplicate tensor name '" + key + "' in the header");
      fail(path, "duplicate key '" + key + "' in the header entry of '" + top + "'");
    });
  } catch (const json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "__metadata__ is not a JSON object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) fail(path, "__metadata__ value of '" + m.key() + "' is not a string");
        file->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) fail_tensor(path, name, "header entry is not a JSON object");
    SafetensorsTensorInfo info;
    info.name = name;

    auto dtype = entry.find("dtype");
    if (dtype == entry.end() || !dtype->is_string()) fail_tensor(path, name, "missing string field 'dtype'");
    try {
      info.dtype = safetensors_dtype_from_name(dtype->get<std::string>());
    } catch (const std::runtime_error& e) {
      fail_tensor(path, name, e.what());
    }

    auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array()) fail_tensor(path, name, "missing array field 'shape'");
    uint64_t numel = 1;
    for (const json& dim : *shape) {
      std::optional<uint64_t> size = as_unsigned(dim);
      if (!size || *size > static_cast<uint64_t>(INT64_MAX))
        fail_tensor(path, name, "shape " + dim.dump() + " entry is not a non-negative integer");
      if (__builtin_mul_overflow(numel, *size, &numel)) fail_tensor(path, name, "shape " + shape->dump() + " overflows");
      info.shape.push_back(static_cast<int64_t>(*size));
    }
    uint64_t byte_size = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(info.dtype)), &byte_size))
      fail_tensor(path, name, "byte size of shape " + shape->dump() + " overflows");

    auto offsets = entry.find("data_offsets");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2)
      fail_tensor(path, name, "missing field 'data_offsets' = [begin, end]");
    std::optional<uint64_t> begin = as_unsigned((*offsets)[0]);
    std::optional<uint64_t> end = as_unsigned((*offsets)[1]);
    if (!begin || !end) fail_tensor(path, name, "data_offsets " + offsets->dump() + " are not non-negative integers");
    if (*end < *begin) fail_tensor(path, name, "data_offsets " + offsets->dump() + " end before they begin");
    if (*end - *begin != byte_size)
      fail_tensor(path, name,
                  "shape " + shape_string(info.shape) + " of " + dtype->get<std::string>() + " needs " +
                      std::to_string(byte_size) + " bytes but data_offsets " + offsets->dump() + " span " +
                      std::to_string(*end - *begin));
    info.begin = *begin;
    info.end = *end;
    file->tensors_.push_back(std::move(info));
  }

  // The data buffer must be covered exactly: contiguous from 0, no overlap, no hole.
  std::sort(file->tensors_.begin(), file->tensors_.end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const SafetensorsTensorInfo& info : file->tensors_) {
    if (info.begin < covered)
      fail_tensor(path, info.name,
                  "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                      "] overlap tensor '" + *previous + "', which ends at " + std::to_string(covered));
    if (info.begin > covered)
      fail_tensor(path, info.name,
                  "data_offsets begin at " + std::to_string(info.begin) + " but the data before it ends at " +
                      std::to_string(covered) + " (offsets must be contiguous from 0)");
    covered = info.end;
    previous = &info.name;
  }
  const uint64_t data_size = file_size - 8 - header_size;
  if (covered > data_size)
    fail_tensor(path, *previous,
                "ends at byte " + std::to_string(covered) + " of the data buffer, but the file holds only " +
                    std::to_string(data_size) + " data bytes: truncated file?");
  if (covered < data_size)
    fail(path, std::to_string(data_size - covered) + " trailing bytes after the last tensor" +
                   (previous ? " '" + *previous + "'" : std::string()) + " (data ends at " + std::to_string(covered) +
                   ")");

  for (size_t i = 0; i < file->tensors_.size(); ++i) file->index_[file->tensors_[i].name] = i;
  file->data_ = bytes + 8 + header_size;
  return file;
}

SafetensorsFile::~SafetensorsFile() = default;

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& info : tensors_) out.push_back(info.name);
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) > 0; }

const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail_tensor(path_, name, "not in this file");
  return tensors_[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsTensorInfo& meta = info(name);
  auto options = at::TensorOptions().dtype(meta.dtype).device(c10::kCPU);
  if (meta.begin == meta.end) return at::empty(meta.shape, options);
  auto* source = const_cast<uint8_t*>(data_ + meta.begin);
  const size_t byte_size = meta.end - meta.begin;
  if (meta.dtype == c10::kBool) {
    // Any byte but 0 or 1 is an invalid bool for LibTorch.
    for (size_t i = 0; i < byte_size; ++i)
      if (source[i] > 1) fail_tensor(path_, name, "BOOL byte " + std::to_string(i) + " is neither 0 nor 1");
  }
  if (reinterpret_cast<uintptr_t>(source) % c10::elementSize(meta.dtype) != 0) {
    at::Tensor copy = at::empty(meta.shape, options);
    std::memcpy(copy.data_ptr(), source, byte_size);
    return copy;
  }
  std::shared_ptr<Mapping> keep_alive = mapping_;
  return at::from_blob(source, meta.shape, [keep_alive](void*) {}, options);
}

// ---------------------------------------------------------------------------
// Checkpoints

SafetensorsCheckpoint SafetensorsCheckpoint::open_file(const std::string& path) {
  SafetensorsCheckpoint checkpoint;
  checkpoint.files_.push_back(SafetensorsFile::open(path));
  for (const std::string& name : checkpoint.files_.front()->names()) checkpoint.owner_[name] = 0;
  return checkpoint;
}

SafetensorsCheckpoint SafetensorsCheckpoint::open_dir(const std::string& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) fail(dir, "model folder does not exist or is not a folder");
  const fs::path folder(dir);
  const fs::path single = folder / "model.safetensors";
  if (fs::exists(single, error)) return open_file(single.string());

  const fs::path index_path = folder / "model.safetensors.index.json";
  if (!fs::exists(index_path, error)) {
    std::string message = "holds neither model.safetensors nor model.safetensors.index.json";
    for (const char* pickle : {"pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.bin"})
      if (fs::exists(folder / pickle, error))
        message += std::string("; ") + pickle +
                   " is a pickle checkpoint, which is never loaded (convert it to safetensors with Python first)";
    fail(dir, message);
  }

  const std::string index_file = index_path.string();
  json index;
  try {
    index = parse_json_without_duplicates(read_text_file(index_file),
                                          [&](const std::string& key, const std::string&, int depth) {
                                            fail(index_file, "duplicate key '" + key + "' (depth " +
                                                                 std::to_string(depth) + ")");
                                          });
  } catch (const json::exception& e) {
    fail(index_file, std::string("not valid JSON: ") + e.what());
  }
  if (!index.is_object()) fail(index_file, "not a JSON object");
  auto weight_map = index.find("weight_map");
  if (weight_map == index.end() || !weight_map->is_object()) fail(index_file, "missing object 'weight_map'");

  SafetensorsCheckpoint checkpoint;
  std::map<std::string, size_t> file_slot;
  for (auto it = weight_map->begin(); it != weight_map->end(); ++it) {
    if (!it.value().is_string()) fail(index_file, "weight_map entry of '" + it.key() + "' is not a file name");
    const std::string shard = it.value().get<std::string>();
    // Shards live in the folder itself: no path may lead elsewhere.
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos)
      fail(index_file, "weight_map entry of '" + it.key() + "' is not a plain file name: '" + shard + "'");
    auto slot = file_slot.find(shard);
    if (slot == file_slot.end()) {
      const fs::path shard_path = folder / shard;
      if (!fs::exists(shard_path, error))
        fail(index_file, "shard '" + shard + "' (holding '" + it.key() + "') does not exist");
      checkpoint.files_.push_back(SafetensorsFile::open(shard_path.string()));
      slot = file_slot.emplace(shard, checkpoint.files_.size() - 1).first;
    }
    if (!checkpoint.files_[slot->second]->contains(it.key()))
      fail_tensor(checkpoint.files_[slot->second]->path(), it.key(),
                  "listed in " + index_file + " but missing from this shard");
    checkpoint.owner_[it.key()] = slot->second;
  }
  return checkpoint;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(owner_.size());
  for (const auto& [name, file] : owner_) out.push_back(name);
  return out;
}

bool SafetensorsCheckpoint::contains(const std::string& name) const { return owner_.count(name) > 0; }

const SafetensorsFile& SafetensorsCheckpoint::owner_of(const std::string& name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) {
    std::string where = files_.size() == 1 ? files_.front()->path() : "checkpoint";
    fail_tensor(where, name, "not in the checkpoint");
  }
  return *files_[it->second];
}

const std::string& SafetensorsCheckpoint::file_of(const std::string& name) const { return owner_of(name).path(); }

const SafetensorsTensorInfo& SafetensorsCheckpoint::info(const std::string& name) const {
  return owner_of(name).info(name);
}

at::Tensor SafetensorsCheckpoint::tensor(const std::string& name) const { return owner_of(name).tensor(name); }

std::vector<std::string> SafetensorsCheckpoint::files() const {
  std::vector<std::string> out;
  for (const auto& file : files_) out.push_back(file->path());
  return out;
}

std::map<std::string, at::Tensor> load_safetensors(const std::string& path) {
  auto file = SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const std::string& name : file->names()) out.emplace(name, file->tensor(name));
  return out;
}

// ---------------------------------------------------------------------------
// Writer

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Prepared {
    const std::string* name;
    at::Tensor data;  // contiguous, CPU
    std::string dtype;
    size_t element_size;
  };
  std::vector<Prepared> prepared;
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty()) fail(path, "cannot save a tensor with an empty name");
    if (name == "__metadata__") fail(path, "'__metadata__' is reserved and cannot name a tensor");
    if (!seen.insert(name).second) fail_tensor(path, name, "given twice");
    if (!tensor.defined()) fail_tensor(path, name, "undefined tensor");
    std::string dtype;
    try {
      dtype = safetensors_dtype_name(tensor.scalar_type());
    } catch (const std::runtime_error& e) {
      fail_tensor(path, name, e.what());
    }
    prepared.push_back({&name, tensor.detach().to(c10::kCPU).contiguous(), dtype, static_cast<size_t>(tensor.element_size())});
  }
  // Largest elements first keeps every tensor aligned to its element size.
  std::stable_sort(prepared.begin(), prepared.end(),
                   [](const Prepared& a, const Prepared& b) { return a.element_size > b.element_size; });

  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Prepared& item : prepared) {
    const uint64_t bytes = static_cast<uint64_t>(item.data.numel()) * item.element_size;
    header[*item.name] = {{"dtype", item.dtype}, {"shape", item.data.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  if (header_text.size() > kSafetensorsMaxHeaderSize) fail(path, "header would exceed the 100 MB limit");

  AtomicFileWriter out(path);
  uint8_t length[8];
  uint64_t header_size = header_text.size();
  std::memcpy(length, &header_size, 8);
  out.write(length, 8);
  out.write(header_text.data(), header_text.size());
  for (const Prepared& item : prepared) out.write(item.data.data_ptr(), item.data.numel() * item.element_size);
  out.commit();
}

}  // namespace alignkit::core
