#include "common/kernels/embedding_bag.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>

#include "common/kernels/internal/f32x8.h"

namespace duet::common {
namespace {

using internal::F32x8;

// Rows ahead to prefetch (issued across bag boundaries: the id stream is one
// array). On the 2-core KVM build machine the DRAM-resident gather runs at
// the prefetching probe's rate for any distance in 8..48 (it is bound by
// outstanding line misses, ~15 ns per line), so 16 sits mid-plateau
// (bench/kernels_benchmark.cc, gather/*/dram vs probe/*/dram).
constexpr int kPrefetchDistance = 16;

// Bag boundaries: explicit offsets or fixed-size bags.
struct ArrayOffsets {
  const int32_t* offsets;
  int64_t Begin(int64_t b) const { return offsets[b]; }
};
struct FixedOffsets {
  int64_t bag_size;
  int64_t Begin(int64_t b) const { return b * bag_size; }
};

inline float LoadFloat(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, sizeof(f));  // rows are unaligned in mapped files
  return f;
}

// Touches every cache line of [p, p + bytes).
template <size_t kBytes>
inline void PrefetchRow(const uint8_t* p) {
  for (size_t off = 0; off < kBytes; off += 64) internal::Prefetch(p + off);
  // An unaligned row spills into one more line.
  internal::Prefetch(p + kBytes - 1);
}
inline void PrefetchRowDynamic(const uint8_t* p, size_t bytes) {
  for (size_t off = 0; off < bytes; off += 64) internal::Prefetch(p + off);
  internal::Prefetch(p + bytes - 1);
}

// ---------------------------------------------------------------------------
// Fixed-dim kernels: dim == 8 * kNv, accumulators live in registers for the
// whole bag. Two accumulator sets alternate between rows when there are
// registers to spare, so consecutive rows' adds do not serialize on the
// 4-cycle FMA/add latency (matters for cache-resident tables).

template <int kNv, typename Offsets>
void BagSumFp32Fixed(const uint8_t* base, const int64_t* ids, Offsets offs,
                     int64_t num_bags, float* out, int64_t out_stride,
                     bool accumulate) {
  constexpr size_t kRowBytes = kNv * 32;
  constexpr bool kTwoSets = kNv <= 4;
  const int64_t total = offs.Begin(num_bags);
  for (int64_t b = 0; b < num_bags; ++b) {
    const int64_t begin = offs.Begin(b), end = offs.Begin(b + 1);
    F32x8 acc0[kNv], acc1[kNv];
    for (int j = 0; j < kNv; ++j) {
      acc0[j] = internal::Zero();
      acc1[j] = internal::Zero();
    }
    int64_t k = begin;
    if (kTwoSets) {
      for (; k + 2 <= end; k += 2) {
        if (k + kPrefetchDistance + 1 < total) {
          PrefetchRow<kRowBytes>(base + ids[k + kPrefetchDistance] * kRowBytes);
          PrefetchRow<kRowBytes>(base +
                                 ids[k + kPrefetchDistance + 1] * kRowBytes);
        }
        const uint8_t* r0 = base + ids[k] * kRowBytes;
        const uint8_t* r1 = base + ids[k + 1] * kRowBytes;
        for (int j = 0; j < kNv; ++j) {
          acc0[j] = internal::Add(acc0[j], internal::Load(r0 + 32 * j));
          acc1[j] = internal::Add(acc1[j], internal::Load(r1 + 32 * j));
        }
      }
    }
    for (; k < end; ++k) {
      if (k + kPrefetchDistance < total) {
        PrefetchRow<kRowBytes>(base + ids[k + kPrefetchDistance] * kRowBytes);
      }
      const uint8_t* r = base + ids[k] * kRowBytes;
      for (int j = 0; j < kNv; ++j) {
        acc0[j] = internal::Add(acc0[j], internal::Load(r + 32 * j));
      }
    }
    float* o = out + b * out_stride;
    for (int j = 0; j < kNv; ++j) {
      F32x8 v = kTwoSets ? internal::Add(acc0[j], acc1[j]) : acc0[j];
      if (accumulate) v = internal::Add(v, internal::Load(o + 8 * j));
      internal::Store(v, o + 8 * j);
    }
  }
}

// Int8 row: value[j] = scale * code[j] + bias. The bias term is the same for
// every column, so it is summed once per row as a scalar and added at the end.
template <int kNv>
inline void AccumulateInt8Row(const uint8_t* r, F32x8* acc, float* bias_sum) {
  constexpr int kDim = kNv * 8;
  const F32x8 scale = internal::Set1(LoadFloat(r + kDim));
  *bias_sum += LoadFloat(r + kDim + 4);
  for (int j = 0; j < kNv; ++j) {
    acc[j] = internal::MulAdd(scale, internal::LoadU8(r + 8 * j), acc[j]);
  }
}

template <int kNv, typename Offsets>
void BagSumInt8Fixed(const uint8_t* base, const int64_t* ids, Offsets offs,
                     int64_t num_bags, float* out, int64_t out_stride,
                     bool accumulate) {
  constexpr size_t kRowBytes = kNv * 8 + 8;
  constexpr bool kTwoSets = kNv <= 4;
  const int64_t total = offs.Begin(num_bags);
  for (int64_t b = 0; b < num_bags; ++b) {
    const int64_t begin = offs.Begin(b), end = offs.Begin(b + 1);
    F32x8 acc0[kNv], acc1[kNv];
    for (int j = 0; j < kNv; ++j) {
      acc0[j] = internal::Zero();
      acc1[j] = internal::Zero();
    }
    float bias0 = 0.0f, bias1 = 0.0f;
    int64_t k = begin;
    if (kTwoSets) {
      for (; k + 2 <= end; k += 2) {
        if (k + kPrefetchDistance + 1 < total) {
          PrefetchRow<kRowBytes>(base + ids[k + kPrefetchDistance] * kRowBytes);
          PrefetchRow<kRowBytes>(base +
                                 ids[k + kPrefetchDistance + 1] * kRowBytes);
        }
        AccumulateInt8Row<kNv>(base + ids[k] * kRowBytes, acc0, &bias0);
        AccumulateInt8Row<kNv>(base + ids[k + 1] * kRowBytes, acc1, &bias1);
      }
    }
    for (; k < end; ++k) {
      if (k + kPrefetchDistance < total) {
        PrefetchRow<kRowBytes>(base + ids[k + kPrefetchDistance] * kRowBytes);
      }
      AccumulateInt8Row<kNv>(base + ids[k] * kRowBytes, acc0, &bias0);
    }
    const F32x8 bias = internal::Set1(bias0 + bias1);
    float* o = out + b * out_stride;
    for (int j = 0; j < kNv; ++j) {
      F32x8 v = kTwoSets ? internal::Add(acc0[j], acc1[j]) : acc0[j];
      v = internal::Add(v, bias);
      if (accumulate) v = internal::Add(v, internal::Load(o + 8 * j));
      internal::Store(v, o + 8 * j);
    }
  }
}

// ---------------------------------------------------------------------------
// Any dim: accumulate straight into the output row (it stays in L1), 8
// columns at a time, scalar tail for dim % 8.

template <typename Offsets>
void BagSumFp32Generic(const uint8_t* base, int dim, const int64_t* ids,
                       Offsets offs, int64_t num_bags, float* out,
                       int64_t out_stride, bool accumulate) {
  const size_t row_bytes = static_cast<size_t>(dim) * 4;
  const int64_t total = offs.Begin(num_bags);
  const int vec_end = dim & ~7;
  for (int64_t b = 0; b < num_bags; ++b) {
    float* o = out + b * out_stride;
    if (!accumulate) std::fill(o, o + dim, 0.0f);
    for (int64_t k = offs.Begin(b), end = offs.Begin(b + 1); k < end; ++k) {
      if (k + kPrefetchDistance < total) {
        PrefetchRowDynamic(base + ids[k + kPrefetchDistance] * row_bytes,
                           row_bytes);
      }
      // Rows may sit at any byte offset of a mapped file: byte pointers and
      // unaligned loads only (a misaligned float* would be undefined).
      const uint8_t* r = base + ids[k] * row_bytes;
      int j = 0;
      for (; j < vec_end; j += 8) {
        internal::Store(
            internal::Add(internal::Load(o + j), internal::Load(r + 4 * j)),
            o + j);
      }
      for (; j < dim; ++j) o[j] += LoadFloat(r + 4 * j);
    }
  }
}

template <typename Offsets>
void BagSumInt8Generic(const uint8_t* base, int dim, const int64_t* ids,
                       Offsets offs, int64_t num_bags, float* out,
                       int64_t out_stride, bool accumulate) {
  const size_t row_bytes = static_cast<size_t>(dim) + 8;
  const int64_t total = offs.Begin(num_bags);
  const int vec_end = dim & ~7;
  for (int64_t b = 0; b < num_bags; ++b) {
    float* o = out + b * out_stride;
    if (!accumulate) std::fill(o, o + dim, 0.0f);
    for (int64_t k = offs.Begin(b), end = offs.Begin(b + 1); k < end; ++k) {
      if (k + kPrefetchDistance < total) {
        PrefetchRowDynamic(base + ids[k + kPrefetchDistance] * row_bytes,
                           row_bytes);
      }
      const uint8_t* r = base + ids[k] * row_bytes;
      const float scale = LoadFloat(r + dim);
      const float bias = LoadFloat(r + dim + 4);
      const F32x8 vscale = internal::Set1(scale);
      const F32x8 vbias = internal::Set1(bias);
      int j = 0;
      for (; j < vec_end; j += 8) {
        const F32x8 v =
            internal::MulAdd(vscale, internal::LoadU8(r + j), vbias);
        internal::Store(internal::Add(internal::Load(o + j), v), o + j);
      }
      for (; j < dim; ++j) o[j] += scale * static_cast<float>(r[j]) + bias;
    }
  }
}

// ---------------------------------------------------------------------------
// Dispatch: dims that are multiples of 8 up to 128 get a register-resident
// kernel (covers the model's 32 and 64 and the usual 8..128 sizes).

template <typename Offsets>
using KernelFn = void (*)(const uint8_t*, const int64_t*, Offsets, int64_t,
                          float*, int64_t, bool);

template <typename Offsets, int... kNv>
constexpr auto Fp32Table(std::integer_sequence<int, kNv...>) {
  return std::array<KernelFn<Offsets>, sizeof...(kNv)>{
      &BagSumFp32Fixed<kNv + 1, Offsets>...};
}
template <typename Offsets, int... kNv>
constexpr auto Int8Table(std::integer_sequence<int, kNv...>) {
  return std::array<KernelFn<Offsets>, sizeof...(kNv)>{
      &BagSumInt8Fixed<kNv + 1, Offsets>...};
}
constexpr int kMaxFixedVectors = 16;

template <typename Offsets>
void Dispatch(const EmbeddingTable& table, const int64_t* ids, Offsets offs,
              int64_t num_bags, float* out, int64_t out_stride,
              bool accumulate) {
  if (num_bags <= 0) return;
  const auto* base = static_cast<const uint8_t*>(table.data);
  const int dim = table.dim;
  const bool fixed = dim % 8 == 0 && dim > 0 && dim <= 8 * kMaxFixedVectors;
  if (table.format == EmbeddingTable::Format::kFp32) {
    static constexpr auto kTable =
        Fp32Table<Offsets>(std::make_integer_sequence<int, kMaxFixedVectors>());
    if (fixed) {
      kTable[dim / 8 - 1](base, ids, offs, num_bags, out, out_stride,
                          accumulate);
    } else {
      BagSumFp32Generic(base, dim, ids, offs, num_bags, out, out_stride,
                        accumulate);
    }
  } else {
    static constexpr auto kTable =
        Int8Table<Offsets>(std::make_integer_sequence<int, kMaxFixedVectors>());
    if (fixed) {
      kTable[dim / 8 - 1](base, ids, offs, num_bags, out, out_stride,
                          accumulate);
    } else {
      BagSumInt8Generic(base, dim, ids, offs, num_bags, out, out_stride,
                        accumulate);
    }
  }
}

}  // namespace

