#include "cloud/table_placement.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kMiB = 1 << 20;

TableStats Table(const std::string& name, int64_t rows, int64_t row_bytes) {
  TableStats t;
  t.name = name;
  t.rows = rows;
  t.row_bytes = row_bytes;
  return t;
}

// Rows 0..hot-1 take `hot_count` accesses each, the rest one each.
TableStats Skewed(const std::string& name, int64_t rows, int hot,
                  uint64_t hot_count) {
  TableStats t = Table(name, rows, 128);
  for (int r = 0; r < hot; ++r) t.top_rows.push_back({r, hot_count});
  for (int r = hot; r < hot + 10; ++r) t.top_rows.push_back({r, 1});
  t.total_accesses = hot * hot_count + (rows - hot);
  return t;
}

TEST(TablePlacementTest, SmallTablesReplicateLargeTablesShard) {
  PlacementOptions o;
  o.num_workers = 4;
  o.memory_budget_bytes = 1024 * kMiB;
  o.small_table_bytes = 16 * kMiB;
  auto plan = TablePlacement::Plan(
      {Table("small", 1000, 256), Table("large", 1 << 20, 256)}, o);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->tables.size(), 2u);
  EXPECT_EQ(plan->tables[0].mode, PlacementMode::kReplicate);
  EXPECT_EQ(plan->tables[0].resident_bytes, 4 * 1000 * 256);
  EXPECT_EQ(plan->tables[1].mode, PlacementMode::kShard);
  EXPECT_EQ(plan->tables[1].num_shards, 4);
  EXPECT_EQ(plan->tables[1].resident_bytes, int64_t{1} << 28);
  EXPECT_EQ(plan->num_replicated(), 1);
  EXPECT_EQ(plan->num_sharded(), 1);
  EXPECT_THAT(plan->DebugString(), HasSubstr("small-table limit"));
}

TEST(TablePlacementTest, BudgetLimitsReplicationSmallestFirst) {
  PlacementOptions o;
  o.num_workers = 2;
  o.small_table_bytes = 64 * kMiB;
  // One copy of each: 1 + 4 + 8 MiB = 13 MiB. Budget 20 MiB leaves 7 MiB
  // for extra copies: the 1 MiB and 4 MiB tables fit, the 8 MiB one not.
  o.memory_budget_bytes = 20 * kMiB;
  auto plan =
      TablePlacement::Plan({Table("c", 8 * 1024, 1024), Table("a", 1024, 1024),
                            Table("b", 4 * 1024, 1024)},
                           o);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->tables[0].mode, PlacementMode::kShard);
  EXPECT_EQ(plan->tables[1].mode, PlacementMode::kReplicate);
  EXPECT_EQ(plan->tables[2].mode, PlacementMode::kReplicate);
  EXPECT_LE(plan->resident_bytes, o.memory_budget_bytes);
  EXPECT_EQ(plan->resident_bytes, 18 * kMiB);
}

TEST(TablePlacementTest, OverBudgetEvenShardedIsResourceExhausted) {
  PlacementOptions o;
  o.memory_budget_bytes = 10 * kMiB;
  auto plan = TablePlacement::Plan({Table("big", 1 << 20, 64)}, o);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(), HasSubstr("64.0 MiB even when sharded"));
}

TEST(TablePlacementTest, ForcedReplicateOverBudgetFails) {
  PlacementOptions o;
  o.mode = PlacementMode::kReplicate;
  o.num_workers = 8;
  o.memory_budget_bytes = 100 * kMiB;
  auto plan = TablePlacement::Plan({Table("t", 1 << 20, 16)}, o);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(), HasSubstr("on 8 workers needs 128.0"));
}

TEST(TablePlacementTest, ForcedModesApplyToEveryTable) {
  PlacementOptions o;
  o.num_workers = 2;
  o.mode = PlacementMode::kShard;
  auto plan = TablePlacement::Plan({Table("a", 10, 16), Table("b", 10, 16)}, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->num_sharded(), 2);
  o.mode = PlacementMode::kReplicate;
  plan = TablePlacement::Plan({Table("a", 10, 16), Table("b", 10, 16)}, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->num_replicated(), 2);
}

TEST(TablePlacementTest, HotRowsOfShardedTablesAreReplicated) {
  PlacementOptions o;
  o.num_workers = 2;
  o.mode = PlacementMode::kShard;
  o.hot_row_factor = 8;
  // Mean accesses per row ~ (3 * 1000 + 9997) / 10000 = 1.3: rows 0..2 are
  // hot, the rows with one access are not.
  auto plan = TablePlacement::Plan({Skewed("skewed", 10000, 3, 1000)}, o);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->tables[0].hot_rows, ElementsAre(0, 1, 2));
  EXPECT_NEAR(plan->tables[0].hot_access_share, 3000.0 / 12997.0, 1e-9);
  EXPECT_EQ(plan->tables[0].resident_bytes,
            10000 * 128 + 3 * 128 * 2 + 10000 * 4);
}

TEST(TablePlacementTest, UniformAccessHasNoHotRows) {
  PlacementOptions o;
  o.num_workers = 2;
  o.mode = PlacementMode::kShard;
  TableStats t = Table("uniform", 1000, 128);
  for (int r = 0; r < 100; ++r) t.top_rows.push_back({r, 3});
  t.total_accesses = 3000;
  auto plan = TablePlacement::Plan({t}, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_THAT(plan->tables[0].hot_rows, IsEmpty());
}

TEST(TablePlacementTest, HotRowsRespectCapAndBudget) {
  PlacementOptions o;
  o.num_workers = 2;
  o.mode = PlacementMode::kShard;
  o.max_hot_rows = 2;
  auto plan = TablePlacement::Plan({Skewed("s", 10000, 5, 1000)}, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_THAT(plan->tables[0].hot_rows, ElementsAre(0, 1));
  // No room beyond one copy: hot rows are dropped, the plan still fits.
  o.max_hot_rows = 100;
  o.memory_budget_bytes = 10000 * 128;
  plan = TablePlacement::Plan({Skewed("s", 10000, 5, 1000)}, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_THAT(plan->tables[0].hot_rows, IsEmpty());
}

TEST(TablePlacementTest, ForcedHotRows) {
  PlacementOptions o;
  o.num_workers = 2;
  o.mode = PlacementMode::kShard;
  o.force_hot_rows = 4;
  auto plan = TablePlacement::Plan({Table("t", 100, 16)}, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_THAT(plan->tables[0].hot_rows, ElementsAre(0, 1, 2, 3));
}

TEST(TablePlacementTest, BadOptionsAndModes) {
  PlacementOptions o;
  o.num_workers = 0;
  EXPECT_EQ(TablePlacement::Plan({}, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParsePlacementMode("shard").ok());
  EXPECT_THAT(ParsePlacementMode("mirror").status().message(),
              HasSubstr("'mirror' is not one of auto, replicate, shard"));
}

}  // namespace
}  // namespace duet::cloud
