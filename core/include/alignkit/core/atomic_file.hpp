// Crash-safe files and checkpoint commits.
//
// Every file is written as: temporary name in the same folder -> fsync ->
// rename over the target -> fsync of the folder, so a reader (or a resumed
// run after SIGKILL or power loss) sees the old contents or the complete new
// ones, never a torn file. A checkpoint folder counts only once its COMMITTED
// marker exists; the marker is written last.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace alignkit::core {

// Streams a file to a temporary sibling of `target` and renames it into place
// on commit(). Without commit() (an exception on the way, say) the destructor
// removes the temporary file and the target keeps its previous contents.
// Errors throw std::runtime_error naming the target and the system's reason.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string target);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  // fsync, close, rename over the target, fsync the folder. Call once.
  void commit();

  const std::string& target() const { return target_; }
  const std::string& temporary_path() const { return temporary_; }

 private:
  void discard() noexcept;

  std::string target_;
  std::string temporary_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes `contents` (text or bytes) to `path` atomically and durably.
void write_file_atomic(const std::string& path, std::string_view contents);

// Makes the entries of `dir` (creations, renames) durable. Filesystems that
// cannot sync a folder (EINVAL) are accepted silently; other errors throw.
void fsync_directory(const std::string& dir);

// Makes every file and folder under `dir` durable: for files written by code
// that did not sync them (a plugin's save()), before a commit marker.
void fsync_tree(const std::string& dir);

// The marker file whose presence makes a checkpoint folder valid.
inline constexpr const char* kCommitMarkerName = "COMMITTED";

// Commits `dir`: writes its COMMITTED marker (with `contents`, e.g. the step)
// atomically, then syncs `dir`'s parent so the folder entry itself is durable.
// Every other file in `dir` must already be durable (written with the
// functions above) before this is called: the marker is the last write.
void write_commit_marker(const std::string& dir, std::string_view contents = {});

// True when `dir` holds a COMMITTED marker file.
bool is_committed(const std::string& dir);

// "checkpoint-000200": the folder name of the checkpoint saved after `step`
// (steps past 999999 simply get more digits).
std::string checkpoint_dir_name(int64_t step);

struct CheckpointDir {
  std::string path;  // <parent>/checkpoint-NNNNNN
  int64_t step = 0;
};

// The committed checkpoint folders directly in `parent`, newest (highest
// step) first. Folders without the marker, or whose names are not
// checkpoint-<digits>, are ignored. A missing `parent` gives an empty list; a
// `parent` that cannot be read throws naming it.
std::vector<CheckpointDir> list_committed_checkpoints(const std::string& parent);

// The checkpoint-<digits> folders in `parent` that lack the marker (a save
// interrupted by a crash), newest first: what a resumed run removes.
std::vector<CheckpointDir> list_uncommitted_checkpoints(const std::string& parent);

}  // namespace alignkit::core
