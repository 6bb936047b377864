// Atomic writes (old or new contents, never torn; no temporary files left
// behind, even on failure) and the committed-checkpoint listing.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "alignkit/core/atomic_file.hpp"
#include "test_support.hpp"

using namespace alignkit::core;
using alignkit::test::read_file;
using alignkit::test::TempDir;
using alignkit::test::write_plain_file;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

void make_checkpoint(const TempDir& root, const std::string& name, bool committed) {
  fs::create_directories(root.path() / name);
  write_file_atomic(root / (name + "/model.safetensors"), "weights");
  if (committed) write_commit_marker(root / name, "step");
}

}  // namespace

TEST_CASE("write_file_atomic creates and replaces a file, leaving no temporary behind") {
  TempDir dir;
  std::string target = dir / "state.json";
  write_file_atomic(target, "{\"step\": 1}");
  CHECK(read_file(target) == "{\"step\": 1}");
  write_file_atomic(target, std::string("bytes\0with\xffzero", 15));
  CHECK(read_file(target) == std::string("bytes\0with\xffzero", 15));
  CHECK(names_in(dir.path()) == std::vector<std::string>{"state.json"});
}

TEST_CASE("an AtomicFileWriter that is not committed leaves the old file untouched") {
  TempDir dir;
  std::string target = dir / "optimizer.bin";
  write_file_atomic(target, "old contents");
  {
    AtomicFileWriter writer(target);
    CHECK(fs::path(writer.temporary_path()).parent_path() == dir.path());
    writer.write("new contents, half written");
    CHECK(fs::exists(writer.temporary_path()));
    CHECK(read_file(target) == "old contents");
  }
  CHECK(read_file(target) == "old contents");
  CHECK(names_in(dir.path()) == std::vector<std::string>{"optimizer.bin"});
}

TEST_CASE("AtomicFileWriter streams several pieces and refuses use after commit") {
  TempDir dir;
  std::string target = dir / "big.bin";
  AtomicFileWriter writer(target);
  std::string piece(100000, 'x');
  for (int i = 0; i < 5; ++i) writer.write(piece);
  writer.commit();
  CHECK(read_file(target).size() == 500000);
  CHECK_THROWS_AS(writer.write("more"), std::runtime_error);
  CHECK_THROWS_AS(writer.commit(), std::runtime_error);
}

TEST_CASE("atomic write errors name the target and the reason") {
  TempDir dir;
  std::string missing_folder = dir / "no/such/folder/file.txt";
  std::string message = message_of([&] { write_file_atomic(missing_folder, "x"); });
  CHECK(message.find(missing_folder) != std::string::npos);
  CHECK(message.find("No such file or directory") != std::string::npos);

  // Renaming a file over a non-empty folder fails; the temporary file must go.
  fs::create_directories(dir.path() / "occupied");
  write_plain_file(dir / "occupied/inside", "keep");
  message = message_of([&] { write_file_atomic(dir / "occupied", "x"); });
  CHECK(message.find("occupied") != std::string::npos);
  CHECK(names_in(dir.path()) == std::vector<std::string>{"occupied"});
  CHECK(read_file(dir / "occupied/inside") == "keep");
}

TEST_CASE("a failed write (file size limit, as a full disk) keeps the previous file byte-identical") {
  TempDir dir;
  std::string target = dir / "model.safetensors";
  const std::string previous = "previous checkpoint bytes";
  write_file_atomic(target, previous);

  // In a child, so the limit does not touch the test runner: writes past
  // 4 KiB then fail with EFBIG instead of raising SIGXFSZ.
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit limit{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    try {
      write_file_atomic(target, std::string(1 << 20, 'n'));
      ::_exit(1);  // the write should have failed
    } catch (const std::runtime_error& e) {
      std::string message = e.what();
      bool names_target = message.find(target) != std::string::npos;
      bool names_reason = message.find("File too large") != std::string::npos;
      ::_exit(names_target && names_reason ? 0 : 2);
    }
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(read_file(target) == previous);
  CHECK(names_in(dir.path()) == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("checkpoint folder names are zero-padded steps") {
  CHECK(checkpoint_dir_name(0) == "checkpoint-000000");
  CHECK(checkpoint_dir_name(200) == "checkpoint-000200");
  CHECK(checkpoint_dir_name(1234567) == "checkpoint-1234567");
  CHECK_THROWS_AS(checkpoint_dir_name(-1), std::invalid_argument);
}

TEST_CASE("the commit marker makes a checkpoint folder count") {
  TempDir root;
  make_checkpoint(root, "checkpoint-000010", false);
  CHECK_FALSE(is_committed(root / "checkpoint-000010"));
  write_commit_marker(root / "checkpoint-000010/", "10\n");  // a trailing slash names the same folder
  CHECK(is_committed(root / "checkpoint-000010"));
  CHECK(read_file(root / "checkpoint-000010/COMMITTED") == "10\n");
  CHECK(names_in(root.path() / "checkpoint-000010") == std::vector<std::string>{"COMMITTED", "model.safetensors"});

  // A folder named COMMITTED is not a marker.
  fs::create_directories(root.path() / "checkpoint-000020/COMMITTED");
  CHECK_FALSE(is_committed(root / "checkpoint-000020"));
}

TEST_CASE("list_committed_checkpoints: newest first, only committed checkpoint-<digits> folders") {
  TempDir root;
  make_checkpoint(root, checkpoint_dir_name(200), true);
  make_checkpoint(root, checkpoint_dir_name(50), true);
  make_checkpoint(root, checkpoint_dir_name(1000), false);  // a save killed before its marker
  make_checkpoint(root, "checkpoint-0000100", true);        // more digits than usual: still step 100
  make_checkpoint(root, "checkpoint-abc", true);
  make_checkpoint(root, "checkpoint-", true);
  make_checkpoint(root, "checkpoint-12x", true);
  make_checkpoint(root, "final", true);
  write_plain_file(root / "checkpoint-000300", "a file, not a folder");
  make_checkpoint(root, "checkpoint-99999999999999999999999", true);  // overflows int64: ignored

  auto committed = list_committed_checkpoints(root.path().string());
  REQUIRE(committed.size() == 3);
  CHECK(committed[0].step == 200);
  CHECK(committed[0].path == root / "checkpoint-000200");
  CHECK(committed[1].step == 100);
  CHECK(committed[1].path == root / "checkpoint-0000100");
  CHECK(committed[2].step == 50);

  auto uncommitted = list_uncommitted_checkpoints(root.path().string());
  REQUIRE(uncommitted.size() == 1);
  CHECK(uncommitted[0].step == 1000);
  CHECK(uncommitted[0].path == root / "checkpoint-001000");
}

TEST_CASE("listing checkpoints of a missing folder is empty; of a file, an error naming it") {
  TempDir root;
  CHECK(list_committed_checkpoints(root / "not-yet-created").empty());
  write_plain_file(root / "plain-file", "x");
  std::string message = message_of([&] { list_committed_checkpoints(root / "plain-file"); });
  CHECK(message.find(root / "plain-file") != std::string::npos);
}
