#include "common/kernels/embedding_bag.h"

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
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
using ::testing::FloatNear;
using ::testing::Pointwise;

// An embedding table whose rows start at an odd byte offset, like rows after
// a safetensors JSON header in a mapped file.
struct TestTable {
  TestTable(EmbeddingTable::Format format, int64_t rows, int dim, uint32_t seed)
      : fp32(rows * dim) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float& v : fp32) v = dist(rng);
    if (format == EmbeddingTable::Format::kFp32) {
      bytes.resize(fp32.size() * 4 + 3);
      std::memcpy(bytes.data() + 3, fp32.data(), fp32.size() * 4);
      table = EmbeddingTable::Fp32(
          reinterpret_cast<const float*>(bytes.data() + 3), rows, dim);
    } else {
      bytes.resize(rows * (dim + 8) + 3);
      QuantizeRowwiseInt8(fp32.data(), rows, dim, bytes.data() + 3);
      table = EmbeddingTable::Int8Rowwise(bytes.data() + 3, rows, dim);
    }
  }
  std::vector<float> fp32;
  std::vector<uint8_t> bytes;
  EmbeddingTable table;
};

struct Bags {
  std::vector<int64_t> ids;
  std::vector<int32_t> offsets{0};
};

// Bag sizes 0..max_size (with a bias towards empty bags) over random rows.
Bags RandomBags(int64_t num_bags, int max_size, int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> size_dist(0, max_size);
  std::uniform_int_distribution<int64_t> id_dist(0, rows - 1);
  Bags bags;
  for (int64_t b = 0; b < num_bags; ++b) {
    const int size = rng() % 5 == 0 ? 0 : size_dist(rng);
    for (int k = 0; k < size; ++k) bags.ids.push_back(id_dist(rng));
    bags.offsets.push_back(static_cast<int32_t>(bags.ids.size()));
  }
  return bags;
}

using Format = EmbeddingTable::Format;

// The fast kernels sum in another order than the reference (two accumulator
// sets; int8 adds the row biases separately). Reordering n float additions
// changes the result by at most ~n * eps * sum|terms|: bags hold <= 40 rows,
// fp32 terms are in [-1, 1] (sum|terms| <= 40), int8 terms are
// scale * code (<= 2) and bias (<= 1) (sum|terms| <= 120). A wrong or missing
// row is off by ~0.1 or more.
float Tolerance(Format format) {
  constexpr float kEps = 6e-8f;
  return format == Format::kFp32 ? 40 * kEps * 40 : 40 * kEps * 120;
}

class EmbeddingBagRandomTest
    : public ::testing::TestWithParam<std::tuple<Format, int>> {};

TEST_P(EmbeddingBagRandomTest, MatchesReference) {
  const auto [format, dim] = GetParam();
  const TestTable t(format, 97, dim, dim * 7 + 1);
  for (int64_t out_pad : {0, 5}) {
    for (bool accumulate : {false, true}) {
      const int64_t num_bags = 23;
      const Bags bags = RandomBags(num_bags, 40, 97, dim + out_pad);
      const int64_t stride = dim + out_pad;
      // Padding columns hold a sentinel that must survive.
      std::vector<float> out(num_bags * stride, 777.0f);
      std::vector<float> ref(num_bags * stride, 777.0f);
      if (accumulate) {
        for (int64_t i = 0; i < num_bags * stride; ++i) {
          out[i] = ref[i] = (i % stride) < dim ? 0.25f * (i % 7) : 777.0f;
        }
      }
      EmbeddingBagSum(t.table, bags.ids.data(), bags.offsets.data(), num_bags,
                      out.data(), stride, accumulate);
      EmbeddingBagSumRef(t.table, bags.ids.data(), bags.offsets.data(),
                         num_bags, ref.data(), stride, accumulate);
      EXPECT_THAT(out, Pointwise(FloatNear(Tolerance(format)), ref))
          << "dim=" << dim << " pad=" << out_pad << " acc=" << accumulate;
    }
  }
}

