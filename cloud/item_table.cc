#include "cloud/item_table.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/kernels/embedding_bag.h"

namespace duet::cloud {

const char* ItemTableFormName(ItemTableForm form) {
  return form == ItemTableForm::kItemVector ? "item_vector" : "first_layer";
}

const char* ItemTablePrecisionName(ItemTablePrecision precision) {
  return precision == ItemTablePrecision::kFp32 ? "fp32" : "int8";
}

absl::StatusOr<ItemTablePrecisionChoice> ParseItemTablePrecision(
    const std::string& s) {
  if (s == "auto") return ItemTablePrecisionChoice::kAuto;
  if (s == "fp32") return ItemTablePrecisionChoice::kFp32;
  if (s == "int8") return ItemTablePrecisionChoice::kInt8;
  return absl::InvalidArgumentError(absl::StrCat(
      "--item_table_precision is \"", s, "\", must be auto, fp32 or int8"));
}

std::string ItemTable::Plan::DebugString() const {
  return absl::StrFormat(
      "%s rows (%d %s values each), %d of %d items (%.1f%%), %.1f MiB",
      ItemTableFormName(form), width, ItemTablePrecisionName(precision), rows,
      num_items,
      num_items > 0 ? 100.0 * static_cast<double>(rows) / num_items : 0.0,
      static_cast<double>(bytes()) / (1 << 20));
}

ItemTable::Plan ItemTable::ChoosePlan(int64_t num_items, int item_out,
                                      int first_layer_out, int64_t budget_bytes,
                                      ItemTablePrecisionChoice precision) {
  Plan best;
  best.num_items = num_items;
  // In order of preference on a tie.
  for (ItemTablePrecision p :
       {ItemTablePrecision::kFp32, ItemTablePrecision::kInt8}) {
    const bool allowed = precision == ItemTablePrecisionChoice::kAuto ||
                         (precision == ItemTablePrecisionChoice::kFp32) ==
                             (p == ItemTablePrecision::kFp32);
    if (!allowed) continue;
    for (auto [form, width] :
         {std::pair{ItemTableForm::kFirstLayer, first_layer_out},
          std::pair{ItemTableForm::kItemVector, item_out}}) {
      if (width <= 0 || budget_bytes <= 0) continue;
      const int64_t rows =
          std::min(num_items, budget_bytes / Plan::RowBytes(width, p));
      if (rows > best.rows) {
        best.form = form;
        best.precision = p;
        best.width = width;
        best.rows = rows;
      }
    }
  }
  return best;
}

absl::StatusOr<std::unique_ptr<ItemTable>> ItemTable::Create(
    const Plan& plan, std::vector<int64_t> order) {
  if (plan.width <= 0 || plan.rows <= 0 || plan.rows > plan.num_items) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "item table plan of %d rows x %d for %d items: needs 1 .. num_items "
        "rows of width >= 1",
        plan.rows, plan.width, plan.num_items));
  }
  if (plan.num_items > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "item table over %d items: at most 2^31 - 1", plan.num_items));
  }
  if (!order.empty() && static_cast<int64_t>(order.size()) != plan.rows) {
    return absl::InvalidArgumentError(
        absl::StrFormat("item table order has %d items, the plan %d rows",
                        order.size(), plan.rows));
  }
  auto table = std::unique_ptr<ItemTable>(new ItemTable(plan, order));
  if (!order.empty()) {
    table->slot_.assign(static_cast<size_t>(plan.num_items), -1);
    for (size_t i = 0; i < order.size(); ++i) {
      const int64_t item = order[i];
      if (item < 0 || item >= plan.num_items || table->slot_[item] >= 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "item table order: item %d at %d is %s", item, i,
            item < 0 || item >= plan.num_items ? "outside the catalog"
                                               : "repeated"));
      }
      table->slot_[item] = static_cast<int32_t>(i);
    }
  }
  return table;
}

absl::Status ItemTable::Build(const ComputeRows& compute, int chunk,
                              const std::atomic<bool>& stop,
                              const std::function<void()>& progress) {
  chunk = std::max(chunk, 1);
  if (data_.size() == 0) {
    data_ = common::AlignedBuffer<uint8_t>(static_cast<size_t>(plan_.bytes()));
  }
  const bool int8 = plan_.precision == ItemTablePrecision::kInt8;
  // int8: a chunk's fp32 rows, quantized into the table.
  std::vector<float> fp32(int8 ? static_cast<size_t>(chunk) * plan_.width : 0);
  std::vector<int64_t> items(chunk);
  for (int64_t begin = built_.load(std::memory_order_relaxed);
       begin < plan_.rows;) {
    if (stop.load(std::memory_order_relaxed)) {
      return absl::CancelledError("item table build stopped");
    }
    const int n =
        static_cast<int>(std::min<int64_t>(chunk, plan_.rows - begin));
    for (int i = 0; i < n; ++i) {
      items[i] = order_.empty() ? begin + i : order_[begin + i];
    }
    uint8_t* rows = data_.data() + begin * plan_.row_bytes();
    if (int8) {
      RETURN_IF_ERROR(compute(items.data(), n, fp32.data()));
      common::QuantizeRowwiseInt8(fp32.data(), n, plan_.width, rows);
    } else {
      RETURN_IF_ERROR(compute(items.data(), n, reinterpret_cast<float*>(rows)));
    }
    begin += n;
    built_.store(begin, std::memory_order_release);
    if (progress) progress();
  }
  return absl::OkStatus();
}

void ItemTable::ReadRows(const int64_t* slots, int n, float* out) const {
  if (plan_.precision == ItemTablePrecision::kFp32) {
    for (int i = 0; i < n; ++i) {
      std::memcpy(out + static_cast<size_t>(i) * plan_.width,
                  data_.data() + slots[i] * plan_.row_bytes(),
                  static_cast<size_t>(plan_.width) * sizeof(float));
    }
    return;
  }
  // The int8 EmbeddingBag kernel with bags of one row: vectorized, rows
  // prefetched ahead. One call per row instead cost ~0.35 us per row, 4x
  // the whole fp32 path at N = 1024 (item_model_benchmark).
  const common::EmbeddingTable view = common::EmbeddingTable::Int8Rowwise(
      data_.data(), plan_.rows, plan_.width);
  common::EmbeddingBagSumFixed(view, slots, n, 1, out, plan_.width,
                               /*accumulate=*/false);
}

}  // namespace duet::cloud
