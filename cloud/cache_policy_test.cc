#include "cloud/cache_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::HasSubstr;

CachePolicy::Options Policy(double break_even) {
  CachePolicy::Options o;
  o.break_even = break_even;
  o.sample_every = 4;
  o.window_rows = 1000;
  o.warmup_rows = 500;
  o.hysteresis = 0.1;
  return o;
}

// Of `queries` decisions, how many use the cache.
int Used(CachePolicy& p, int queries) {
  int used = 0;
  for (int i = 0; i < queries; ++i) used += p.UseForQuery() ? 1 : 0;
  return used;
}

TEST(CachePolicyTest, EveryQueryUsesTheCacheDuringWarmUp) {
  CachePolicy p(Policy(0.5));
  p.Observe(0, 100);  // 100 of 500 warm-up rows, 0 % hits
  EXPECT_FALSE(p.bypassing());
  EXPECT_EQ(Used(p, 20), 20);
}

TEST(CachePolicyTest, LowHitRateBypassesAndSamplesOneQueryInN) {
  CachePolicy p(Policy(0.5));
  for (int i = 0; i < 10; ++i) p.Observe(10, 100);  // 10 % hits
  EXPECT_NEAR(p.hit_rate(), 0.1, 1e-9);
  EXPECT_TRUE(p.bypassing());
  EXPECT_EQ(Used(p, 40), 10);  // 1 in sample_every = 4
}

TEST(CachePolicyTest, HighHitRateKeepsUsingTheCache) {
  CachePolicy p(Policy(0.5));
  for (int i = 0; i < 10; ++i) p.Observe(90, 100);
  EXPECT_FALSE(p.bypassing());
  EXPECT_EQ(Used(p, 40), 40);
}

// The sampled queries keep measuring: when the hit rate climbs above
// break-even by the hysteresis, every query uses the cache again, and not
// before.
TEST(CachePolicyTest, RecoversOnlyAboveBreakEvenPlusHysteresis) {
  CachePolicy p(Policy(0.5));
  for (int i = 0; i < 10; ++i) p.Observe(0, 100);
  ASSERT_TRUE(p.bypassing());
  for (int i = 0; i < 100; ++i) p.Observe(52, 100);  // 0.52 < 0.55
  EXPECT_NEAR(p.hit_rate(), 0.52, 1e-3);
  EXPECT_TRUE(p.bypassing());
  for (int i = 0; i < 100; ++i) p.Observe(60, 100);
  EXPECT_NEAR(p.hit_rate(), 0.60, 1e-3);
  EXPECT_FALSE(p.bypassing());
  EXPECT_EQ(Used(p, 40), 40);
}

// The estimate weighs rows, not queries: one large query moves it more
// than one small one.
TEST(CachePolicyTest, EstimateWeighsRows) {
  CachePolicy a(Policy(0.5)), b(Policy(0.5));
  a.Observe(0, 100);
  b.Observe(0, 100);
  a.Observe(10, 10);    // 10 rows, all hits
  b.Observe(500, 500);  // 500 rows, all hits
  EXPECT_LT(a.hit_rate(), b.hit_rate());
  EXPECT_NEAR(a.hit_rate(), 0.01, 1e-9);  // weight 10 / 1000
  EXPECT_NEAR(b.hit_rate(), 0.5, 1e-9);   // weight 500 / 1000
}

// A break-even of 1 or more (a hit costs more than computing the row): the
// cache is bypassed even at a 100 % hit rate.
TEST(CachePolicyTest, CacheThatNeverPaysIsBypassed) {
  CachePolicy p(Policy(1.2));
  for (int i = 0; i < 10; ++i) p.Observe(100, 100);
  EXPECT_TRUE(p.bypassing());
}

TEST(CachePolicyTest, AlwaysNeverBypasses) {
  CachePolicy p(CachePolicy::Always());
  for (int i = 0; i < 100; ++i) p.Observe(0, 1000);
  EXPECT_FALSE(p.bypassing());
  EXPECT_EQ(Used(p, 10), 10);
}

TEST(CachePolicyTest, ParsesMode) {
  EXPECT_EQ(*ParseCacheMode("auto"), CacheMode::kAuto);
  EXPECT_EQ(*ParseCacheMode("always"), CacheMode::kAlways);
  const auto bad = ParseCacheMode("sometimes");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              HasSubstr("item cache policy 'sometimes' is not one of auto, "
                        "always"));
}

}  // namespace
}  // namespace duet::cloud
