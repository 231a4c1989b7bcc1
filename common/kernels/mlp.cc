#include "common/kernels/mlp.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/aligned_buffer.h"
#include "common/base/status_macros.h"
#include "common/kernels/internal/onednn.h"
#include "dnnl.hpp"

namespace duet::common {
namespace {

using dnnl::memory;
using internal::CpuEngine;
using internal::DnnlError;
using internal::PinOneDnnToCallingThread;
using Dt = memory::data_type;
using Tag = memory::format_tag;

// Primitives are specialised per row count (oneDNN 2.6's brgemm/AMX int8
// kernels need a fixed M: with DNNL_RUNTIME_DIM_VAL it falls back to
// gemm:jit, measured 5-10x slower for int8 and no faster for fp32). To bound
// the cache, a call with m >= kChunkRows rows runs as one chunk of
// m - m % kChunkRows rows plus a tail of m % kChunkRows rows, so at most
// (max_m / kChunkRows) + kChunkRows - 1 primitives exist per layer.
constexpr int64_t kChunkRows = 16;

using AlignedBytes = AlignedBuffer<uint8_t>;

size_t ElemSize(Dt dt) { return dt == Dt::f32 ? 4 : 1; }

// One matmul layer as fed to oneDNN:
//   dst = post_op(output_scale[n] * (src x weights + bias))   (oneDNN 2.x
// applies the bias before the output scales; verified by mlp_test).
struct LayerSpec {
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
// state allocates nothing on our side.
struct ThreadState {
  struct LayerArgs {
    memory src, dst, scratch;
    std::unordered_map<int, memory> args;
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

ThreadState& GetThreadState() {
  thread_local ThreadState state;
  if (!state.stream) state.stream.emplace(CpuEngine());
  return state;
}

// A stack of matmul layers with lazily created, shared per-M primitives and
// weights reordered once per distinct layout the primitives ask for.
class MatmulStack {
 public:
  // Validates by building the m = 1 plan (which also packs the weights).
  static absl::StatusOr<std::unique_ptr<MatmulStack>> Create(
      std::vector<LayerSpec> specs) {
    auto stack =
        std::unique_ptr<MatmulStack>(new MatmulStack(std::move(specs)));
    PinOneDnnToCallingThread();
    try {
      absl::MutexLock lock(&stack->mu_);
      stack->CreatePlanLocked(1);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "create the matmul primitives");
    }
    return stack;
  }

  // in: [m, specs[0].in] of specs[0].src_dt; out: [m, specs.back().out] f32.
  // Must be called inside a try block (oneDNN throws).
  void Run(ThreadState& ts, const void* in, int64_t m, float* out) const {
    const int64_t main = m >= kChunkRows ? m - m % kChunkRows : 0;
    const auto* in_bytes = static_cast<const uint8_t*>(in);
    if (main > 0) RunChunk(ts, in_bytes, main, out);
    if (m > main) {
      RunChunk(ts, in_bytes + main * in_row_bytes_, m - main,
               out + main * specs_.back().out);
    }
    ts.stream->wait();
  }

  // The oneDNN implementations of the primitives created so far (one per
  // layer and row count), each once.
  std::vector<std::string> Implementations() const {
    absl::ReaderMutexLock lock(&mu_);
    return implementations_;
  }

 private:
  struct LayerPlan {
    dnnl::matmul prim;
    memory::desc src, weights, bias, dst, scratch;
    void* packed_weights = nullptr;
  };
  struct Plan {
    std::vector<LayerPlan> layers;
    size_t scratch_bytes = 0;
  };
  struct Packed {
    memory::desc desc;
    AlignedBytes data;
  };

