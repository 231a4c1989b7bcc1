#include "common/kernels/mlp.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/kernels/int8_test_util.h"
#include "common/kernels/mlp_reference.h"
#include "common/model/mlp_quantizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::FloatNear;
using ::testing::Ge;
using ::testing::Gt;
using ::testing::HasSubstr;
using ::testing::Le;
using ::testing::Lt;
using ::testing::Pointwise;

// Owning fp32 weights for a stack of widths {in, h1, ..., out}.
struct Fp32Weights {
  Fp32Weights(const std::vector<int>& widths, uint32_t seed) {
    std::mt19937 rng(seed);
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
      const int in = widths[l], out = widths[l + 1];
      // Uniform He-style init keeps activations O(1) through the stack.
      std::uniform_real_distribution<float> w(-std::sqrt(6.0f / in),
                                              std::sqrt(6.0f / in));
      std::uniform_real_distribution<float> b(-0.1f, 0.1f);
      weights.emplace_back(int64_t{in} * out);
      biases.emplace_back(out);
      for (float& v : weights.back()) v = w(rng);
      for (float& v : biases.back()) v = b(rng);
    }
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
      layers.push_back(
          {widths[l], widths[l + 1], weights[l].data(), biases[l].data()});
    }
  }
  std::vector<std::vector<float>> weights, biases;
  std::vector<LinearLayer> layers;
};

std::vector<float> RandomInput(int64_t n, uint32_t seed, float range = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-range, range);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

// fp32: oneDNN sums K products in another order (and with FMA) than the
// reference; with O(1) values and K <= 512 that is ~1e-6 relative.
auto Fp32Close(float rel) {
  return ::testing::Truly([rel](const std::tuple<float, float>& t) {
    const float a = std::get<0>(t), b = std::get<1>(t);
    return std::fabs(a - b) <= rel * (1.0f + std::fabs(b));
  });
}

TEST(Fp32MlpTest, MatchesReferenceForManyRowCounts) {
  for (Activation act :
       {Activation::kNone, Activation::kRelu, Activation::kSigmoid}) {
    const Fp32Weights w({37, 64, 33, 5}, 11);
    auto mlp = Fp32Mlp::Create(w.layers, act);
    ASSERT_TRUE(mlp.ok()) << mlp.status();
    EXPECT_EQ((*mlp)->in_dim(), 37);
    EXPECT_EQ((*mlp)->out_dim(), 5);
    EXPECT_EQ((*mlp)->num_layers(), 3);
    for (int64_t m : {1, 7, 16, 17, 33, 1024}) {
      const std::vector<float> x = RandomInput(m * 37, m);
      std::vector<float> out(m * 5, -7.0f), ref(m * 5);
      ASSERT_TRUE((*mlp)->Run(x.data(), m, out.data()).ok());
      Fp32MlpRef(w.layers, act, x.data(), m, ref.data());
      EXPECT_THAT(out, Pointwise(Fp32Close(1e-5f), ref))
          << "m=" << m << " act=" << static_cast<int>(act);
      if (act == Activation::kSigmoid) {
        EXPECT_THAT(out, Each(AllOf(Gt(0.0f), Lt(1.0f))));
      } else if (act == Activation::kRelu) {
        EXPECT_THAT(out, Each(Ge(0.0f)));
      }
    }
  }
}

TEST(Fp32MlpTest, SpecificValuesAndFlops) {
  // y = relu(W1 x + b1) then W2 h + b2 with no last activation.
  const std::vector<float> w1 = {1, 2, -1, 0};  // [2 out, 2 in]
  const std::vector<float> b1 = {0.5f, 0};
  const std::vector<float> w2 = {1, -3};  // [1, 2]
  const std::vector<float> b2 = {0.25f};
  const std::vector<LinearLayer> layers = {{2, 2, w1.data(), b1.data()},
                                           {2, 1, w2.data(), b2.data()}};
  auto mlp = Fp32Mlp::Create(layers, Activation::kNone);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  // x = (1, 1): h = relu(3.5, -1) = (3.5, 0); y = 3.75.
  // x = (-1, 0): h = relu(-0.5, 1) = (0, 1); y = -2.75.
  const std::vector<float> x = {1, 1, -1, 0};
  std::vector<float> y(2);
  ASSERT_TRUE((*mlp)->Run(x.data(), 2, y.data()).ok());
  EXPECT_THAT(y, ElementsAre(3.75f, -2.75f));
  EXPECT_EQ((*mlp)->Flops(3), 2 * 3 * (2 * 2 + 2 * 1));
}

