#include "tools/loadgen/fleet_release.h"

#include <string>
#include <vector>

#include "edge/internal/fake_cloud.h"
#include "edge/internal/test_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::loadgen {
namespace {

using edge::internal::FakeCloud;
using edge::internal::ItemRows;
using edge::internal::NewInlineUserState;
using edge::internal::SharedTestModel;

const common::Model& V1() { return SharedTestModel("rm2", 1, 1); }
const common::Model& V2() { return SharedTestModel("rm2", 2, 2); }

// Three devices on v1 with histories; the cloud announces v2: the fleet
// downloads it once and every device switches, its pooled history then
// equal to v2's rows of the same items.
TEST(LoadgenFleetReleaseTest,
     DevicesFollowTheAnnouncedVersionWithTheirHistory) {
  FakeCloud cloud(&V1());
  cloud.Serve(&V2());
  auto v1 = std::make_shared<FleetModel>();
  v1->model = &V1();
  auto user_model = edge::UserModel::Create(&V1(), {});
  ASSERT_TRUE(user_model.ok()) << user_model.status();
  v1->user_model = *std::move(user_model);
  FleetRelease::Options o;
  o.cloud = &cloud;
  o.recommender.max_candidates = 64;
  o.batch_items = 40;
  FleetRelease release(o);

  std::vector<std::unique_ptr<FleetDevice>> devices;
  std::vector<std::vector<int64_t>> items(3);
  for (int d = 0; d < 3; ++d) {
    auto device = std::make_unique<FleetDevice>();
    device->id = absl::StrCat("fleet-", d);
    device->cloud = &cloud;
    auto rt = std::make_shared<FleetDevice::Runtime>();
    rt->version = v1;
    rt->state = NewInlineUserState(V1());
    for (int i = 0; i < 50 + 40 * d; ++i) {
      const int64_t item = (i * 31 + d * 7) % V1().catalog().num_items();
      rt->state->PushInteraction(item, ItemRows(V1(), item));
      items[d].push_back(item);
    }
    rt->recommender =
        release.MakeRecommender(device.get(), *v1, rt->state.get());
    {
      common::MutexLock lock(&device->mu);
      device->current = std::move(rt);
    }
    devices.push_back(std::move(device));
  }
  release.Start();
  cloud.SetTarget(&V2());
  duet::v1::RecommendRequest request;
  request.mutable_context_features()->Resize(V1().dims().dynamic_in, 0.5f);
  for (int64_t i = 0; i < 16; ++i) request.add_candidate_ids(i * 5);
  request.set_top_k(4);
  for (const auto& device : devices) {
    ASSERT_TRUE(
        device->runtime()
            ->recommender->Recommend(request, absl::Now() + absl::Seconds(30))
            .ok());
  }
  while (release.switches().switched["v1\u2192v2"] < 3) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(release.switches().failed, 0);
  EXPECT_EQ(cloud.edge_model_calls, 1);  // once for the fleet
  for (int d = 0; d < 3; ++d) {
    const auto rt = devices[d]->runtime();
    EXPECT_EQ(rt->version->model->fingerprint(), V2().fingerprint());
    auto want = NewInlineUserState(V2());
    for (int64_t item : items[d]) {
      want->PushInteraction(item, ItemRows(V2(), item));
    }
    const edge::UserStateData a = rt->state->Export(), b = want->Export();
    EXPECT_EQ(a.history_items, b.history_items);
    const int dim = V2().config().embedding_dim();
    for (size_t t = 0; t < b.tables.size(); ++t) {
      ASSERT_EQ(a.tables[t].filled, b.tables[t].filled);
      for (int k = 0; k < dim; ++k) {
        double x = 0, y = 0;
        for (int i = 0; i < b.tables[t].filled; ++i) {
          x += a.tables[t].slots[i * dim + k];
          y += b.tables[t].slots[i * dim + k];
        }
        EXPECT_NEAR(x, y, 1e-4) << "device " << d << " table " << t;
      }
    }
    // Its queries now name v2 and the device.
    ASSERT_TRUE(
        rt->recommender->Recommend(request, absl::Now() + absl::Seconds(30))
            .ok());
    EXPECT_EQ(cloud.begun().back().model_version(), 2u);
    EXPECT_EQ(cloud.begun().back().device_id(), absl::StrCat("fleet-", d));
  }
}

}  // namespace
}  // namespace duet::loadgen
