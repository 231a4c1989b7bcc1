#include "cloud/item_table.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cloud/internal/scoring_test_util.h"
#include "cloud/internal/test_models.h"
#include "cloud/model_runtime.h"
#include "cloud/scoring_core.h"
#include "common/base/status_matchers.h"
#include "common/model/reference_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using common::StatusIs;
using ::testing::HasSubstr;

TEST(ItemTablePlanTest, ChoosesTheFormCoveringMostItems) {
  constexpr auto kFp32 = ItemTablePrecisionChoice::kFp32;
  // Both cover the catalog: the first layer's contributions (less work).
  ItemTable::Plan p = ItemTable::ChoosePlan(1000, 32, 64, 1 << 20, kFp32);
  EXPECT_EQ(p.form, ItemTableForm::kFirstLayer);
  EXPECT_EQ(p.precision, ItemTablePrecision::kFp32);
  EXPECT_EQ(p.rows, 1000);
  EXPECT_EQ(p.width, 64);
  // 100 rows of v_j fit, 50 of W_v v_j: v_j.
  p = ItemTable::ChoosePlan(1000, 32, 64, 100 * 32 * 4, kFp32);
  EXPECT_EQ(p.form, ItemTableForm::kItemVector);
  EXPECT_EQ(p.rows, 100);
  EXPECT_EQ(p.bytes(), 100 * 32 * 4);
  // A narrower first layer (the paper split's single output) always wins.
  p = ItemTable::ChoosePlan(1000, 32, 1, 400, kFp32);
  EXPECT_EQ(p.form, ItemTableForm::kFirstLayer);
  EXPECT_EQ(p.rows, 100);
  EXPECT_EQ(ItemTable::ChoosePlan(1000, 32, 64, 0).rows, 0);
}

TEST(ItemTablePlanTest, AutoTakesInt8RowsOnlyWhenFp32CannotCoverTheCatalog) {
  // fp32 covers the catalog: fp32 (exact), although int8 would too.
  ItemTable::Plan p = ItemTable::ChoosePlan(1000, 32, 64, 1000 * 64 * 4);
  EXPECT_EQ(p.precision, ItemTablePrecision::kFp32);
  EXPECT_EQ(p.form, ItemTableForm::kFirstLayer);
  EXPECT_EQ(p.rows, 1000);
  // 100 fp32 rows of v_j fit; int8 rows take 32 + 8 bytes: 320 of v_j.
  p = ItemTable::ChoosePlan(1000, 32, 64, 100 * 32 * 4);
  EXPECT_EQ(p.precision, ItemTablePrecision::kInt8);
  EXPECT_EQ(p.form, ItemTableForm::kItemVector);
  EXPECT_EQ(p.rows, 320);
  EXPECT_EQ(p.row_bytes(), 40);
  EXPECT_EQ(p.bytes(), 320 * 40);
  // int8 covering the catalog: the first layer's form, as for fp32.
  p = ItemTable::ChoosePlan(1000, 32, 64, 1000 * 72);
  EXPECT_EQ(p.precision, ItemTablePrecision::kInt8);
  EXPECT_EQ(p.form, ItemTableForm::kFirstLayer);
  EXPECT_EQ(p.rows, 1000);
  // Forced int8 even when fp32 would cover everything.
  p = ItemTable::ChoosePlan(1000, 32, 64, 1 << 20,
                            ItemTablePrecisionChoice::kInt8);
  EXPECT_EQ(p.precision, ItemTablePrecision::kInt8);
  EXPECT_EQ(p.rows, 1000);
  EXPECT_EQ(
      ItemTable::ChoosePlan(1000, 32, 64, 39, ItemTablePrecisionChoice::kInt8)
          .rows,
      0);
}

TEST(ItemTablePlanTest, ParsesThePrecisionFlag) {
  EXPECT_EQ(*ParseItemTablePrecision("auto"), ItemTablePrecisionChoice::kAuto);
  EXPECT_EQ(*ParseItemTablePrecision("fp32"), ItemTablePrecisionChoice::kFp32);
  EXPECT_EQ(*ParseItemTablePrecision("int8"), ItemTablePrecisionChoice::kInt8);
  EXPECT_THAT(ParseItemTablePrecision("fp16").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--item_table_precision is \"fp16\", must be "
                                 "auto, fp32 or int8")));
}

