#include "cloud/lookup_engine.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/base/scratch.h"

namespace duet::cloud {
namespace {

// Below this many rows per chunk the fork/join costs more than it saves.
constexpr int kMinRowsPerChunk = 32;

// Grow-only per-thread scratch: no allocation once warmed up.
struct GatherScratch {
  std::vector<int64_t> ids, hot_ids, cold_ids;
  std::vector<int32_t> hot_offsets, cold_offsets;
};
GatherScratch& Scratch() {
  thread_local GatherScratch scratch;
  return scratch;
}

}  // namespace

const char* LookupStrategyName(LookupStrategy s) {
  return s == LookupStrategy::kBatch ? "batch" : "table";
}

const char* ItemEmbeddingPrecisionName(ItemEmbeddingPrecision p) {
  return p == ItemEmbeddingPrecision::kInt8 ? "int8" : "fp32";
}

absl::StatusOr<ItemEmbeddingPrecision> ParseItemEmbeddingPrecision(
    const std::string& s) {
  if (s == "fp32") return ItemEmbeddingPrecision::kFp32;
  if (s == "int8") return ItemEmbeddingPrecision::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("--item_embeddings is \"", s, "\", must be fp32 or int8"));
}

absl::StatusOr<std::unique_ptr<LookupEngine>> LookupEngine::Create(
    const common::Model* model, const PlacementPlan& plan,
    common::ThreadPool* pool, ItemEmbeddingPrecision precision) {
  if (static_cast<int>(plan.tables.size()) != model->num_item_tables()) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement plan has ", plan.tables.size(),
                     " tables, the model has ", model->num_item_tables()));
  }
  auto engine = std::unique_ptr<LookupEngine>(
      new LookupEngine(model, plan, pool, precision));
  engine->dim_ = model->config().embedding_dim();
  engine->stride_ = model->dims().item_top_in;
  const int copies = pool->size();
  for (int t = 0; t < model->num_item_tables(); ++t) {
    if (model->item_table(t).format != common::EmbeddingTable::Format::kFp32) {
      return absl::UnimplementedError("only fp32 item tables are supported");
    }
  }
  if (precision == ItemEmbeddingPrecision::kInt8) {
    const absl::Time start = absl::Now();
    engine->int8_ = std::make_unique<common::Int8ItemTables>(*model);
    engine->quantize_seconds_ = absl::ToDoubleSeconds(absl::Now() - start);
  }
  for (int t = 0; t < model->num_item_tables(); ++t) {
    const TablePlan& p = plan.tables[t];
    Table table;
    table.mode = p.mode;
    table.shared = model->item_table(t);
    table.bag = model->catalog().lookups_per_item(t);
    if (engine->int8_ != nullptr) table.shared = engine->int8_->tables()[t];
    const int64_t rows = table.shared.rows;
    const size_t row_bytes = table.shared.row_stride();
    const auto* src = static_cast<const uint8_t*>(table.shared.data);
    if (p.mode == PlacementMode::kReplicate) {
      for (int w = 0; w < copies; ++w) {
        common::AlignedBuffer<uint8_t> copy(rows * row_bytes);
        std::memcpy(copy.data(), src, rows * row_bytes);
        table.replicas.push_back(std::move(copy));
      }
    } else if (!p.hot_rows.empty()) {
      table.num_hot = static_cast<int64_t>(p.hot_rows.size());
      table.hot_slot.assign(rows, -1);
      for (int64_t h = 0; h < table.num_hot; ++h) {
        const int64_t row = p.hot_rows[h];
        if (row < 0 || row >= rows) {
          return absl::InvalidArgumentError(
              absl::StrCat("hot row ", row, " of table ", p.name,
                           " is outside [0, ", rows, ")"));
        }
        table.hot_slot[row] = static_cast<int32_t>(h);
      }
      for (int w = 0; w < copies; ++w) {
        common::AlignedBuffer<uint8_t> copy(table.num_hot * row_bytes);
        for (int64_t h = 0; h < table.num_hot; ++h) {
          std::memcpy(copy.data() + h * row_bytes,
                      src + p.hot_rows[h] * row_bytes, row_bytes);
        }
        table.hot_copies.push_back(std::move(copy));
      }
    }
    engine->lookups_per_item_ += table.bag;
    engine->tables_.push_back(std::move(table));
  }
  return engine;
}

