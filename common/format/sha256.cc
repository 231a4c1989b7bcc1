#include "common/format/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace duet::common {
namespace {

constexpr size_t kReadBufferSize = size_t{1} << 20;

// libcrypto only fails here on allocation failure or misuse; neither can be
// handled meaningfully by a hasher that has no error channel.
void CheckOpenSsl(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "duet::common::Sha256: %s failed\n", what);
    std::abort();
  }
}

std::string ToHex(const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    hex[2 * i] = kDigits[bytes[i] >> 4];
    hex[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return hex;
}

}  // namespace

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
  std::string digest_hex;  // set once finalized
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  CheckOpenSsl(impl_->ctx != nullptr, "EVP_MD_CTX_new");
  CheckOpenSsl(EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) == 1,
               "EVP_DigestInit_ex");
}

Sha256::~Sha256() = default;

void Sha256::Update(const void* data, size_t nbytes) {
  CheckOpenSsl(impl_->digest_hex.empty(), "Update after HexDigest");
  if (nbytes == 0) return;
  CheckOpenSsl(EVP_DigestUpdate(impl_->ctx, data, nbytes) == 1,
               "EVP_DigestUpdate");
}

std::string Sha256::HexDigest() {
  // Repeated calls return the same digest instead of finalizing twice.
  if (impl_->digest_hex.empty()) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    CheckOpenSsl(EVP_DigestFinal_ex(impl_->ctx, digest, &len) == 1,
                 "EVP_DigestFinal_ex");
    impl_->digest_hex = ToHex(digest, len);
  }
  return impl_->digest_hex;
}

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  Sha256 hasher;
  std::vector<unsigned char> buffer(kReadBufferSize);
  while (true) {
    const ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat("read ", path));
    }
    hasher.Update(buffer.data(), static_cast<size_t>(n));
  }
  close(fd);
  return hasher.HexDigest();
}

std::string Sha256Hex(const void* data, size_t nbytes) {
  Sha256 hasher;
  hasher.Update(data, nbytes);
  return hasher.HexDigest();
}

}  // namespace duet::common
