#include "cloud/combined_top.h"

#include <random>
#include <vector>

#include "common/kernels/mlp_reference.h"
#include "common/model/model.h"
#include "common/model/presets.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

struct SplitCase {
  const char* preset;
  common::PresetSplit split;
};

class CombinedTopTest : public ::testing::TestWithParam<SplitCase> {};

TEST_P(CombinedTopTest, LoadAndRecomputeMatchReference) {
  common::TempDir dir;
  ASSERT_TRUE(common::GenerateTestModel(GetParam().preset, 0.0001, dir.path(),
                                        1, 1, GetParam().split)
                  .ok());
  common::LoadOptions lo;
  lo.parts.edge = false;
  auto model = common::Model::Load(dir.path(), lo);
  ASSERT_TRUE(model.ok()) << model.status();
  auto top = CombinedTop::Create(model->get());
  ASSERT_TRUE(top.ok()) << top.status();
  const common::ModelDims& d = (*model)->dims();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (int n : {1, 3, 64, 257}) {
    std::vector<float> u(d.user_out), v(static_cast<size_t>(n) * d.item_out);
    for (float& x : u) x = dist(rng);
    for (float& x : v) x = std::abs(dist(rng));  // post-ReLU values
    std::vector<float> x(static_cast<size_t>(n) * d.combined_in);
    for (int r = 0; r < n; ++r) {
      std::copy(u.begin(), u.end(), x.begin() + r * d.combined_in);
      std::copy(v.begin() + r * d.item_out, v.begin() + (r + 1) * d.item_out,
                x.begin() + r * d.combined_in + d.user_out);
    }
    std::vector<float> want(n), load(n), recompute(n);
    common::Fp32MlpRef((*model)->combined_top_layers(),
                       common::Activation::kSigmoid, x.data(), n, want.data());
    ASSERT_TRUE(
        (*top)
            ->Score(u.data(), v.data(), n, UserStrategy::kLoad, load.data())
            .ok());
    ASSERT_TRUE((*top)
                    ->Score(u.data(), v.data(), n, UserStrategy::kRecompute,
                            recompute.data())
                    .ok());
    for (int r = 0; r < n; ++r) {
      EXPECT_NEAR(load[r], want[r], 1e-5) << "n=" << n << " row " << r;
      EXPECT_NEAR(recompute[r], want[r], 1e-5) << "n=" << n << " row " << r;
    }
  }
  EXPECT_LT((*top)->Flops(1024, UserStrategy::kLoad),
            (*top)->Flops(1024, UserStrategy::kRecompute));
}

// Paper split of tiny: one combined layer (W_u u + b is a dot product);
// personalized: the split layer feeds a hidden one (W_u u + b by oneDNN),
// narrow (tiny, rm5) and wide (rm2: 128 -> 64).
INSTANTIATE_TEST_SUITE_P(
    Presets, CombinedTopTest,
    ::testing::Values(SplitCase{"tiny", common::PresetSplit::kPaper},
                      SplitCase{"tiny", common::PresetSplit::kPersonalized},
                      SplitCase{"rm2", common::PresetSplit::kPersonalized},
                      SplitCase{"rm5", common::PresetSplit::kPersonalized}));

}  // namespace
}  // namespace duet::cloud