TEST_P(EmbeddingBagRandomTest, FixedMatchesVariableBags) {
  const auto [format, dim] = GetParam();
  const TestTable t(format, 50, dim, 3);
  const int bag_size = 20;
  const int64_t num_bags = 9;
  std::mt19937 rng(5);
  std::vector<int64_t> ids(num_bags * bag_size);
  for (int64_t& id : ids) id = rng() % 50;
  std::vector<int32_t> offsets;
  for (int64_t b = 0; b <= num_bags; ++b) offsets.push_back(b * bag_size);
  std::vector<float> fixed(num_bags * dim), var(num_bags * dim),
      ref(num_bags * dim);
  EmbeddingBagSumFixed(t.table, ids.data(), num_bags, bag_size, fixed.data(),
                       dim, false);
  EmbeddingBagSum(t.table, ids.data(), offsets.data(), num_bags, var.data(),
                  dim, false);
  EmbeddingBagSumRef(t.table, ids.data(), offsets.data(), num_bags, ref.data(),
                     dim, false);
  EXPECT_THAT(fixed, ElementsAreArray(var));
  EXPECT_THAT(fixed, Pointwise(FloatNear(Tolerance(format)), ref));
}

INSTANTIATE_TEST_SUITE_P(
    Dims, EmbeddingBagRandomTest,
    ::testing::Combine(::testing::Values(Format::kFp32, Format::kInt8Rowwise),
                       ::testing::Values(1, 3, 7, 8, 16, 24, 32, 33, 64, 65,
                                         128, 136)));

TEST(EmbeddingBagTest, SpecificSums) {
  const std::vector<float> rows = {1, 2, 3, 4, 5, 6};  // 3 rows, dim 2
  const auto table = EmbeddingTable::Fp32(rows.data(), 3, 2);
  const std::vector<int64_t> ids = {0, 2, 1};
  const std::vector<int32_t> offsets = {0, 2, 2, 3};  // {0,2}, {}, {1}
  std::vector<float> out(6, -1.0f);
  EmbeddingBagSum(table, ids.data(), offsets.data(), 3, out.data(), 2, false);
  EXPECT_THAT(out, ElementsAre(6, 8, 0, 0, 3, 4));
  EmbeddingBagSum(table, ids.data(), offsets.data(), 3, out.data(), 2, true);
  EXPECT_THAT(out, ElementsAre(12, 16, 0, 0, 6, 8));
}

TEST(EmbeddingBagTest, SingleRowTableIsExact) {
  for (int dim : {1, 8, 32, 33}) {
    std::vector<float> row(dim);
    for (int j = 0; j < dim; ++j) row[j] = 0.5f * j - 3.0f;
    const auto table = EmbeddingTable::Fp32(row.data(), 1, dim);
    const std::vector<int64_t> ids = {0};
    const std::vector<int32_t> offsets = {0, 1};
    std::vector<float> out(dim, 9.0f);
    EmbeddingBagSum(table, ids.data(), offsets.data(), 1, out.data(), dim,
                    false);
    EXPECT_THAT(out, ElementsAreArray(row)) << "dim=" << dim;
  }
}

TEST(EmbeddingBagTest, EmptyBagsZeroOrKeepOutput) {
  for (Format format : {Format::kFp32, Format::kInt8Rowwise}) {
    for (int dim : {3, 32}) {
      const TestTable t(format, 4, dim, 1);
      const std::vector<int32_t> offsets = {0, 0, 0};
      std::vector<float> out(2 * dim, 5.0f);
      EmbeddingBagSum(t.table, nullptr, offsets.data(), 2, out.data(), dim,
                      true);
      EXPECT_THAT(out, Each(FloatEq(5.0f)));
      EmbeddingBagSum(t.table, nullptr, offsets.data(), 2, out.data(), dim,
                      false);
      EXPECT_THAT(out, Each(FloatEq(0.0f)));
      // No bags at all writes nothing.
      std::vector<float> untouched(dim, 4.0f);
      EmbeddingBagSumFixed(t.table, nullptr, 0, 3, untouched.data(), dim,
                           false);
      EXPECT_THAT(untouched, Each(FloatEq(4.0f)));
    }
  }
}

