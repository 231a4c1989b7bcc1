#include "cloud/item_table.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"

namespace duet::cloud {

const char* ItemTableFormName(ItemTableForm form) {
  return form == ItemTableForm::kItemVector ? "item_vector" : "first_layer";
}

std::string ItemTable::Plan::DebugString() const {
  return absl::StrFormat(
      "%s rows (%d floats each), %d of %d items (%.1f%%), %.1f MiB",
      ItemTableFormName(form), width, rows, num_items,
      num_items > 0 ? 100.0 * static_cast<double>(rows) / num_items : 0.0,
      static_cast<double>(bytes()) / (1 << 20));
}

ItemTable::Plan ItemTable::ChoosePlan(int64_t num_items, int item_out,
                                      int first_layer_out,
                                      int64_t budget_bytes) {
  auto fit = [&](int width) {
    if (width <= 0 || budget_bytes <= 0) return int64_t{0};
    return std::min(num_items, budget_bytes / (int64_t{4} * width));
  };
  Plan plan;
  plan.num_items = num_items;
  const int64_t first = fit(first_layer_out), vec = fit(item_out);
  if (first >= vec) {
    plan.form = ItemTableForm::kFirstLayer;
    plan.width = first_layer_out;
    plan.rows = first;
  } else {
    plan.form = ItemTableForm::kItemVector;
    plan.width = item_out;
    plan.rows = vec;
  }
  return plan;
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
    data_ = common::AlignedBuffer<float>(static_cast<size_t>(plan_.rows) *
                                         plan_.width);
  }
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
    RETURN_IF_ERROR(
        compute(items.data(), n, data_.data() + begin * plan_.width));
    begin += n;
    built_.store(begin, std::memory_order_release);
    if (progress) progress();
  }
  return absl::OkStatus();
}

}  // namespace duet::cloud