  explicit MatmulStack(std::vector<LayerSpec> specs)
      : uid_(next_uid_.fetch_add(1)),
        specs_(std::move(specs)),
        in_row_bytes_(specs_[0].in * ElemSize(specs_[0].src_dt)),
        packed_(specs_.size()) {
    for (size_t l = 0; l + 1 < specs_.size(); ++l) {
      act_row_bytes_ =
          std::max(act_row_bytes_, specs_[l].out * ElemSize(specs_[l].dst_dt));
    }
  }

  const Plan& GetPlan(int64_t m) const {
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = plans_.find(m);
      if (it != plans_.end()) return *it->second;
    }
    absl::MutexLock lock(&mu_);
    return CreatePlanLocked(m);
  }

  const Plan& CreatePlanLocked(int64_t m) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = plans_.find(m);
    if (it != plans_.end()) return *it->second;
    dnnl::engine& eng = CpuEngine();
    auto plan = std::make_unique<Plan>();
    for (size_t l = 0; l < specs_.size(); ++l) {
      const LayerSpec& s = specs_[l];
      const memory::desc src({m, s.in}, s.src_dt, Tag::ab);
      const memory::desc weights_any({s.in, s.out}, s.wei_dt, Tag::any);
      const memory::desc bias({1, s.out}, Dt::f32, Tag::ab);
      const memory::desc dst({m, s.out}, s.dst_dt, Tag::ab);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (!s.output_scales.empty())
        attr.set_output_scales(1 << 1, s.output_scales);
      if (s.post_op) {
        dnnl::post_ops ops;
        ops.append_eltwise(1.0f, *s.post_op, s.post_op_alpha, s.post_op_beta);
        attr.set_post_ops(ops);
      }
      const dnnl::matmul::primitive_desc pd(
          dnnl::matmul::desc(src, weights_any, bias, dst), attr, eng);
      LayerPlan lp{dnnl::matmul(pd),    src, pd.weights_desc(), bias, dst,
                   pd.scratchpad_desc()};
      lp.packed_weights = PackedWeightsLocked(l, lp.weights);
      if (std::string impl = pd.impl_info_str();
          std::find(implementations_.begin(), implementations_.end(), impl) ==
          implementations_.end()) {
        implementations_.push_back(std::move(impl));
      }
      plan->scratch_bytes =
          std::max(plan->scratch_bytes, pd.scratchpad_desc().get_size());
      plan->layers.push_back(std::move(lp));
    }
    return *(plans_[m] = std::move(plan));
  }

  // The preferred weight layout can depend on M (e.g. AVX-512 VNNI kernels
  // for m = 1, AMX for larger m), so weights are packed once per layout.
  void* PackedWeightsLocked(size_t l, const memory::desc& desc) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& p : packed_[l]) {
      if (p->desc == desc) return p->data.data();
    }
    const LayerSpec& s = specs_[l];
    auto packed = std::make_unique<Packed>();
    packed->desc = desc;
    void* data = packed->data.Reserve(desc.get_size());
    dnnl::engine& eng = CpuEngine();
    // PyTorch's [out, in] row-major is the {in, out} matrix in format "ba".
    memory plain({{s.in, s.out}, s.wei_dt, Tag::ba}, eng,
                 const_cast<uint8_t*>(s.weights.data()));
    memory target(desc, eng, data);
    dnnl::stream stream(eng);
    dnnl::reorder(plain, target).execute(stream, plain, target);
    stream.wait();
    packed_[l].push_back(std::move(packed));
    return data;
  }

