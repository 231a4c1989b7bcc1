#include "cloud/lookup_engine.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cloud/internal/test_models.h"
#include "common/base/status_matchers.h"
#include "common/model/catalog.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using common::StatusIs;
using ::testing::HasSubstr;

// Three workers, so N = 97 and the 8 tables of rm2 split unevenly.
constexpr int kWorkers = 3;

// Row `k` of item `item`'s bag in item table t, from the catalog's spec
// (catalog.h): Mix(h ^ ((t << 32) | k)) % rows, h = Mix(Mix(seed) ^ item).
int64_t SpecRow(const duet::v1::ModelConfig& c, int64_t item, int t, int k) {
  const uint64_t h = common::Mix(common::Mix(c.catalog().seed()) ^
                                 static_cast<uint64_t>(item));
  const uint64_t salt =
      (static_cast<uint64_t>(t) << 32) | static_cast<uint64_t>(k);
  return static_cast<int64_t>(common::Mix(h ^ salt) %
                              static_cast<uint64_t>(c.item_tables(t).rows()));
}

// The model's item tables in the fused 8-bit row-wise layout: dim codes,
// then float scale and float bias per row (embedding_bag.h).
using Int8Tables = common::Int8ItemTables;

// Row r of int8 table t.
const uint8_t* Int8Row(const Int8Tables& q, int t, int64_t r) {
  const common::EmbeddingTable& table = q.tables()[t];
  return static_cast<const uint8_t*>(table.data) + r * table.row_stride();
}

// f_jt = SUM of rows of item table t at the catalog's ids for candidate j,
// with plain loops in double; `abs` gets SUM |row value| per element (for
// the error bound). With `int8`, the rows are its dequantized ones,
// scale * code + bias, and `abs` gets SUM |scale * code| + |bias|: the
// terms the int8 kernel adds in float.
void ScalarReference(const common::Model& m, const std::vector<int64_t>& ids,
                     std::vector<double>* f, std::vector<double>* abs,
                     const Int8Tables* int8 = nullptr) {
  const auto& c = m.config();
  const int d = c.embedding_dim();
  const int width = m.dims().item_top_in;
  f->assign(ids.size() * width, 0.0);
  abs->assign(ids.size() * width, 0.0);
  for (size_t j = 0; j < ids.size(); ++j) {
    for (int t = 0; t < c.item_tables_size(); ++t) {
      const float* rows = static_cast<const float*>(m.item_table(t).data);
      for (int k = 0; k < c.item_tables(t).lookups_per_item(); ++k) {
        const int64_t r = SpecRow(c, ids[j], t, k);
        for (int e = 0; e < d; ++e) {
          double x = rows[r * d + e], a = std::fabs(x);
          if (int8 != nullptr) {
            const uint8_t* row = Int8Row(*int8, t, r);
            float scale, bias;
            std::memcpy(&scale, row + d, 4);
            std::memcpy(&bias, row + d + 4, 4);
            x = double{scale} * row[e] + bias;
            a = std::fabs(double{scale} * row[e]) + std::fabs(bias);
          }
          (*f)[j * width + t * d + e] += x;
          (*abs)[j * width + t * d + e] += a;
        }
      }
    }
  }
}

class LookupEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = SmallRm2CloudModel();
    ASSERT_NE(model_, nullptr);
  }

  PlacementPlan Plan(PlacementOptions o) {
    o.num_workers = pool_.size();
    const int top = static_cast<int>(std::max<int64_t>(o.force_hot_rows, 0));
    auto plan =
        TablePlacement::Plan(LookupEngine::SampleStats(*model_, 2000, top), o);
    EXPECT_TRUE(plan.ok()) << plan.status();
    return plan.ok() ? *plan : PlacementPlan();
  }
  PlacementPlan Plan(PlacementMode mode, int64_t hot) {
    PlacementOptions o;
    o.mode = mode;
    o.force_hot_rows = hot;
    return Plan(o);
  }

  std::unique_ptr<LookupEngine> Engine(
      const PlacementPlan& plan,
      ItemEmbeddingPrecision precision = ItemEmbeddingPrecision::kFp32) {
    auto engine = LookupEngine::Create(model_, plan, &pool_, precision);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? std::move(engine).value() : nullptr;
  }

  // Candidates spread over the catalog, first and last item included.
  static std::vector<int64_t> Ids(int n) {
    const int64_t items = model_->catalog().num_items();
    std::vector<int64_t> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = (int64_t{7919} * i) % items;
    if (n > 1) ids[n - 1] = items - 1;
    return ids;
  }

  // Every element of `got` ([ids.size(), item_top_in]) within the float
  // summation bound of the scalar reference. Any order of summing m floats
  // (the kernel's SIMD lanes, the hot-copy pass then the shard pass) is
  // off the exact sum by at most (m - 1) u / (1 - (m - 1) u) * SUM |x_i|,
  // u = 2^-24 (Higham, Accuracy and Stability, §4.2); m u bounds that for
  // m u << 1, and the double reference itself is exact to ~m 2^-53. A wrong
  // row or a lost bag misses by ~|row value| (~0.1 here), far above it.
  // With `int8` the reference is its dequantized rows and the kernel adds
  // 2m + 1 float terms (m products scale * code, m biases, their sums):
  // the same bound with 2m + 2 for m.
  void ExpectMatchesReference(const std::vector<int64_t>& ids,
                              const std::vector<float>& got,
                              const std::string& label,
                              const Int8Tables* int8 = nullptr) {
    std::vector<double> want, abs;
    ScalarReference(*model_, ids, &want, &abs, int8);
    ASSERT_EQ(got.size(), want.size()) << label;
    const int width = model_->dims().item_top_in;
    const int d = model_->config().embedding_dim();
    for (size_t i = 0; i < want.size(); ++i) {
      const int t = static_cast<int>(i % width) / d;
      const int bag = model_->catalog().lookups_per_item(t);
      const int m = int8 != nullptr ? 2 * bag + 2 : bag;
      const double bound = m * std::ldexp(1.0, -24) * abs[i];
      ASSERT_LE(std::fabs(got[i] - want[i]), bound)
          << label << " row " << i / width << " table " << t << " got "
          << got[i] << " want " << want[i];
    }
  }

  // Gather (both strategies) and GatherRows against the reference; the two
  // strategies pool each bag in one kernel call, so they agree bit for bit.
  void CheckPlan(const PlacementPlan& plan, const std::string& name,
                 const Int8Tables* int8 = nullptr) {
    auto engine = Engine(plan, int8 != nullptr ? ItemEmbeddingPrecision::kInt8
                                               : ItemEmbeddingPrecision::kFp32);
    ASSERT_NE(engine, nullptr);
    const int width = model_->dims().item_top_in;
    for (int n : {1, 31, 97, 1024}) {
      const auto ids = Ids(n);
      std::vector<float> batch(static_cast<size_t>(n) * width, -7.0f);
      std::vector<float> table(batch), rows(batch);
      engine->Gather(ids.data(), n, LookupStrategy::kBatch, batch.data());
      engine->Gather(ids.data(), n, LookupStrategy::kTable, table.data());
      engine->GatherRows(ids.data(), n, rows.data());
      const std::string label = absl::StrCat(name, " n=", n);
      ExpectMatchesReference(ids, batch, label + " batch", int8);
      ExpectMatchesReference(ids, table, label + " table", int8);
      ExpectMatchesReference(ids, rows, label + " rows", int8);
      EXPECT_EQ(0, std::memcmp(batch.data(), table.data(),
                               batch.size() * sizeof(float)))
          << label;
    }
  }

  static const common::Model* model_;
  common::ThreadPool pool_{kWorkers, "lookup_test"};
};
const common::Model* LookupEngineTest::model_ = nullptr;

TEST_F(LookupEngineTest, ReplicatedTablesMatchScalarReference) {
  const PlacementPlan plan = Plan(PlacementMode::kReplicate, -1);
  ASSERT_EQ(plan.num_replicated(), model_->num_item_tables());
  CheckPlan(plan, "replicate");
}

TEST_F(LookupEngineTest, ShardedTablesMatchScalarReference) {
  const PlacementPlan plan = Plan(PlacementMode::kShard, -1);
  ASSERT_EQ(plan.num_sharded(), model_->num_item_tables());
  for (const TablePlan& t : plan.tables) ASSERT_TRUE(t.hot_rows.empty());
  CheckPlan(plan, "shard");
}

