// Writes a complete model directory (model.pbtxt + three safetensors files)
// with deterministic synthetic weights, streaming tables to disk so a
// full-size preset (RM1: 4 GB of tables) never sits in memory.
#ifndef DUET_COMMON_MODEL_MODEL_GENERATOR_H_
#define DUET_COMMON_MODEL_MODEL_GENERATOR_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "duet/v1/model.pb.h"

namespace duet::common {

struct GenerateOptions {
  std::string out_dir;
  uint64_t seed = 1;
  uint32_t version = 1;
  // Synthetic user inputs used to calibrate the int8 user top MLP.
  int calibration_samples = 512;
};

// Generates weights for `config` (architecture fields set, e.g. from
// PresetConfig) into options.out_dir (created if missing). Fills seed,
// version, catalog seed, file checksums and signature, writes model.pbtxt
// last (so a directory with a model.pbtxt is complete) and returns the final
// config. Progress goes to `log` (may be nullptr).
absl::StatusOr<duet::v1::ModelConfig> GenerateModel(
    duet::v1::ModelConfig config, const GenerateOptions& options,
    std::ostream* log);

// The generator's deterministic weight stream, exposed so tests can
// recompute any element: element i of tensor `name` under `seed`, uniform in
// [-1, 1) before the tensor's init scale is applied.
float SyntheticUniform(uint64_t seed, const std::string& name, uint64_t i);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_MODEL_GENERATOR_H_
