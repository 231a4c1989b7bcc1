#include "common/model/catalog.h"

#include "common/model/presets.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

TEST(MixTest, MatchesSplitMix64Reference) {
  EXPECT_EQ(Mix(0), 0xE220A8397B1DCDAFULL);
  // SplitMix64 stream seeded with 0: the second output is Mix(golden ratio).
  EXPECT_EQ(Mix(0x9E3779B97F4A7C15ULL), 0x6E789E6AA1B965F4ULL);
}

// Recomputes the ids from DESIGN.md's formulas, written out independently.
TEST(CatalogTest, IdsFollowTheSpecifiedHash) {
  auto config = PresetConfig("tiny", 1.0);
  ASSERT_TRUE(config.ok());
  config->mutable_catalog()->set_seed(12345);
  const Catalog catalog(*config);
  for (int64_t item : {0, 1, 17, 499}) {
    const uint64_t h = Mix(Mix(12345) ^ static_cast<uint64_t>(item));
    for (int t = 0; t < config->item_tables_size(); ++t) {
      std::vector<int64_t> ids(config->item_tables(t).lookups_per_item());
      catalog.ItemSparseIds(item, t, ids.data());
      for (int k = 0; k < static_cast<int>(ids.size()); ++k) {
        const uint64_t expect =
            Mix(h ^ ((static_cast<uint64_t>(t) << 32) | k)) %
            static_cast<uint64_t>(config->item_tables(t).rows());
        EXPECT_EQ(ids[k], static_cast<int64_t>(expect)) << item << " " << t;
      }
    }
    for (int t = 0; t < config->user_tables_size(); ++t) {
      const uint64_t expect =
          Mix(h ^ ((1ULL << 63) | (static_cast<uint64_t>(t) << 32))) %
          static_cast<uint64_t>(config->user_tables(t).rows());
      EXPECT_EQ(catalog.HistoryKey(item, t), static_cast<int64_t>(expect));
    }
  }
}

TEST(CatalogTest, ContainsOnlyValidIds) {
  auto config = PresetConfig("tiny", 1.0);
  ASSERT_TRUE(config.ok());
  const Catalog catalog(*config);
  EXPECT_TRUE(catalog.Contains(0));
  EXPECT_TRUE(catalog.Contains(config->catalog().num_items() - 1));
  EXPECT_FALSE(catalog.Contains(-1));
  EXPECT_FALSE(catalog.Contains(config->catalog().num_items()));
}

TEST(CatalogTest, IdsStayInRangeAndSpreadOverRows) {
  auto config = PresetConfig("rm3", 0.001);
  ASSERT_TRUE(config.ok());
  const Catalog catalog(*config);
  const int64_t rows = config->item_tables(0).rows();
  std::vector<int> hits(rows, 0);
  std::vector<int64_t> ids(catalog.lookups_per_item(0));
  for (int64_t item = 0; item < 5000; ++item) {
    catalog.ItemSparseIds(item, 0, ids.data());
    for (int64_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, rows);
      ++hits[id];
    }
  }
  // 100k draws over 2000 rows: every row is hit (expected 50 each).
  EXPECT_THAT(hits, ::testing::Each(::testing::Gt(0)));
}

}  // namespace
}  // namespace duet::common
