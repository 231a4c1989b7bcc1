#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/format/internal/safetensors_util.h"
#include "common/format/safetensors.h"
#include "common/format/sha256.h"
#include "nlohmann/json.hpp"

namespace duet::common {
namespace {

using internal::IsValidUtf8;
using internal::kMaxHeaderBytes;
using internal::kMetadataKey;
using internal::ShapeString;

constexpr uint64_t kHeaderAlignment = 64;
constexpr size_t kWriteBufferSize = size_t{1} << 20;
// Linux transfers at most ~2 GiB per write(); larger requests just loop.
constexpr size_t kMaxWriteChunk = size_t{1} << 30;

void EncodeLe64(uint64_t v, char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

}  // namespace

struct SafetensorsWriter::Impl {
  std::string path;
  std::string tmp_path;
  int fd = -1;
  std::vector<TensorInfo> tensors;  // declaration order, offsets assigned
  uint64_t data_declared = 0;
  uint64_t data_written = 0;
  uint64_t header_bytes = 0;
  std::vector<char> buffer;  // pending bytes, capacity kWriteBufferSize
  Sha256 sha;
  absl::Status io_error;  // first I/O failure; the file is unusable after it
  bool renamed = false;

  ~Impl() {
    if (fd >= 0) close(fd);
    if (!renamed && !tmp_path.empty()) unlink(tmp_path.c_str());
  }

  absl::Status WriteAll(const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = write(fd, p, std::min(n, kMaxWriteChunk));
      if (w < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrCat("write ", tmp_path));
      }
      if (w == 0) {
        return absl::InternalError(
            absl::StrCat("write ", tmp_path, " made no progress"));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return absl::OkStatus();
  }

  absl::Status Flush() {
    absl::Status s = WriteAll(buffer.data(), buffer.size());
    buffer.clear();
    return s;
  }

  // Buffers small writes; large ones bypass the buffer to avoid a copy.
  absl::Status Write(const char* p, size_t n) {
    sha.Update(p, n);
    if (buffer.size() + n <= kWriteBufferSize) {
      buffer.insert(buffer.end(), p, p + n);
      return absl::OkStatus();
    }
    if (absl::Status s = Flush(); !s.ok()) return s;
    if (n >= kWriteBufferSize) return WriteAll(p, n);
    buffer.insert(buffer.end(), p, p + n);
    return absl::OkStatus();
  }

  absl::Status Fail(absl::Status s) {
    io_error = s;
    return s;
  }
};

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<TensorSpec> tensors,
    std::map<std::string, std::string> metadata) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  absl::flat_hash_map<std::string, size_t> seen;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    TensorSpec& spec = tensors[i];
    auto fail = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor #", i, " '", spec.name, "' ", what));
    };
    if (spec.name.empty()) return fail("has an empty name");
    if (spec.name == kMetadataKey) return fail("uses the reserved name");
    if (!IsValidUtf8(spec.name)) return fail("has a name that is not UTF-8");
    if (auto [it, inserted] = seen.emplace(spec.name, i); !inserted) {
      return fail(absl::StrCat("duplicates the name of tensor #", it->second));
    }
    for (int64_t dim : spec.shape) {
      if (dim < 0) {
        return fail(absl::StrCat("has negative dimension in shape ",
                                 ShapeString(spec.shape)));
      }
    }
    uint64_t nbytes;
    if (!internal::TensorByteSize(spec.shape, spec.dtype, &nbytes) ||
        __builtin_add_overflow(offset, nbytes, &offset)) {
      return fail(absl::StrCat("with shape ", ShapeString(spec.shape),
                               " overflows 64-bit byte offsets"));
    }
    TensorInfo info;
    info.name = std::move(spec.name);
    info.dtype = spec.dtype;
    info.shape = std::move(spec.shape);
    info.begin = offset - nbytes;
    info.end = offset;
    impl->tensors.push_back(std::move(info));
  }
  impl->data_declared = offset;

  // ordered_json keeps the tensors in declaration order (hence data order)
  // and each tensor's fields in the order the format's examples use; dump()
  // writes no whitespace. Names and metadata were checked to be UTF-8 above
  // and below, so dump() cannot throw.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json& meta = header[std::string(kMetadataKey)];
    meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) {
      if (!IsValidUtf8(key) || !IsValidUtf8(value)) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": metadata entry '", key, "' is not valid UTF-8"));
      }
      meta[key] = value;
    }
  }
  for (const TensorInfo& t : impl->tensors) {
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {t.begin, t.end}}};
  }
  std::string json = header.dump();
  // Pad with spaces (allowed by the format) so the data section starts on a
  // 64-byte boundary of the file, and hence of any page-aligned mapping.
  const uint64_t unpadded = 8 + json.size();
  json.append(
      (kHeaderAlignment - unpadded % kHeaderAlignment) % kHeaderAlignment, ' ');
  if (json.size() > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header of ", json.size(),
                     " bytes exceeds the limit of ", kMaxHeaderBytes));
  }

  impl->tmp_path = path + ".tmp";
  impl->fd = open(impl->tmp_path.c_str(),
                  O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (impl->fd < 0) {
    const int err = errno;
    impl->tmp_path.clear();  // not ours: do not unlink someone else's file
    return absl::ErrnoToStatus(err,
                               absl::StrCat("cannot create ", path, ".tmp"));
  }
  impl->buffer.reserve(kWriteBufferSize);
  char length[8];
  EncodeLe64(json.size(), length);
  impl->header_bytes = 8 + json.size();
  if (absl::Status s = impl->Write(length, sizeof(length)); !s.ok()) return s;
  if (absl::Status s = impl->Write(json.data(), json.size()); !s.ok()) {
    return s;
  }
  std::unique_ptr<SafetensorsWriter> writer(new SafetensorsWriter());
  writer->impl_ = std::move(impl);
  return writer;
}

