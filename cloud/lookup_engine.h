// LookupEngine: the item-table side of the item model. Owns the memory a
// PlacementPlan asks for (a copy per worker of replicated tables, per-worker
// copies of the hot rows of sharded tables; sharded rows are read in place
// from the model's memory-mapped file) and gathers + SUM-pools item features
//   f_j = [f_j1 .. f_jTi]   (DESIGN.md §2)
// with batch-level (candidates split across workers) or table-level (tables
// split across workers) parallelism on a common::ThreadPool.
// Immutable after Create and thread-safe; borrows the model and the pool.
#ifndef DUET_CLOUD_LOOKUP_ENGINE_H_
#define DUET_CLOUD_LOOKUP_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cloud/table_placement.h"
#include "common/base/aligned_buffer.h"
#include "common/base/thread_pool.h"
#include "common/kernels/embedding_bag.h"
#include "common/model/model.h"
#include "common/model/reference_model.h"

namespace duet::cloud {

enum class LookupStrategy { kBatch, kTable };
const char* LookupStrategyName(LookupStrategy s);  // "batch" | "table"

// How the engine holds the item embedding tables. kInt8: quantized at load
// into the fused 8-bit row-wise layout (common::QuantizeRowwiseInt8: per-row
// scale and bias, dim + 8 bytes a row instead of 4 dim) and gathered by the
// int8 EmbeddingBag kernel; every copy (shards, replicas, hot rows) is int8,
// and the fp32 rows of the model file are not read after the load.
enum class ItemEmbeddingPrecision { kFp32, kInt8 };
const char* ItemEmbeddingPrecisionName(ItemEmbeddingPrecision p);
// "fp32" | "int8"; INVALID_ARGUMENT naming --item_embeddings otherwise.
absl::StatusOr<ItemEmbeddingPrecision> ParseItemEmbeddingPrecision(
    const std::string& s);

class LookupEngine {
 public:
  // `plan` must have one entry per item table of `model`. The model (cloud
  // part) and the pool must outlive the engine.
  static absl::StatusOr<std::unique_ptr<LookupEngine>> Create(
      const common::Model* model, const PlacementPlan& plan,
      common::ThreadPool* pool,
      ItemEmbeddingPrecision precision = ItemEmbeddingPrecision::kFp32);

  // Access statistics of every item table, sampled over up to `sample_items`
  // catalog items spread evenly over the id range; keeps the `top_rows` most
  // accessed rows per table. Input of the TablePlacement planner; row_bytes
  // are those of `precision`.
  static std::vector<TableStats> SampleStats(
      const common::Model& model, int64_t sample_items, int top_rows,
      ItemEmbeddingPrecision precision = ItemEmbeddingPrecision::kFp32);

  // f rows of candidates[0, n) into out ([n, item_top_in] row-major), in
  // parallel on the pool (the caller takes part). Ids must be valid.
  void Gather(const int64_t* candidates, int n, LookupStrategy strategy,
              float* out) const;
  // The same, on the calling thread only: all tables for these rows.
  void GatherRows(const int64_t* candidates, int n, float* out) const;
  // Item table t for n candidates into columns [t*d, (t+1)*d) of out.
  void GatherTable(int t, const int64_t* candidates, int n, float* out) const;

  // How many parallel chunks n rows are worth on this pool.
  int NumChunks(int n) const;
  const PlacementPlan& plan() const { return plan_; }
  int64_t rows_gathered_per_item() const { return lookups_per_item_; }
  ItemEmbeddingPrecision precision() const { return precision_; }
  // Seconds Create spent quantizing (kInt8), 0 for fp32.
  double quantize_seconds() const { return quantize_seconds_; }

 private:
  struct Table {
    PlacementMode mode = PlacementMode::kShard;
    // The rows every shard reads: the mmap'd fp32 rows, or int8_'s.
    common::EmbeddingTable shared;
    // Per worker, in shared's format: kReplicate the whole table, kShard
    // the hot rows.
    std::vector<common::AlignedBuffer<uint8_t>> replicas;
    std::vector<common::AlignedBuffer<uint8_t>> hot_copies;
    std::vector<int32_t> hot_slot;  // row -> hot row or -1
    int64_t num_hot = 0;
    int bag = 0;
    // A view of `rows` rows at `data`, in shared's format.
    common::EmbeddingTable View(const uint8_t* data, int64_t rows) const {
      common::EmbeddingTable v = shared;
      v.data = data;
      v.rows = rows;
      return v;
    }
  };
  LookupEngine(const common::Model* model, PlacementPlan plan,
               common::ThreadPool* pool, ItemEmbeddingPrecision precision)
      : model_(model),
        plan_(std::move(plan)),
        pool_(pool),
        precision_(precision) {}
  // The copy of replica/hot data the current thread should read.
  static int CopyIndex(int copies);

  const common::Model* model_;
  const PlacementPlan plan_;
  common::ThreadPool* pool_;
  const ItemEmbeddingPrecision precision_;
  std::unique_ptr<const common::Int8ItemTables> int8_;  // kInt8
  double quantize_seconds_ = 0;
  std::vector<Table> tables_;
  int dim_ = 0;
  int stride_ = 0;
  int64_t lookups_per_item_ = 0;
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_LOOKUP_ENGINE_H_
