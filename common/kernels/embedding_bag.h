// Embedding gather + SUM pooling (EmbeddingBag) over fp32 or row-wise int8
// tables, the hot kernel of both the item model and the monolithic baseline.
#ifndef DUET_COMMON_KERNELS_EMBEDDING_BAG_H_
#define DUET_COMMON_KERNELS_EMBEDDING_BAG_H_

#include <cstddef>
#include <cstdint>

namespace duet::common {

// A read-only, non-owning view of one embedding table. The memory usually
// belongs to a memory-mapped safetensors file; the view must not outlive it.
//   kFp32:        row r is `dim` floats at data + r * dim * 4.
//   kInt8Rowwise: row r is `dim` uint8 codes followed by float scale and float
//                 bias (FBGEMM "fused 8-bit rowwise"), stride dim + 8 bytes;
//                 value[j] = scale * code[j] + bias.
struct EmbeddingTable {
  enum class Format { kFp32, kInt8Rowwise };

  static EmbeddingTable Fp32(const float* data, int64_t rows, int dim) {
    return {Format::kFp32, data, rows, dim};
  }
  static EmbeddingTable Int8Rowwise(const uint8_t* data, int64_t rows,
                                    int dim) {
    return {Format::kInt8Rowwise, data, rows, dim};
  }
  // Bytes between consecutive rows.
  size_t row_stride() const {
    return format == Format::kFp32 ? static_cast<size_t>(dim) * 4
                                   : static_cast<size_t>(dim) + 8;
  }

  Format format = Format::kFp32;
  const void* data = nullptr;
  int64_t rows = 0;
  int dim = 0;
};

// Pooled gather, the production kernel (8 fp32 lanes: AVX2 on x86-64-v3,
// NEON on aarch64, portable C++ elsewhere, internal/f32x8.h; software
// prefetch `kPrefetchDistance` rows ahead):
//   for b in [0, num_bags):
//     acc = accumulate ? out[b*out_stride .. +dim] : 0
//     for k in [offsets[b], offsets[b+1]): acc += row(table, ids[k])
//     out[b*out_stride .. +dim] = acc
// `offsets` has num_bags + 1 entries, offsets[0] == 0; an empty bag yields 0
// (or leaves `out` unchanged when accumulating). Ids are NOT range-checked
// here (callers validate at the API boundary, see CheckIds); out_stride >= dim.
// Thread-safe: reads the table, writes only `out`.
void EmbeddingBagSum(const EmbeddingTable& table, const int64_t* ids,
                     const int32_t* offsets, int64_t num_bags, float* out,
                     int64_t out_stride, bool accumulate);

// Fixed-size bags (every bag has `bag_size` ids), the item-table case:
// equivalent to EmbeddingBagSum with offsets[b] = b * bag_size.
void EmbeddingBagSumFixed(const EmbeddingTable& table, const int64_t* ids,
                          int64_t num_bags, int bag_size, float* out,
                          int64_t out_stride, bool accumulate);

// Scalar reference of EmbeddingBagSum (the oracle of tests and benchmarks).
void EmbeddingBagSumRef(const EmbeddingTable& table, const int64_t* ids,
                        const int32_t* offsets, int64_t num_bags, float* out,
                        int64_t out_stride, bool accumulate);

// Returns the index of the first id outside [0, table.rows), or -1.
int64_t FindOutOfRangeId(const EmbeddingTable& table, const int64_t* ids,
                         int64_t count);

// Row-wise int8 quantization of an fp32 table into the kInt8Rowwise layout
// (`out` holds rows * (dim + 8) bytes): scale = (max - min) / 255,
// bias = min, code = round((x - min) / scale). A constant row gets scale 0.
void QuantizeRowwiseInt8(const float* src, int64_t rows, int dim, uint8_t* out);

}  // namespace duet::common

#endif  // DUET_COMMON_KERNELS_EMBEDDING_BAG_H_