std::vector<TableStats> LookupEngine::SampleStats(
    const common::Model& model, int64_t sample_items, int top_rows,
    ItemEmbeddingPrecision precision) {
  const auto& c = model.config();
  const common::Catalog& catalog = model.catalog();
  const int64_t items = std::min(sample_items, catalog.num_items());
  const int64_t step = items > 0 ? catalog.num_items() / items : 1;
  std::vector<TableStats> stats;
  std::vector<int64_t> ids;
  for (int t = 0; t < c.item_tables_size(); ++t) {
    TableStats s;
    s.name = c.item_tables(t).name();
    s.rows = c.item_tables(t).rows();
    s.row_bytes = precision == ItemEmbeddingPrecision::kInt8
                      ? c.embedding_dim() + 8
                      : static_cast<int64_t>(model.item_table(t).row_stride());
    absl::flat_hash_map<int64_t, uint64_t> counts;
    ids.resize(catalog.lookups_per_item(t));
    for (int64_t i = 0; i < items; ++i) {
      catalog.ItemSparseIds(i * step, t, ids.data());
      for (int64_t id : ids) ++counts[id];
      s.total_accesses += ids.size();
    }
    s.top_rows.assign(counts.begin(), counts.end());
    const size_t keep = std::min<size_t>(top_rows, s.top_rows.size());
    auto hotter = [](const std::pair<int64_t, uint64_t>& a,
                     const std::pair<int64_t, uint64_t>& b) {
      return a.second > b.second || (a.second == b.second && a.first < b.first);
    };
    std::partial_sort(s.top_rows.begin(), s.top_rows.begin() + keep,
                      s.top_rows.end(), hotter);
    s.top_rows.resize(keep);
    stats.push_back(std::move(s));
  }
  return stats;
}

int LookupEngine::CopyIndex(int copies) {
  const int w = common::ThreadPool::CurrentWorker();
  return w >= 0 && w < copies ? w : 0;
}

int LookupEngine::NumChunks(int n) const {
  return std::clamp((n + kMinRowsPerChunk - 1) / kMinRowsPerChunk, 1,
                    pool_->size());
}

void LookupEngine::GatherTable(int t, const int64_t* candidates, int n,
                               float* out) const {
  const Table& table = tables_[t];
  const common::Catalog& catalog = model_->catalog();
  GatherScratch& s = Scratch();
  const int bag = table.bag;
  int64_t* ids = common::GrowTo(s.ids, static_cast<size_t>(n) * bag);
  for (int j = 0; j < n; ++j) {
    catalog.ItemSparseIds(candidates[j], t, ids + static_cast<size_t>(j) * bag);
  }
  float* dst = out + static_cast<size_t>(t) * dim_;
  if (table.mode == PlacementMode::kReplicate) {
    const common::AlignedBuffer<uint8_t>& copy =
        table.replicas[CopyIndex(static_cast<int>(table.replicas.size()))];
    common::EmbeddingBagSumFixed(table.View(copy.data(), table.shared.rows),
                                 ids, n, bag, dst, stride_,
                                 /*accumulate=*/false);
    return;
  }
  if (table.num_hot == 0) {
    common::EmbeddingBagSumFixed(table.shared, ids, n, bag, dst, stride_,
                                 /*accumulate=*/false);
    return;
  }
  // Hot rows come from this worker's copy, the rest from the shared shards:
  // two pooled passes over the same bags.
  const size_t total = static_cast<size_t>(n) * bag;
  int64_t* hot = common::GrowTo(s.hot_ids, total);
  int64_t* cold = common::GrowTo(s.cold_ids, total);
  int32_t* hot_off = common::GrowTo(s.hot_offsets, n + 1);
  int32_t* cold_off = common::GrowTo(s.cold_offsets, n + 1);
  int32_t nh = 0, nc = 0;
  hot_off[0] = cold_off[0] = 0;
  for (int j = 0; j < n; ++j) {
    for (int k = 0; k < bag; ++k) {
      const int64_t id = ids[static_cast<size_t>(j) * bag + k];
      const int32_t slot = table.hot_slot[id];
      if (slot >= 0) {
        hot[nh++] = slot;
      } else {
        cold[nc++] = id;
      }
    }
    hot_off[j + 1] = nh;
    cold_off[j + 1] = nc;
  }
  const common::AlignedBuffer<uint8_t>& copy =
      table.hot_copies[CopyIndex(static_cast<int>(table.hot_copies.size()))];
  common::EmbeddingBagSum(table.View(copy.data(), table.num_hot), hot, hot_off,
                          n, dst, stride_, /*accumulate=*/false);
  common::EmbeddingBagSum(table.shared, cold, cold_off, n, dst, stride_,
                          /*accumulate=*/true);
}

void LookupEngine::GatherRows(const int64_t* candidates, int n,
                              float* out) const {
  for (int t = 0; t < static_cast<int>(tables_.size()); ++t) {
    GatherTable(t, candidates, n, out);
  }
}

void LookupEngine::Gather(const int64_t* candidates, int n,
                          LookupStrategy strategy, float* out) const {
  if (strategy == LookupStrategy::kTable) {
    pool_->ParallelFor(static_cast<int>(tables_.size()),
                       [&](int t) { GatherTable(t, candidates, n, out); });
    return;
  }
  const int chunks = NumChunks(n);
  const int per = (n + chunks - 1) / chunks;
  pool_->ParallelFor(chunks, [&](int c) {
    const int begin = c * per;
    const int end = std::min(n, begin + per);
    if (begin < end) {
      GatherRows(candidates + begin, end - begin,
                 out + static_cast<size_t>(begin) * stride_);
    }
  });
}

}  // namespace duet::cloud
