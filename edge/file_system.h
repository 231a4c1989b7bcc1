// The filesystem seam of the state store (leveldb's Env idea): the few
// operations crash-safe persistence needs, so tests can inject faults.
// PosixFileSystem is the real one. Implementations are thread-safe.
#ifndef DUET_EDGE_FILE_SYSTEM_H_
#define DUET_EDGE_FILE_SYSTEM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace duet::edge {

// An open file that is appended to. Not thread-safe.
class AppendableFile {
 public:
  virtual ~AppendableFile() = default;
  virtual absl::Status Append(absl::string_view data) = 0;
  // Returns once everything appended so far is on stable storage.
  virtual absl::Status Sync() = 0;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // NOT_FOUND when the file does not exist.
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path) = 0;
  virtual bool Exists(const std::string& path) = 0;
  // Replaces `path` atomically and durably: write a temporary file, fsync it,
  // rename it over `path`, fsync the directory.
  virtual absl::Status WriteFileAtomically(const std::string& path,
                                           absl::string_view data) = 0;
  // Opens for appending at the end, creating an empty file if needed.
  virtual absl::StatusOr<std::unique_ptr<AppendableFile>> OpenAppendable(
      const std::string& path) = 0;
  // Cuts the file to `size` bytes and syncs it.
  virtual absl::Status Truncate(const std::string& path, uint64_t size) = 0;
  virtual absl::Status Remove(const std::string& path) = 0;
  // Creates the directory (and parents) if missing.
  virtual absl::Status CreateDirs(const std::string& path) = 0;
  // Makes directory entries (creations, renames) in `dir` durable.
  virtual absl::Status SyncDir(const std::string& dir) = 0;
};

// The process-wide POSIX implementation (never destroyed).
FileSystem* PosixFileSystem();

}  // namespace duet::edge

#endif  // DUET_EDGE_FILE_SYSTEM_H_
