#include "common/kernels/quantize.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Eq;
using ::testing::FloatEq;
using ::testing::Gt;

std::vector<float> RandomVector(int n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

class QuantizeRoundTripTest : public ::testing::TestWithParam<int> {};

TEST_P(QuantizeRoundTripTest, ErrorAtMostHalfScaleAndFastMatchesRef) {
  const int n = GetParam();
  for (uint32_t seed : {1u, 2u, 3u}) {
    // Shifted ranges exercise asymmetric zero points (all positive, mixed).
    const float lo = seed == 1 ? -3.0f : (seed == 2 ? 0.5f : -0.2f);
    const std::vector<float> x = RandomVector(n, lo, 2.0f, seed);
    std::vector<int8_t> q(n), q_ref(n);
    const AffineParams p = QuantizeAffineInt8(x.data(), n, q.data());
    AffineParams p_ref;
    QuantizeAffineInt8Ref(x.data(), n, q_ref.data(), &p_ref);
    EXPECT_EQ(p.scale, p_ref.scale);
    EXPECT_EQ(p.zero_point, p_ref.zero_point);
    EXPECT_THAT(q, ElementsAreArray(q_ref));
    EXPECT_THAT(p.scale, Gt(0.0f));
    std::vector<float> back(n);
    DequantizeAffineInt8(q.data(), n, p, back.data());
    for (int i = 0; i < n; ++i) {
      // scale/2 plus float rounding of x / scale.
      EXPECT_LE(std::fabs(back[i] - x[i]), p.scale * 0.5f * (1 + 1e-5f))
          << "i=" << i << " x=" << x[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, QuantizeRoundTripTest,
                         ::testing::Values(1, 7, 8, 15, 16, 17, 100, 1000));

TEST(QuantizeTest, ZeroVectorUsesFiniteScaleAndRoundTripsExactly) {
  const std::vector<float> x(37, 0.0f);
  std::vector<int8_t> q(37, 99);
  const AffineParams p = QuantizeAffineInt8(x.data(), 37, q.data());
  EXPECT_EQ(p.scale, 1.0f);
  EXPECT_EQ(p.zero_point, 0);
  EXPECT_THAT(q, Each(Eq(0)));
  std::vector<float> back(37, 5.0f);
  DequantizeAffineInt8(q.data(), 37, p, back.data());
  EXPECT_THAT(back, Each(FloatEq(0.0f)));
}

TEST(QuantizeTest, SingleElement) {
  const float pos = 3.0f;
  int8_t q = 0;
  AffineParams p = QuantizeAffineInt8(&pos, 1, &q);
  // Range [0, 3]: zero at the bottom code, 3 at the top.
  EXPECT_FLOAT_EQ(p.scale, 3.0f / 255.0f);
  EXPECT_EQ(p.zero_point, -128);
  EXPECT_EQ(q, 127);
  const float neg = -2.0f;
  p = QuantizeAffineInt8(&neg, 1, &q);
  EXPECT_EQ(p.zero_point, 127);
  EXPECT_EQ(q, -128);
  float back = 0.0f;
  DequantizeAffineInt8(&q, 1, p, &back);
  EXPECT_NEAR(back, -2.0f, p.scale / 2);
}

TEST(QuantizeTest, ExactScaleSpecificCodes) {
  // Range [-2, 255/64 - 2] makes scale exactly 1/64 and zero_point 0; the
  // last two values sit on rounding ties (0.5 and 1.5 steps: half to even).
  const std::vector<float> x = {-2.0f, 0.0f,       1.984375f,
                                0.5f,  0.0078125f, 0.0234375f};
  std::vector<int8_t> q(x.size()), q_ref(x.size());
  const AffineParams p = QuantizeAffineInt8(x.data(), x.size(), q.data());
  EXPECT_EQ(p.scale, 1.0f / 64);
  EXPECT_EQ(p.zero_point, 0);
  EXPECT_THAT(q, ElementsAre(-128, 0, 127, 32, 0, 2));
  QuantizeAffineInt8Ref(x.data(), x.size(), q_ref.data(), nullptr);
  EXPECT_THAT(q_ref, ElementsAreArray(q));
}

TEST(QuantizeTest, EmptyInputIsFine) {
  const AffineParams p = QuantizeAffineInt8(nullptr, 0, nullptr);
  EXPECT_EQ(p.scale, 1.0f);
  AffineParams p_ref;
  QuantizeAffineInt8Ref(nullptr, 0, nullptr, &p_ref);
  EXPECT_EQ(p_ref.scale, 1.0f);
}

TEST(QuantizeTest, NanInputDoesNotCrash) {
  std::vector<float> x = RandomVector(40, -1, 1, 7);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[21] = std::numeric_limits<float>::quiet_NaN();
  std::vector<int8_t> q(40), q_ref(40);
  const AffineParams p = QuantizeAffineInt8(x.data(), 40, q.data());
  AffineParams p_ref;
  QuantizeAffineInt8Ref(x.data(), 40, q_ref.data(), &p_ref);
  EXPECT_TRUE(std::isfinite(p.scale));
  EXPECT_TRUE(std::isfinite(p_ref.scale));
}

}  // namespace
}  // namespace duet::common