TEST(Fp32MlpTest, PrepareBuildsEveryRowCountARunUses) {
  const Fp32Weights w({19, 24, 3}, 13);
  auto mlp = Fp32Mlp::Create(w.layers, Activation::kRelu);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  // Create builds m = 1 (it validates the shapes with it).
  EXPECT_THAT((*mlp)->PreparedRowCounts(), ElementsAre(1));
  ASSERT_TRUE((*mlp)->Prepare(40).ok());
  // Runs of up to 40 rows use 1 .. 15 (alone or as a tail) and 16, 32 (the
  // chunk of m - m % 16).
  std::vector<int64_t> expected;
  for (int64_t m = 1; m <= 15; ++m) expected.push_back(m);
  expected.push_back(16);
  expected.push_back(32);
  EXPECT_EQ((*mlp)->PreparedRowCounts(), expected);
  // A prepared MLP's runs of every count up to 40 add none and stay exact.
  for (int64_t m = 1; m <= 40; ++m) {
    const std::vector<float> x = RandomInput(m * 19, static_cast<uint32_t>(m));
    std::vector<float> out(m * 3), ref(m * 3);
    ASSERT_TRUE((*mlp)->Run(x.data(), m, out.data()).ok());
    Fp32MlpRef(w.layers, Activation::kRelu, x.data(), m, ref.data());
    EXPECT_THAT(out, Pointwise(Fp32Close(1e-5f), ref)) << "m=" << m;
  }
  EXPECT_EQ((*mlp)->PreparedRowCounts(), expected);
  const absl::Status bad = (*mlp)->Prepare(0);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("m >= 1 rows, got 0"));
}

TEST(Fp32MlpTest, OwnsItsWeights) {
  Fp32Weights w({24, 40, 8}, 5);
  auto mlp = Fp32Mlp::Create(w.layers, Activation::kRelu);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  const std::vector<float> x = RandomInput(9 * 24, 2);
  std::vector<float> ref(9 * 8), out(9 * 8);
  Fp32MlpRef(w.layers, Activation::kRelu, x.data(), 9, ref.data());
  // Clobber the source; new row counts (new primitives) must still work.
  for (auto& v : w.weights) std::fill(v.begin(), v.end(), NAN);
  for (auto& v : w.biases) std::fill(v.begin(), v.end(), NAN);
  ASSERT_TRUE((*mlp)->Run(x.data(), 9, out.data()).ok());
  EXPECT_THAT(out, Pointwise(Fp32Close(1e-5f), ref));
}

