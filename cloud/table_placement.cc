#include "cloud/table_placement.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace duet::cloud {
namespace {

double MiB(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

// Picks the hot rows of a sharded table and charges them to the budget
// (unless forced); leaves `plan` without hot rows when none qualify.
void PlanHotRows(const TableStats& t, const PlacementOptions& o,
                 int64_t* budget_left, TablePlan* plan) {
  std::vector<int64_t> hot;
  uint64_t hot_count = 0;
  if (o.force_hot_rows >= 0) {
    const int64_t k = std::min(o.force_hot_rows, t.rows);
    if (!t.top_rows.empty()) {
      for (const auto& [row, count] : t.top_rows) {
        if (static_cast<int64_t>(hot.size()) >= k) break;
        hot.push_back(row);
        hot_count += count;
      }
    } else {
      for (int64_t r = 0; r < k; ++r) hot.push_back(r);
    }
  } else if (o.max_hot_rows > 0 && t.total_accesses > 0 && t.rows > 0) {
    const double mean =
        static_cast<double>(t.total_accesses) / static_cast<double>(t.rows);
    for (const auto& [row, count] : t.top_rows) {
      if (static_cast<int64_t>(hot.size()) >= o.max_hot_rows) break;
      if (static_cast<double>(count) < o.hot_row_factor * mean) break;
      hot.push_back(row);
      hot_count += count;
    }
  }
  if (hot.empty()) return;
  // Hot rows live once per worker, plus a dense row -> hot slot index.
  const int64_t cost =
      static_cast<int64_t>(hot.size()) * t.row_bytes * o.num_workers +
      t.rows * static_cast<int64_t>(sizeof(int32_t));
  if (cost > *budget_left && o.force_hot_rows < 0) return;
  *budget_left -= cost;
  plan->resident_bytes += cost;
  plan->hot_rows = std::move(hot);
  plan->hot_access_share = t.total_accesses > 0
                               ? static_cast<double>(hot_count) /
                                     static_cast<double>(t.total_accesses)
                               : 0.0;
}

}  // namespace

absl::StatusOr<PlacementMode> ParsePlacementMode(const std::string& s) {
  if (s == "auto") return PlacementMode::kAuto;
  if (s == "replicate") return PlacementMode::kReplicate;
  if (s == "shard") return PlacementMode::kShard;
  return absl::InvalidArgumentError(
      absl::StrCat("placement '", s, "' is not one of auto, replicate, shard"));
}

int PlacementPlan::num_replicated() const {
  return static_cast<int>(std::count_if(
      tables.begin(), tables.end(),
      [](const TablePlan& t) { return t.mode == PlacementMode::kReplicate; }));
}

int PlacementPlan::num_sharded() const {
  return static_cast<int>(tables.size()) - num_replicated();
}

std::string PlacementPlan::DebugString() const {
  std::string out = absl::StrFormat(
      "table placement: %d replicated, %d sharded, %.1f MiB resident\n",
      num_replicated(), num_sharded(), MiB(resident_bytes));
  for (const TablePlan& t : tables) {
    absl::StrAppendFormat(
        &out,
        "  %-16s %-9s shards=%d hot_rows=%d (%.1f%% of accesses) "
        "%.2f MiB: %s\n",
        t.name, t.mode == PlacementMode::kReplicate ? "replicate" : "shard",
        t.num_shards, t.hot_rows.size(), 100.0 * t.hot_access_share,
        MiB(t.resident_bytes), t.reason);
  }
  return out;
}

absl::StatusOr<PlacementPlan> TablePlacement::Plan(
    const std::vector<TableStats>& tables, const PlacementOptions& o) {
  if (o.num_workers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_workers is ", o.num_workers, ", must be >= 1"));
  }
  if (o.memory_budget_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("memory budget is ",
                                                   o.memory_budget_bytes,
                                                   " bytes, must be positive"));
  }
  const int64_t k = o.num_workers;
  int64_t one_copy = 0;
  for (const TableStats& t : tables) one_copy += t.bytes();
  if (one_copy > o.memory_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "item tables need %.1f MiB even when sharded, the memory budget is "
        "%.1f MiB",
        MiB(one_copy), MiB(o.memory_budget_bytes)));
  }
  PlacementPlan plan;
  plan.tables.resize(tables.size());
  int64_t budget_left = o.memory_budget_bytes - one_copy;
  for (size_t i = 0; i < tables.size(); ++i) {
    TablePlan& p = plan.tables[i];
    p.name = tables[i].name;
    p.mode = PlacementMode::kShard;
    p.num_shards = static_cast<int>(k);
    p.resident_bytes = tables[i].bytes();
  }
  auto replicate = [&](size_t i, std::string reason) {
    TablePlan& p = plan.tables[i];
    const int64_t extra = tables[i].bytes() * (k - 1);
    budget_left -= extra;
    p.mode = PlacementMode::kReplicate;
    p.num_shards = 1;
    p.resident_bytes += extra;
    p.reason = std::move(reason);
  };

  if (o.mode == PlacementMode::kReplicate) {
    const int64_t need = one_copy * k;
    if (need > o.memory_budget_bytes) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "replicating every item table on %d workers needs %.1f MiB, the "
          "memory budget is %.1f MiB",
          k, MiB(need), MiB(o.memory_budget_bytes)));
    }
    for (size_t i = 0; i < tables.size(); ++i) replicate(i, "forced");
  } else if (o.mode == PlacementMode::kAuto) {
    // Smallest tables first: they give the most replicated lookups per byte.
    std::vector<size_t> order(tables.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return tables[a].bytes() < tables[b].bytes();
    });
    for (size_t i : order) {
      const int64_t extra = tables[i].bytes() * (k - 1);
      if (tables[i].bytes() > o.small_table_bytes) {
        plan.tables[i].reason =
            absl::StrFormat("%.2f MiB > small-table limit %.2f MiB",
                            MiB(tables[i].bytes()), MiB(o.small_table_bytes));
      } else if (extra > budget_left) {
        plan.tables[i].reason =
            absl::StrFormat("%d copies would exceed the memory budget", k);
      } else {
        replicate(i,
                  absl::StrFormat("small (%.2f MiB)", MiB(tables[i].bytes())));
      }
    }
  } else {
    for (TablePlan& p : plan.tables) p.reason = "forced";
  }
  for (size_t i = 0; i < tables.size(); ++i) {
    if (plan.tables[i].mode == PlacementMode::kShard) {
      PlanHotRows(tables[i], o, &budget_left, &plan.tables[i]);
    }
  }
  for (const TablePlan& p : plan.tables)
    plan.resident_bytes += p.resident_bytes;
  return plan;
}

}  // namespace duet::cloud