TEST_F(LookupEngineTest, ShardedTablesWithHotCopiesMatchScalarReference) {
  // 64 of 250 rows per table hot: most bags mix hot and cold rows.
  const PlacementPlan plan = Plan(PlacementMode::kShard, 64);
  for (const TablePlan& t : plan.tables) ASSERT_EQ(t.hot_rows.size(), 64u);
  CheckPlan(plan, "shard+hot64");
}

TEST_F(LookupEngineTest, MixedPlanFromTablePlacementMatchesScalarReference) {
  // Auto mode with a budget for exactly one extra copy of one table: the
  // planner replicates one table and shards the other seven, which also get
  // forced hot rows.
  const common::EmbeddingTable& t0 = model_->item_table(0);
  const int64_t table_bytes = t0.rows * static_cast<int64_t>(t0.row_stride());
  PlacementOptions o;
  o.mode = PlacementMode::kAuto;
  o.memory_budget_bytes =
      table_bytes * (model_->num_item_tables() + kWorkers - 1);
  o.force_hot_rows = 16;
  const PlacementPlan plan = Plan(o);
  ASSERT_EQ(plan.num_replicated(), 1) << plan.DebugString();
  ASSERT_EQ(plan.num_sharded(), model_->num_item_tables() - 1);
  CheckPlan(plan, "mixed");
}

// int8 tables under every placement: the replicas, the shards and the hot
// copies are all int8 rows, read by the same kernel as the reference's.
TEST_F(LookupEngineTest, Int8TablesMatchTheDequantizedReferenceInEveryPlan) {
  const Int8Tables q(*model_);
  CheckPlan(Plan(PlacementMode::kReplicate, -1), "int8 replicate", &q);
  CheckPlan(Plan(PlacementMode::kShard, -1), "int8 shard", &q);
  CheckPlan(Plan(PlacementMode::kShard, 64), "int8 shard+hot64", &q);
}

// Each int8 value is within half a step, (max - min) / 510, of its fp32
// value, so a pooled f element is within the sum of its rows' half steps
// of the fp32 gather (plus float rounding); and the int8 engine does not
// silently gather fp32 (it differs from fp32 somewhere).
TEST_F(LookupEngineTest, Int8GatherIsWithinHalfAStepPerRowOfTheFp32One) {
  auto fp32 = Engine(Plan(PlacementMode::kShard, 16));
  auto int8 =
      Engine(Plan(PlacementMode::kShard, 16), ItemEmbeddingPrecision::kInt8);
  ASSERT_NE(fp32, nullptr);
  ASSERT_NE(int8, nullptr);
  EXPECT_EQ(int8->precision(), ItemEmbeddingPrecision::kInt8);
  EXPECT_GT(int8->quantize_seconds(), 0.0);
  EXPECT_EQ(fp32->quantize_seconds(), 0.0);
  const auto& c = model_->config();
  const int d = c.embedding_dim(), width = model_->dims().item_top_in;
  const int n = 97;
  const auto ids = Ids(n);
  std::vector<float> a(static_cast<size_t>(n) * width), b(a.size());
  fp32->Gather(ids.data(), n, LookupStrategy::kBatch, a.data());
  int8->Gather(ids.data(), n, LookupStrategy::kBatch, b.data());
  const Int8Tables q(*model_);
  double max_diff = 0;
  for (int j = 0; j < n; ++j) {
    for (int t = 0; t < c.item_tables_size(); ++t) {
      double half_steps = 0;
      for (int k = 0; k < c.item_tables(t).lookups_per_item(); ++k) {
        float scale;
        std::memcpy(&scale, Int8Row(q, t, SpecRow(c, ids[j], t, k)) + d, 4);
        half_steps += scale / 2;
      }
      for (int e = 0; e < d; ++e) {
        const size_t i = static_cast<size_t>(j) * width + t * d + e;
        const double diff = std::fabs(double{a[i]} - b[i]);
        max_diff = std::max(max_diff, diff);
        ASSERT_LE(diff, half_steps * (1 + 1e-5) + 1e-5)
            << "candidate " << j << " table " << t << " element " << e;
      }
    }
  }
  EXPECT_GT(max_diff, 0.0);
}