  ThreadState::Context& GetContext(ThreadState& ts, int64_t m,
                                   const Plan& plan) const {
    auto& slot = ts.contexts[{uid_, m}];
    if (slot) return *slot;
    // Entries of destroyed stacks are never looked up again (uids are not
    // reused); cap the map so they cannot accumulate without bound.
    if (ts.contexts.size() > 4096) {
      ts.contexts.clear();
      return GetContext(ts, m, plan);
    }
    dnnl::engine& eng = CpuEngine();
    auto ctx = std::make_unique<ThreadState::Context>();
    for (size_t l = 0; l < specs_.size(); ++l) {
      const LayerPlan& lp = plan.layers[l];
      ThreadState::LayerArgs la;
      la.src = memory(lp.src, eng, DNNL_MEMORY_NONE);
      la.dst = memory(lp.dst, eng, DNNL_MEMORY_NONE);
      la.scratch = memory(lp.scratch, eng, DNNL_MEMORY_NONE);
      la.args = {
          {DNNL_ARG_SRC, la.src},
          {DNNL_ARG_WEIGHTS, memory(lp.weights, eng, lp.packed_weights)},
          {DNNL_ARG_BIAS,
           memory(lp.bias, eng, const_cast<float*>(specs_[l].bias.data()))},
          {DNNL_ARG_DST, la.dst},
          {DNNL_ARG_SCRATCHPAD, la.scratch}};
      ctx->layers.push_back(std::move(la));
    }
    slot = std::move(ctx);
    return *slot;
  }

  void RunChunk(ThreadState& ts, const uint8_t* in, int64_t m,
                float* out) const {
    const Plan& plan = GetPlan(m);
    ThreadState::Context& ctx = GetContext(ts, m, plan);
    void* scratch = ts.scratch.Reserve(std::max<size_t>(plan.scratch_bytes, 1));
    void* act[2] = {ts.act[0].Reserve(m * act_row_bytes_ + 1),
                    ts.act[1].Reserve(m * act_row_bytes_ + 1)};
    const size_t n = specs_.size();
    for (size_t l = 0; l < n; ++l) {
      ThreadState::LayerArgs& la = ctx.layers[l];
      la.src.set_data_handle(l == 0 ? const_cast<uint8_t*>(in)
                                    : act[(l - 1) % 2]);
      la.dst.set_data_handle(l + 1 == n ? static_cast<void*>(out) : act[l % 2]);
      la.scratch.set_data_handle(scratch);
      plan.layers[l].prim.execute(*ts.stream, la.args);
    }
  }

  static std::atomic<uint64_t> next_uid_;
  const uint64_t uid_;
  const std::vector<LayerSpec> specs_;
  const size_t in_row_bytes_;
  size_t act_row_bytes_ = 0;
  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<int64_t, std::unique_ptr<Plan>> plans_
      ABSL_GUARDED_BY(mu_);
  mutable std::vector<std::vector<std::unique_ptr<Packed>>> packed_
      ABSL_GUARDED_BY(mu_);
  mutable std::vector<std::string> implementations_ ABSL_GUARDED_BY(mu_);
};

std::atomic<uint64_t> MatmulStack::next_uid_{1};

std::optional<dnnl::algorithm> LastPostOp(Activation a) {
  switch (a) {
    case Activation::kRelu:
      return dnnl::algorithm::eltwise_relu;
    case Activation::kSigmoid:
      return dnnl::algorithm::eltwise_logistic;
    case Activation::kNone:
      break;
  }
  return std::nullopt;
}

// Shape checks shared by both MLP kinds.
template <typename Layer>
absl::Status ValidateShapes(const std::vector<Layer>& layers,
                            absl::string_view kind) {
  if (layers.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, " MLP needs at least one layer, got 0"));
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].in <= 0 || layers[l].out <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kind, " MLP layer ", l, " has shape in=", layers[l].in,
                       " out=", layers[l].out, "; both must be positive"));
    }
    if (layers[l].weight == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(kind, " MLP layer ", l, " has no weight"));
    }
    if (l > 0 && layers[l].in != layers[l - 1].out) {
      return absl::InvalidArgumentError(absl::StrCat(
          kind, " MLP layer ", l, " has in=", layers[l].in, " but layer ",
          l - 1, " has out=", layers[l - 1].out, "; they must match"));
    }
  }
  return absl::OkStatus();
}

template <typename Layer>
int64_t MacsPerRow(const std::vector<Layer>& layers) {
  int64_t macs = 0;
  for (const auto& l : layers) macs += int64_t{l.in} * l.out;
  return macs;
}

