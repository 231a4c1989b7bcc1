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

// How a preset's top MLP is split between the user and item towers
// (DESIGN.md §2, "Split depth and personalization").
enum class PresetSplit {
  // The default: all top layers but the last two are split (at least one),
  // so the combined top keeps a hidden layer and rankings depend on the user.
  kPersonalized,
  // As the Duet paper: the first two layers for RM1-RM4 (one linear layer
  // combined: one global order), the first one for RM5. For reproducing its
  // figures.
  kPaper,
};
absl::string_view PresetSplitName(PresetSplit split);  // personalized|paper
absl::StatusOr<PresetSplit> ParsePresetSplit(absl::string_view name);

// The preset's architecture with table rows multiplied by `rows_scale`
// (rounded, at least 1), split as `split` says (split_depth set). Weight
// files, signature and seed are left empty: the generator fills them.
// INVALID_ARGUMENT for an unknown preset or a rows_scale outside (0, 1].
absl::StatusOr<duet::v1::ModelConfig> PresetConfig(
    absl::string_view preset, double rows_scale,
    PresetSplit split = PresetSplit::kPersonalized);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_PRESETS_H_
