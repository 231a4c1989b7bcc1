// A loaded Duet model: config, memory-mapped weight files, the compiled MLPs
// (oneDNN) and table views. Edge, cloud and tools load only the parts they
// need; the edge never loads the datacenter user tables.
#ifndef DUET_COMMON_MODEL_MODEL_H_
#define DUET_COMMON_MODEL_MODEL_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/format/safetensors.h"
#include "common/kernels/embedding_bag.h"
#include "common/kernels/mlp.h"
#include "common/model/catalog.h"
#include "common/model/model_config.h"
#include "duet/v1/model.pb.h"

namespace duet::common {

struct ModelParts {
  bool edge = true;   // edge.safetensors: bottom + user top MLPs
  bool cloud = true;  // cloud.safetensors: item tables, item/combined top
  bool user_tables = false;  // user_tables.safetensors (datacenter side)
  // With `edge`: also the int8 user top MLP, which an fp32-only model (no
  // user_top_int8 in model.pbtxt) lacks: FAILED_PRECONDITION then. The cloud
  // and an edge serving fp32 do not ask for it.
  bool user_top_int8 = true;
};

struct LoadOptions {
  ModelParts parts;
  // SHA-256 of every loaded file against model.pbtxt (streams the whole file).
  bool verify_checksums = true;
  // How the int8 user top MLP runs (int8_arithmetic.h); unset: what
  // Int8Kernels() recommends for this CPU. The files hold full 8-bit codes;
  // another arithmetic is re-quantized from them at load.
  std::optional<Int8Arithmetic> int8_arithmetic;
};

// Immutable after Load; thread-safe. Accessors of parts that were not loaded
// must not be called (has_*() tells).
class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Load(
      const std::string& dir, const LoadOptions& options);

  const duet::v1::ModelConfig& config() const { return config_; }
  const ModelDims& dims() const { return dims_; }
  const Catalog& catalog() const { return catalog_; }
  const std::string& dir() const { return dir_; }
  uint64_t fingerprint() const { return fingerprint_; }
  bool has_edge() const { return edge_file_ != nullptr; }
  bool has_cloud() const { return cloud_file_ != nullptr; }
  bool has_user_tables() const { return user_file_ != nullptr; }
  bool has_user_top_int8() const { return user_top_int8_ != nullptr; }

  // Edge part. A bottom MLP with no layers is nullptr (identity). The int8
  // accessors need has_user_top_int8().
  const Fp32Mlp* static_bottom() const { return static_bottom_.get(); }
  const Fp32Mlp* dynamic_bottom() const { return dynamic_bottom_.get(); }
  const Fp32Mlp& user_top() const { return *user_top_; }
  const Int8Mlp& user_top_int8() const { return *user_top_int8_; }
  const std::vector<LinearLayer>& user_top_layers() const {
    return user_top_layers_;
  }
  // The parameters user_top_int8() runs, in its arithmetic.
  const std::vector<Int8LinearLayer>& user_top_int8_layers() const {
    return user_top_int8_layers_;
  }
  Int8Arithmetic int8_arithmetic() const {
    return user_top_int8_->arithmetic();
  }
  const std::vector<LinearLayer>& static_bottom_layers() const {
    return static_bottom_layers_;
  }
  const std::vector<LinearLayer>& dynamic_bottom_layers() const {
    return dynamic_bottom_layers_;
  }

  // Cloud part. item_top() is nullptr when the config has no item top layers.
  const EmbeddingTable& item_table(int t) const { return item_tables_[t]; }
  int num_item_tables() const { return static_cast<int>(item_tables_.size()); }
  const Fp32Mlp* item_top() const { return item_top_.get(); }
  const Fp32Mlp& combined_top() const { return *combined_top_; }
  const std::vector<LinearLayer>& item_top_layers() const {
    return item_top_layers_;
  }
  const std::vector<LinearLayer>& combined_top_layers() const {
    return combined_top_layers_;
  }

  // Datacenter user tables.
  const EmbeddingTable& user_table(int t) const { return user_tables_[t]; }

 private:
  Model() = default;

  std::string dir_;
  duet::v1::ModelConfig config_;
  ModelDims dims_;
  Catalog catalog_{duet::v1::ModelConfig()};
  uint64_t fingerprint_ = 0;

  std::unique_ptr<SafetensorsFile> edge_file_, edge_int8_file_, cloud_file_,
      user_file_;
  std::vector<LinearLayer> static_bottom_layers_, dynamic_bottom_layers_,
      user_top_layers_, item_top_layers_, combined_top_layers_;
  Int8MlpParams user_top_int8_params_;  // set unless in full arithmetic
  std::vector<Int8LinearLayer> user_top_int8_layers_;
  std::unique_ptr<Fp32Mlp> static_bottom_, dynamic_bottom_, user_top_,
      item_top_, combined_top_;
  std::unique_ptr<Int8Mlp> user_top_int8_;
  std::vector<EmbeddingTable> item_tables_, user_tables_;
};

// Checks a model directory without building anything: the config parses and
// validates, every weight file exists with the recorded size and SHA-256, and
// holds exactly the expected tensors (names, dtypes, shapes), and the
// signature is the one model.proto defines over them. Returns the first
// problem found with a precise message (file, tensor, expected/actual). On
// success `note` (if not null) is set to a remark for the user, or cleared:
// a legacy signature, or a ranking that cannot depend on the user.
absl::Status VerifyModelDir(const std::string& dir,
                            std::string* note = nullptr);

// Runs `mlp` on m rows, or copies `in` to `out` when `mlp` is nullptr
// (a stack with no layers is the identity). in/out strides are the widths.
absl::Status RunOrIdentity(const Fp32Mlp* mlp, const float* in, int64_t m,
                           int width, float* out);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_MODEL_H_