TEST_F(LookupEngineTest, Int8StatsCostDimPlusEightBytesARow) {
  const auto stats =
      LookupEngine::SampleStats(*model_, 100, 0, ItemEmbeddingPrecision::kInt8);
  for (const TableStats& s : stats) {
    EXPECT_EQ(s.row_bytes, model_->config().embedding_dim() + 8) << s.name;
  }
  EXPECT_STREQ(ItemEmbeddingPrecisionName(ItemEmbeddingPrecision::kInt8),
               "int8");
  EXPECT_EQ(*ParseItemEmbeddingPrecision("fp32"),
            ItemEmbeddingPrecision::kFp32);
  EXPECT_EQ(*ParseItemEmbeddingPrecision("int8"),
            ItemEmbeddingPrecision::kInt8);
  EXPECT_THAT(ParseItemEmbeddingPrecision("int4"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--item_embeddings is \"int4\", must be "
                                 "fp32 or int8")));
}

TEST_F(LookupEngineTest, HotSlotsMapArbitraryRowListsBack) {
  // A hand-made plan: table 0 has every row hot (no shard pass), the others
  // a descending list of the odd rows (slot order unlike row order).
  PlacementPlan plan = Plan(PlacementMode::kShard, -1);
  for (int t = 0; t < model_->num_item_tables(); ++t) {
    const int64_t rows = model_->item_table(t).rows;
    std::vector<int64_t>& hot = plan.tables[t].hot_rows;
    for (int64_t r = rows - 1; r >= 0; --r) {
      if (t == 0 || r % 2 == 1) hot.push_back(r);
    }
  }
  CheckPlan(plan, "hand-made hot rows");
}

TEST_F(LookupEngineTest, GatherTableWritesOnlyItsColumns) {
  auto engine = Engine(Plan(PlacementMode::kShard, 32));
  ASSERT_NE(engine, nullptr);
  const int width = model_->dims().item_top_in;
  const int d = model_->config().embedding_dim();
  const int t = 3, n = 5;
  const auto ids = Ids(n);
  std::vector<float> out(static_cast<size_t>(n) * width, -7.0f);
  engine->GatherTable(t, ids.data(), n, out.data());
  std::vector<double> want, abs;
  ScalarReference(*model_, ids, &want, &abs);
  for (int j = 0; j < n; ++j) {
    for (int c = 0; c < width; ++c) {
      const float got = out[j * width + c];
      if (c / d == t) {
        // The summation bound of ExpectMatchesReference.
        const double bound = model_->catalog().lookups_per_item(t) *
                             std::ldexp(1.0, -24) * abs[j * width + c];
        EXPECT_LE(std::fabs(got - want[j * width + c]), bound) << "row " << j;
      } else {
        EXPECT_EQ(got, -7.0f) << "row " << j << " column " << c;
      }
    }
  }
}

TEST_F(LookupEngineTest, GatherWritesExactlyNRows) {
  auto engine = Engine(Plan(PlacementMode::kReplicate, -1));
  ASSERT_NE(engine, nullptr);
  const int width = model_->dims().item_top_in;
  const auto ids = Ids(40);
  for (LookupStrategy s : {LookupStrategy::kBatch, LookupStrategy::kTable}) {
    for (int n : {0, 40}) {
      std::vector<float> out(static_cast<size_t>(n + 1) * width, -7.0f);
      engine->Gather(ids.data(), n, s, out.data());
      for (int c = 0; c < width; ++c) {
        ASSERT_EQ(out[static_cast<size_t>(n) * width + c], -7.0f)
            << LookupStrategyName(s) << " n=" << n << " column " << c;
      }
    }
  }
}

TEST_F(LookupEngineTest, ConcurrentCallersGetTheirOwnResults) {
  auto engine = Engine(Plan(PlacementMode::kShard, 64));
  ASSERT_NE(engine, nullptr);
  const int width = model_->dims().item_top_in;
  constexpr int kCallers = 3, kN = 200;
  std::vector<std::vector<int64_t>> ids(kCallers);
  std::vector<std::vector<float>> out(kCallers);
  for (int c = 0; c < kCallers; ++c) {
    ids[c] = Ids(kN);
    std::reverse(ids[c].begin(), ids[c].begin() + c * 50);
    out[c].assign(static_cast<size_t>(kN) * width, 0.0f);
  }
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      for (int rep = 0; rep < 5; ++rep) {
        engine->Gather(ids[c].data(), kN,
                       c % 2 ? LookupStrategy::kTable : LookupStrategy::kBatch,
                       out[c].data());
      }
    });
  }
  for (std::thread& t : callers) t.join();
  for (int c = 0; c < kCallers; ++c) {
    ExpectMatchesReference(ids[c], out[c], absl::StrCat("caller ", c));
  }
}

