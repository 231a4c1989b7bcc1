// Reader and streaming writer of the safetensors format: an 8-byte
// little-endian header length, a JSON header {"name": {"dtype", "shape",
// "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then raw
// little-endian tensor bytes. Files are memory-mapped: tensors are never
// copied.
//
// Error codes: NOT_FOUND for a missing file or tensor (other open/mmap/write
// failures map from errno); DATA_LOSS for any file whose bytes are not a
// valid, supported safetensors file (truncated, bad JSON with its byte offset,
// unsupported dtype, inconsistent offsets); INVALID_ARGUMENT when the caller's
// request is wrong (Get with another dtype/shape, bad TensorSpecs);
// FAILED_PRECONDITION for writer calls out of sequence or byte-count mismatch.
#ifndef DUET_COMMON_FORMAT_SAFETENSORS_H_
#define DUET_COMMON_FORMAT_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace duet::common {

enum class DType { kF32, kF16, kI8, kU8, kI32, kI64 };

absl::string_view DTypeName(DType dtype);  // "F32", "I8", ... as in the format
size_t DTypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
  int64_t num_elements() const;
};

// A memory-mapped safetensors file. Immutable after Open; thread-safe.
// Pointers returned by data() stay valid for the object's lifetime.
class SafetensorsFile {
 public:
  // Validates the header fully: JSON syntax, known dtypes, shape x dtype size
  // == data_offsets span, offsets within the file, no overlaps or gaps.
  // Errors name the file and the offending tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  // Ordered by data offset (the file's layout), not by header key order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  const TensorInfo* Find(absl::string_view name) const;

  // The tensor's bytes if it exists with exactly this dtype and shape;
  // NOT_FOUND / INVALID_ARGUMENT ("tensor user_top.0.weight has shape
  // [96,1600], expected [96,1601]") otherwise.
  absl::StatusOr<const void*> Get(absl::string_view name, DType dtype,
                                  absl::Span<const int64_t> shape) const;
  const void* data(const TensorInfo& info) const;
  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }

  // Advises the kernel to fault the tensor's pages in now (MADV_WILLNEED) so
  // the first queries do not pay for page faults.
  void Prefetch(const TensorInfo& info) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  uint64_t size_ = 0;
  const uint8_t* data_start_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> tensors_ index
  std::map<std::string, std::string> metadata_;
};

// Declares one tensor for SafetensorsWriter.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
};

// Writes a safetensors file in one pass with bounded memory: all tensors are
// declared up front (the header needs their offsets), then their bytes are
// appended in declaration order in chunks of any size. Writes to
// "<path>.tmp", computes SHA-256 on the fly, fsyncs and renames on Finish.
// Not thread-safe.
class SafetensorsWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<TensorSpec> tensors,
      std::map<std::string, std::string> metadata = {});
  ~SafetensorsWriter();  // removes the temporary file if Finish did not run

  // Appends bytes of the current tensor (may span tensor boundaries).
  absl::Status Append(const void* data, size_t nbytes);
  // Fails unless exactly the declared bytes were appended. On success the
  // file is in place, and `sha256_hex` / `file_size` describe it (also when
  // only the final directory fsync fails, which is then reported). After an
  // I/O error every call returns that error.
  absl::Status Finish();
  const std::string& sha256_hex() const { return sha256_hex_; }
  uint64_t file_size() const { return file_size_; }

 private:
  SafetensorsWriter() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string sha256_hex_;
  uint64_t file_size_ = 0;
};

}  // namespace duet::common

#endif  // DUET_COMMON_FORMAT_SAFETENSORS_H_
