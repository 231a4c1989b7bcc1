#include "cloud/model_runtime.h"

#include <cmath>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "cloud/internal/test_models.h"
#include "common/base/status_matchers.h"
#include "common/kernels/mlp_reference.h"
#include "common/model/reference_model.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using common::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr int kWorkers = 2;
constexpr int kMaxCandidates = 64;

class ModelRuntimeTest : public ::testing::Test {
 protected:
  static std::unique_ptr<const common::Model> Load(common::ModelParts parts) {
    common::LoadOptions lo;
    lo.parts = parts;
    auto model = common::Model::Load(ModelDir("rm2"), lo);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(model).value() : nullptr;
  }
  static std::unique_ptr<const common::Model> CloudOnly() {
    common::ModelParts parts;
    parts.edge = false;
    return Load(parts);
  }

  // Fast options: no strategy calibration, no cache.
  static ModelRuntime::Options Fast() {
    ModelRuntime::Options o;
    o.max_candidates = kMaxCandidates;
    o.buffer_sets = 4;
    o.force_lookup = LookupStrategy::kBatch;
    o.force_user = UserStrategy::kLoad;
    o.placement.num_workers = kWorkers;
    o.placement_sample_items = 300;
    o.item_cache_entries = 0;
    return o;
  }

  std::shared_ptr<ModelRuntime> Runtime(std::unique_ptr<const common::Model> m,
                                        const ModelRuntime::Options& o) {
    auto runtime = ModelRuntime::Create(std::move(m), o, &pool_);
    EXPECT_TRUE(runtime.ok()) << runtime.status();
    return runtime.ok() ? *runtime : nullptr;
  }

  common::ThreadPool pool_{kWorkers, "runtime_test"};
};

