// SHA-256 (OpenSSL's libcrypto) for weight-file checksums.
#ifndef DUET_COMMON_FORMAT_SHA256_H_
#define DUET_COMMON_FORMAT_SHA256_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace duet::common {

// Incremental hasher. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  void Update(const void* data, size_t nbytes);
  // Lowercase hex of the digest; the hasher must not be updated afterwards.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Hashes a whole file, streaming (bounded memory).
absl::StatusOr<std::string> Sha256File(const std::string& path);
std::string Sha256Hex(const void* data, size_t nbytes);

}  // namespace duet::common

#endif  // DUET_COMMON_FORMAT_SHA256_H_
