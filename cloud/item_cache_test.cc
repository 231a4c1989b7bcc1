#include "cloud/item_cache.h"

#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::ElementsAre;

ItemCache::Options Opts(int64_t capacity, int stripes = 1) {
  ItemCache::Options o;
  o.capacity = capacity;
  o.width = 2;
  o.num_stripes = stripes;
  return o;
}

TEST(ItemCacheTest, HitReturnsInsertedValueMissOtherwise) {
  ItemCache cache(Opts(4));
  const float v[2] = {1.5f, -2.0f};
  float out[2] = {0, 0};
  EXPECT_FALSE(cache.Lookup(7, 1, out));
  cache.Insert(7, 1, v);
  EXPECT_TRUE(cache.Lookup(7, 1, out));
  EXPECT_THAT(out, ElementsAre(1.5f, -2.0f));
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 1u);
}

TEST(ItemCacheTest, EvictsLeastRecentlyUsed) {
  ItemCache cache(Opts(3));
  float v[2] = {0, 0}, out[2];
  for (int64_t i = 0; i < 3; ++i) {
    v[0] = static_cast<float>(i);
    cache.Insert(i, 1, v);
  }
  ASSERT_TRUE(cache.Lookup(0, 1, out));  // 0 becomes most recent
  cache.Insert(3, 1, v);                 // evicts 1
  EXPECT_TRUE(cache.Lookup(0, 1, out));
  EXPECT_FALSE(cache.Lookup(1, 1, out));
  EXPECT_TRUE(cache.Lookup(2, 1, out));
  EXPECT_TRUE(cache.Lookup(3, 1, out));
  EXPECT_EQ(cache.size(), 3);
}

TEST(ItemCacheTest, SizeNeverExceedsCapacity) {
  ItemCache cache(Opts(100, 8));
  const float v[2] = {1, 2};
  for (int64_t i = 0; i < 10000; ++i) {
    cache.Insert(i, 1, v);
    ASSERT_LE(cache.size(), 100);
  }
  EXPECT_EQ(cache.size(), 100);
  EXPECT_EQ(cache.capacity(), 100);
}

TEST(ItemCacheTest, ReinsertRefreshesValue) {
  ItemCache cache(Opts(2));
  float v[2] = {1, 1}, out[2];
  cache.Insert(5, 1, v);
  v[0] = 9;
  cache.Insert(5, 1, v);
  EXPECT_EQ(cache.size(), 1);
  ASSERT_TRUE(cache.Lookup(5, 1, out));
  EXPECT_EQ(out[0], 9);
}

TEST(ItemCacheTest, OtherFingerprintNeverHits) {
  ItemCache cache(Opts(10));
  const float v[2] = {1, 2};
  float out[2];
  cache.Insert(3, 0xAAAA, v);
  EXPECT_FALSE(cache.Lookup(3, 0xBBBB, out));
  EXPECT_TRUE(cache.Lookup(3, 0xAAAA, out));
  // The new model's entries push out the old ones.
  ItemCache small(Opts(2));
  small.Insert(1, 0xAAAA, v);
  small.Insert(2, 0xAAAA, v);
  small.Insert(1, 0xBBBB, v);
  small.Insert(2, 0xBBBB, v);
  EXPECT_FALSE(small.Lookup(1, 0xAAAA, out));
  EXPECT_FALSE(small.Lookup(2, 0xAAAA, out));
  EXPECT_TRUE(small.Lookup(1, 0xBBBB, out));
}

TEST(ItemCacheTest, ClearDropsEverything) {
  ItemCache cache(Opts(10, 4));
  const float v[2] = {1, 2};
  float out[2];
  for (int64_t i = 0; i < 10; ++i) cache.Insert(i, 1, v);
  cache.Clear();
  EXPECT_EQ(cache.size(), 0);
  EXPECT_FALSE(cache.Lookup(3, 1, out));
  cache.Insert(3, 1, v);
  EXPECT_TRUE(cache.Lookup(3, 1, out));
}

TEST(ItemCacheTest, ConcurrentUseStaysBoundedAndConsistent) {
  ItemCache cache(Opts(64, 4));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      float v[2], out[2];
      for (int i = 0; i < 5000; ++i) {
        const int64_t item = (i * 7 + t) % 200;
        v[0] = static_cast<float>(item);
        v[1] = -v[0];
        if (cache.Lookup(item, 1, out)) {
          ASSERT_EQ(out[0], static_cast<float>(item));
          ASSERT_EQ(out[1], -static_cast<float>(item));
        } else {
          cache.Insert(item, 1, v);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(cache.size(), 64);
  EXPECT_EQ(cache.hits() + cache.misses(), 20000u);
}

}  // namespace
}  // namespace duet::cloud
