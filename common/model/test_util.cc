#include "common/model/test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/model/model_generator.h"
#include "common/model/presets.h"

namespace duet::common {

TempDir::TempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern =
      std::string(base != nullptr ? base : "/tmp") + "/duet_test_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) std::abort();
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

absl::StatusOr<duet::v1::ModelConfig> GenerateTestModel(
    const std::string& preset, double rows_scale, const std::string& dir,
    uint64_t seed, uint32_t version, PresetSplit split) {
  auto config = PresetConfig(preset, rows_scale, split);
  if (!config.ok()) return config.status();
  GenerateOptions options;
  options.out_dir = dir;
  options.seed = seed;
  options.version = version;
  options.calibration_samples = 128;
  return GenerateModel(*config, options, nullptr);
}

std::string HttpGetResponse(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (write(fd, request.data(), request.size()) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  // Reads up to the end of the body (the exposer may keep the socket open).
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
    response.append(buffer, n);
    const size_t header_end = response.find("\r\n\r\n");
    const size_t length_at = response.find("Content-Length: ");
    size_t length = 0;
    if (header_end != std::string::npos && length_at < header_end &&
        absl::SimpleAtoi(
            response.substr(length_at + 16,
                            response.find('\r', length_at) - length_at - 16),
            &length) &&
        response.size() >= header_end + 4 + length) {
      break;
    }
  }
  close(fd);
  return response;
}

}  // namespace duet::common