// int8 rows hold each value within (max - min) / 510 of the computed row.
TEST(ItemTableTest, Int8RowsAreWithinHalfAStepOfTheComputedRows) {
  constexpr int kWidth = 19;
  const ItemTable::Plan p = ItemTable::ChoosePlan(
      50, kWidth, kWidth, 50 * (kWidth + 8), ItemTablePrecisionChoice::kInt8);
  ASSERT_EQ(p.rows, 50);
  auto table = ItemTable::Create(p, {});
  ASSERT_TRUE(table.ok()) << table.status();
  auto value = [](int64_t item, int k) {
    return static_cast<float>(std::sin(0.37 * item + 1.3 * k) * (1 + item));
  };
  std::atomic<bool> stop{false};
  ASSERT_TRUE((*table)
                  ->Build(
                      [&](const int64_t* items, int n, float* rows) {
                        for (int i = 0; i < n; ++i) {
                          for (int k = 0; k < kWidth; ++k) {
                            rows[i * kWidth + k] = value(items[i], k);
                          }
                        }
                        return absl::OkStatus();
                      },
                      16, stop, nullptr)
                  .ok());
  EXPECT_EQ((*table)->bytes(), 50 * (kWidth + 8));
  std::vector<float> row(kWidth);
  for (int64_t item = 0; item < 50; ++item) {
    ASSERT_TRUE((*table)->CopyRow(item, (*table)->built_rows(), row.data()));
    float lo = value(item, 0), hi = lo;
    for (int k = 0; k < kWidth; ++k) {
      lo = std::min(lo, value(item, k));
      hi = std::max(hi, value(item, k));
    }
    const float half_step = (hi - lo) / 510 * 1.0001f + 1e-6f;
    for (int k = 0; k < kWidth; ++k) {
      EXPECT_NEAR(row[k], value(item, k), half_step)
          << "item " << item << " k " << k;
    }
  }
}

TEST(ItemTableTest, CreateRejectsBadOrders) {
  ItemTable::Plan p =
      ItemTable::ChoosePlan(10, 4, 4, 3 * 16, ItemTablePrecisionChoice::kFp32);
  ASSERT_EQ(p.rows, 3);
  EXPECT_THAT(ItemTable::Create(p, {1, 2}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("order has 2 items")));
  EXPECT_THAT(
      ItemTable::Create(p, {1, 2, 1}).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("repeated")));
  EXPECT_THAT(ItemTable::Create(p, {1, 2, 10}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("outside the catalog")));
}

TEST(ItemTableTest, ReadersSeeTheBuiltPrefixOnly) {
  ItemTable::Plan p =
      ItemTable::ChoosePlan(100, 2, 2, 6 * 8, ItemTablePrecisionChoice::kFp32);
  ASSERT_EQ(p.rows, 6);
  auto table = ItemTable::Create(p, {50, 7, 3, 99, 0, 12});
  ASSERT_TRUE(table.ok()) << table.status();
  ItemTable& t = **table;
  float row[2];
  EXPECT_FALSE(t.CopyRow(50, t.built_rows(), row));
  std::atomic<bool> stop{false};
  int chunks = 0;
  const absl::Status s = t.Build(
      [](const int64_t* items, int n, float* rows) {
        for (int i = 0; i < n; ++i) {
          rows[2 * i] = static_cast<float>(items[i]);
          rows[2 * i + 1] = -static_cast<float>(items[i]);
        }
        return absl::OkStatus();
      },
      2, stop, [&] { stop = ++chunks == 2; });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
  const int64_t built = t.built_rows();
  ASSERT_EQ(built, 4);
  for (int64_t item : {50, 7, 3, 99}) {
    ASSERT_TRUE(t.CopyRow(item, built, row)) << item;
    EXPECT_EQ(row[0], item);
    EXPECT_EQ(row[1], -item);
  }
  EXPECT_FALSE(t.CopyRow(0, built, row));   // planned, not built
  EXPECT_FALSE(t.CopyRow(12, built, row));  // planned, not built
  EXPECT_FALSE(t.CopyRow(1, built, row));   // not covered
  EXPECT_EQ(t.bytes(), 6 * 2 * 4 + 100 * 4);
}