// Runs `mlp` from 4 threads, 50 times each, over inputs of the given row
// counts: every output must equal the single-threaded result bit for bit.
template <typename Mlp>
void ExpectConcurrentRunsMatch(const Mlp& mlp, int in, int out_dim,
                               const std::vector<int64_t>& ms) {
  std::vector<std::vector<float>> inputs, expected;
  for (int64_t m : ms) {
    inputs.push_back(RandomInput(m * in, m));
    expected.emplace_back(m * out_dim);
    ASSERT_TRUE(mlp.Run(inputs.back().data(), m, expected.back().data()).ok());
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int iter = 0; iter < 50; ++iter) {
        const size_t i = (t + iter) % ms.size();
        std::vector<float> out(ms[i] * out_dim);
        if (!mlp.Run(inputs[i].data(), ms[i], out.data()).ok() ||
            out != expected[i]) {
          ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST(Fp32MlpTest, ConcurrentRunsGiveIdenticalResults) {
  const Fp32Weights w({64, 128, 32}, 3);
  auto mlp = Fp32Mlp::Create(w.layers, Activation::kSigmoid);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  ExpectConcurrentRunsMatch(**mlp, 64, 32, {1, 7, 40, 129});
}

TEST(Fp32MlpTest, CreateRejectsBadShapes) {
  EXPECT_THAT(
      Fp32Mlp::Create({}, Activation::kNone).status(),
      ::testing::AllOf(::testing::Property(&absl::Status::code,
                                           absl::StatusCode::kInvalidArgument),
                       ::testing::Property(&absl::Status::message,
                                           HasSubstr("at least one layer"))));
  const Fp32Weights a({8, 16}, 1), b({12, 4}, 2);
  const std::vector<LinearLayer> mismatched = {a.layers[0], b.layers[0]};
  const absl::Status s =
      Fp32Mlp::Create(mismatched, Activation::kNone).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("layer 1 has in=12 but layer 0 has out=16"));
  std::vector<LinearLayer> no_weight = a.layers;
  no_weight[0].weight = nullptr;
  EXPECT_THAT(Fp32Mlp::Create(no_weight, Activation::kNone).status().message(),
              HasSubstr("no weight"));
  auto mlp = Fp32Mlp::Create(a.layers, Activation::kNone);
  ASSERT_TRUE(mlp.ok());
  float x = 0, y = 0;
  EXPECT_EQ((*mlp)->Run(&x, 0, &y).code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Int8.

// Every arithmetic, for tests that run each one this CPU computes exactly
// (Int8Kernels().IsExact); the others are proven inexact by
// Int8KernelsTest.ProbeVerdictHoldsForEveryArithmetic.
class Int8ArithmeticTest : public ::testing::TestWithParam<Int8Arithmetic> {
 protected:
  void SetUp() override {
    // This CPU (or the run's ISA cap) cannot compute this arithmetic exactly,
    // so its exactness checks do not apply; `why` names the CPU and the ISA.
    if (const std::string why = InexactInt8Reason(GetParam()); !why.empty()) {
      GTEST_SKIP() << why;
    }
  }
};

std::string ArithmeticTestName(
    const ::testing::TestParamInfo<Int8Arithmetic>& info) {
  return Int8ArithmeticTestName(info.param);
}

TEST_P(Int8ArithmeticTest, BiasIsAddedAfterDequantization) {
  // One layer, in 4, out 2: q(x) = round(x / 0.1) = (3, 1, -2, 5) around the
  // zero point, acc = 7 for both rows of all-ones weights.
  //   y0 = 0.1 * 0.5 * 7 + 1 = 1.35;  y1 = 0.1 * 0.25 * 7 - 2 = -1.825
  const std::vector<int8_t> w(8, 1);
  const std::vector<float> ws = {0.5f, 0.25f};
  const std::vector<float> bias = {1.0f, -2.0f};
  const std::vector<Int8LinearLayer> layers = {
      {4, 2, w.data(), ws.data(), bias.data(), 0.1f}};
  const std::vector<float> x = {0.3f, 0.1f, -0.2f, 0.5f};
  std::vector<float> y(2), ref(2);
  auto mlp = Int8Mlp::Create(layers, Activation::kNone, GetParam());
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_EQ((*mlp)->arithmetic(), GetParam());
  ASSERT_TRUE((*mlp)->Run(x.data(), 1, y.data()).ok());
  Int8MlpRef(layers, GetParam(), Activation::kNone, x.data(), 1, ref.data());
  EXPECT_THAT(y,
              ElementsAre(FloatNear(1.35f, 1e-6f), FloatNear(-1.825f, 1e-6f)));
  EXPECT_THAT(ref,
              ElementsAre(FloatNear(1.35f, 1e-6f), FloatNear(-1.825f, 1e-6f)));
  EXPECT_EQ((*mlp)->Ops(5), 2 * 5 * 8);
}

TEST_P(Int8ArithmeticTest, InputsSaturateAtTheArithmeticsRange) {
  // One input, weight 1, scale 1: y = q - zero point, so y shows the code.
  // Full and reduced weights: s8 [-128, 127]; reduced activations: u8
  // [0, 127] around 64, i.e. [-64, 63].
  const std::vector<int8_t> w = {1};
  const std::vector<float> ws = {1.0f};
  const std::vector<Int8LinearLayer> layers = {
      {1, 1, w.data(), ws.data(), nullptr, 1.0f}};
  auto mlp = Int8Mlp::Create(layers, Activation::kNone, GetParam());
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  const std::vector<float> x = {-1000.0f, -64.4f, 2.5f, 3.5f, 63.0f, 1000.0f};
  std::vector<float> y(x.size()), ref(x.size());
  ASSERT_TRUE((*mlp)->Run(x.data(), x.size(), y.data()).ok());
  Int8MlpRef(layers, GetParam(), Activation::kNone, x.data(), x.size(),
             ref.data());
  const bool reduced = GetParam() == Int8Arithmetic::kReducedActivations;
  // Half to even: 2.5 -> 2, 3.5 -> 4.
  const std::vector<float> expected =
      reduced ? std::vector<float>{-64, -64, 2, 4, 63, 63}
              : std::vector<float>{-128, -64, 2, 4, 63, 127};
  EXPECT_THAT(y, ElementsAreArray(expected));
  EXPECT_THAT(ref, ElementsAreArray(expected));
}

TEST_P(Int8ArithmeticTest, ZeroWeightScaleRowYieldsBias) {
  const std::vector<int8_t> w = {5, 5, 7, -7};  // row 1 ignored: scale 0
  const std::vector<float> ws = {0.5f, 0.0f};
  const std::vector<float> bias = {0.0f, 0.75f};
  const std::vector<Int8LinearLayer> layers = {
      {2, 2, w.data(), ws.data(), bias.data(), 1.0f}};
  const std::vector<float> x = {1.0f, 2.0f};
  std::vector<float> y(2), ref(2);
  auto mlp = Int8Mlp::Create(layers, Activation::kNone, GetParam());
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  ASSERT_TRUE((*mlp)->Run(x.data(), 1, y.data()).ok());
  Int8MlpRef(layers, GetParam(), Activation::kNone, x.data(), 1, ref.data());
  EXPECT_THAT(y, ElementsAre(FloatNear(7.5f, 1e-6f), FloatNear(0.75f, 1e-6f)));
  EXPECT_THAT(ref,
              ElementsAre(FloatNear(7.5f, 1e-6f), FloatNear(0.75f, 1e-6f)));
}

// Worst-case effect of +-1 LSB at every requantization (hidden outputs)
// between oneDNN and the reference: both compute the same integer
// accumulators; only the float (acc + bias) * scale before rounding may
// differ in the last ulp, flipping a rounding tie by one code. One code of
// hidden layer l is one step s_{l+1} (its consumer's input scale) in real
// units. ReLU/saturation and sigmoid are 1-Lipschitz, so the error e_l
// (per unit, real units) of layer l's output propagates as
//   e_{l+1}[o] = s_{l+2} + sum_i |W_{l+1}[o][i]| e_l[i]   (hidden)
//   e_out[o]   =           sum_i |W_last[o][i]| e_{L-2}[i] (+ float eps)
// with W the dequantized weights, starting from e_0 = s_1 (no error in the
// input quantization: identical code on both sides). The same in every
// arithmetic: only the step sizes differ.
std::vector<float> LsbBound(const Int8MlpParams& p) {
  const size_t n = p.layers.size();
  std::vector<float> e;
  for (size_t l = 0; l + 1 < n; ++l) {
    const auto& L = p.layers[l];
    std::vector<float> next(L.out, p.layers[l + 1].input_scale);
    if (!e.empty()) {
      for (int o = 0; o < L.out; ++o) {
        for (int i = 0; i < L.in; ++i) {
          next[o] +=
              std::abs(L.weight[o * L.in + i] * L.weight_scale[o]) * e[i];
        }
      }
    }
    e.swap(next);
  }
  const auto& last = p.layers.back();
  std::vector<float> out(last.out, 1e-5f);
  for (int o = 0; o < last.out; ++o) {
    for (int i = 0; i < last.in && !e.empty(); ++i) {
      out[o] +=
          std::abs(last.weight[o * last.in + i] * last.weight_scale[o]) * e[i];
    }
  }
  return out;
}

class Int8MlpVsRefTest
    : public ::testing::TestWithParam<std::tuple<Activation, Int8Arithmetic>> {
 protected:
  void SetUp() override {
    // This CPU (or the run's ISA cap) cannot compute the arithmetic exactly:
    // the edge never runs it here, so its bounds do not apply (the probe's
    // verdict is itself tested by ProbeVerdictHoldsForEveryArithmetic).
    if (const std::string why = InexactInt8Reason(arithmetic()); !why.empty()) {
      GTEST_SKIP() << why;
    }
  }
  Activation activation() const { return std::get<0>(GetParam()); }
  Int8Arithmetic arithmetic() const { return std::get<1>(GetParam()); }
};

TEST_P(Int8MlpVsRefTest, WithinOneLsbPerLayerOfReference) {
  const Activation act = activation();
  const Fp32Weights w({48, 96, 40, 6}, 21);
  const std::vector<float> calib = RandomInput(200 * 48, 99);
  const Int8MlpParams params =
      QuantizeMlp(w.layers, calib.data(), 200, arithmetic());
  ASSERT_EQ(params.arithmetic, arithmetic());
  const std::vector<Int8LinearLayer> views = params.Views();
  auto mlp = Int8Mlp::Create(views, act, arithmetic());
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_EQ((*mlp)->in_dim(), 48);
  EXPECT_EQ((*mlp)->out_dim(), 6);
  EXPECT_EQ((*mlp)->num_layers(), 3);
  const std::vector<float> bound = LsbBound(params);
  for (int64_t m : {1, 7, 16, 33, 1024}) {
    // Inputs up to 1.5x the calibrated range: saturated codes included.
    const std::vector<float> x = RandomInput(m * 48, 1000 + m, 1.5f);
    std::vector<float> out(m * 6), ref(m * 6);
    ASSERT_TRUE((*mlp)->Run(x.data(), m, out.data()).ok());
    Int8MlpRef(views, arithmetic(), act, x.data(), m, ref.data());
    int exact = 0;
    for (int64_t r = 0; r < m; ++r) {
      for (int o = 0; o < 6; ++o) {
        const float d = std::fabs(out[r * 6 + o] - ref[r * 6 + o]);
        EXPECT_LE(d, bound[o]) << "m=" << m << " r=" << r << " o=" << o;
        exact += d <= 1e-5f * (1 + std::fabs(ref[r * 6 + o]));
      }
    }
    // Ties are rare: nearly every output must agree to float precision.
    EXPECT_GE(exact, m * 6 * 9 / 10) << "m=" << m;
  }
}

TEST_P(Int8MlpVsRefTest, CloseToFp32OnCalibratedData) {
  const Activation act = activation();
  const Fp32Weights w({64, 128, 64, 8}, 8);
  const int64_t m = 256;
  const std::vector<float> x = RandomInput(m * 64, 18);
  // Calibrated on the evaluated rows: no activation saturates.
  const Int8MlpParams params = QuantizeMlp(w.layers, x.data(), m, arithmetic());
  auto mlp = Int8Mlp::Create(params.Views(), act, arithmetic());
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  std::vector<float> q(m * 8), f(m * 8);
  ASSERT_TRUE((*mlp)->Run(x.data(), m, q.data()).ok());
  Fp32MlpRef(w.layers, act, x.data(), m, f.data());
  float max_abs = 0, max_err = 0, sum_err = 0;
  for (int64_t i = 0; i < m * 8; ++i) {
    max_abs = std::max(max_abs, std::fabs(f[i]));
    max_err = std::max(max_err, std::fabs(q[i] - f[i]));
    sum_err += std::fabs(q[i] - f[i]);
  }
  // 8-bit activations and weights over three layers: a few percent of the
  // output range at worst, well under 1 % on average. A reduced arithmetic
  // halves the steps of one operand (7 bits), which at most doubles the
  // rounding error it contributes: twice the bounds.
  const float k = arithmetic() == Int8Arithmetic::kFull ? 1.0f : 2.0f;
  EXPECT_LE(max_err, k * 0.05f * max_abs) << "mean " << sum_err / (m * 8);
  EXPECT_LE(sum_err / (m * 8), k * 0.01f * max_abs);
  RecordProperty("max_err_rel", std::to_string(max_err / max_abs));
  RecordProperty("mean_err_rel", std::to_string(sum_err / (m * 8) / max_abs));
}

std::string VsRefTestName(
    const ::testing::TestParamInfo<std::tuple<Activation, Int8Arithmetic>>&
        info) {
  static const char* const kActivations[] = {"none", "relu", "sigmoid"};
  return std::string(kActivations[static_cast<int>(std::get<0>(info.param))]) +
         "_" + Int8ArithmeticTestName(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    LastActivationsAndArithmetics, Int8MlpVsRefTest,
    ::testing::Combine(::testing::Values(Activation::kNone, Activation::kRelu,
                                         Activation::kSigmoid),
                       ::testing::ValuesIn(kAllInt8Arithmetics)),
    VsRefTestName);

INSTANTIATE_TEST_SUITE_P(AllArithmetics, Int8ArithmeticTest,
                         ::testing::ValuesIn(kAllInt8Arithmetics),
                         ArithmeticTestName);

TEST(Int8KernelsTest, ProbeVerdictHoldsForEveryArithmetic) {
  // Worst case of each arithmetic through a real two-layer Int8Mlp: every
  // input at its top code, every weight at +max, so every hidden code
  // saturates at its top too and every product pair of both matmuls is as
  // large as the arithmetic allows. Kernels that saturate int16 pair sums
  // lose about half of each sum; exact ones match the reference.
  const Int8KernelReport& report = Int8Kernels();
  RecordProperty("isa", report.isa);
  RecordProperty("implementation", report.implementation);
  RecordProperty("recommended", Int8ArithmeticName(report.recommended));
  EXPECT_FALSE(report.isa.empty());
  EXPECT_FALSE(report.implementation.empty());
  EXPECT_TRUE(report.IsExact(report.recommended)) << report.Describe();
  for (Int8Arithmetic a : kAllInt8Arithmetics) {
    const int32_t w_max = LayerRanges(a, true).weight_max;
    const int k = 64, hidden = 64, out = 8;
    const std::vector<int8_t> w0(k * hidden, static_cast<int8_t>(w_max));
    const std::vector<int8_t> w1(hidden * out, static_cast<int8_t>(w_max));
    const std::vector<float> ws0(hidden, 1.0f), ws1(out, 1e-3f);
    const std::vector<Int8LinearLayer> layers = {
        {k, hidden, w0.data(), ws0.data(), nullptr, 1.0f / 64},
        {hidden, out, w1.data(), ws1.data(), nullptr, 1.0f}};
    auto mlp = Int8Mlp::Create(layers, Activation::kNone, a);
    ASSERT_TRUE(mlp.ok()) << mlp.status();
    for (int64_t m : {1, 16, 17}) {
      const std::vector<float> x(m * k, 1000.0f);
      std::vector<float> y(m * out), ref(m * out);
      ASSERT_TRUE((*mlp)->Run(x.data(), m, y.data()).ok());
      Int8MlpRef(layers, a, Activation::kNone, x.data(), m, ref.data());
      // hidden codes all at the top (255 or 127): y = 64 * top * w_max / 1000.
      const float top = a == Int8Arithmetic::kReducedActivations ? 127 : 255;
      ASSERT_FLOAT_EQ(ref[0], hidden * top * w_max * 1e-3f);
      float max_rel = 0;
      for (int64_t i = 0; i < m * out; ++i) {
        max_rel = std::max(max_rel, std::fabs(y[i] - ref[i]) / ref[i]);
      }
      if (report.IsExact(a)) {
        EXPECT_LE(max_rel, 1e-6f) << Int8ArithmeticName(a) << " m=" << m;
      } else {
        EXPECT_GE(max_rel, 0.1f) << Int8ArithmeticName(a) << " m=" << m
                                 << ": the probe says it saturates";
      }
    }
  }
}

TEST(Int8KernelsTest, EveryPrimitiveOfAnMlpRunsAProbedKernel) {
  // The probe's verdict speaks for the kernels it ran; the MLPs build a
  // primitive per layer and row count (tails of 1-15 rows, multiples of 16),
  // with scales and post-ops. Every one of them must be a kernel the probe
  // saw, at the widths of rm4's heavy user top MLP and of a small stack.
  const Int8KernelReport& report = Int8Kernels();
  const std::vector<std::string> probed =
      absl::StrSplit(report.implementation, '/');
  for (const std::vector<int>& widths :
       {std::vector<int>{256, 1920, 768}, std::vector<int>{48, 96, 40, 6}}) {
    const Fp32Weights w(widths, 41);
    const std::vector<float> calib = RandomInput(64 * widths[0], 42);
    const Int8MlpParams params =
        QuantizeMlp(w.layers, calib.data(), 64, report.recommended);
    auto mlp =
        Int8Mlp::Create(params.Views(), Activation::kRelu, params.arithmetic);
    ASSERT_TRUE(mlp.ok()) << mlp.status();
    for (int64_t m : {1, 2, 7, 15, 16, 17, 32, 33, 100, 1024}) {
      const std::vector<float> x = RandomInput(m * widths[0], m);
      std::vector<float> y(m * widths.back());
      ASSERT_TRUE((*mlp)->Run(x.data(), m, y.data()).ok());
    }
    for (const std::string& impl : (*mlp)->Implementations()) {
      EXPECT_THAT(probed, ::testing::Contains(impl))
          << "widths " << widths[0] << "..." << widths.back() << "; "
          << report.Describe();
    }
  }
}

TEST(Int8KernelsTest, HonoursTheIsaCapOfTheCappedRuns) {
  // The TEST@avx2 and TEST@avx512_core runs (CMakeLists.txt, duet_test)
  // exist to prove the arithmetic of CPUs without VNNI; under either cap
  // full 8-bit codes must saturate, or the run proved nothing.
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  const std::string isa = cap != nullptr ? cap : "";
  if (isa != "AVX2" && isa != "AVX512_CORE") {
    GTEST_SKIP() << "runs under ONEDNN_MAX_CPU_ISA=AVX2 or AVX512_CORE only "
                    "(the @avx2 and @avx512_core entries); here it is '"
                 << isa << "'";
  }
  EXPECT_FALSE(Int8Kernels().IsExact(Int8Arithmetic::kFull))
      << Int8Kernels().Describe();
  EXPECT_EQ(Int8Kernels().recommended, Int8Arithmetic::kReducedWeights);
  EXPECT_EQ(Int8Kernels().implementation, "gemm:jit");
}

TEST(Int8MlpTest, QuantizeMlpScalesPerArithmetic) {
  const std::vector<float> w = {0.5f, -1.27f, 0.0f, 0.0f};  // row 1 is zero
  const std::vector<float> b = {0.1f, 0.2f};
  const std::vector<float> w2 = {1.0f, 1.0f};
  const std::vector<LinearLayer> layers = {{2, 2, w.data(), b.data()},
                                           {2, 1, w2.data(), nullptr}};
  // Hidden = relu(0.5 x0 - 1.27 x1 + 0.1, 0.2): maxima 2.0 over the rows.
  const std::vector<float> calib = {-2.54f, 0.5f, 1.0f, -1.0f};
  const Int8MlpParams p =
      QuantizeMlp(layers, calib.data(), 2, Int8Arithmetic::kFull);
  ASSERT_EQ(p.layers.size(), 2u);
  EXPECT_EQ(p.arithmetic, Int8Arithmetic::kFull);
  EXPECT_FLOAT_EQ(p.layers[0].input_scale, 2.54f / 127);
  EXPECT_THAT(p.layers[0].weight_scale,
              ElementsAre(FloatNear(0.01f, 1e-8f), 1.0f));
  EXPECT_THAT(p.layers[0].weight, ElementsAre(50, -127, 0, 0));
  EXPECT_THAT(p.layers[0].bias, ElementsAre(0.1f, 0.2f));
  // Row 1 of calib: 0.5 + 1.27 + 0.1 = 1.87; row 0: -1.27 - 0.635 + 0.1 < 0.
  EXPECT_FLOAT_EQ(p.layers[1].input_scale, 1.87f / 255);
  EXPECT_THAT(p.layers[1].bias, ElementsAre(0.0f));

  // Reduced weights: 63 levels per side; inputs as full.
  const Int8MlpParams rw =
      QuantizeMlp(layers, calib.data(), 2, Int8Arithmetic::kReducedWeights);
  EXPECT_FLOAT_EQ(rw.layers[0].weight_scale[0], 1.27f / 63);
  EXPECT_THAT(rw.layers[0].weight, ElementsAre(25, -63, 0, 0));  // 24.8
  EXPECT_FLOAT_EQ(rw.layers[0].input_scale, 2.54f / 127);
  EXPECT_FLOAT_EQ(rw.layers[1].input_scale, 1.87f / 255);
  EXPECT_THAT(rw.layers[1].weight, ElementsAre(63, 63));

  // Reduced activations: first input 63 levels around the zero point,
  // hidden 127; weights as full.
  const Int8MlpParams ra =
      QuantizeMlp(layers, calib.data(), 2, Int8Arithmetic::kReducedActivations);
  EXPECT_FLOAT_EQ(ra.layers[0].input_scale, 2.54f / 63);
  EXPECT_FLOAT_EQ(ra.layers[1].input_scale, 1.87f / 127);
  EXPECT_THAT(ra.layers[0].weight, ElementsAre(50, -127, 0, 0));
}

TEST(Int8MlpTest, RequantizeEqualsQuantizingForTheTarget) {
  // What a device re-derives at load from the stored full-arithmetic stack
  // is what quantizing for its arithmetic in the first place gives.
  const Fp32Weights w({40, 72, 24, 5}, 31);
  const std::vector<float> calib = RandomInput(100 * 40, 32);
  const Int8MlpParams full =
      QuantizeMlp(w.layers, calib.data(), 100, Int8Arithmetic::kFull);
  for (Int8Arithmetic target : kAllInt8Arithmetics) {
    auto re = RequantizeMlp(full.Views(), w.layers, target);
    ASSERT_TRUE(re.ok()) << re.status();
    const Int8MlpParams direct =
        QuantizeMlp(w.layers, calib.data(), 100, target);
    EXPECT_EQ(re->arithmetic, target);
    ASSERT_EQ(re->layers.size(), direct.layers.size());
    for (size_t l = 0; l < direct.layers.size(); ++l) {
      SCOPED_TRACE(absl::StrCat(Int8ArithmeticName(target), " layer ", l));
      EXPECT_FLOAT_EQ(re->layers[l].input_scale, direct.layers[l].input_scale);
      EXPECT_EQ(re->layers[l].weight, direct.layers[l].weight);
      EXPECT_THAT(
          re->layers[l].weight_scale,
          Pointwise(::testing::FloatEq(), direct.layers[l].weight_scale));
      EXPECT_EQ(re->layers[l].bias, direct.layers[l].bias);
    }
  }
  std::vector<LinearLayer> fewer = w.layers;
  fewer.pop_back();
  EXPECT_THAT(
      RequantizeMlp(full.Views(), fewer, Int8Arithmetic::kReducedWeights)
          .status()
          .message(),
      HasSubstr("int8 stack has 3 layers, its fp32 stack 2"));
}

TEST(Int8MlpTest, ConcurrentRunsGiveIdenticalResults) {
  const Fp32Weights w({96, 64, 16}, 4);
  const std::vector<float> calib = RandomInput(64 * 96, 5);
  const Int8MlpParams params =
      QuantizeMlp(w.layers, calib.data(), 64, Int8Kernels().recommended);
  auto mlp =
      Int8Mlp::Create(params.Views(), Activation::kRelu, params.arithmetic);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  ExpectConcurrentRunsMatch(**mlp, 96, 16, {1, 5, 64, 100});
}

TEST(Int8MlpTest, CreateRejectsBadParameters) {
  const Int8Arithmetic full = Int8Arithmetic::kFull;
  EXPECT_EQ(Int8Mlp::Create({}, Activation::kNone, full).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int8_t> w(12, 1);
  const std::vector<float> ws(4, 0.1f);
  std::vector<Int8LinearLayer> layers = {
      {3, 4, w.data(), ws.data(), nullptr, 0.5f},
      {3, 2, w.data(), ws.data(), nullptr, 0.5f}};
  absl::Status s = Int8Mlp::Create(layers, Activation::kNone, full).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("layer 1 has in=3 but layer 0 has out=4"));
  layers.resize(1);
  layers[0].input_scale = 0.0f;
  s = Int8Mlp::Create(layers, Activation::kNone, full).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("input_scale 0"));
  layers[0].input_scale = 1.0f;
  const std::vector<float> bad_ws = {0.1f, -1.0f, 0.1f, 0.1f};
  layers[0].weight_scale = bad_ws.data();
  s = Int8Mlp::Create(layers, Activation::kNone, full).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("weight_scale[1] = -1"));
  // A code the arithmetic cannot run exactly is refused, not saturated.
  layers[0].weight_scale = ws.data();
  std::vector<int8_t> wide(12, 1);
  wide[7] = 64;
  layers[0].weight = wide.data();
  EXPECT_TRUE(Int8Mlp::Create(layers, Activation::kNone, full).ok());
  s = Int8Mlp::Create(layers, Activation::kNone,
                      Int8Arithmetic::kReducedWeights)
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("weight code 64 at [2][1]; reduced-weights arithmetic "
                        "needs codes in [-63, 63]"));
}

TEST(Int8ArithmeticNamesTest, ParseRoundTripsAndRejectsOthers) {
  for (Int8Arithmetic a : kAllInt8Arithmetics) {
    auto parsed = ParseInt8Arithmetic(Int8ArithmeticName(a));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, a);
  }
  const absl::Status s = ParseInt8Arithmetic("7bit").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'7bit' is not one of full, "
                                     "reduced-weights, reduced-activations"));
}

}  // namespace
}  // namespace duet::common