// ---------------------------------------------------------------------------
// Int8: what Int8Mlp feeds oneDNN.

// q = saturate(round_half_even(x / scale) + zero_point) to [lo, hi], a range
// within [0, 255] (u8 codes).
inline uint8_t QuantizeInputOne(float x, float scale, float zero_point,
                                float lo, float hi) {
  float r = std::nearbyint(x / scale) + zero_point;
  r = r < hi ? r : hi;  // NaN -> hi, like _mm256_min_ps below
  r = r > lo ? r : lo;
  return static_cast<uint8_t>(static_cast<int32_t>(r));
}

void QuantizeInput(const float* x, int64_t n, float scale,
                   const Int8LayerRanges& r, uint8_t* q) {
  const float zp = static_cast<float>(r.input_zero_point);
  const float lo = static_cast<float>(r.input_min);
  const float hi = static_cast<float>(r.input_max);
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 vzp = _mm256_set1_ps(zp);
  const __m256 vmax = _mm256_set1_ps(hi);
  const __m256 vmin = _mm256_set1_ps(lo);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i), vscale);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_max_ps(_mm256_min_ps(_mm256_add_ps(v, vzp), vmax), vmin);
    const __m256i i32 = _mm256_cvtps_epi32(v);
    const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32),
                                        _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i),
                     _mm_packus_epi16(i16, i16));
  }
  for (; i < n; ++i) q[i] = QuantizeInputOne(x[i], scale, zp, lo, hi);
}

// Per layer, with alpha[o] = input_scale * weight_scale[o] and the input's
// zero point z (sum over i of (q[i] - z) w[o][i] = acc - z * rowsum[o]):
//   hidden: q_next = saturate(round((acc + c[o]) * alpha[o] / s'))
//           (ReLU is implied by the saturation at 0; s' = next input scale)
//   last:   y = act((acc + c[o]) * alpha[o])
// where c[o] = bias[o] / alpha[o] - z * rowsum[o]. A zero weight scale (an
// all-zero row) becomes scale 1 with zero codes, so the bias never has to
// be divided by zero.
struct Int8LayerMath {
  std::vector<int8_t> weight;
  std::vector<float> output_scale;
  std::vector<float> bias;
};

Int8LayerMath DeriveInt8Layer(const Int8LinearLayer& l, int32_t zero_point,
                              float next_input_scale) {
  Int8LayerMath m;
  m.weight.assign(l.weight, l.weight + int64_t{l.in} * l.out);
  m.output_scale.resize(l.out);
  m.bias.resize(l.out);
  for (int o = 0; o < l.out; ++o) {
    int8_t* row = m.weight.data() + int64_t{o} * l.in;
    float ws = l.weight_scale[o];
    if (ws == 0.0f) {
      ws = 1.0f;
      std::fill_n(row, l.in, int8_t{0});
    }
    int64_t row_sum = 0;
    for (int i = 0; i < l.in; ++i) row_sum += row[i];
    const float alpha = l.input_scale * ws;
    m.output_scale[o] =
        next_input_scale > 0.0f ? alpha / next_input_scale : alpha;
    m.bias[o] = (l.bias != nullptr ? l.bias[o] : 0.0f) / alpha -
                static_cast<float>(zero_point * row_sum);
  }
  return m;
}