// Scores through the item table equal the monolithic reference (DESIGN.md
// §2: fp32 within 1e-5) for every preset, with the table covering every
// candidate, some of them (the rest computed, through the cache or not) and
// none, in both forms. int8 rows: within the bound below.
struct ScoreCase {
  std::string preset;
  bool tight;  // a budget that makes v_j cover more items than W_v v_j
  ItemTablePrecisionChoice precision = ItemTablePrecisionChoice::kFp32;
};

// max_o sum_i |W[o][i]| over columns [begin, end) of a [out, in] layer: the
// operator norm of x -> W x in the max norm.
double MaxRowAbsSum(const common::LinearLayer& w, int begin, int end) {
  double norm = 0;
  for (int o = 0; o < w.out; ++o) {
    double sum = 0;
    for (int i = begin; i < end; ++i) {
      sum += std::fabs(w.weight[static_cast<size_t>(o) * w.in + i]);
    }
    norm = std::max(norm, sum);
  }
  return norm;
}

// An int8 row's values are within delta = (max - min) / 510 of the fp32
// row's (round to the nearest of 256 levels spanning [min, max]; the
// dequantized row keeps min and max). ReLU moves no difference up, a layer
// W multiplies its max norm by at most ||W||_inf, and the sigmoid's slope
// is at most 1/4. So a candidate's CTR moves by at most
//   delta / 4 * ||W_1||_inf * ... * ||W_last||_inf
// from the table's row (z_j = W_v v_j: the layers after the first; v_j:
// also W_v). Returns that factor (delta excluded).
double Int8Sensitivity(const common::Model& m, ItemTableForm form) {
  const std::vector<common::LinearLayer>& layers = m.combined_top_layers();
  double factor = 0.25;
  for (size_t l = 1; l < layers.size(); ++l) {
    factor *= MaxRowAbsSum(layers[l], 0, layers[l].in);
  }
  if (form == ItemTableForm::kItemVector) {
    factor *= MaxRowAbsSum(layers[0], m.dims().user_out, layers[0].in);
  }
  return factor;
}

// How many of `want`'s k best candidates are among `got`'s k best.
int TopKOverlap(const std::vector<float>& got, const std::vector<float>& want,
                int k) {
  auto best = [k](const std::vector<float>& ctr) {
    std::vector<int> idx(ctr.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int a, int b) { return ctr[a] > ctr[b]; });
    return std::set<int>(idx.begin(), idx.begin() + k);
  };
  const std::set<int> a = best(got), b = best(want);
  int overlap = 0;
  for (int i : a) overlap += b.count(i) > 0 ? 1 : 0;
  return overlap;
}

class ItemTableScoresTest : public ::testing::TestWithParam<ScoreCase> {
 protected:
  common::ThreadPool pool_{2, "item-table-test"};
};

