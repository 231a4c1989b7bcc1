// The edge's downloaded models, under <state_dir>/models/: one directory per
// version, `<version>-<signature>` (model.pbtxt, edge.safetensors and, when
// listed, edge_int8.safetensors), and `CURRENT`, one line naming the
// directory duet-edge runs. Installs are crash-safe: a download goes to a
// `.tmp-*` directory whose files are fsync'ed, which is then renamed into
// place and the parent fsync'ed; CURRENT is replaced atomically (tmp, fsync,
// rename, fsync). A crash leaves at worst a `.tmp-*` directory, removed by
// RemoveTemporaries. Thread-compatible: one writer (the ModelUpdater).
#ifndef DUET_EDGE_MODEL_STORE_H_
#define DUET_EDGE_MODEL_STORE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "duet/v1/model.pb.h"

namespace duet::edge {

inline constexpr char kModelsDir[] = "models";
inline constexpr char kCurrentFile[] = "CURRENT";

class ModelStore {
 public:
  // `state_dir`/models (created on first install).
  explicit ModelStore(const std::string& state_dir);

  const std::string& dir() const { return dir_; }
  // "<version>-<signature>".
  static std::string DirName(const duet::v1::ModelConfig& config);
  std::string PathOf(const std::string& name) const;

  // Makes a fresh temporary directory, runs `fill` on its path (which must
  // write and fsync every file and return the model's config), renames it
  // to DirName(config) (replacing an earlier directory of that name) and
  // fsyncs the models directory. Returns the installed path; on any failure
  // nothing is installed and the temporary directory is removed.
  using FillFn = std::function<absl::StatusOr<duet::v1::ModelConfig>(
      const std::string& dir)>;
  absl::StatusOr<std::string> Install(const FillFn& fill);

  // The directory CURRENT names: NOT_FOUND without CURRENT; DATA_LOSS when
  // it is malformed or names a directory that does not exist.
  absl::StatusOr<std::string> Current() const;
  // Points CURRENT at `name` (an installed directory) atomically and
  // durably.
  absl::Status SetCurrent(const std::string& name);

  // Removes every version directory except `keep` (names), and every
  // temporary one. Failures are returned but leave nothing inconsistent.
  absl::Status Prune(const std::vector<std::string>& keep);
  // Removes the temporary directories a crash left behind (start-up).
  absl::Status RemoveTemporaries();

 private:
  const std::string dir_;
};

// fsyncs a file or directory (what an install needs the POSIX way).
absl::Status SyncPath(const std::string& path);

}  // namespace duet::edge

#endif  // DUET_EDGE_MODEL_STORE_H_