TEST(EmbeddingBagTest, Int8RowDecodesScaleTimesCodePlusBias) {
  // dim 8, one row: codes 0..7, scale 0.5, bias -1 -> -1, -0.5, ..., 2.5.
  std::vector<uint8_t> row(16);
  for (int j = 0; j < 8; ++j) row[j] = j;
  const float scale = 0.5f, bias = -1.0f;
  std::memcpy(row.data() + 8, &scale, 4);
  std::memcpy(row.data() + 12, &bias, 4);
  const auto table = EmbeddingTable::Int8Rowwise(row.data(), 1, 8);
  const std::vector<int64_t> ids = {0, 0};
  const std::vector<int32_t> offsets = {0, 2};
  std::vector<float> out(8);
  EmbeddingBagSum(table, ids.data(), offsets.data(), 1, out.data(), 8, false);
  EXPECT_THAT(out, ElementsAre(-2, -1, 0, 1, 2, 3, 4, 5));
}

TEST(EmbeddingBagTest, FindOutOfRangeId) {
  const std::vector<float> rows(10 * 4);
  const auto table = EmbeddingTable::Fp32(rows.data(), 10, 4);
  const std::vector<int64_t> ok = {0, 9, 5};
  EXPECT_EQ(FindOutOfRangeId(table, ok.data(), 3), -1);
  const std::vector<int64_t> too_big = {0, 10, 3};
  EXPECT_EQ(FindOutOfRangeId(table, too_big.data(), 3), 1);
  const std::vector<int64_t> negative = {4, 2, -1, 11};
  EXPECT_EQ(FindOutOfRangeId(table, negative.data(), 4), 2);
  EXPECT_EQ(FindOutOfRangeId(table, nullptr, 0), -1);
}

TEST(EmbeddingBagTest, QuantizeRowwiseErrorWithinHalfScale) {
  for (int dim : {1, 7, 32, 65}) {
    const TestTable t(Format::kInt8Rowwise, 13, dim, dim);
    for (int64_t r = 0; r < 13; ++r) {
      const uint8_t* row = t.bytes.data() + 3 + r * (dim + 8);
      float scale, bias;
      std::memcpy(&scale, row + dim, 4);
      std::memcpy(&bias, row + dim + 4, 4);
      const float* x = t.fp32.data() + r * dim;
      float lo = x[0];
      for (int j = 0; j < dim; ++j) lo = std::min(lo, x[j]);
      EXPECT_EQ(bias, lo);
      for (int j = 0; j < dim; ++j) {
        EXPECT_LE(std::fabs(scale * row[j] + bias - x[j]), scale * 0.5f + 1e-6f)
            << "dim=" << dim << " r=" << r << " j=" << j;
      }
    }
  }
}

TEST(EmbeddingBagTest, QuantizeRowwiseConstantRowHasZeroScale) {
  const std::vector<float> x(5, 2.5f);
  std::vector<uint8_t> out(5 + 8, 0xAB);
  QuantizeRowwiseInt8(x.data(), 1, 5, out.data());
  float scale, bias;
  std::memcpy(&scale, out.data() + 5, 4);
  std::memcpy(&bias, out.data() + 9, 4);
  EXPECT_EQ(scale, 0.0f);
  EXPECT_EQ(bias, 2.5f);
  EXPECT_THAT(std::vector<uint8_t>(out.begin(), out.begin() + 5), Each(Eq(0)));
}

}  // namespace
}  // namespace duet::common
