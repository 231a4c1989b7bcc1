// TablePlacement: decides, per item embedding table, whether every worker
// gets its own copy (replicate: small tables, no sharing) or the rows are
// partitioned across workers (shard: one copy in all), and which rows of a
// sharded table are hot enough to replicate anyway (after the asymmetric
// embedding sharding paper). Pure planning: no memory is touched here.
#ifndef DUET_CLOUD_TABLE_PLACEMENT_H_
#define DUET_CLOUD_TABLE_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace duet::cloud {

enum class PlacementMode { kAuto, kReplicate, kShard };

// "auto" | "replicate" | "shard".
absl::StatusOr<PlacementMode> ParsePlacementMode(const std::string& s);

// What the planner knows about one table.
struct TableStats {
  std::string name;
  int64_t rows = 0;
  int64_t row_bytes = 0;
  // Observed (or sampled) accesses: the most accessed rows with their
  // counts, highest first, and the total count over all rows.
  std::vector<std::pair<int64_t, uint64_t>> top_rows;
  uint64_t total_accesses = 0;

  int64_t bytes() const { return rows * row_bytes; }
};

struct PlacementOptions {
  PlacementMode mode = PlacementMode::kAuto;
  int num_workers = 1;
  // Resident bytes the item tables may use in all: a replicated table costs
  // num_workers copies, a sharded one a single copy, hot rows one copy per
  // worker.
  int64_t memory_budget_bytes = int64_t{8} << 30;
  // Auto mode: tables up to this size are candidates for replication.
  int64_t small_table_bytes = int64_t{16} << 20;
  // A row of a sharded table is hot when its access count is at least this
  // many times the table's mean count per row.
  double hot_row_factor = 8.0;
  // At most this many hot rows per table (0: no hot-row replication).
  int64_t max_hot_rows = 4096;
  // Testing and experiments: replicate exactly the first `force_hot_rows`
  // entries of top_rows (or rows 0..k-1 when there are none) in every
  // sharded table, ignoring hot_row_factor. -1: off.
  int64_t force_hot_rows = -1;
};

struct TablePlan {
  std::string name;
  PlacementMode mode = PlacementMode::kShard;  // kReplicate or kShard
  int num_shards = 1;                          // kShard: rows split this way
  std::vector<int64_t> hot_rows;               // kShard: replicated rows
  double hot_access_share = 0;  // share of accesses the hot rows serve
  int64_t resident_bytes = 0;   // the table's cost under this plan
  std::string reason;           // why, for the start-up log
};

struct PlacementPlan {
  std::vector<TablePlan> tables;
  int64_t resident_bytes = 0;
  int num_replicated() const;
  int num_sharded() const;
  // Multi-line human-readable plan for the start-up log.
  std::string DebugString() const;
};

class TablePlacement {
 public:
  // RESOURCE_EXHAUSTED when even sharding every table exceeds the budget
  // (the message gives both sizes); INVALID_ARGUMENT for bad options.
  static absl::StatusOr<PlacementPlan> Plan(
      const std::vector<TableStats>& tables, const PlacementOptions& options);
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_TABLE_PLACEMENT_H_
