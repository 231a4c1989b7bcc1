// The user model of the split DLRM (DESIGN.md §2), run once per query on the
// device: u = UserTopMLP([z_s, DynamicBottomMLP(c), p_1..p_Tu]) with the
// memoized z_s and the scratchpad's pooled sums, the user top MLP in int8
// (post-training static quantization) or fp32, then u quantized to the wire
// form (int8 + scale + zero point + model version + fingerprint).
// Borrows the model (which must outlive it). Thread-safe; Run allocates
// nothing once the calling thread has warmed up and `out` is reused.
#ifndef DUET_EDGE_USER_MODEL_H_
#define DUET_EDGE_USER_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/kernels/quantize.h"
#include "common/model/model.h"
#include "duet/v1/scoring.pb.h"

namespace duet::edge {

enum class Precision { kInt8, kFp32 };
// "int8" | "fp32"; INVALID_ARGUMENT otherwise.
absl::StatusOr<Precision> ParsePrecision(const std::string& name);
const char* PrecisionName(Precision p);

class UserModel {
 public:
  struct Options {
    Precision precision = Precision::kInt8;  // the user top MLP
    Precision wire = Precision::kInt8;       // the vector sent upstream
  };

  // The result of one run; reuse one per thread to avoid allocation.
  struct Output {
    std::vector<float> u;   // fp32 user vector (dims().user_out)
    std::vector<int8_t> q;  // its int8 wire form (wire == kInt8)
    common::AffineParams params;
  };

  // FAILED_PRECONDITION if the model's edge part is not loaded.
  static absl::StatusOr<std::unique_ptr<UserModel>> Create(
      const common::Model* model, const Options& options);

  // z_s: dims().static_out floats; c: dims().dynamic_in; pooled: dims().pooled.
  // Inputs must be valid (finite, right sizes). INVALID_ARGUMENT when finite
  // inputs far outside the model's range overflow u.
  absl::Status Run(const float* z_s, const float* c, const float* pooled,
                   Output* out) const;

  // Fills the wire message for `query_id` from a run's output.
  void ToProto(const Output& out, uint64_t query_id,
               duet::v1::UserVector* proto) const;

  const common::Model& model() const { return *model_; }
  const Options& options() const { return options_; }
  int out_dim() const { return model_->dims().user_out; }

 private:
  UserModel(const common::Model* model, const Options& options)
      : model_(model), options_(options) {}
  const common::Model* model_;
  const Options options_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_USER_MODEL_H_
