#include "edge/model_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace duet::edge {
namespace {

namespace fs = std::filesystem;

constexpr char kTmpPrefix[] = ".tmp-";

absl::Status FsError(const std::string& what, const std::string& path,
                     const std::error_code& ec) {
  return absl::UnavailableError(
      absl::StrCat("cannot ", what, " ", path, ": ", ec.message()));
}

// A name CURRENT may hold: one path component, not hidden.
bool ValidName(const std::string& name) {
  return !name.empty() && name[0] != '.' && name.find('/') == std::string::npos;
}

}  // namespace

absl::Status SyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot sync ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

ModelStore::ModelStore(const std::string& state_dir)
    : dir_(absl::StrCat(state_dir, "/", kModelsDir)) {}

std::string ModelStore::DirName(const duet::v1::ModelConfig& config) {
  return absl::StrCat(config.version(), "-", config.signature());
}

std::string ModelStore::PathOf(const std::string& name) const {
  return absl::StrCat(dir_, "/", name);
}

absl::StatusOr<std::string> ModelStore::Install(const FillFn& fill) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return FsError("create", dir_, ec);
  static std::atomic<int> counter{0};
  const std::string tmp =
      PathOf(absl::StrCat(kTmpPrefix, ::getpid(), "-", counter++));
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  if (ec) return FsError("create", tmp, ec);
  auto fail = [&tmp](absl::Status s) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return s;
  };
  absl::StatusOr<duet::v1::ModelConfig> config = fill(tmp);
  if (!config.ok()) return fail(config.status());
  const std::string name = DirName(*config);
  if (!ValidName(name)) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("'", name, "' is not a model directory name")));
  }
  if (absl::Status s = SyncPath(tmp); !s.ok()) return fail(s);
  const std::string path = PathOf(name);
  // An earlier copy (an interrupted switch, or a version run before) is
  // replaced: the new one was just verified.
  if (fs::exists(path, ec)) {
    const std::string old = PathOf(absl::StrCat(kTmpPrefix, "old-", name, "-",
                                                ::getpid(), "-", counter++));
    fs::rename(path, old, ec);
    if (ec) return fail(FsError("move aside", path, ec));
    fs::remove_all(old, ec);
  }
  fs::rename(tmp, path, ec);
  if (ec) return fail(FsError("rename into place", path, ec));
  RETURN_IF_ERROR(SyncPath(dir_));
  return path;
}

absl::StatusOr<std::string> ModelStore::Current() const {
  const std::string file = PathOf(kCurrentFile);
  std::ifstream in(file);
  if (!in) return absl::NotFoundError(absl::StrCat(file, " does not exist"));
  std::stringstream text;
  text << in.rdbuf();
  const std::string name(absl::StripAsciiWhitespace(text.str()));
  if (!ValidName(name)) {
    return absl::DataLossError(
        absl::StrCat(file, " holds '", name, "', not a model directory name"));
  }
  const std::string path = PathOf(name);
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    return absl::DataLossError(
        absl::StrCat(file, " names ", path, ", which does not exist"));
  }
  return path;
}

absl::Status ModelStore::SetCurrent(const std::string& name) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name, "' is not a model directory name"));
  }
  const std::string file = PathOf(kCurrentFile);
  const std::string tmp = absl::StrCat(file, ".tmp");
  const std::string text = name + "\n";
  const int fd =
      ::open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  const bool written = ::write(fd, text.data(), text.size()) ==
                           static_cast<ssize_t>(text.size()) &&
                       ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!written) {
    return absl::UnavailableError(
        absl::StrCat("cannot write ", tmp, ": ", std::strerror(err)));
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot rename ", tmp, " to ", file, ": ", std::strerror(errno)));
  }
  return SyncPath(dir_);
}

absl::Status ModelStore::Prune(const std::vector<std::string>& keep) {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return absl::OkStatus();
  absl::Status result;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory(ec)) continue;
    if (std::find(keep.begin(), keep.end(), name) != keep.end()) continue;
    std::error_code rm;
    fs::remove_all(e.path(), rm);
    if (rm) result.Update(FsError("remove", e.path().string(), rm));
  }
  if (ec) result.Update(FsError("list", dir_, ec));
  return result;
}

absl::Status ModelStore::RemoveTemporaries() {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return absl::OkStatus();
  absl::Status result;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    if (!absl::StartsWith(e.path().filename().string(), kTmpPrefix)) continue;
    std::error_code rm;
    fs::remove_all(e.path(), rm);
    if (rm) result.Update(FsError("remove", e.path().string(), rm));
  }
  return result;
}

}  // namespace duet::edge