void EmbeddingBagSum(const EmbeddingTable& table, const int64_t* ids,
                     const int32_t* offsets, int64_t num_bags, float* out,
                     int64_t out_stride, bool accumulate) {
  Dispatch(table, ids, ArrayOffsets{offsets}, num_bags, out, out_stride,
           accumulate);
}

void EmbeddingBagSumFixed(const EmbeddingTable& table, const int64_t* ids,
                          int64_t num_bags, int bag_size, float* out,
                          int64_t out_stride, bool accumulate) {
  Dispatch(table, ids, FixedOffsets{bag_size}, num_bags, out, out_stride,
           accumulate);
}

void EmbeddingBagSumRef(const EmbeddingTable& table, const int64_t* ids,
                        const int32_t* offsets, int64_t num_bags, float* out,
                        int64_t out_stride, bool accumulate) {
  const auto* base = static_cast<const uint8_t*>(table.data);
  const int dim = table.dim;
  const size_t stride = table.row_stride();
  for (int64_t b = 0; b < num_bags; ++b) {
    float* o = out + b * out_stride;
    if (!accumulate) std::fill(o, o + dim, 0.0f);
    for (int32_t k = offsets[b]; k < offsets[b + 1]; ++k) {
      const uint8_t* r = base + static_cast<size_t>(ids[k]) * stride;
      if (table.format == EmbeddingTable::Format::kFp32) {
        for (int j = 0; j < dim; ++j) {
          float v;
          std::memcpy(&v, r + 4 * j, sizeof(v));
          o[j] += v;
        }
      } else {
        const float scale = LoadFloat(r + dim);
        const float bias = LoadFloat(r + dim + 4);
        for (int j = 0; j < dim; ++j) {
          o[j] += scale * static_cast<float>(r[j]) + bias;
        }
      }
    }
  }
}