TEST_P(ItemTableScoresTest, EqualTheMonolithicReference) {
  const ScoreCase& c = GetParam();
  common::LoadOptions all;
  all.parts.user_tables = true;
  auto loaded = common::Model::Load(ModelDir(c.preset), all);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const common::Model& m = **loaded;
  const common::ModelDims& d = m.dims();
  const int64_t num_items = m.catalog().num_items();
  constexpr int kN = 48;
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> item(0, num_items - 1);
  std::vector<int64_t> candidates;
  while (static_cast<int>(candidates.size()) < kN) {
    const int64_t id = item(rng);
    if (std::find(candidates.begin(), candidates.end(), id) ==
        candidates.end()) {
      candidates.push_back(id);
    }
  }
  // The monolithic reference for one user.
  common::UserInputs user;
  std::uniform_real_distribution<float> unit(0, 1);
  user.static_features.resize(d.static_in);
  user.dynamic_features.resize(d.dynamic_in);
  for (float& x : user.static_features) x = unit(rng);
  for (float& x : user.dynamic_features) x = unit(rng);
  for (int i = 0; i < 30; ++i) user.history.push_back(item(rng));
  std::vector<float> want(kN);
  ASSERT_TRUE(
      common::MonolithicModel(&m).Score(user, candidates, want.data()).ok());
  // u as the edge computes it (fp32).
  std::vector<float> pooled(d.pooled);
  common::PoolHistory(m, user.history, pooled.data());
  std::vector<float> u(d.user_out);
  ASSERT_TRUE(common::SplitModel(&m)
                  .UserVector(user.static_features.data(),
                              user.dynamic_features.data(), pooled.data(),
                              /*int8=*/false, u.data())
                  .ok());

  // Covered: the first half of the candidates, then other items.
  const int covered = kN / 2;
  std::vector<int64_t> order(candidates.begin(), candidates.begin() + covered);
  for (int64_t id = 0; static_cast<int>(order.size()) < 3 * kN; ++id) {
    if (std::find(candidates.begin(), candidates.end(), id) ==
        candidates.end()) {
      order.push_back(id);
    }
  }
  for (bool cache : {false, true}) {
    ModelRuntime::Options o;
    o.max_candidates = kN;
    o.buffer_sets = 2;
    o.force_lookup = LookupStrategy::kBatch;
    o.force_user = UserStrategy::kRecompute;
    o.placement.num_workers = 2;
    o.placement_sample_items = 300;
    o.item_cache_entries = cache ? 1000 : 0;
    o.item_cache_mode = CacheMode::kAlways;
    o.item_table_order = order;
    o.item_table_precision = c.precision;
    o.item_table_budget_bytes =
        c.tight
            ? static_cast<int64_t>(order.size()) *
                  ItemTable::Plan::RowBytes(
                      d.item_out, c.precision == ItemTablePrecisionChoice::kInt8
                                      ? ItemTablePrecision::kInt8
                                      : ItemTablePrecision::kFp32)
            : int64_t{1} << 30;
    auto reloaded = common::Model::Load(ModelDir(c.preset), {});
    ASSERT_TRUE(reloaded.ok());
    auto rt = ModelRuntime::Create(*std::move(reloaded), o, &pool_);
    ASSERT_TRUE(rt.ok()) << rt.status();
    (*rt)->WaitForItemTable();
    const ModelRuntime::ItemTableStatus status = (*rt)->item_table_status();
    ASSERT_TRUE(status.done && status.status.ok()) << status.status;
    ASSERT_EQ(status.built_rows, status.plan.rows);
    ASSERT_LT(status.plan.rows, num_items);  // a budget under the catalog
    if (c.tight && d.item_out < (*rt)->combined_top().first_layer_out()) {
      EXPECT_EQ(status.plan.form, ItemTableForm::kItemVector);
    }
    const bool int8 = c.precision == ItemTablePrecisionChoice::kInt8;
    ASSERT_EQ(status.plan.precision,
              int8 ? ItemTablePrecision::kInt8 : ItemTablePrecision::kFp32);
    // Per candidate: 1e-5, plus the int8 bound for a row from the table.
    std::vector<double> tolerance(kN, 1e-5);
    if (int8) {
      const double factor = Int8Sensitivity(m, status.plan.form);
      std::vector<float> row(status.plan.width);
      for (int j = 0; j < kN; ++j) {
        if (!(*rt)->item_table()->CopyRow(candidates[j], status.built_rows,
                                          row.data())) {
          continue;
        }
        const auto [lo, hi] = std::minmax_element(row.begin(), row.end());
        tolerance[j] += factor * (*hi - *lo) / 510.0;
      }
    }
    // Every candidate, the covered ones, the uncovered ones.
    struct Slice {
      int begin, n, want_table;
    };
    for (const Slice& s :
         {Slice{0, kN, std::min<int>(covered, status.plan.rows)},
          Slice{0, covered, std::min<int>(covered, status.plan.rows)},
          Slice{covered, kN - covered, 0}}) {
      for (int rep = 0; rep < 2; ++rep) {  // the second hits the cache
        auto b = (*rt)->TakeBuffers();
        ModelRuntime::ItemSideCounts counts;
        ASSERT_TRUE((*rt)
                        ->ComputeItemSide(candidates.data() + s.begin, s.n,
                                          LookupStrategy::kBatch, cache,
                                          b.get(), &counts)
                        .ok());
        EXPECT_EQ(counts.table_rows, s.want_table);
        EXPECT_EQ(counts.computed, s.n - s.want_table);
        std::copy(u.begin(), u.end(), b->u.data());
        ASSERT_TRUE(
            (*rt)->Combine(s.n, UserStrategy::kRecompute, b.get()).ok());
        for (int j = 0; j < s.n; ++j) {
          ASSERT_NEAR(b->ctr[j], want[s.begin + j], tolerance[s.begin + j])
              << c.preset << " candidate " << s.begin + j << " cache " << cache
              << " form " << ItemTableFormName(status.plan.form) << " "
              << ItemTablePrecisionName(status.plan.precision);
        }
        if (int8 && s.n == kN && rep == 0) {
          // The ranking a user sees: the top 10 keep at least 9 items.
          std::vector<float> got(b->ctr.data(), b->ctr.data() + kN);
          EXPECT_GE(TopKOverlap(got, want, 10), 9) << c.preset;
        }
        (*rt)->ReturnBuffers(std::move(b));
      }
    }
  }
}

