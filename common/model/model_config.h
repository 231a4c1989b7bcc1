// ModelConfig helpers: validation, derived dimensions, text-format I/O and the
// tensor names of the three weight files (DESIGN.md §2, "Weights and files").
#ifndef DUET_COMMON_MODEL_MODEL_CONFIG_H_
#define DUET_COMMON_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "duet/v1/model.pb.h"

namespace duet::common {

inline constexpr char kConfigFile[] = "model.pbtxt";
inline constexpr char kEdgeFile[] = "edge.safetensors";
inline constexpr char kCloudFile[] = "cloud.safetensors";
inline constexpr char kUserTablesFile[] = "user_tables.safetensors";
// The int8 user top MLP (user_top_int8.*), beside the fp32 edge file so that
// quantizing a trained model never rewrites its weights. Models written
// before it existed keep those tensors in edge.safetensors.
inline constexpr char kEdgeInt8File[] = "edge_int8.safetensors";

// Widths that follow from a config. A bottom MLP with no layers passes its
// inputs through (RM5 has no dense features at all).
struct ModelDims {
  int static_in = 0, static_out = 0;    // s -> z_s
  int dynamic_in = 0, dynamic_out = 0;  // c -> z_c
  int pooled = 0;                       // T_u * d
  int user_top_in = 0;                  // [z_s, z_c, p_1..p_Tu]
  int user_out = 0;                     // u
  int item_top_in = 0;                  // T_i * d
  int item_out = 0;                     // v_j
  int combined_in = 0;                  // [u, v_j]
};

// Checks every invariant the runtime relies on; the message names the field.
absl::Status ValidateConfig(const duet::v1::ModelConfig& config);
ModelDims ComputeDims(const duet::v1::ModelConfig& config);

// Scratchpad bytes of one user (fp32 rows): sum_t history_length[t] * d * 4.
int64_t ScratchpadBytes(const duet::v1::ModelConfig& config);

absl::StatusOr<duet::v1::ModelConfig> ReadConfig(const std::string& path);
// Parses and validates text-format ModelConfig; `source` names it in errors.
absl::StatusOr<duet::v1::ModelConfig> ParseConfig(const std::string& text,
                                                  const std::string& source);
absl::Status WriteConfig(const std::string& path,
                         const duet::v1::ModelConfig& config);

// The number of top-MLP layers split into the user and item towers
// (split_depth, or the number of user_top_layers in older configs).
int SplitDepth(const duet::v1::ModelConfig& config);
// Whether the ranking of a candidate set can depend on the user: the combined
// top MLP keeps a hidden layer, so W_u u and W_v v_j meet before a ReLU.
bool RankingCanDependOnUser(const duet::v1::ModelConfig& config);

// The signature model.proto defines (16 lowercase hex digits), and the one
// written before split_depth existed.
std::string ComputeSignature(const duet::v1::ModelConfig& config);
std::string LegacySignature(const duet::v1::ModelConfig& config);

// The signature as a number (what the user vector carries); 0 if malformed.
uint64_t Fingerprint(const duet::v1::ModelConfig& config);
// "rm2 v3 (signature 0123456789abcdef)".
std::string ModelLabel(const duet::v1::ModelConfig& config);

// Layer shapes of one MLP: (in, out) per Linear.
std::vector<std::pair<int, int>> MlpShapes(int in,
                                           const std::vector<int>& widths);

// The file that holds the int8 user top MLP: kEdgeInt8File when the config
// lists it, else kEdgeFile (older models); empty for an fp32-only model.
std::string Int8TensorFile(const duet::v1::ModelConfig& config);
// The weight files a complete model directory holds: edge, cloud, user
// tables and, when the config lists it, the int8 edge file.
std::vector<std::string> WeightFiles(const duet::v1::ModelConfig& config);

// The expected tensors of each weight file, in file order.
struct ExpectedTensor {
  std::string name;
  std::string dtype;  // "F32" | "I8"
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> ExpectedTensors(const duet::v1::ModelConfig& config,
                                            const std::string& file);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_MODEL_CONFIG_H_