absl::Status ValidateInt8Codes(const std::vector<Int8LinearLayer>& layers,
                               Int8Arithmetic arithmetic) {
  for (size_t l = 0; l < layers.size(); ++l) {
    const Int8LinearLayer& layer = layers[l];
    if (layer.weight_scale == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("int8 MLP layer ", l, " has no weight_scale"));
    }
    if (!(layer.input_scale > 0.0f) || !std::isfinite(layer.input_scale)) {
      return absl::InvalidArgumentError(
          absl::StrCat("int8 MLP layer ", l, " has input_scale ",
                       layer.input_scale, "; expected finite and > 0"));
    }
    for (int o = 0; o < layer.out; ++o) {
      const float ws = layer.weight_scale[o];
      if (!(ws >= 0.0f) || !std::isfinite(ws)) {
        return absl::InvalidArgumentError(
            absl::StrCat("int8 MLP layer ", l, " has weight_scale[", o,
                         "] = ", ws, "; expected finite and >= 0"));
      }
    }
    const int32_t w_max = LayerRanges(arithmetic, l == 0).weight_max;
    const int64_t n = int64_t{layer.in} * layer.out;
    for (int64_t i = 0; i < n; ++i) {
      if (std::abs(int32_t{layer.weight[i]}) > w_max) {
        return absl::InvalidArgumentError(absl::StrCat(
            "int8 MLP layer ", l, " has weight code ", layer.weight[i], " at [",
            i / layer.in, "][", i % layer.in, "]; ",
            Int8ArithmeticName(arithmetic), " arithmetic needs codes in [-",
            w_max, ", ", w_max, "]"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------

std::vector<Int8LinearLayer> Int8MlpParams::Views() const {
  std::vector<Int8LinearLayer> views;
  views.reserve(layers.size());
  for (const Layer& l : layers) {
    views.push_back({l.in, l.out, l.weight.data(), l.weight_scale.data(),
                     l.bias.empty() ? nullptr : l.bias.data(), l.input_scale});
  }
  return views;
}

struct Fp32Mlp::Impl {
  std::unique_ptr<MatmulStack> stack;
  int in_dim = 0;
  int out_dim = 0;
  int num_layers = 0;
  int64_t macs_per_row = 0;
};

Fp32Mlp::Fp32Mlp(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Fp32Mlp::~Fp32Mlp() = default;

absl::StatusOr<std::unique_ptr<Fp32Mlp>> Fp32Mlp::Create(
    const std::vector<LinearLayer>& layers, Activation last_activation) {
  RETURN_IF_ERROR(ValidateShapes(layers, "fp32"));
  std::vector<LayerSpec> specs(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const LinearLayer& src = layers[l];
    LayerSpec& s = specs[l];
    s.in = src.in;
    s.out = src.out;
    const auto* w = reinterpret_cast<const uint8_t*>(src.weight);
    s.weights.assign(w, w + int64_t{src.in} * src.out * sizeof(float));
    s.bias = src.bias != nullptr
                 ? std::vector<float>(src.bias, src.bias + src.out)
                 : std::vector<float>(src.out, 0.0f);
    s.post_op = l + 1 < layers.size()
                    ? std::optional(dnnl::algorithm::eltwise_relu)
                    : LastPostOp(last_activation);
  }
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->stack, MatmulStack::Create(std::move(specs)));
  impl->in_dim = layers.front().in;
  impl->out_dim = layers.back().out;
  impl->num_layers = static_cast<int>(layers.size());
  impl->macs_per_row = MacsPerRow(layers);
  return std::unique_ptr<Fp32Mlp>(new Fp32Mlp(std::move(impl)));
}

absl::Status Fp32Mlp::Run(const float* in, int64_t m, float* out) const {
  if (m < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("fp32 MLP needs m >= 1 rows, got ", m));
  }
  PinOneDnnToCallingThread();
  try {
    impl_->stack->Run(GetThreadState(), in, m, out);
  } catch (const dnnl::error& e) {
    return DnnlError(e, "run the fp32 MLP");
  }
  return absl::OkStatus();
}

int Fp32Mlp::in_dim() const { return impl_->in_dim; }
int Fp32Mlp::out_dim() const { return impl_->out_dim; }
int Fp32Mlp::num_layers() const { return impl_->num_layers; }
int64_t Fp32Mlp::Flops(int64_t m) const { return 2 * m * impl_->macs_per_row; }

struct Int8Mlp::Impl {
  std::unique_ptr<MatmulStack> stack;
  Int8Arithmetic arithmetic = Int8Arithmetic::kFull;
  Int8LayerRanges input_ranges;
  float input_scale = 1.0f;
  int in_dim = 0;
  int out_dim = 0;
  int num_layers = 0;
  int64_t macs_per_row = 0;
};

Int8Mlp::Int8Mlp(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Int8Mlp::~Int8Mlp() = default;

absl::StatusOr<std::unique_ptr<Int8Mlp>> Int8Mlp::Create(
    const std::vector<Int8LinearLayer>& layers, Activation last_activation,
    Int8Arithmetic arithmetic) {
  RETURN_IF_ERROR(ValidateShapes(layers, "int8"));
  RETURN_IF_ERROR(ValidateInt8Codes(layers, arithmetic));
  std::vector<LayerSpec> specs(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const bool last = l + 1 == layers.size();
    const Int8LayerRanges in = LayerRanges(arithmetic, l == 0);
    Int8LayerMath math =
        DeriveInt8Layer(layers[l], in.input_zero_point,
                        last ? 0.0f : layers[l + 1].input_scale);
    LayerSpec& s = specs[l];
    s.in = layers[l].in;
    s.out = layers[l].out;
    s.src_dt = Dt::u8;
    s.wei_dt = Dt::s8;
    s.dst_dt = last ? Dt::f32 : Dt::u8;
    s.output_scales = std::move(math.output_scale);
    s.bias = std::move(math.bias);
    s.weights.resize(math.weight.size());
    std::memcpy(s.weights.data(), math.weight.data(), math.weight.size());
    if (last) {
      s.post_op = LastPostOp(last_activation);
    } else if (const int32_t hi = LayerRanges(arithmetic, false).input_max;
               hi < 255) {
      // The u8 destination saturates at 0 (the ReLU) and 255; the clip
      // keeps codes within the next layer's narrower range.
      s.post_op = dnnl::algorithm::eltwise_clip;
      s.post_op_alpha = 0.0f;
      s.post_op_beta = static_cast<float>(hi);
    }
  }
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->stack, MatmulStack::Create(std::move(specs)));
  impl->arithmetic = arithmetic;
  impl->input_ranges = LayerRanges(arithmetic, /*first_layer=*/true);
  impl->input_scale = layers.front().input_scale;
  impl->in_dim = layers.front().in;
  impl->out_dim = layers.back().out;
  impl->num_layers = static_cast<int>(layers.size());
  impl->macs_per_row = MacsPerRow(layers);
  return std::unique_ptr<Int8Mlp>(new Int8Mlp(std::move(impl)));
}

absl::Status Int8Mlp::Run(const float* in, int64_t m, float* out) const {
  if (m < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("int8 MLP needs m >= 1 rows, got ", m));
  }
  PinOneDnnToCallingThread();
  try {
    ThreadState& ts = GetThreadState();
    const int64_t n = m * impl_->in_dim;
    auto* q = static_cast<uint8_t*>(ts.input.Reserve(n));
    QuantizeInput(in, n, impl_->input_scale, impl_->input_ranges, q);
    impl_->stack->Run(ts, q, m, out);
  } catch (const dnnl::error& e) {
    return DnnlError(e, "run the int8 MLP");
  }
  return absl::OkStatus();
}

int Int8Mlp::in_dim() const { return impl_->in_dim; }
int Int8Mlp::out_dim() const { return impl_->out_dim; }
int Int8Mlp::num_layers() const { return impl_->num_layers; }
int64_t Int8Mlp::Ops(int64_t m) const { return 2 * m * impl_->macs_per_row; }

Int8Arithmetic Int8Mlp::arithmetic() const { return impl_->arithmetic; }
std::vector<std::string> Int8Mlp::Implementations() const {
  return impl_->stack->Implementations();
}

}  // namespace duet::common