int64_t FindOutOfRangeId(const EmbeddingTable& table, const int64_t* ids,
                         int64_t count) {
  // One unsigned compare catches negative ids too.
  const auto rows = static_cast<uint64_t>(table.rows);
  for (int64_t i = 0; i < count; ++i) {
    if (static_cast<uint64_t>(ids[i]) >= rows) return i;
  }
  return -1;
}

void QuantizeRowwiseInt8(const float* src, int64_t rows, int dim,
                         uint8_t* out) {
  const size_t stride = static_cast<size_t>(dim) + 8;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * dim;
    uint8_t* o = out + r * stride;
    float lo = dim > 0 ? x[0] : 0.0f, hi = lo;
    for (int j = 1; j < dim; ++j) {
      lo = std::min(lo, x[j]);
      hi = std::max(hi, x[j]);
    }
    const float scale = (hi - lo) / 255.0f;
    for (int j = 0; j < dim; ++j) {
      float q = scale > 0.0f ? std::nearbyint((x[j] - lo) / scale) : 0.0f;
      q = q < 255.0f ? q : 255.0f;  // written so NaN clamps, never UB
      q = q > 0.0f ? q : 0.0f;
      o[j] = static_cast<uint8_t>(q);
    }
    std::memcpy(o + dim, &scale, sizeof(scale));
    std::memcpy(o + dim + 4, &lo, sizeof(lo));
  }
}

}  // namespace duet::common
