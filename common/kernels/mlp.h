// Dense layer stacks (MLPs) on oneDNN matmul, fp32 and int8. Every Linear
// layer is followed by ReLU except the last, which is followed by
// `last_activation` (DESIGN.md §2). Scalar references: mlp_reference.h;
// post-training quantization: mlp_quantizer.h.
#ifndef DUET_COMMON_KERNELS_MLP_H_
#define DUET_COMMON_KERNELS_MLP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/kernels/int8_arithmetic.h"

namespace duet::common {

enum class Activation { kNone, kRelu, kSigmoid };

// fp32 parameters of one nn.Linear, non-owning: weight is [out, in] row-major.
struct LinearLayer {
  int in = 0;
  int out = 0;
  const float* weight = nullptr;
  const float* bias = nullptr;
};

// Int8 parameters of one Linear, non-owning. Weights are symmetric per output
// channel: W[o][i] ~= weight_scale[o] * weight[o*in + i]. The layer's input is
// quantized per tensor to u8: x ~= input_scale * (q - zero_point), with q's
// range and zero point set by the stack's Int8Arithmetic (int8_arithmetic.h):
// in full 8-bit arithmetic [0, 255] around 128 for the first layer (its
// signed input, s8 codes shifted) and [0, 255] from 0 after (post-ReLU).
struct Int8LinearLayer {
  int in = 0;
  int out = 0;
  const int8_t* weight = nullptr;
  const float* weight_scale = nullptr;
  const float* bias = nullptr;  // fp32, added after dequantization
  float input_scale = 1.0f;
};

// Owning int8 parameters of a stack and the arithmetic their codes and scales
// were made for, as produced by QuantizeMlp / RequantizeMlp or loaded.
struct Int8MlpParams {
  struct Layer {
    int in = 0;
    int out = 0;
    std::vector<int8_t> weight;
    std::vector<float> weight_scale;
    std::vector<float> bias;
    float input_scale = 1.0f;
  };
  Int8Arithmetic arithmetic = Int8Arithmetic::kFull;
  std::vector<Layer> layers;
  std::vector<Int8LinearLayer> Views() const;
};

// fp32 MLP on oneDNN matmul. Weights are copied and reordered once at Create
// (format_tag::any); the source memory may be released afterwards.
// Thread-safe: Run may be called concurrently; each calling thread uses its
// own stream and scratch buffers, and oneDNN runs single-threaded per call.
class Fp32Mlp {
 public:
  static absl::StatusOr<std::unique_ptr<Fp32Mlp>> Create(
      const std::vector<LinearLayer>& layers, Activation last_activation);
  ~Fp32Mlp();

  // in: [m, in_dim()] row-major; out: [m, out_dim()]. m >= 1.
  absl::Status Run(const float* in, int64_t m, float* out) const;

  // Builds the oneDNN primitives of every row count up to max_m now (they
  // are otherwise built by the first Run of each count, on its caller's
  // time): a warm-up before a model takes traffic.
  absl::Status Prepare(int64_t max_m) const;
  // The row counts prepared so far (by Prepare or Run), ascending.
  std::vector<int64_t> PreparedRowCounts() const;

  int in_dim() const;
  int out_dim() const;
  int num_layers() const;
  // Multiply-adds x 2 for m rows.
  int64_t Flops(int64_t m) const;

 private:
  struct Impl;
  explicit Fp32Mlp(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Int8 MLP on oneDNN matmul (u8s8 layers; output scales per output channel;
// fp32 output of the last layer after `last_activation`). INVALID_ARGUMENT if a
// weight code lies outside the arithmetic's range. The caller picks an
// arithmetic that is exact on this CPU (Int8Kernels()); another one runs, but
// saturates. Same ownership and thread-safety contract as Fp32Mlp.
class Int8Mlp {
 public:
  static absl::StatusOr<std::unique_ptr<Int8Mlp>> Create(
      const std::vector<Int8LinearLayer>& layers, Activation last_activation,
      Int8Arithmetic arithmetic);
  ~Int8Mlp();

  // in: fp32 [m, in_dim()], quantized internally with layers[0].input_scale.
  absl::Status Run(const float* in, int64_t m, float* out) const;

  int in_dim() const;
  int out_dim() const;
  int num_layers() const;
  Int8Arithmetic arithmetic() const;
  int64_t Ops(int64_t m) const;
  // oneDNN's implementations of the primitives built so far (per layer and
  // row count: Run builds them on first use), each once.
  std::vector<std::string> Implementations() const;

 private:
  struct Impl;
  explicit Int8Mlp(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace duet::common

#endif  // DUET_COMMON_KERNELS_MLP_H_
