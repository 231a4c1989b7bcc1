#include "tests/netem/link_direction.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gtest/gtest.h"

namespace duet::netem {
namespace {

constexpr int64_t kMs = 1'000'000;

// Queues a packet of `bytes` at `now` (its first byte = `tag`); false if the
// queue was full.
bool Send(LinkDirection& d, int64_t now, size_t bytes, uint8_t tag = 0) {
  uint8_t* slot = d.Slot();
  if (slot == nullptr) {
    d.Overflow();
    return false;
  }
  std::memset(slot, tag, bytes);
  d.Arrive(now, bytes);
  return true;
}

TEST(LinkDirectionTest, UnlimitedLinkDeliversAtOnce) {
  LinkDirection d(4, 64, 1);
  ASSERT_TRUE(Send(d, 100, 10, 7));
  ASSERT_FALSE(d.empty());
  EXPECT_EQ(d.NextDeparture(), 100);
  EXPECT_EQ(d.FrontBytes(), 10u);
  EXPECT_EQ(d.FrontData()[9], 7);
  d.Pop();
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.stats().delivered, 1u);
  EXPECT_EQ(d.stats().delivered_bytes, 10u);
}

TEST(LinkDirectionTest, RateSerializesAndDelayAddsAfter) {
  LinkDirection d(8, 2048, 1);
  // 8 Mbit/s: 1000 bytes take 1 ms on the wire.
  d.SetParams({.delay_ns = 10 * kMs, .rate_bps = 8e6});
  ASSERT_TRUE(Send(d, 0, 1000));
  ASSERT_TRUE(Send(d, 0, 1000));
  ASSERT_TRUE(Send(d, 5 * kMs, 1000));  // link idle again by then
  EXPECT_EQ(d.NextDeparture(), 11 * kMs);
  d.Pop();
  EXPECT_EQ(d.NextDeparture(), 12 * kMs);
  d.Pop();
  EXPECT_EQ(d.NextDeparture(), 16 * kMs);
}

TEST(LinkDirectionTest, JitterStaysInRange) {
  LinkDirection d(1000, 64, 3);
  d.SetParams({.delay_ns = 10 * kMs, .jitter_ns = 5 * kMs});
  // 20 ms apart: more than the jitter's spread, so order never holds one
  // back and each delay is its own draw.
  int64_t lowest = INT64_MAX, highest = 0;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(Send(d, i * 20 * kMs, 10));
    const int64_t delay = d.NextDeparture() - i * 20 * kMs;
    EXPECT_GE(delay, 5 * kMs);
    EXPECT_LE(delay, 15 * kMs);
    lowest = std::min(lowest, delay);
    highest = std::max(highest, delay);
    d.Pop();
  }
  EXPECT_LT(lowest, 6 * kMs);
  EXPECT_GT(highest, 14 * kMs);
}

TEST(LinkDirectionTest, JitterKeepsOrder) {
  LinkDirection d(1000, 64, 3);
  d.SetParams({.delay_ns = 10 * kMs, .jitter_ns = 5 * kMs});
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(Send(d, i * kMs / 10, 10));
  int64_t previous = 0;
  for (int i = 0; i < 1000; ++i) {
    // Order can only hold a packet back, never send it early.
    EXPECT_GE(d.NextDeparture(), previous);
    EXPECT_GE(d.NextDeparture() - i * kMs / 10, 5 * kMs);
    previous = d.NextDeparture();
    d.Pop();
  }
}

TEST(LinkDirectionTest, LossDropsAboutTheFraction) {
  LinkDirection d(4, 64, 5);
  d.SetParams({.loss = 0.05});
  for (int i = 0; i < 20000; ++i) {
    ASSERT_TRUE(Send(d, i, 10));
    while (!d.empty()) d.Pop();
  }
  // 5 % of 20000 = 1000, sd ~31: +-5 sd.
  EXPECT_NEAR(static_cast<double>(d.stats().lost), 1000, 155);
  EXPECT_EQ(d.stats().lost + d.stats().delivered, 20000u);
}

TEST(LinkDirectionTest, FullQueueTailDrops) {
  LinkDirection d(2, 64, 1);
  d.SetParams({.delay_ns = kMs});
  EXPECT_TRUE(Send(d, 0, 10, 1));
  EXPECT_TRUE(Send(d, 0, 10, 2));
  EXPECT_FALSE(Send(d, 0, 10, 3));
  EXPECT_EQ(d.stats().overflowed, 1u);
  EXPECT_EQ(d.FrontData()[0], 1);
  d.Pop();
  EXPECT_TRUE(Send(d, 0, 10, 4));  // the ring wraps
  EXPECT_EQ(d.FrontData()[0], 2);
  d.Pop();
  EXPECT_EQ(d.FrontData()[0], 4);
}

TEST(LinkDirectionTest, PartitionDropsQueuedAndNewPacketsUntilHealed) {
  LinkDirection d(8, 64, 1);
  d.SetParams({.delay_ns = 10 * kMs});
  ASSERT_TRUE(Send(d, 0, 10));
  ASSERT_TRUE(Send(d, 0, 10));
  d.SetParams({.delay_ns = 10 * kMs, .partitioned = true});
  EXPECT_TRUE(d.empty());
  ASSERT_TRUE(Send(d, kMs, 10));
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.stats().partitioned, 3u);
  d.SetParams({.delay_ns = 10 * kMs});
  ASSERT_TRUE(Send(d, 2 * kMs, 10));
  EXPECT_EQ(d.NextDeparture(), 12 * kMs);
}

}  // namespace
}  // namespace duet::netem
