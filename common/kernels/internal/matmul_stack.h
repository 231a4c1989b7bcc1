// The oneDNN matmul machinery under Fp32Mlp and Int8Mlp: a stack of matmul
// layers with shared, lazily built per-row-count primitives, weights packed
// once per layout, and per-thread execution state so that steady-state runs
// allocate nothing on our side. Internal to duet_kernels.
#ifndef DUET_COMMON_KERNELS_INTERNAL_MATMUL_STACK_H_
#define DUET_COMMON_KERNELS_INTERNAL_MATMUL_STACK_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/base/aligned_buffer.h"
#include "common/base/mutex.h"
#include "dnnl.hpp"

namespace duet::common::internal {

// Primitives are specialised per row count (oneDNN 2.6's brgemm/AMX int8
// kernels need a fixed M: with DNNL_RUNTIME_DIM_VAL it falls back to
// gemm:jit, measured 5-10x slower for int8 and no faster for fp32). To bound
// the cache, a call with m >= kChunkRows rows runs as one chunk of
// m - m % kChunkRows rows plus a tail of m % kChunkRows rows, so at most
// (max_m / kChunkRows) + kChunkRows - 1 primitives exist per layer.
inline constexpr int64_t kChunkRows = 16;

using AlignedBytes = AlignedBuffer<uint8_t>;

// One matmul layer as fed to oneDNN:
//   dst = post_op(output_scale[n] * (src x weights + bias))   (oneDNN 2.x
// applies the bias before the output scales; verified by mlp_test).
struct LayerSpec {
  using Dt = dnnl::memory::data_type;
  int in = 0;
  int out = 0;
  Dt src_dt = Dt::f32;
  Dt wei_dt = Dt::f32;
  Dt dst_dt = Dt::f32;
  std::vector<float> output_scales;  // per output channel; empty = none
  std::optional<dnnl::algorithm> post_op;
  float post_op_alpha = 0.0f;  // eltwise_clip's bounds
  float post_op_beta = 0.0f;
  std::vector<uint8_t> weights;  // [out, in] row-major, wei_dt elements
  std::vector<float> bias;       // [out]
};

// Per-thread execution state. Memory objects and args maps are built once
// per (stack, chunk rows) and rebound with set_data_handle, so the steady
// state allocates nothing on our side. `input` is the caller's staging
// buffer (Int8Mlp's quantized input).
struct ThreadState {
  struct LayerArgs {
    dnnl::memory src, dst, scratch;
    std::unordered_map<int, dnnl::memory> args;
  };
  struct Context {
    std::vector<LayerArgs> layers;
  };

  std::optional<dnnl::stream> stream;
  AlignedBytes act[2];
  AlignedBytes input;
  AlignedBytes scratch;
  absl::flat_hash_map<std::pair<uint64_t, int64_t>, std::unique_ptr<Context>>
      contexts;
};

// The calling thread's state, its stream created on first use.
ThreadState& GetThreadState();

// A stack of matmul layers with lazily created, shared per-M primitives and
// weights reordered once per distinct layout the primitives ask for.
// Thread-safe: Run may be called concurrently, each thread with its own
// ThreadState.
class MatmulStack {
 public:
  // Validates by building the m = 1 plan (which also packs the weights).
  static absl::StatusOr<std::unique_ptr<MatmulStack>> Create(
      std::vector<LayerSpec> specs);

  // in: [m, specs[0].in] of specs[0].src_dt; out: [m, specs.back().out] f32.
  // Must be called inside a try block (oneDNN throws).
  void Run(ThreadState& ts, const void* in, int64_t m, float* out) const;

  // Builds, now, the primitives of every row count a Run with m <= max_m
  // uses (1 .. kChunkRows - 1 and the multiples of kChunkRows), so that no
  // later Run creates one. Must be called inside a try block.
  void Prepare(int64_t max_m) const;
  // The row counts whose primitives exist, ascending.
  std::vector<int64_t> PlannedRowCounts() const;

  // The oneDNN implementations of the primitives created so far (one per
  // layer and row count), each once.
  std::vector<std::string> Implementations() const;

 private:
  struct LayerPlan {
    dnnl::matmul prim;
    dnnl::memory::desc src, weights, bias, dst, scratch;
    void* packed_weights = nullptr;
  };
  struct Plan {
    std::vector<LayerPlan> layers;
    size_t scratch_bytes = 0;
  };
  struct Packed {
    dnnl::memory::desc desc;
    AlignedBytes data;
  };

  explicit MatmulStack(std::vector<LayerSpec> specs);

  const Plan& GetPlan(int64_t m) const;
  const Plan& CreatePlanLocked(int64_t m) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void* PackedWeightsLocked(size_t l, const dnnl::memory::desc& desc) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ThreadState::Context& GetContext(ThreadState& ts, int64_t m,
                                   const Plan& plan) const;
  void RunChunk(ThreadState& ts, const uint8_t* in, int64_t m,
                float* out) const;

  static std::atomic<uint64_t> next_uid_;
  const uint64_t uid_;
  const std::vector<LayerSpec> specs_;
  const size_t in_row_bytes_;
  size_t act_row_bytes_ = 0;
  mutable common::Mutex mu_;
  mutable absl::flat_hash_map<int64_t, std::unique_ptr<Plan>> plans_
      ABSL_GUARDED_BY(mu_);
  mutable std::vector<std::vector<std::unique_ptr<Packed>>> packed_
      ABSL_GUARDED_BY(mu_);
  mutable std::vector<std::string> implementations_ ABSL_GUARDED_BY(mu_);
};

}  // namespace duet::common::internal

#endif  // DUET_COMMON_KERNELS_INTERNAL_MATMUL_STACK_H_
