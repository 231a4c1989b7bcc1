#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/format/internal/header_parser.h"
#include "common/format/internal/safetensors_util.h"
#include "common/format/safetensors.h"

namespace duet::common {
namespace {

using internal::kMaxHeaderBytes;
using internal::OffsetsString;
using internal::ShapeString;

absl::Status Prefixed(absl::string_view prefix, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(prefix, ": ", status.message()));
}

uint64_t DecodeLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot open safetensors file ", path));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat("fstat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    close(fd);
    return absl::DataLossError(
        absl::StrCat(path, ": file is ", size,
                     " bytes, too short for the 8-byte header length"));
  }
  // Map the whole file but touch only the header: tensor pages are faulted in
  // on first use (or by Prefetch), so opening a large file is cheap.
  void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int mmap_errno = errno;
  close(fd);  // the mapping keeps the file referenced
  if (map == MAP_FAILED) {
    return absl::ErrnoToStatus(mmap_errno, absl::StrCat("mmap ", path));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->size_ = size;
  const uint8_t* base = static_cast<const uint8_t*>(map);

  const uint64_t header_len = DecodeLe64(base);
  if (header_len > kMaxHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": header length ", header_len,
                     " exceeds the limit of ", kMaxHeaderBytes, " bytes"));
  }
  if (header_len > size - 8) {
    return absl::DataLossError(absl::StrCat(
        path, ": header length ", header_len, " exceeds the ", size - 8,
        " bytes after the length field (file truncated?)"));
  }
  const absl::string_view header(reinterpret_cast<const char*>(base + 8),
                                 header_len);
  file->data_start_ = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  if (absl::Status s =
          internal::ParseHeader(header, &file->tensors_, &file->metadata_);
      !s.ok()) {
    return Prefixed(path, s);
  }

  // The format requires the tensors to tile the data section exactly.
  std::sort(file->tensors_.begin(), file->tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) <
                     std::tie(b.begin, b.end, b.name);
            });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : file->tensors_) {
    if (t.begin < covered) {
      return absl::DataLossError(
          absl::StrCat(path, ": tensors '", previous->name, "' data_offsets ",
                       OffsetsString(*previous), " and '", t.name,
                       "' data_offsets ", OffsetsString(t), " overlap"));
    }
    if (t.begin > covered) {
      return absl::DataLossError(absl::StrCat(
          path, ": data section bytes [", covered, ", ", t.begin,
          ") belong to no tensor (gap before tensor '", t.name, "')"));
    }
    if (t.end > data_size) {
      return absl::DataLossError(absl::StrCat(
          path, ": tensor '", t.name, "' data_offsets ", OffsetsString(t),
          " exceed data section of ", data_size, " bytes (file truncated?)"));
    }
    covered = t.end;
    previous = &t;
  }
  if (covered != data_size) {
    return absl::DataLossError(absl::StrCat(
        path, ": data section is ", data_size, " bytes but tensors cover only ",
        covered, " (", data_size - covered, " trailing bytes)"));
  }
  for (size_t i = 0; i < file->tensors_.size(); ++i) {
    file->index_.emplace(file->tensors_[i].name, i);
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, size_);
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const void*> SafetensorsFile::Get(
    absl::string_view name, DType dtype,
    absl::Span<const int64_t> shape) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("tensor '", name, "' not found in ", path_));
  }
  if (info->dtype != dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' in ", path_, " has dtype ",
                     DTypeName(info->dtype), ", expected ", DTypeName(dtype)));
  }
  if (absl::MakeConstSpan(info->shape) != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "' in ", path_, " has shape ",
        ShapeString(info->shape), ", expected ", ShapeString(shape)));
  }
  return data(*info);
}

const void* SafetensorsFile::data(const TensorInfo& info) const {
  return data_start_ + info.begin;
}

void SafetensorsFile::Prefetch(const TensorInfo& info) const {
  if (info.end <= info.begin) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = reinterpret_cast<uintptr_t>(data_start_ + info.begin);
  const uintptr_t last = reinterpret_cast<uintptr_t>(data_start_ + info.end);
  const uintptr_t start = first & ~(page - 1);
  // Advice only: a failure leaves the pages to be faulted in on demand.
  madvise(reinterpret_cast<void*>(start), last - start, MADV_WILLNEED);
}

}  // namespace duet::common
