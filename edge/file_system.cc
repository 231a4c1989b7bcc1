#include "edge/file_system.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace duet::edge {
namespace {

absl::Status ErrnoStatus(const std::string& what, const std::string& path,
                         int err) {
  const std::string msg =
      absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  if (err == ENOSPC) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

class PosixAppendableFile : public AppendableFile {
 public:
  PosixAppendableFile(int fd, std::string path)
      : fd_(fd), path_(std::move(path)) {}
  ~PosixAppendableFile() override { ::close(fd_); }
  absl::Status Append(absl::string_view data) override {
    return WriteAll(fd_, data, path_);
  }
  absl::Status Sync() override {
    if (::fdatasync(fd_) != 0) return ErrnoStatus("cannot sync", path_, errno);
    return absl::OkStatus();
  }

 private:
  const int fd_;
  const std::string path_;
};

class Posix : public FileSystem {
 public:
  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("cannot open", path, errno);
    std::string out;
    char buf[1 << 16];
    while (true) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        return ErrnoStatus("cannot read", path, err);
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }

  bool Exists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }

  absl::Status WriteFileAtomically(const std::string& path,
                                   absl::string_view data) override {
    const std::string tmp = path + ".tmp";
    const int fd =
        ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoStatus("cannot create", tmp, errno);
    absl::Status s = WriteAll(fd, data, tmp);
    if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("cannot sync", tmp, errno);
    ::close(fd);
    if (!s.ok()) {
      ::unlink(tmp.c_str());
      return s;
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      return ErrnoStatus("cannot rename to", path, errno);
    }
    return SyncDir(DirOf(path));
  }

  absl::StatusOr<std::unique_ptr<AppendableFile>> OpenAppendable(
      const std::string& path) override {
    const int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoStatus("cannot open", path, errno);
    return std::unique_ptr<AppendableFile>(
        std::make_unique<PosixAppendableFile>(fd, path));
  }

  absl::Status Truncate(const std::string& path, uint64_t size) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("cannot open", path, errno);
    absl::Status s;
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      s = ErrnoStatus("cannot truncate", path, errno);
    } else if (::fsync(fd) != 0) {
      s = ErrnoStatus("cannot sync", path, errno);
    }
    ::close(fd);
    return s;
  }

  absl::Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus("cannot remove", path, errno);
    }
    return absl::OkStatus();
  }

  absl::Status CreateDirs(const std::string& path) override {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot create directory ", path, ": ", ec.message()));
    }
    return absl::OkStatus();
  }

  absl::Status SyncDir(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("cannot open directory", dir, errno);
    absl::Status s;
    if (::fsync(fd) != 0) s = ErrnoStatus("cannot sync directory", dir, errno);
    ::close(fd);
    return s;
  }
};

}  // namespace

FileSystem* PosixFileSystem() {
  static FileSystem* fs = new Posix();
  return fs;
}

}  // namespace duet::edge