std::vector<ScoreCase> ScoreCases() {
  std::vector<ScoreCase> cases;
  for (const char* preset : {"tiny", "rm1", "rm2", "rm3", "rm4", "rm5"}) {
    for (auto precision :
         {ItemTablePrecisionChoice::kFp32, ItemTablePrecisionChoice::kInt8}) {
      for (bool tight : {false, true}) {
        cases.push_back({preset, tight, precision});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Presets, ItemTableScoresTest,
                         ::testing::ValuesIn(ScoreCases()),
                         [](const auto& info) {
                           return info.param.preset +
                                  (info.param.tight ? "_tight" : "_roomy") +
                                  (info.param.precision ==
                                           ItemTablePrecisionChoice::kInt8
                                       ? "_int8"
                                       : "_fp32");
                         });

// The whole catalog of the tiny preset, ids in order, and a budget that
// covers only part of it: the rest is computed.
TEST(ItemTableRuntimeTest, IdentityOrderCoversAPrefixWithinTheBudget) {
  common::ThreadPool pool(2, "item-table-test");
  auto model = common::Model::Load(ModelDir("tiny"), {});
  ASSERT_TRUE(model.ok());
  const int64_t num_items = (*model)->catalog().num_items();
  ModelRuntime::Options o;
  o.max_candidates = 16;
  o.buffer_sets = 1;
  o.force_lookup = LookupStrategy::kBatch;
  o.force_user = UserStrategy::kLoad;
  o.placement.num_workers = 2;
  o.item_cache_entries = 0;
  o.item_table_budget_bytes = 1;  // nothing fits
  {
    auto model2 = common::Model::Load(ModelDir("tiny"), {});
    auto rt = ModelRuntime::Create(*std::move(model2), o, &pool);
    ASSERT_TRUE(rt.ok());
    EXPECT_EQ((*rt)->item_table(), nullptr);
    EXPECT_EQ((*rt)->ItemTableDebugString(),
              "item table: off (not one row fits the budget)");
  }
  std::atomic<int> reports{0};
  o.on_item_table_progress = [&](const ModelRuntime::ItemTableStatus&) {
    ++reports;
  };
  auto probe = ItemTable::ChoosePlan(num_items, (*model)->dims().item_out,
                                     (*model)->dims().item_out, 1 << 30);
  o.item_table_budget_bytes = 100 * int64_t{4} * probe.width;
  auto rt = ModelRuntime::Create(*std::move(model), o, &pool);
  ASSERT_TRUE(rt.ok());
  (*rt)->WaitForItemTable();
  const auto s = (*rt)->item_table_status();
  EXPECT_TRUE(s.done);
  EXPECT_GE(s.plan.rows, 100);
  EXPECT_LT(s.plan.rows, num_items);
  EXPECT_EQ(s.built_rows, s.plan.rows);
  EXPECT_GT(reports.load(), 0);
  const ItemTable* t = (*rt)->item_table();
  std::vector<float> row(s.plan.width);
  EXPECT_TRUE(t->CopyRow(0, s.built_rows, row.data()));
  EXPECT_TRUE(t->CopyRow(s.plan.rows - 1, s.built_rows, row.data()));
  EXPECT_FALSE(t->CopyRow(s.plan.rows, s.built_rows, row.data()));
  EXPECT_EQ(t->bytes(), s.plan.bytes());  // no item -> row map
}

// The value of `name`'s series with label `label`=`value` (any when label
// is empty), or -1.
double Metric(prometheus::Registry& r, const std::string& name,
              const std::string& label, const std::string& value) {
  for (const auto& family : r.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      bool match = label.empty();
      for (const auto& l : metric.label) {
        match |= l.name == label && l.value == value;
      }
      if (!match) continue;
      return family.type == prometheus::MetricType::Counter
                 ? metric.counter.value
                 : metric.gauge.value;
    }
  }
  return -1;
}

TEST(ScoringCoreItemTableTest, QueriesReadTheTableAndReloadsBuildItFirst) {
  ScoringCoreOptions o = FastOptions();
  o.item_table_budget_bytes = int64_t{1} << 20;  // tiny's whole catalog
  o.item_cache_entries = 0;
  o.versions.keep_latest = 1;
  o.versions.grace = absl::ZeroDuration();
  auto registry = std::make_shared<prometheus::Registry>();
  o.registry = registry;
  std::atomic<int> built{0};
  o.on_item_table_built = [&](const ModelRuntime::ItemTableStatus& s) {
    EXPECT_TRUE(s.status.ok()) << s.status;
    ++built;
  };
  auto core = MakeCore("tiny", o);
  ASSERT_NE(core, nullptr);
  core->runtime()->WaitForItemTable();
  const common::Model& m = core->model();
  const int64_t num_items = m.catalog().num_items();
  EXPECT_EQ(core->runtime()->item_table_status().built_rows, num_items);
  const std::vector<int64_t> ids = Candidates(m, 200, 3);
  const std::vector<float> u = RandomU(m, 5);
  auto scores = RunQuery(*core, Begin(ids, 200), Fp32Vector(m, u));
  ASSERT_TRUE(scores.ok()) << scores.status();
  ExpectMatchesSplitModel(m, u, ids, *scores);
  EXPECT_EQ(
      Metric(*registry, "duet_item_table_candidates_total", "source", "table"),
      200);
  EXPECT_EQ(Metric(*registry, "duet_item_table_coverage_ratio", "version", "1"),
            1.0);
  EXPECT_EQ(
      Metric(*registry, "duet_item_table_build_progress_ratio", "version", "1"),
      1.0);
  EXPECT_GT(Metric(*registry, "duet_item_table_bytes", "version", "1"), 0);
  EXPECT_GE(Metric(*registry, "duet_item_table_build_seconds", "version", "1"),
            0);

  // A reload: the new version's table is complete when it is served.
  common::TempDir dir;
  ASSERT_TRUE(common::GenerateTestModel("tiny", 1.0, dir.path(), /*seed=*/2,
                                        /*version=*/2)
                  .ok());
  common::LoadOptions lo;
  lo.parts.user_tables = true;
  auto v2 = common::Model::Load(dir.path(), lo);
  ASSERT_TRUE(v2.ok()) << v2.status();
  auto rt = core->AddVersion(*std::move(v2));
  ASSERT_TRUE(rt.ok()) << rt.status();
  const ModelRuntime::ItemTableStatus s = (*rt)->item_table_status();
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.built_rows, num_items);
  EXPECT_EQ(built.load(), 2);
  EXPECT_EQ(Metric(*registry, "duet_item_table_coverage_ratio", "version", "2"),
            1.0);
  // v1 was retired when v2 came (keep 1, no grace): its table's series
  // went with it.
  ASSERT_EQ(core->served().List().size(), 1u);
  for (const char* name :
       {"duet_item_table_coverage_ratio",
        "duet_item_table_build_progress_ratio", "duet_item_table_build_seconds",
        "duet_item_table_bytes"}) {
    EXPECT_EQ(Metric(*registry, name, "version", "1"), -1) << name;
    EXPECT_GE(Metric(*registry, name, "version", "2"), 0) << name;
  }
}

}  // namespace
}  // namespace duet::cloud