TEST_F(LookupEngineTest, CreateRejectsPlanForAnotherTableCount) {
  PlacementPlan plan = Plan(PlacementMode::kShard, -1);
  plan.tables.pop_back();
  EXPECT_THAT(LookupEngine::Create(model_, plan, &pool_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("placement plan has 7 tables, the model has "
                                 "8")));
}

TEST_F(LookupEngineTest, CreateRejectsHotRowOutsideTheTable) {
  const int64_t rows = model_->item_table(2).rows;
  for (int64_t bad : {rows, int64_t{-1}}) {
    PlacementPlan plan = Plan(PlacementMode::kShard, -1);
    plan.tables[2].hot_rows = {0, bad};
    EXPECT_THAT(LookupEngine::Create(model_, plan, &pool_),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(absl::StrCat("hot row ", bad,
                                                " of table item_2 is outside "
                                                "[0, ",
                                                rows, ")"))));
  }
}

TEST_F(LookupEngineTest, ReportsPlanChunksAndRowsPerItem) {
  const PlacementPlan plan = Plan(PlacementMode::kShard, 8);
  auto engine = Engine(plan);
  ASSERT_NE(engine, nullptr);
  ASSERT_EQ(engine->plan().tables.size(), plan.tables.size());
  EXPECT_EQ(engine->plan().tables[5].hot_rows, plan.tables[5].hot_rows);
  // rm2: 8 item tables of 120 lookups each.
  EXPECT_EQ(engine->rows_gathered_per_item(), 8 * 120);
  // One chunk per 32 rows, capped at the pool's size.
  EXPECT_EQ(engine->NumChunks(0), 1);
  EXPECT_EQ(engine->NumChunks(1), 1);
  EXPECT_EQ(engine->NumChunks(32), 1);
  EXPECT_EQ(engine->NumChunks(33), 2);
  EXPECT_EQ(engine->NumChunks(1024), kWorkers);
  EXPECT_STREQ(LookupStrategyName(LookupStrategy::kBatch), "batch");
  EXPECT_STREQ(LookupStrategyName(LookupStrategy::kTable), "table");
}

TEST_F(LookupEngineTest, SampleStatsCountsTheSampledItemsAccesses) {
  const auto& c = model_->config();
  const int64_t items = model_->catalog().num_items();
  constexpr int64_t kSample = 200;
  const auto stats = LookupEngine::SampleStats(*model_, kSample, 10);
  ASSERT_EQ(static_cast<int>(stats.size()), c.item_tables_size());
  for (int t = 0; t < c.item_tables_size(); ++t) {
    const TableStats& s = stats[t];
    const int bag = c.item_tables(t).lookups_per_item();
    EXPECT_EQ(s.name, absl::StrCat("item_", t));
    EXPECT_EQ(s.rows, c.item_tables(t).rows());
    EXPECT_EQ(s.row_bytes, c.embedding_dim() * 4);
    EXPECT_EQ(s.total_accesses, static_cast<uint64_t>(kSample * bag));
    // The sampled items, spread evenly over the id range.
    std::map<int64_t, uint64_t> counts;
    for (int64_t i = 0; i < kSample; ++i) {
      for (int k = 0; k < bag; ++k) {
        ++counts[SpecRow(c, i * (items / kSample), t, k)];
      }
    }
    std::vector<uint64_t> sorted;
    for (const auto& [row, count] : counts) sorted.push_back(count);
    std::sort(sorted.rbegin(), sorted.rend());
    ASSERT_EQ(s.top_rows.size(), 10u) << "table " << t;
    for (size_t i = 0; i < s.top_rows.size(); ++i) {
      EXPECT_EQ(s.top_rows[i].second, sorted[i]) << "table " << t;
      EXPECT_EQ(counts[s.top_rows[i].first], s.top_rows[i].second)
          << "table " << t << " row " << s.top_rows[i].first;
    }
  }
}

}  // namespace
}  // namespace duet::cloud
