#include "common/model/reference_model.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_matchers.h"
#include "common/kernels/int8_test_util.h"
#include "common/kernels/mlp_reference.h"
#include "common/kernels/top_k.h"
#include "common/model/model_config.h"
#include "common/model/request_checks.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Model> LoadAll(const std::string& dir) {
  LoadOptions options;
  options.parts = {true, true, true};
  auto model = Model::Load(dir, options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

UserInputs RandomUser(const Model& m, std::mt19937_64& rng, int history) {
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> item(0, m.catalog().num_items() - 1);
  UserInputs u;
  for (int i = 0; i < m.dims().static_in; ++i)
    u.static_features.push_back(unit(rng));
  for (int i = 0; i < m.dims().dynamic_in; ++i)
    u.dynamic_features.push_back(unit(rng));
  for (int i = 0; i < history; ++i) u.history.push_back(item(rng));
  return u;
}

// n random catalog items; distinct ones when `distinct` (needs n <= items).
std::vector<int64_t> RandomItems(const Model& m, std::mt19937_64& rng, int n,
                                 bool distinct = false) {
  const int64_t items = m.catalog().num_items();
  EXPECT_TRUE(!distinct || n <= items);
  std::uniform_int_distribution<int64_t> item(0, items - 1);
  std::vector<int64_t> v;
  absl::flat_hash_set<int64_t> seen;
  while (static_cast<int>(v.size()) < n) {
    const int64_t x = item(rng);
    if (!distinct || seen.insert(x).second) v.push_back(x);
  }
  return v;
}

std::vector<float> RunRef(const std::vector<LinearLayer>& layers, Activation a,
                          std::vector<float> x) {
  if (layers.empty()) return x;
  std::vector<float> y(layers.back().out);
  Fp32MlpRef(layers, a, x.data(), 1, y.data());
  return y;
}

// The model math of DESIGN.md §2 for one candidate, in plain loops with the
// scalar reference kernels and nothing shared with the evaluators.
double ScalarCtr(const Model& m, const UserInputs& user, int64_t item) {
  const auto& c = m.config();
  const int dim = c.embedding_dim();
  std::vector<float> x =
      RunRef(m.static_bottom_layers(), Activation::kRelu, user.static_features);
  const std::vector<float> zc = RunRef(
      m.dynamic_bottom_layers(), Activation::kRelu, user.dynamic_features);
  x.insert(x.end(), zc.begin(), zc.end());
  for (int t = 0; t < c.user_tables_size(); ++t) {
    const int len = std::min<int>(c.user_tables(t).history_length(),
                                  static_cast<int>(user.history.size()));
    std::vector<int64_t> keys;
    for (int i = 0; i < len; ++i) {
      keys.push_back(m.catalog().HistoryKey(
          user.history[user.history.size() - len + i], t));
    }
    std::vector<float> p(dim);
    const int32_t offsets[2] = {0, len};
    EmbeddingBagSumRef(m.user_table(t), keys.data(), offsets, 1, p.data(), dim,
                       false);
    x.insert(x.end(), p.begin(), p.end());
  }
  std::vector<float> joint = RunRef(m.user_top_layers(), Activation::kRelu, x);
  std::vector<float> f;
  for (int t = 0; t < c.item_tables_size(); ++t) {
    std::vector<int64_t> ids(m.catalog().lookups_per_item(t));
    m.catalog().ItemSparseIds(item, t, ids.data());
    std::vector<float> p(dim);
    const int32_t offsets[2] = {0, static_cast<int32_t>(ids.size())};
    EmbeddingBagSumRef(m.item_table(t), ids.data(), offsets, 1, p.data(), dim,
                       false);
    f.insert(f.end(), p.begin(), p.end());
  }
  const std::vector<float> v =
      RunRef(m.item_top_layers(), Activation::kRelu, f);
  joint.insert(joint.end(), v.begin(), v.end());
  return RunRef(m.combined_top_layers(), Activation::kSigmoid, joint)[0];
}

class PresetEquivalenceTest : public ::testing::TestWithParam<std::string> {};

// For every preset, scaled: the fp32 split model equals the monolithic model
// within 1e-5 for N in {1, 8, 1024}, and both equal the scalar oracle.
TEST_P(PresetEquivalenceTest, SplitEqualsMonolithic) {
  TempDir dir;
  const double scale = GetParam() == "tiny" ? 1.0 : 0.0005;
  ASSERT_TRUE(GenerateTestModel(GetParam(), scale, dir.path()).ok());
  auto model = LoadAll(dir.path());
  ASSERT_NE(model, nullptr);
  const Model& m = *model;
  const MonolithicModel mono(&m);
  const SplitModel split(&m);
  std::mt19937_64 rng(42);
  int max_history = 0;
  for (const auto& t : m.config().user_tables()) {
    max_history = std::max(max_history, t.history_length());
  }
  for (int n : {1, 8, 1024}) {
    // Empty, short and full histories: a new user has no history yet, and
    // then a scratchpad that is not full.
    for (int history : {0, max_history / 2 + 1, max_history + 3}) {
      const UserInputs user = RandomUser(m, rng, history);
      const std::vector<int64_t> items = RandomItems(m, rng, n);
      ASSERT_TRUE(ValidateUserInputs(m, user).ok());
      ASSERT_TRUE(ValidateItemIds(m.catalog(), items, n).ok());
      std::vector<float> ctr_mono(n), ctr_split(n), pooled(m.dims().pooled),
          u(m.dims().user_out);
      ASSERT_TRUE(mono.Score(user, items, ctr_mono.data()).ok());
      PoolHistory(m, user.history, pooled.data());
      ASSERT_TRUE(split
                      .UserVector(user.static_features.data(),
                                  user.dynamic_features.data(), pooled.data(),
                                  /*int8=*/false, u.data())
                      .ok());
      ASSERT_TRUE(split.ScoreItems(u.data(), items, ctr_split.data()).ok());
      for (int j = 0; j < n; ++j) {
        ASSERT_NEAR(ctr_split[j], ctr_mono[j], 1e-5)
            << GetParam() << " n=" << n << " j=" << j;
      }
      for (int j : {0, n - 1}) {
        EXPECT_NEAR(ctr_mono[j], ScalarCtr(m, user, items[j]), 1e-5)
            << GetParam() << " n=" << n << " j=" << j;
      }
    }
  }
}

// The int8 user top MLP of a preset in each int8 arithmetic this CPU runs
// exactly (int8_arithmetic.h; the others are proven to saturate by
// mlp_test's Int8KernelsTest).
class PresetInt8Test
    : public ::testing::TestWithParam<std::tuple<std::string, Int8Arithmetic>> {
 protected:
  void SetUp() override {
    // This CPU (or the run's ISA cap) cannot compute the arithmetic exactly:
    // the edge never runs it here, so its bounds do not apply (the probe's
    // verdict is itself tested by ProbeVerdictHoldsForEveryArithmetic).
    if (const std::string why = InexactInt8Reason(arithmetic()); !why.empty()) {
      GTEST_SKIP() << why;
    }
  }
  const std::string& preset() const { return std::get<0>(GetParam()); }
  Int8Arithmetic arithmetic() const { return std::get<1>(GetParam()); }
  std::unique_ptr<Model> Load(const std::string& dir) const {
    LoadOptions options;
    options.parts = {true, true, true};
    options.int8_arithmetic = arithmetic();
    auto model = Model::Load(dir, options);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  }
};

// The int8 user top MLP against fp32, over 40 users x 256 candidates. Bounds:
// with a calibrated per-tensor activation scale, each int8 layer adds an
// error of about half an LSB per value, well under 1 % of the activation
// range; through the sigmoid (slope <= 1/4) that keeps mean |dCTR| below
// 0.01, and the top-10 sets agree on at least 8 of 10 items on average
// (swaps happen only among near-ties). A reduced arithmetic gives one
// operand 7 bits, which at most doubles its rounding error; measured mean
// |dCTR| (docs/ARCHITECTURE.md, "Int8 arithmetic"): 0.0008-0.0027 full,
// 0.0014-0.0032 reduced weights, 0.0018-0.0037 reduced activations, all
// inside the same bounds. A broken scale or a wrong sign gives |dCTR| ~ 0.1
// and overlap near 10 / 256 * 10.
TEST_P(PresetInt8Test, Int8UserTopStaysCloseToFp32) {
  TempDir dir;
  const double scale = preset() == "tiny" ? 1.0 : 0.0005;
  ASSERT_TRUE(GenerateTestModel(preset(), scale, dir.path()).ok());
  auto model = Load(dir.path());
  ASSERT_NE(model, nullptr);
  const Model& m = *model;
  ASSERT_EQ(m.int8_arithmetic(), arithmetic());
  const SplitModel split(&m);
  std::mt19937_64 rng(7);
  const int n = 256, users = 40;
  double sum_abs = 0, overlap = 0;
  for (int q = 0; q < users; ++q) {
    const UserInputs user = RandomUser(m, rng, 400);
    const auto items = RandomItems(m, rng, n, /*distinct=*/true);
    std::vector<float> pooled(m.dims().pooled), u32(m.dims().user_out),
        u8(m.dims().user_out), c32(n), c8(n);
    PoolHistory(m, user.history, pooled.data());
    ASSERT_TRUE(split
                    .UserVector(user.static_features.data(),
                                user.dynamic_features.data(), pooled.data(),
                                false, u32.data())
                    .ok());
    ASSERT_TRUE(split
                    .UserVector(user.static_features.data(),
                                user.dynamic_features.data(), pooled.data(),
                                true, u8.data())
                    .ok());
    if (q == 0) {
      // The served int8 MLP computes what its arithmetic specifies.
      std::vector<float> x(m.dims().user_top_in), ref(m.dims().user_out);
      const int zs = m.dims().static_out, zc = m.dims().dynamic_out;
      ASSERT_TRUE(RunOrIdentity(m.static_bottom(), user.static_features.data(),
                                1, m.dims().static_in, x.data())
                      .ok());
      ASSERT_TRUE(RunOrIdentity(m.dynamic_bottom(),
                                user.dynamic_features.data(), 1,
                                m.dims().dynamic_in, x.data() + zs)
                      .ok());
      std::copy(pooled.begin(), pooled.end(), x.begin() + zs + zc);
      Int8MlpRef(m.user_top_int8_layers(), arithmetic(), Activation::kRelu,
                 x.data(), 1, ref.data());
      for (int i = 0; i < m.dims().user_out; ++i) {
        EXPECT_NEAR(u8[i], ref[i], 1e-4f * (1.0f + std::fabs(ref[i])))
            << preset() << " u[" << i << "]";
      }
    }
    ASSERT_TRUE(split.ScoreItems(u32.data(), items, c32.data()).ok());
    ASSERT_TRUE(split.ScoreItems(u8.data(), items, c8.data()).ok());
    for (int j = 0; j < n; ++j) sum_abs += std::fabs(c32[j] - c8[j]);
    const auto a = TopK(items.data(), c32.data(), n, 10);
    const auto b = TopK(items.data(), c8.data(), n, 10);
    for (const auto& x : a) {
      for (const auto& y : b) overlap += x.item_id == y.item_id;
    }
  }
  const double mean_abs = sum_abs / (users * n);
  const double mean_overlap = overlap / users;
  RecordProperty("mean_abs_dctr", std::to_string(mean_abs));
  RecordProperty("top10_overlap", std::to_string(mean_overlap));
  EXPECT_LT(mean_abs, 0.01) << preset();
  EXPECT_GE(mean_overlap, 8.0) << preset();
}

std::string PresetInt8TestName(
    const ::testing::TestParamInfo<std::tuple<std::string, Int8Arithmetic>>&
        info) {
  return std::get<0>(info.param) + "_" +
         Int8ArithmeticTestName(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    AllPresetsAndArithmetics, PresetInt8Test,
    ::testing::Combine(::testing::Values("tiny", "rm1", "rm2", "rm3", "rm4",
                                         "rm5"),
                       ::testing::ValuesIn(kAllInt8Arithmetics)),
    PresetInt8TestName);

INSTANTIATE_TEST_SUITE_P(AllPresets, PresetEquivalenceTest,
                         ::testing::Values("tiny", "rm1", "rm2", "rm3", "rm4",
                                           "rm5"));

// DESIGN.md §2, "Split depth and personalization": four users with
// different profiles, contexts and histories rank the same 200 candidates.
// A preset's default (personalizing) split gives them different top-10s; the
// paper's split, whose combined top MLP is one linear layer for rm1-rm4,
// gives all of them the same order.
class PersonalizationTest
    : public ::testing::TestWithParam<std::tuple<std::string, PresetSplit>> {
 protected:
  const std::string& preset() const { return std::get<0>(GetParam()); }
  PresetSplit split() const { return std::get<1>(GetParam()); }
};

TEST_P(PersonalizationTest, RankingsDependOnTheUserUnlessTheTopIsLinear) {
  TempDir dir;
  const double scale = preset() == "tiny" ? 1.0 : 0.0005;
  ASSERT_TRUE(
      GenerateTestModel(preset(), scale, dir.path(), 1, 1, split()).ok());
  auto model = LoadAll(dir.path());
  ASSERT_NE(model, nullptr);
  const Model& m = *model;
  const bool personalizes = RankingCanDependOnUser(m.config());
  // rm5 (DIN) is split after its first layer in the paper as well.
  EXPECT_EQ(personalizes,
            split() == PresetSplit::kPersonalized || preset() == "rm5")
      << preset();
  const SplitModel evaluator(&m);
  std::mt19937_64 rng(11);
  const int n = std::min<int64_t>(200, m.catalog().num_items());
  const std::vector<int64_t> items = RandomItems(m, rng, n, /*distinct=*/true);
  std::vector<std::vector<int64_t>> tops;
  for (int user = 0; user < 4; ++user) {
    const UserInputs in = RandomUser(m, rng, 400);
    std::vector<float> pooled(m.dims().pooled), u(m.dims().user_out), ctr(n);
    PoolHistory(m, in.history, pooled.data());
    ASSERT_TRUE(evaluator
                    .UserVector(in.static_features.data(),
                                in.dynamic_features.data(), pooled.data(),
                                /*int8=*/false, u.data())
                    .ok());
    ASSERT_TRUE(evaluator.ScoreItems(u.data(), items, ctr.data()).ok());
    std::vector<int64_t> top;
    for (const auto& s : TopK(items.data(), ctr.data(), n, 10)) {
      top.push_back(s.item_id);
    }
    tops.push_back(top);
  }
  int differing_pairs = 0;
  for (size_t a = 0; a < tops.size(); ++a) {
    for (size_t b = a + 1; b < tops.size(); ++b) {
      differing_pairs += tops[a] != tops[b];
    }
  }
  if (personalizes) {
    EXPECT_GT(differing_pairs, 0) << preset() << ": every user got the same "
                                  << "top-10 from a personalizing split";
  } else {
    EXPECT_EQ(differing_pairs, 0)
        << preset() << ": a linear combined top must give one global order";
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllPresetsAndSplits, PersonalizationTest,
    ::testing::Combine(
        ::testing::Values("tiny", "rm1", "rm2", "rm3", "rm4", "rm5"),
        ::testing::Values(PresetSplit::kPersonalized, PresetSplit::kPaper)),
    [](const auto& info) {
      return std::get<0>(info.param) + "_" +
             std::string(PresetSplitName(std::get<1>(info.param)));
    });

class ValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(GenerateTestModel("tiny", 1.0, dir_.path()).ok());
    model_ = LoadAll(dir_.path());
    ASSERT_NE(model_, nullptr);
  }
  TempDir dir_;
  std::unique_ptr<Model> model_;
};

TEST_F(ValidationTest, RejectsBadUserInputsNamingTheField) {
  std::mt19937_64 rng(1);
  UserInputs user = RandomUser(*model_, rng, 3);
  user.static_features.pop_back();
  absl::Status s = ValidateUserInputs(*model_, user);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("static_features has 13 values"));
  EXPECT_THAT(s.message(), HasSubstr("expects 14"));

  user = RandomUser(*model_, rng, 3);
  user.dynamic_features[1] = std::nanf("");
  EXPECT_THAT(ValidateUserInputs(*model_, user).message(),
              HasSubstr("dynamic_features[1] is nan"));

  user = RandomUser(*model_, rng, 3);
  user.history[2] = 500;
  EXPECT_THAT(
      ValidateUserInputs(*model_, user).message(),
      HasSubstr("history_item_ids[2] is 500, valid item ids are [0, 500)"));
}

