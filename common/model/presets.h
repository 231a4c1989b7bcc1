// The model presets of DESIGN.md §2: Table 2 of the Duet paper split into
// user / item / combined parts, plus `tiny` for tests.
#ifndef DUET_COMMON_MODEL_PRESETS_H_
#define DUET_COMMON_MODEL_PRESETS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "duet/v1/model.pb.h"

namespace duet::common {

std::vector<std::string> PresetNames();  // tiny, rm1 .. rm5

// The preset's architecture with table rows multiplied by `rows_scale`
// (rounded, at least 1). Weight files, signature and seed are left empty:
// the generator fills them. INVALID_ARGUMENT for an unknown preset or a
// rows_scale outside (0, 1].
absl::StatusOr<duet::v1::ModelConfig> PresetConfig(absl::string_view preset,
                                                   double rows_scale);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_PRESETS_H_
