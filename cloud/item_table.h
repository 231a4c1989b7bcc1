// ItemTable: the precomputed item side of one model version (DESIGN.md §2
// "Precomputed item side"): for the covered catalog items, in build order
// (hottest first), either
//   kItemVector: v_j = ItemTopMLP(f_j)          (width item_out), or
//   kFirstLayer: W_v v_j, the first combined layer's item contribution
//                (width = that layer's outputs; its bias stays in the
//                once-per-query W_u u + b),
// in fp32, contiguous rows. Built once, front to back, by one thread
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

class ItemTable {
 public:
  struct Plan {
    ItemTableForm form = ItemTableForm::kFirstLayer;
    int width = 0;          // floats per row
    int64_t rows = 0;       // items covered once built
    int64_t num_items = 0;  // the catalog
    int64_t bytes() const { return rows * width * int64_t{4}; }
    std::string DebugString() const;
  };

  // Of the two forms, the one that covers the most catalog items within
  // `budget_bytes`; on a tie kFirstLayer, whose rows leave the least work
  // per candidate (no W_v v_j GEMM). rows is 0 when not even one row fits.
  static Plan ChoosePlan(int64_t num_items, int item_out, int first_layer_out,
                         int64_t budget_bytes);

  // `order`: the plan.rows distinct items to cover, hottest first (they are
  // built in this order); empty means items 0 .. plan.rows - 1.
  static absl::StatusOr<std::unique_ptr<ItemTable>> Create(
      const Plan& plan, std::vector<int64_t> order);

  // Rows published so far (acquire): read once per query, pass to Row.
  int64_t built_rows() const { return built_.load(std::memory_order_acquire); }
  // The row of `item` if it is among the first `built` rows, else null.
  // `item` must be in [0, num_items).
  const float* Row(int64_t item, int64_t built) const {
    const int64_t slot = slot_.empty() ? item : slot_[item];
    if (slot < 0 || slot >= built) return nullptr;
    return data_.data() + slot * plan_.width;
  }

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
  common::AlignedBuffer<float> data_;
  std::atomic<int64_t> built_{0};
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_ITEM_TABLE_H_