SafetensorsWriter::~SafetensorsWriter() = default;

absl::Status SafetensorsWriter::Append(const void* data, size_t nbytes) {
  Impl& impl = *impl_;
  if (!impl.io_error.ok()) return impl.io_error;
  if (impl.renamed) {
    return absl::FailedPreconditionError(
        absl::StrCat(impl.path, ": Append after Finish"));
  }
  if (nbytes > impl.data_declared - impl.data_written) {
    return absl::FailedPreconditionError(absl::StrCat(
        impl.path, ": Append of ", nbytes,
        " bytes would exceed the declared data size: ", impl.data_written,
        " of ", impl.data_declared, " bytes already written"));
  }
  if (absl::Status s = impl.Write(static_cast<const char*>(data), nbytes);
      !s.ok()) {
    return impl.Fail(s);
  }
  impl.data_written += nbytes;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  Impl& impl = *impl_;
  if (!impl.io_error.ok()) return impl.io_error;
  if (impl.renamed) {
    return absl::FailedPreconditionError(
        absl::StrCat(impl.path, ": Finish called twice"));
  }
  if (impl.data_written != impl.data_declared) {
    // Name the first incomplete tensor: the usual cause is a producer that
    // stopped early or sized one tensor wrongly.
    std::string which;
    for (const TensorInfo& t : impl.tensors) {
      if (t.end > impl.data_written) {
        which = absl::StrCat(
            "; tensor '", t.name, "' has ",
            impl.data_written - std::min(impl.data_written, t.begin), " of ",
            t.end - t.begin, " bytes");
        break;
      }
    }
    return absl::FailedPreconditionError(
        absl::StrCat(impl.path, ": Finish after ", impl.data_written, " of ",
                     impl.data_declared, " declared data bytes", which));
  }
  if (absl::Status s = impl.Flush(); !s.ok()) return impl.Fail(s);
  if (fsync(impl.fd) != 0) {
    return impl.Fail(
        absl::ErrnoToStatus(errno, absl::StrCat("fsync ", impl.tmp_path)));
  }
  const int fd = impl.fd;
  impl.fd = -1;
  if (close(fd) != 0) {
    return impl.Fail(
        absl::ErrnoToStatus(errno, absl::StrCat("close ", impl.tmp_path)));
  }
  if (rename(impl.tmp_path.c_str(), impl.path.c_str()) != 0) {
    return impl.Fail(absl::ErrnoToStatus(
        errno, absl::StrCat("rename ", impl.tmp_path, " to ", impl.path)));
  }
  impl.renamed = true;
  sha256_hex_ = impl.sha.HexDigest();
  file_size_ = impl.header_bytes + impl.data_written;

  // Persist the directory entry too, or a crash could lose the rename.
  const size_t slash = impl.path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                       : impl.path.substr(0, slash);
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("open directory ", dir));
  }
  const int rc = fsync(dir_fd);
  const int err = errno;
  close(dir_fd);
  if (rc != 0) {
    return absl::ErrnoToStatus(err, absl::StrCat("fsync directory ", dir));
  }
  return absl::OkStatus();
}

}  // namespace duet::common
