#include "tools/loadgen/sampler.h"

#include <cmath>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::loadgen {
namespace {

using ::testing::HasSubstr;

// P(rank k) of Zipf(n, s).
std::vector<double> ZipfPmf(int64_t n, double s) {
  std::vector<double> p(n + 1, 0.0);
  double norm = 0;
  for (int64_t k = 1; k <= n; ++k) norm += std::pow(double(k), -s);
  for (int64_t k = 1; k <= n; ++k) p[k] = std::pow(double(k), -s) / norm;
  return p;
}

class ZipfTest : public ::testing::TestWithParam<double> {};

TEST_P(ZipfTest, RankFrequencyRatiosFollowPowerLaw) {
  const double s = GetParam();
  const int64_t n = 1000;
  const int draws = 1'000'000;
  ZipfSampler zipf(n, s);
  Rng rng(42);
  std::vector<int64_t> count(n + 1, 0);
  for (int i = 0; i < draws; ++i) {
    const int64_t k = zipf.Sample(rng);
    ASSERT_GE(k, 1);
    ASSERT_LE(k, n);
    ++count[k];
  }
  // count(1) / count(k) ~ k^s: compare logs within 5 standard errors of the
  // log-ratio of two binomial counts, sqrt(1/c1 + 1/ck).
  for (int64_t k : {2, 5, 10, 50}) {
    const double log_ratio = std::log(double(count[1]) / double(count[k]));
    const double se = std::sqrt(1.0 / count[1] + 1.0 / count[k]);
    EXPECT_NEAR(log_ratio, s * std::log(double(k)), 5 * se) << "rank " << k;
  }
  // Chi-square over ranks 1..30 and the tail: 30 degrees of freedom, the
  // 1e-6 upper quantile is about 76.
  const std::vector<double> p = ZipfPmf(n, s);
  double chi2 = 0, tail_p = 1.0;
  int64_t tail_count = draws;
  for (int k = 1; k <= 30; ++k) {
    const double e = p[k] * draws;
    chi2 += (count[k] - e) * (count[k] - e) / e;
    tail_p -= p[k];
    tail_count -= count[k];
  }
  const double e = tail_p * draws;
  chi2 += (tail_count - e) * (tail_count - e) / e;
  EXPECT_LT(chi2, 76.0);
}

INSTANTIATE_TEST_SUITE_P(Exponents, ZipfTest,
                         ::testing::Values(0.5, 0.99, 1.0, 1.2, 2.0));

TEST(ZipfSamplerTest, ExponentZeroIsUniform) {
  ZipfSampler zipf(10, 0.0);
  Rng rng(7);
  std::vector<int> count(11, 0);
  const int draws = 200'000;
  for (int i = 0; i < draws; ++i) ++count[zipf.Sample(rng)];
  double chi2 = 0;
  for (int k = 1; k <= 10; ++k) {
    const double e = draws / 10.0;
    chi2 += (count[k] - e) * (count[k] - e) / e;
  }
  EXPECT_EQ(count[0], 0);
  EXPECT_LT(chi2, 45.0);  // 9 degrees of freedom, 1e-6 quantile ~ 45
}

TEST(ZipfSamplerTest, HugeCatalogNeedsNoTable) {
  ZipfSampler zipf(int64_t{1} << 40, 1.1);
  Rng rng(1);
  for (int i = 0; i < 10000; ++i) {
    const int64_t k = zipf.Sample(rng);
    ASSERT_GE(k, 1);
    ASSERT_LE(k, int64_t{1} << 40);
  }
}

TEST(PoissonArrivalsTest, MeanAndCoefficientOfVariation) {
  const double rate = 2500.0;
  PoissonArrivals arrivals(rate);
  Rng rng(3);
  const int n = 200'000;
  double sum = 0, sum2 = 0;
  for (int i = 0; i < n; ++i) {
    const double g = arrivals.NextGapSeconds(rng);
    ASSERT_GE(g, 0.0);
    sum += g;
    sum2 += g * g;
  }
  const double mean = sum / n;
  const double sd = std::sqrt(sum2 / n - mean * mean);
  // Exponential: sd == mean, so the mean's standard error is mean/sqrt(n);
  // the sample CV's standard error is about sqrt(2/n) = 0.0032.
  EXPECT_NEAR(mean, 1.0 / rate, 5.0 / rate / std::sqrt(double(n)));
  EXPECT_NEAR(sd / mean, 1.0, 0.02);
}

TEST(CandidateCountTest, FixedAndParsedForms) {
  Rng rng(1);
  EXPECT_EQ(CandidateCountDistribution::Fixed(64).Sample(rng), 64);
  auto d = CandidateCountDistribution::Parse("128");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->Sample(rng), 128);
  EXPECT_TRUE(d->fixed());
  auto f = CandidateCountDistribution::Parse("fixed:8");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->Sample(rng), 8);
  EXPECT_EQ(f->ToString(), "8");
}

