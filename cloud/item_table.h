// ItemTable: the precomputed item side of one model version (DESIGN.md §2
// "Precomputed item side"): for the covered catalog items, in build order
// (hottest first), either
//   kItemVector: v_j = ItemTopMLP(f_j)          (width item_out), or
//   kFirstLayer: W_v v_j, the first combined layer's item contribution
//                (width = that layer's outputs; its bias stays in the
//                once-per-query W_u u + b),
// in fp32 or row-wise int8 (uint8 codes + fp32 scale and bias per row,
// FBGEMM's fused 8-bit rowwise, dequantized by the int8 EmbeddingBag kernel;
// 4x the rows in the same bytes, each element within (max - min) / 510 of
// its row's fp32 value), contiguous rows. Built once, front to back, by one
// thread
// (Build); readers see a prefix of the rows, published with release/acquire,
// so a partly built table is usable and lock-free. Thread-safe for one
// builder and any number of readers.
#ifndef DUET_CLOUD_ITEM_TABLE_H_
#define DUET_CLOUD_ITEM_TABLE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/aligned_buffer.h"

namespace duet::cloud {

enum class ItemTableForm { kItemVector, kFirstLayer };
// "item_vector" | "first_layer"
const char* ItemTableFormName(ItemTableForm form);

enum class ItemTablePrecision { kFp32, kInt8 };
// "fp32" | "int8"
const char* ItemTablePrecisionName(ItemTablePrecision precision);
// The precisions a plan may use: auto (either, see ChoosePlan), fp32, int8.
enum class ItemTablePrecisionChoice { kAuto, kFp32, kInt8 };
// "auto" | "fp32" | "int8"; INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<ItemTablePrecisionChoice> ParseItemTablePrecision(
    const std::string& s);

class ItemTable {
 public:
  struct Plan {
    ItemTableForm form = ItemTableForm::kFirstLayer;
    ItemTablePrecision precision = ItemTablePrecision::kFp32;
    int width = 0;          // values per row
    int64_t rows = 0;       // items covered once built
    int64_t num_items = 0;  // the catalog
    static int64_t RowBytes(int width, ItemTablePrecision precision) {
      return precision == ItemTablePrecision::kFp32 ? int64_t{4} * width
                                                    : int64_t{width} + 8;
    }
    int64_t row_bytes() const { return RowBytes(width, precision); }
    int64_t bytes() const { return rows * row_bytes(); }
    std::string DebugString() const;
  };

  // Of the two forms and the allowed precisions, the plan that covers the
  // most catalog items within `budget_bytes`; on a tie fp32 (exact) before
  // int8, then kFirstLayer, whose rows leave the least work per candidate
  // (no W_v v_j GEMM). So with `auto`, int8 is chosen only when fp32 rows
  // of either form cannot cover the catalog. rows is 0 when not even one
  // row fits.
  static Plan ChoosePlan(
      int64_t num_items, int item_out, int first_layer_out,
      int64_t budget_bytes,
      ItemTablePrecisionChoice precision = ItemTablePrecisionChoice::kAuto);

  // `order`: the plan.rows distinct items to cover, hottest first (they are
  // built in this order); empty means items 0 .. plan.rows - 1.
  static absl::StatusOr<std::unique_ptr<ItemTable>> Create(
      const Plan& plan, std::vector<int64_t> order);

  // Rows published so far (acquire): read once per query, pass to Slot or
  // CopyRow.
  int64_t built_rows() const { return built_.load(std::memory_order_acquire); }
  // Writes the row of `item` (plan.width floats, dequantized when int8) to
  // `out` and returns true if the item is among the first `built` rows;
  // else returns false. `item` must be in [0, num_items).
  bool CopyRow(int64_t item, int64_t built, float* out) const {
    const int64_t slot = Slot(item, built);
    if (slot < 0) return false;
    ReadRows(&slot, 1, out);
    return true;
  }
  // The row index of `item` if it is among the first `built` rows, else -1.
  int64_t Slot(int64_t item, int64_t built) const {
    const int64_t slot = slot_.empty() ? item : slot_[item];
    return slot >= 0 && slot < built ? slot : -1;
  }
  // Rows `slots[0..n)` (each in [0, built)) into out ([n, width] floats):
  // copied, or dequantized in one pass of the int8 EmbeddingBag kernel.
  void ReadRows(const int64_t* slots, int n, float* out) const;

  // Computes rows for n items: `rows` is [n, width] row-major.
  using ComputeRows =
      std::function<absl::Status(const int64_t* items, int n, float* rows)>;
  // Computes every row in order, `chunk` items at a time, publishing each
  // chunk as it is done; calls `progress` after each chunk. Returns
  // CANCELLED when `stop` became true between chunks (the rows published so
  // far stay valid). Call once.
  absl::Status Build(const ComputeRows& compute, int chunk,
                     const std::atomic<bool>& stop,
                     const std::function<void()>& progress);

  const Plan& plan() const { return plan_; }
  // Rows plus the item -> row map (when the order is not the identity).
  int64_t bytes() const {
    return plan_.bytes() + static_cast<int64_t>(slot_.size()) * 4;
  }

 private:
  ItemTable(const Plan& plan, std::vector<int64_t> order)
      : plan_(plan), order_(std::move(order)) {}

  const Plan plan_;
  const std::vector<int64_t> order_;  // empty: identity
  std::vector<int32_t> slot_;         // item -> row or -1; empty: identity
  // Allocated (and zeroed: paged in) by Build, not by Create, so a reload
  // does not fault in the table on the caller's thread. Read only below
  // built_, which is published after the allocation.
  common::AlignedBuffer<uint8_t> data_;  // rows of plan_.row_bytes()
  std::atomic<int64_t> built_{0};
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_ITEM_TABLE_H_
