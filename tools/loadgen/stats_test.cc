#include "tools/loadgen/stats.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace duet::loadgen {
namespace {

TEST(LatencyHistogramTest, BucketsCoverEveryValueWithBoundedError) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 100000; ++i) {
    const int64_t v = static_cast<int64_t>(rng() >> (rng() % 62 + 1));
    const int b = LatencyHistogram::BucketOf(v);
    ASSERT_LE(LatencyHistogram::BucketLower(b), v);
    ASSERT_GE(LatencyHistogram::BucketUpper(b), v);
    const double width =
        LatencyHistogram::BucketUpper(b) - LatencyHistogram::BucketLower(b) + 1;
    if (v >= 256) {
      ASSERT_LE(width / v, 1.0 / 128);
    }
  }
  for (int64_t v = 0; v < 256; ++v) {
    EXPECT_EQ(LatencyHistogram::BucketLower(LatencyHistogram::BucketOf(v)), v);
    EXPECT_EQ(LatencyHistogram::BucketUpper(LatencyHistogram::BucketOf(v)), v);
  }
  // Buckets are contiguous.
  for (int b = 0; b < 5000; ++b) {
    EXPECT_EQ(LatencyHistogram::BucketUpper(b) + 1,
              LatencyHistogram::BucketLower(b + 1));
  }
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram h;
  for (int v = 1; v <= 100; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 100);
  EXPECT_EQ(h.Percentile(0.5), 50);
  EXPECT_EQ(h.Percentile(0.9), 90);
  EXPECT_EQ(h.Percentile(0.99), 99);
  EXPECT_EQ(h.Percentile(0.999), 100);
  EXPECT_EQ(h.Percentile(1.0), 100);
  EXPECT_EQ(h.Percentile(0.0), 1);
  EXPECT_EQ(h.min(), 1);
  EXPECT_EQ(h.max(), 100);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(LatencyHistogramTest, PercentilesOfKnownMillisecondData) {
  LatencyHistogram h;
  // 1 .. 1000 ms, shuffled: nearest-rank p50 = 500 ms, p90 = 900 ms, ...
  std::vector<int64_t> v;
  for (int ms = 1; ms <= 1000; ++ms) v.push_back(ms * 1'000'000LL);
  std::shuffle(v.begin(), v.end(), std::mt19937(3));
  for (int64_t x : v) h.Record(x);
  for (auto [q, expect_ms] : std::vector<std::pair<double, double>>{
           {0.5, 500}, {0.9, 900}, {0.99, 990}, {0.999, 999}}) {
    EXPECT_NEAR(h.Percentile(q) / 1e6, expect_ms, expect_ms / 128) << q;
  }
  EXPECT_EQ(h.max(), 1000'000'000LL);
  EXPECT_EQ(h.min(), 1'000'000LL);
  EXPECT_NEAR(h.mean(), 500.5e6, 1);
}

TEST(LatencyHistogramTest, EmptyAndNegative) {
  LatencyHistogram h;
  EXPECT_EQ(h.Percentile(0.5), 0);
  EXPECT_EQ(h.max(), 0);
  EXPECT_EQ(h.mean(), 0);
  h.Record(-5);
  EXPECT_EQ(h.count(), 1);
  EXPECT_EQ(h.max(), 0);
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverything) {
  LatencyHistogram a, b, all;
  std::mt19937_64 rng(9);
  std::lognormal_distribution<double> d(13.0, 1.0);  // ~ 0.4 ms median
  for (int i = 0; i < 20000; ++i) {
    const int64_t x = static_cast<int64_t>(d(rng));
    (i % 3 ? a : b).Record(x);
    all.Record(x);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  for (double q : {0.0, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    EXPECT_EQ(a.Percentile(q), all.Percentile(q)) << q;
  }
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
}

TEST(StatusCountsTest, CountsByCanonicalName) {
  StatusCounts c;
  c.Add(absl::StatusCode::kOk, 7);
  c.Add(absl::StatusCode::kInvalidArgument);
  c.Add(absl::StatusCode::kInvalidArgument);
  c.Add(absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(c.ok(), 7);
  EXPECT_EQ(c.errors(), 3);
  EXPECT_EQ(c.total(), 10);
  const auto names = c.ByName();
  EXPECT_EQ(names.at("OK"), 7);
  EXPECT_EQ(names.at("INVALID_ARGUMENT"), 2);
  EXPECT_EQ(names.at("DEADLINE_EXCEEDED"), 1);
  EXPECT_EQ(names.size(), 3u);
  EXPECT_EQ(StatusCodeName(absl::StatusCode::kResourceExhausted),
            "RESOURCE_EXHAUSTED");
}

TEST(RunRecorderTest, WarmUpIsNotMeasuredButShowsInProgress) {
  RunRecorder r;
  QueryOutcome ok{absl::StatusCode::kOk, 1000, 10, 20, 8};
  QueryOutcome bad{absl::StatusCode::kUnavailable, 5000, 10, 0, 8};
  r.Record(ok, /*measured=*/false);
  r.Record(ok, true);
  r.Record(ok, true);
  r.Record(bad, true);
  r.RecordDropped(true);
  r.RecordDropped(false);
  r.RecordInteraction(true);
  const RunTotals t = r.Totals();
  EXPECT_EQ(t.codes.ok(), 2);
  EXPECT_EQ(t.codes.errors(), 1);
  EXPECT_EQ(t.latency.count(), 2);  // OK queries only
  EXPECT_EQ(t.dropped, 1);
  EXPECT_EQ(t.bytes_up, 30);
  EXPECT_EQ(t.bytes_down, 40);
  EXPECT_EQ(t.candidates, 24);
  EXPECT_EQ(t.interactions_ok, 1);
  const RunRecorder::Interval in = r.TakeInterval();
  EXPECT_EQ(in.completed, 4);
  EXPECT_EQ(in.errors, 1);
  EXPECT_EQ(in.dropped, 2);
  EXPECT_EQ(in.p99_ns, 1000);
  EXPECT_EQ(r.TakeInterval().completed, 0);
}

}  // namespace
}  // namespace duet::loadgen
