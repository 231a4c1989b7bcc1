#include "cloud/item_model.h"

#include <memory>
#include <vector>

#include "cloud/internal/test_models.h"
#include "common/kernels/mlp_reference.h"
#include "common/model/reference_model.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

class ItemModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = SmallRm2CloudModel();
    ASSERT_NE(model_, nullptr);
  }

  // v_j the plain way: reference gather + item top MLP reference.
  std::vector<float> Reference(const std::vector<int64_t>& ids) {
    const common::ModelDims& d = model_->dims();
    const int n = static_cast<int>(ids.size());
    std::vector<float> f(static_cast<size_t>(n) * d.item_top_in);
    std::vector<float> v(static_cast<size_t>(n) * d.item_out);
    common::GatherItemFeatures(*model_, ids.data(), n, f.data());
    common::Fp32MlpRef(model_->item_top_layers(), common::Activation::kRelu,
                       f.data(), n, v.data());
    return v;
  }

  std::unique_ptr<LookupEngine> Engine(PlacementMode mode, int hot) {
    PlacementOptions o;
    o.mode = mode;
    o.num_workers = pool_.size();
    o.force_hot_rows = hot;
    auto plan = TablePlacement::Plan(
        LookupEngine::SampleStats(*model_, 2000, std::max(hot, 0)), o);
    EXPECT_TRUE(plan.ok()) << plan.status();
    auto engine = LookupEngine::Create(model_, *plan, &pool_);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return std::move(engine).value();
  }

  static std::vector<int64_t> Ids(int n, int64_t offset) {
    std::vector<int64_t> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = (offset + 7919 * i) % 1000000;
    return ids;
  }

  static const common::Model* model_;
  common::ThreadPool pool_{2, "test"};
};
const common::Model* ItemModelTest::model_ = nullptr;

TEST_F(ItemModelTest, EveryPlacementAndStrategyMatchesReference) {
  const int width = model_->dims().item_out;
  for (auto [mode, hot] : {std::pair{PlacementMode::kReplicate, -1},
                           std::pair{PlacementMode::kShard, -1},
                           std::pair{PlacementMode::kShard, 64}}) {
    auto engine = Engine(mode, hot);
    ItemModel item(model_, engine.get(), &pool_, nullptr);
    for (LookupStrategy s : {LookupStrategy::kBatch, LookupStrategy::kTable}) {
      for (int n : {1, 31, 200}) {
        const auto ids = Ids(n, n);
        const auto want = Reference(ids);
        std::vector<float> v(want.size());
        int hits = -1;
        ASSERT_TRUE(
            item.Compute(ids.data(), n, s, /*use_cache=*/true, v.data(), &hits)
                .ok());
        EXPECT_EQ(hits, 0);
        for (size_t i = 0; i < v.size(); ++i) {
          ASSERT_NEAR(v[i], want[i], 1e-5)
              << "mode " << static_cast<int>(mode) << " hot " << hot
              << " strategy " << LookupStrategyName(s) << " n " << n << " row "
              << i / width;
        }
      }
    }
  }
}

TEST_F(ItemModelTest, CacheServesHitsAndComputesOnlyMisses) {
  auto engine = Engine(PlacementMode::kShard, -1);
  ItemCache::Options co;
  co.capacity = 1000;
  co.width = model_->dims().item_out;
  ItemCache cache(co);
  ItemModel item(model_, engine.get(), &pool_, &cache);
  const auto first = Ids(50, 0);
  std::vector<float> v(50 * co.width);
  int hits = -1;
  ASSERT_TRUE(item.Compute(first.data(), 50, LookupStrategy::kBatch, true,
                           v.data(), &hits)
                  .ok());
  EXPECT_EQ(hits, 0);
  EXPECT_EQ(cache.size(), 50);
  // Half old, half new items, interleaved.
  std::vector<int64_t> mixed;
  const auto fresh = Ids(25, 424242);
  for (int i = 0; i < 25; ++i) {
    mixed.push_back(first[2 * i]);
    mixed.push_back(fresh[i]);
  }
  ASSERT_TRUE(item.Compute(mixed.data(), 50, LookupStrategy::kTable, true,
                           v.data(), &hits)
                  .ok());
  EXPECT_EQ(hits, 25);
  const auto want = Reference(mixed);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_NEAR(v[i], want[i], 1e-5) << i;
  EXPECT_EQ(cache.hits(), 25u);
  EXPECT_EQ(cache.misses(), 75u);
}

}  // namespace
}  // namespace duet::cloud
