#include "edge/scratchpad.h"

#include <cstdint>
#include <random>
#include <vector>

#include "common/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::edge {
namespace {

using common::StatusIs;
using testing::HasSubstr;

constexpr int kDim = 3;

// Row of push i in table t: distinct, exactly representable values.
std::vector<float> RowsOfPush(int i, int tables) {
  std::vector<float> rows(tables * kDim);
  for (int t = 0; t < tables; ++t) {
    for (int k = 0; k < kDim; ++k) rows[t * kDim + k] = i * 100 + t * 10 + k;
  }
  return rows;
}

class RingTest : public testing::TestWithParam<int> {};

// After p pushes into a ring of n: filled = min(p, n), the tracker is at
// p mod n, slot j holds the latest push i < p with i mod n == j, and the
// tracker's slot holds the oldest retained push p - n.
TEST_P(RingTest, OrderAndTrackerAfterPushes) {
  const std::vector<int> lengths = {4, 7};
  Scratchpad pad({lengths, kDim, 0});
  const int pushes = GetParam();
  for (int i = 0; i < pushes; ++i) pad.Push(RowsOfPush(i, 2));
  for (int t = 0; t < 2; ++t) {
    const int n = lengths[t];
    SCOPED_TRACE(testing::Message() << "table " << t << " n=" << n);
    EXPECT_EQ(pad.filled(t), std::min(pushes, n));
    EXPECT_EQ(pad.tracker(t), pushes % n);
    const auto slots = pad.table_slots(t);
    for (int j = 0; j < n; ++j) {
      int latest = -1;
      for (int i = 0; i < pushes; ++i) {
        if (i % n == j) latest = i;
      }
      const float expected = latest < 0 ? 0.0f : latest * 100 + t * 10;
      EXPECT_EQ(slots[j * kDim], expected) << "slot " << j;
    }
    if (pushes >= n) {
      EXPECT_EQ(slots[pad.tracker(t) * kDim], (pushes - n) * 100 + t * 10);
    }
    // Pooled = sum of the retained pushes.
    double sum = 0;
    for (int i = std::max(0, pushes - n); i < pushes; ++i) {
      sum += i * 100 + t * 10;
    }
    EXPECT_EQ(pad.pooled()[t * kDim], static_cast<float>(sum));
  }
}

// n, n + 1 and 3n + 5 for n = 4 (table 0); table 1 (n = 7) sees the same
// counts as partial/wrapped cases.
INSTANTIATE_TEST_SUITE_P(Pushes, RingTest,
                         testing::Values(0, 1, 4, 5, 17, 7, 8, 26));

TEST(ScratchpadTest, RingsAreCacheLineAligned) {
  Scratchpad pad({{3, 5, 1}, kDim, 0});
  for (int t = 0; t < 3; ++t) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(pad.table_slots(t).data()) % 64, 0u)
        << "table " << t;
  }
  EXPECT_EQ(pad.row_bytes(), (3 + 5 + 1) * kDim * 4);
}

std::vector<double> FreshSums(const Scratchpad& pad) {
  std::vector<double> sums(pad.num_tables() * pad.dim(), 0.0);
  for (int t = 0; t < pad.num_tables(); ++t) {
    const auto slots = pad.table_slots(t);
    for (int j = 0; j < pad.filled(t); ++j) {
      for (int k = 0; k < pad.dim(); ++k) {
        sums[t * pad.dim() + k] += slots[j * pad.dim() + k];
      }
    }
  }
  return sums;
}

// Incremental pooling (add new, subtract overwritten) agrees with a fresh
// sum after many pushes, with and without the periodic exact refresh.
TEST(ScratchpadTest, IncrementalPoolingEqualsFreshSum) {
  for (int refresh_every : {1 << 30, 0, 7}) {
    SCOPED_TRACE(testing::Message() << "refresh_every " << refresh_every);
    const int dim = 32;
    Scratchpad pad({{120, 10, 33}, dim, refresh_every});
    std::mt19937 rng(42);
    std::normal_distribution<float> dist(0.0f, 3.0f);
    std::vector<float> rows(3 * dim);
    for (int i = 0; i < 20000; ++i) {
      for (float& x : rows) x = dist(rng);
      pad.Push(rows);
    }
    const std::vector<double> fresh = FreshSums(pad);
    for (size_t i = 0; i < fresh.size(); ++i) {
      // Only fp32 rounding of the final value remains.
      ASSERT_NEAR(pad.pooled()[i], fresh[i], 1e-5 * (1 + std::abs(fresh[i])))
          << "element " << i;
    }
    pad.RefreshAll();
    for (size_t i = 0; i < fresh.size(); ++i) {
      ASSERT_EQ(pad.pooled()[i], static_cast<float>(fresh[i]))
          << "element " << i;
    }
  }
}

TEST(ScratchpadTest, RestoreRoundTripsAndRejectsBadShapes) {
  Scratchpad pad({{4, 7}, kDim, 0});
  for (int i = 0; i < 9; ++i) pad.Push(RowsOfPush(i, 2));
  Scratchpad copy({{4, 7}, kDim, 0});
  for (int t = 0; t < 2; ++t) {
    const auto slots = pad.table_slots(t);
    ASSERT_TRUE(copy.Restore(t, slots, pad.tracker(t), pad.filled(t)).ok());
    EXPECT_EQ(copy.tracker(t), pad.tracker(t));
    EXPECT_EQ(copy.filled(t), pad.filled(t));
  }
  for (int i = 0; i < 2 * kDim; ++i) {
    EXPECT_EQ(copy.pooled()[i], pad.pooled()[i]);
  }
  // Pushing continues identically.
  pad.Push(RowsOfPush(9, 2));
  copy.Push(RowsOfPush(9, 2));
  EXPECT_EQ(copy.tracker(1), pad.tracker(1));
  EXPECT_EQ(copy.pooled()[kDim], pad.pooled()[kDim]);

  const std::vector<float> short_slots(3 * kDim);
  EXPECT_THAT(copy.Restore(0, short_slots, 0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("expected history_length 4")));
  const std::vector<float> slots(4 * kDim);
  EXPECT_THAT(copy.Restore(0, slots, 1, 2),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tracker 1 / filled 2")));
}

}  // namespace
}  // namespace duet::edge