TEST(CandidateCountTest, NormalIsClampedToOneAndMax) {
  auto d = CandidateCountDistribution::Parse("normal:165:80");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->ToString(), "normal:165:80");
  Rng rng(5);
  double sum = 0;
  const int n = 100'000;
  for (int i = 0; i < n; ++i) {
    const int x = d->Sample(rng);
    ASSERT_GE(x, 1);
    ASSERT_LE(x, 1024);
    sum += x;
  }
  // Clamping 2 % of the mass at 1 shifts the mean up by well under 1.
  EXPECT_NEAR(sum / n, 165.0, 2.0);

  auto wide = CandidateCountDistribution::Parse("normal:1000:2000", 1024);
  ASSERT_TRUE(wide.ok());
  int at_max = 0, at_min = 0;
  for (int i = 0; i < 10'000; ++i) {
    const int x = wide->Sample(rng);
    ASSERT_GE(x, 1);
    ASSERT_LE(x, 1024);
    at_max += x == 1024;
    at_min += x == 1;
  }
  EXPECT_GT(at_max, 4000);  // P(X >= 1024) ~ 0.5
  EXPECT_GT(at_min, 2500);  // P(X <= 1) ~ 0.31
}

TEST(CandidateCountTest, RejectsMalformedSpecs) {
  for (const char* bad : {"", "abc", "normal:x:1", "normal:1", "gamma:1:2",
                          "fixed:0", "2000", "1.5", "normal:10:-1"}) {
    auto d = CandidateCountDistribution::Parse(bad);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(d.status().message()), HasSubstr("candidate count"))
        << bad;
  }
}

TEST(CandidateSamplerTest, RankMappingIsABijection) {
  for (int64_t n : {1, 2, 997, 1000, 1024}) {
    CandidateSampler s(n, 1.0, 9);
    std::set<int64_t> ids;
    for (int64_t r = 1; r <= n; ++r) {
      const int64_t id = s.ItemOfRank(r);
      ASSERT_GE(id, 0);
      ASSERT_LT(id, n);
      ids.insert(id);
    }
    EXPECT_EQ(static_cast<int64_t>(ids.size()), n);
  }
}

TEST(CandidateSamplerTest, QueriesHaveDistinctIdsWhenPossible) {
  CandidateSampler s(5000, 1.5, 3);  // heavy skew: the head saturates
  Rng rng(11);
  std::vector<int64_t> ids;
  for (int n : {1, 8, 1024, 5000}) {
    s.Sample(n, rng, &ids);
    ASSERT_EQ(static_cast<int>(ids.size()), n);
    EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), size_t(n));
    for (int64_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, 5000);
    }
  }
  // More candidates than items: repeats are unavoidable, ids stay valid.
  CandidateSampler small(10, 0.0, 3);
  small.Sample(64, rng, &ids);
  ASSERT_EQ(ids.size(), 64u);
  for (int64_t id : ids) {
    ASSERT_GE(id, 0);
    ASSERT_LT(id, 10);
  }
}

TEST(CandidateSamplerTest, PopularItemsAreTheLowRanks) {
  CandidateSampler s(100000, 1.2, 3);
  Rng rng(2);
  int head = 0;
  const int64_t top = s.ItemOfRank(1);
  for (int i = 0; i < 100000; ++i) head += s.SampleOne(rng) == top;
  // P(rank 1) for s = 1.2, n = 1e5 is about 0.19.
  EXPECT_NEAR(head / 100000.0, ZipfPmf(100000, 1.2)[1], 0.01);
}

}  // namespace
}  // namespace duet::loadgen
