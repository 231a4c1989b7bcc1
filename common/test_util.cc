#include "common/test_util.h"

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>

#include "common/model_generator.h"
#include "common/presets.h"

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
    uint64_t seed, uint32_t version) {
  auto config = PresetConfig(preset, rows_scale);
  if (!config.ok()) return config.status();
  GenerateOptions options;
  options.out_dir = dir;
  options.seed = seed;
  options.version = version;
  options.calibration_samples = 128;
  return GenerateModel(*config, options, nullptr);
}

}  // namespace duet::common