TEST_F(ValidationTest, RejectsBadCandidates) {
  const Catalog& catalog = model_->catalog();
  EXPECT_THAT(ValidateItemIds(catalog, {}, 8),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("candidate_ids is empty; a query needs 1 to "
                                 "8 candidates")));
  const int64_t ids[] = {3, -1};
  EXPECT_THAT(ValidateItemIds(catalog, ids, 8),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("candidate_ids[1] is -1, valid item ids are "
                                 "[0, 500)")));
  const int64_t too_many[] = {1, 2, 3};
  EXPECT_THAT(ValidateItemIds(catalog, too_many, 2, "item_ids"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("item_ids has 3 ids, this server accepts at "
                                 "most 2 (--max_candidates)")));
  EXPECT_TRUE(ValidateItemIds(catalog, too_many, 3).ok());
  const int64_t last[] = {0, 499};
  EXPECT_TRUE(ValidateItemIds(catalog, last, 2).ok());
  const int64_t past[] = {500};
  EXPECT_THAT(ValidateItemIds(catalog, past, 2).message(),
              HasSubstr("candidate_ids[0] is 500"));
}

TEST(TopKCheckTest, AcceptsOneToTheNumberOfCandidates) {
  EXPECT_TRUE(ValidateTopK(1, 4).ok());
  EXPECT_TRUE(ValidateTopK(4, 4).ok());
  for (int64_t k : {int64_t{0}, int64_t{-3}, int64_t{5}}) {
    EXPECT_THAT(ValidateTopK(k, 4),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(absl::StrCat("top_k is ", k,
                                                ", must be in [1, 4] (the "
                                                "number of candidates)"))));
  }
}

TEST(TopKTest, OrdersByCtrThenCandidateOrder) {
  const int64_t ids[] = {10, 11, 12, 13};
  const float ctr[] = {0.2f, 0.9f, 0.2f, 0.5f};
  const auto top = TopK(ids, ctr, 4, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].item_id, 11);
  EXPECT_EQ(top[1].item_id, 13);
  EXPECT_EQ(top[2].item_id, 10);  // tie with 12: earlier candidate first
  EXPECT_EQ(TopK(ids, ctr, 4, 10).size(), 4u);
}

TEST(TopKTest, CheckFiniteScoresNamesFirstNonFiniteCandidate) {
  const int64_t ids[] = {10, 11, 12, 13};
  const float ok[] = {0.f, 1.f, 0.5f, 1e-30f};
  EXPECT_TRUE(CheckFiniteScores(ids, ok, 4).ok());
  const float bad[] = {0.2f, 0.3f, std::nanf(""), INFINITY};
  const absl::Status s = CheckFiniteScores(ids, bad, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("the CTR of candidate 2 (item 12) is nan: the inputs "
                        "overflow float32"));
  EXPECT_TRUE(CheckFiniteScores(ids, bad, 2).ok());
}

}  // namespace
}  // namespace duet::common