TEST_F(ModelRuntimeTest, CreateNeedsTheCloudPart) {
  EXPECT_THAT(
      ModelRuntime::Create(nullptr, Fast(), &pool_),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cloud part")));
  common::ModelParts edge_only;
  edge_only.cloud = false;
  EXPECT_THAT(
      ModelRuntime::Create(Load(edge_only), Fast(), &pool_),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cloud part")));
}

TEST_F(ModelRuntimeTest, CreateReturnsOptionErrors) {
  ModelRuntime::Options o = Fast();
  o.placement.memory_budget_bytes = 1000;
  EXPECT_THAT(ModelRuntime::Create(CloudOnly(), o, &pool_),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("even when sharded")));
  o = Fast();
  o.placement.num_workers = 0;
  EXPECT_THAT(ModelRuntime::Create(CloudOnly(), o, &pool_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("num_workers is 0")));
  // The selector is the first to check max_candidates (ScoringCore checks
  // it before any runtime is built).
  o = Fast();
  o.max_candidates = 0;
  EXPECT_THAT(
      ModelRuntime::Create(CloudOnly(), o, &pool_),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_n is 0")));
}

TEST_F(ModelRuntimeTest, OwnsTheModelAndPlansItsTables) {
  std::unique_ptr<const common::Model> model = CloudOnly();
  const common::Model* raw = model.get();
  ModelRuntime::Options o = Fast();
  o.placement.mode = PlacementMode::kReplicate;
  auto runtime = Runtime(std::move(model), o);
  ASSERT_NE(runtime, nullptr);
  EXPECT_EQ(&runtime->model(), raw);
  EXPECT_EQ(runtime->placement().num_replicated(), 8);
  EXPECT_EQ(&runtime->placement(), &runtime->lookup_engine().plan());
  EXPECT_EQ(runtime->lookup_engine().rows_gathered_per_item(), 8 * 120);
}

TEST_F(ModelRuntimeTest, HotRowsComeFromTheSampledStatistics) {
  ModelRuntime::Options o = Fast();
  o.placement.mode = PlacementMode::kShard;
  o.placement.force_hot_rows = 5;
  o.placement_sample_items = 123;
  auto runtime = Runtime(CloudOnly(), o);
  ASSERT_NE(runtime, nullptr);
  const auto stats =
      LookupEngine::SampleStats(runtime->model(), o.placement_sample_items, 5);
  ASSERT_EQ(runtime->placement().tables.size(), stats.size());
  for (size_t t = 0; t < stats.size(); ++t) {
    const TablePlan& p = runtime->placement().tables[t];
    EXPECT_EQ(p.mode, PlacementMode::kShard);
    std::vector<int64_t> want;
    for (const auto& [row, count] : stats[t].top_rows) want.push_back(row);
    EXPECT_EQ(p.hot_rows, want) << "table " << t;
  }
}

TEST_F(ModelRuntimeTest, ForcedStrategiesSkipCalibration) {
  for (auto [lookup, user] :
       {std::pair{LookupStrategy::kTable, UserStrategy::kRecompute},
        std::pair{LookupStrategy::kBatch, UserStrategy::kLoad}}) {
    ModelRuntime::Options o = Fast();
    o.force_lookup = lookup;
    o.force_user = user;
    auto runtime = Runtime(CloudOnly(), o);
    ASSERT_NE(runtime, nullptr);
    StrategySelector& selector = runtime->selector();
    EXPECT_TRUE(selector.lookup_measurements().empty());
    EXPECT_TRUE(selector.user_measurements().empty());
    for (int n : {1, 8, 33, kMaxCandidates}) {
      EXPECT_EQ(selector.LookupFor(n), lookup) << "n=" << n;
      EXPECT_EQ(selector.ChooseUser(n), user) << "n=" << n;
    }
    EXPECT_EQ(selector.user_count(user), 4u);
  }
}

TEST_F(ModelRuntimeTest, UnforcedSelectorIsCalibratedUpToMaxCandidates) {
  ModelRuntime::Options o = Fast();
  o.force_lookup.reset();
  o.force_user.reset();
  o.calibration_budget = absl::Milliseconds(20);
  auto runtime = Runtime(CloudOnly(), o);
  ASSERT_NE(runtime, nullptr);
  const StrategySelector& selector = runtime->selector();
  ASSERT_FALSE(selector.grid().empty());
  EXPECT_EQ(selector.grid().back(), kMaxCandidates);
  ASSERT_EQ(selector.lookup_measurements().size(), selector.grid().size());
  ASSERT_EQ(selector.user_measurements().size(), selector.grid().size());
  for (size_t i = 0; i < selector.grid().size(); ++i) {
    EXPECT_EQ(selector.lookup_measurements()[i].n, selector.grid()[i]);
  }
}

// A release of new weights for the same architecture reuses the serving
// version's calibration (selector choices and cache costs); another
// architecture, or no prior, calibrates.
TEST_F(ModelRuntimeTest, ReleaseOfTheSameArchitectureReusesTheCalibration) {
  ModelRuntime::Options o = Fast();
  o.force_lookup.reset();
  o.force_user.reset();
  o.calibration_budget = absl::Milliseconds(20);
  o.item_cache_entries = 1000;
  o.item_cache_mode = CacheMode::kAuto;
  auto v1 = Runtime(CloudOnly(), o);
  ASSERT_NE(v1, nullptr);
  EXPECT_EQ(v1->calibration_from_version(), 0u);
  EXPECT_THAT(v1->WarmupDebugString(), StartsWith("calibrated in "));

  common::TempDir dir;
  const auto generated = common::GenerateTestModel("rm2", 0.0005, dir.path(),
                                                   /*seed=*/7, /*version=*/2);
  ASSERT_TRUE(generated.ok()) << generated.status();
  common::LoadOptions lo;
  lo.parts.edge = false;
  auto next = common::Model::Load(dir.path(), lo);
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_NE((*next)->config().signature(), v1->model().config().signature());
  ModelRuntime::Options released = o;
  released.calibrated_like = v1.get();
  auto v2 = Runtime(*std::move(next), released);
  ASSERT_NE(v2, nullptr);
  EXPECT_EQ(v2->calibration_from_version(), 1u);
  EXPECT_THAT(v2->WarmupDebugString(),
              StartsWith("calibration reused from v1 (same architecture); "
                         "kernels for N <= 64 prepared in "));
  const StrategySelector& a = v1->selector();
  const StrategySelector& b = v2->selector();
  ASSERT_EQ(b.grid(), a.grid());
  for (int n = 1; n <= kMaxCandidates; ++n) {
    EXPECT_EQ(b.LookupFor(n), a.LookupFor(n)) << "n=" << n;
  }
  ASSERT_EQ(b.user_measurements().size(), a.user_measurements().size());
  for (size_t i = 0; i < a.user_measurements().size(); ++i) {
    EXPECT_EQ(b.user_measurements()[i].choice, a.user_measurements()[i].choice);
  }
  ASSERT_NE(v2->cache_policy(), nullptr);
  EXPECT_EQ(v2->cache_policy()->break_even(), v1->cache_policy()->break_even());
  EXPECT_EQ(v2->CacheDebugString(), v1->CacheDebugString());

  // Another architecture (rm4's widths) calibrates for itself.
  auto other = common::Model::Load(ModelDir("rm4"), lo);
  ASSERT_TRUE(other.ok()) << other.status();
  auto v3 = Runtime(*std::move(other), released);
  ASSERT_NE(v3, nullptr);
  EXPECT_EQ(v3->calibration_from_version(), 0u);
  EXPECT_THAT(v3->WarmupDebugString(), StartsWith("calibrated in "));
}

// Every cloud MLP has its primitives for each candidate count before the
// first query: 1 .. 15 and the multiples of 16 up to max_candidates.
TEST_F(ModelRuntimeTest, PreparesTheKernelsOfEveryCandidateCount) {
  std::vector<int64_t> expected;
  for (int64_t m = 1; m <= 15; ++m) expected.push_back(m);
  for (int64_t m = 16; m <= kMaxCandidates; m += 16) expected.push_back(m);
  common::ModelParts all;
  all.edge = true;
  all.user_tables = true;
  auto runtime = Runtime(Load(all), Fast());
  ASSERT_NE(runtime, nullptr);
  ASSERT_NE(runtime->monolithic(), nullptr);
  const common::Model& m = runtime->model();
  for (const common::Fp32Mlp* mlp :
       {m.item_top(), &m.combined_top(), &m.user_top(), m.static_bottom()}) {
    ASSERT_NE(mlp, nullptr);
    EXPECT_EQ(mlp->PreparedRowCounts(), expected);
  }
  ModelRuntime::Options cold = Fast();
  cold.prepare_kernels = false;
  auto lazy = Runtime(Load(all), cold);
  ASSERT_NE(lazy, nullptr);
  EXPECT_EQ(lazy->model().combined_top().PreparedRowCounts(),
            std::vector<int64_t>{1});
  EXPECT_THAT(lazy->WarmupDebugString(), StartsWith("calibrated in "));
  EXPECT_THAT(lazy->WarmupDebugString(), Not(HasSubstr("kernels")));
}

TEST_F(ModelRuntimeTest, ZeroCacheEntriesMeansNoCache) {
  auto runtime = Runtime(CloudOnly(), Fast());
  ASSERT_NE(runtime, nullptr);
  EXPECT_EQ(runtime->cache(), nullptr);
  EXPECT_EQ(runtime->cache_policy(), nullptr);
  EXPECT_EQ(runtime->item_model().cache(), nullptr);
  EXPECT_EQ(runtime->CacheDebugString(), "item cache: off");
}

TEST_F(ModelRuntimeTest, AlwaysModeCacheIsSizedByOptionsAndStartsEmpty) {
  ModelRuntime::Options o = Fast();
  o.item_cache_entries = 500;
  o.item_cache_mode = CacheMode::kAlways;
  auto runtime = Runtime(CloudOnly(), o);
  ASSERT_NE(runtime, nullptr);
  ItemCache* cache = runtime->cache();
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->capacity(), 500);
  EXPECT_EQ(cache->width(), runtime->model().dims().item_out);
  EXPECT_EQ(cache->size(), 0);  // calibration bypasses the cache
  EXPECT_EQ(runtime->item_model().cache(), cache);
  ASSERT_NE(runtime->cache_policy(), nullptr);
  EXPECT_EQ(runtime->cache_policy()->break_even(), 0.0);
  EXPECT_EQ(runtime->CacheDebugString(),
            "item cache: every query (policy always)");

  // The item model fills this runtime's cache and hits it the second time.
  const int n = 20;
  std::vector<int64_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = 3 * i;
  std::vector<float> v(static_cast<size_t>(n) * cache->width());
  int hits = -1;
  ASSERT_TRUE(
      runtime->item_model()
          .Compute(ids.data(), n, LookupStrategy::kBatch, true, v.data(), &hits)
          .ok());
  EXPECT_EQ(hits, 0);
  EXPECT_EQ(cache->size(), n);
  ASSERT_TRUE(
      runtime->item_model()
          .Compute(ids.data(), n, LookupStrategy::kTable, true, v.data(), &hits)
          .ok());
  EXPECT_EQ(hits, n);
}

TEST_F(ModelRuntimeTest, AutoModeCalibratesThePolicyOnAScratchCache) {
  ModelRuntime::Options o = Fast();
  o.item_cache_entries = 1000;
  o.item_cache_mode = CacheMode::kAuto;
  auto runtime = Runtime(CloudOnly(), o);
  ASSERT_NE(runtime, nullptr);
  ASSERT_NE(runtime->cache(), nullptr);
  ASSERT_NE(runtime->cache_policy(), nullptr);
  // The measurements ran on a scratch cache: the real one is untouched.
  EXPECT_EQ(runtime->cache()->size(), 0);
  EXPECT_EQ(runtime->cache()->hits() + runtime->cache()->misses(), 0u);
  // h* = c_miss / (t_row + c_miss - c_hit) is positive (or 2 when a hit
  // costs more than a computed row plus a miss); its value is a timing.
  EXPECT_GT(runtime->cache_policy()->break_even(), 0.0);
  EXPECT_THAT(runtime->CacheDebugString(), StartsWith("item cache: per row "));
}

TEST_F(ModelRuntimeTest, BuffersAreSizedForTheModelAndRecycled) {
  ModelRuntime::Options o = Fast();
  o.buffer_sets = 2;
  auto runtime = Runtime(CloudOnly(), o);
  ASSERT_NE(runtime, nullptr);
  const common::ModelDims& d = runtime->model().dims();
  auto a = runtime->TakeBuffers();
  auto b = runtime->TakeBuffers();
  auto c = runtime->TakeBuffers();  // both preallocated sets are taken
  for (const auto* q : {a.get(), b.get(), c.get()}) {
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(q->v.size(), static_cast<size_t>(kMaxCandidates) * d.item_out);
    EXPECT_EQ(q->ctr.size(), static_cast<size_t>(kMaxCandidates));
    EXPECT_EQ(q->u.size(), static_cast<size_t>(d.user_out));
  }
  EXPECT_NE(a.get(), b.get());
  EXPECT_NE(c.get(), a.get());
  EXPECT_NE(c.get(), b.get());
  const auto* pa = a.get();
  const auto* pb = b.get();
  runtime->ReturnBuffers(std::move(a));
  runtime->ReturnBuffers(std::move(b));
  runtime->ReturnBuffers(std::move(c));  // over buffer_sets: dropped
  runtime->ReturnBuffers(nullptr);       // ignored
  auto x = runtime->TakeBuffers();
  auto y = runtime->TakeBuffers();
  auto z = runtime->TakeBuffers();
  // The two kept sets come back (last returned first); the third is new.
  EXPECT_EQ(x.get(), pb);
  EXPECT_EQ(y.get(), pa);
  ASSERT_NE(z, nullptr);
  EXPECT_NE(z.get(), pa);
  EXPECT_NE(z.get(), pb);
}

TEST_F(ModelRuntimeTest, MonolithicEvaluatorNeedsEdgeAndUserTables) {
  struct Case {
    bool edge, user_tables, want;
  };
  for (const Case& c : {Case{false, false, false}, Case{true, false, false},
                        Case{false, true, false}, Case{true, true, true}}) {
    common::ModelParts parts;
    parts.edge = c.edge;
    parts.user_tables = c.user_tables;
    auto runtime = Runtime(Load(parts), Fast());
    ASSERT_NE(runtime, nullptr);
    EXPECT_EQ(runtime->monolithic() != nullptr, c.want)
        << "edge " << c.edge << " user tables " << c.user_tables;
  }
}

TEST_F(ModelRuntimeTest, ItemModelAndCombinedTopScoreThisModel) {
  ModelRuntime::Options o = Fast();
  o.placement.mode = PlacementMode::kShard;
  o.placement.force_hot_rows = 16;
  auto runtime = Runtime(CloudOnly(), o);
  ASSERT_NE(runtime, nullptr);
  const common::Model& m = runtime->model();
  const common::ModelDims& d = m.dims();
  const int n = 37;
  std::vector<int64_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = (11 * i + 5) % m.catalog().num_items();

  // v_j and y_j the plain way (DESIGN.md §2).
  std::vector<float> f(static_cast<size_t>(n) * d.item_top_in);
  std::vector<float> want_v(static_cast<size_t>(n) * d.item_out);
  common::GatherItemFeatures(m, ids.data(), n, f.data());
  common::Fp32MlpRef(m.item_top_layers(), common::Activation::kRelu, f.data(),
                     n, want_v.data());
  std::vector<float> u(d.user_out);
  for (int i = 0; i < d.user_out; ++i) u[i] = 0.05f * (i % 7) - 0.1f;
  std::vector<float> x(static_cast<size_t>(n) * d.combined_in);
  for (int j = 0; j < n; ++j) {
    std::copy(u.begin(), u.end(), x.begin() + j * d.combined_in);
    std::copy(want_v.begin() + j * d.item_out,
              want_v.begin() + (j + 1) * d.item_out,
              x.begin() + j * d.combined_in + d.user_out);
  }
  std::vector<float> want_ctr(n);
  common::Fp32MlpRef(m.combined_top_layers(), common::Activation::kSigmoid,
                     x.data(), n, want_ctr.data());

  auto buffers = runtime->TakeBuffers();
  ASSERT_TRUE(runtime->item_model()
                  .ComputeUncached(ids.data(), n, LookupStrategy::kTable,
                                   buffers->v.data())
                  .ok());
  for (size_t i = 0; i < want_v.size(); ++i) {
    ASSERT_NEAR(buffers->v.data()[i], want_v[i], 1e-5) << "element " << i;
  }
  std::copy(u.begin(), u.end(), buffers->u.data());
  ASSERT_TRUE(runtime->combined_top()
                  .Score(buffers->u.data(), buffers->v.data(), n,
                         UserStrategy::kRecompute, buffers->ctr.data())
                  .ok());
  for (int j = 0; j < n; ++j) {
    EXPECT_NEAR(buffers->ctr.data()[j], want_ctr[j], 1e-5) << "item " << j;
  }
  runtime->ReturnBuffers(std::move(buffers));
}

}  // namespace
}  // namespace duet::cloud
