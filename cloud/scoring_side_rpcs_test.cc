// MonolithicScore and GetItemEmbeddings (cloud/scoring_side_rpcs.cc).
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cloud/internal/scoring_test_util.h"
#include "cloud/scoring_core.h"
#include "common/base/mutex.h"
#include "common/model/reference_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::HasSubstr;

TEST(ScoringCoreTest, MonolithicEqualsSplitFp32Path) {
  for (const char* preset : {"tiny", "rm2"}) {
    auto core = MakeCore(preset, FastOptions());
    const common::Model& m = core->model();
    const common::ModelDims& d = m.dims();
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> dist(-1, 1);
    duet::v1::MonolithicScoreRequest req;
    for (int i = 0; i < d.static_in; ++i) req.add_static_features(dist(rng));
    for (int i = 0; i < d.dynamic_in; ++i) req.add_dynamic_features(dist(rng));
    for (int i = 0; i < 30; ++i) req.add_history_item_ids((i * 31 + 5) % 500);
    const auto ids = Candidates(m, 64, 11);
    for (int64_t id : ids) req.add_candidate_ids(id);
    req.set_top_k(64);
    const auto result = RunMonolithic(*core, req);
    ASSERT_TRUE(result.ok()) << result.status();
    // The split fp32 path for the same user.
    std::vector<float> pooled(d.pooled), u(d.user_out);
    const std::vector<int64_t> history(req.history_item_ids().begin(),
                                       req.history_item_ids().end());
    common::PoolHistory(m, history, pooled.data());
    ASSERT_TRUE(common::SplitModel(&m)
                    .UserVector(req.static_features().data(),
                                req.dynamic_features().data(), pooled.data(),
                                /*int8=*/false, u.data())
                    .ok());
    auto split = RunQuery(*core, Begin(ids, 64), Fp32Vector(m, u));
    ASSERT_TRUE(split.ok()) << split.status();
    std::map<int64_t, float> want;
    for (const auto& item : split->items()) want[item.item_id()] = item.ctr();
    ASSERT_EQ(result->items_size(), 64);
    for (const auto& item : result->items()) {
      EXPECT_NEAR(item.ctr(), want[item.item_id()], 1e-5) << preset;
    }
  }
}

TEST(ScoringCoreTest, MonolithicBadInputs) {
  auto core = MakeCore("tiny", FastOptions());
  duet::v1::MonolithicScoreRequest req;
  req.add_candidate_ids(1);
  req.set_top_k(1);
  const absl::Status status = RunMonolithic(*core, req).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("static_features has 0 values"));
}

TEST(ScoringCoreTest, GetItemEmbeddings) {
  auto core = MakeCore("tiny", FastOptions());
  const common::Model& m = core->model();
  duet::v1::GetItemEmbeddingsRequest req;
  req.add_item_ids(3);
  req.add_item_ids(499);
  common::Notification done;
  absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> result;
  core->GetItemEmbeddings(
      req, absl::InfiniteFuture(),
      [&](absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> r) {
        result = std::move(r);
        done.Notify();
      });
  done.WaitForNotification();
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->items_size(), 2);
  const int dim = m.config().embedding_dim();
  EXPECT_EQ(result->items(1).item_id(), 499);
  const float* row = static_cast<const float*>(m.user_table(1).data) +
                     m.catalog().HistoryKey(499, 1) * dim;
  EXPECT_EQ(result->items(1).rows(dim), row[0]);

  req.add_item_ids(500);
  absl::Status status;
  core->GetItemEmbeddings(
      req, absl::InfiniteFuture(),
      [&](absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> r) {
        status = r.status();
      });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("item_ids[2] is 500"));
}

}  // namespace
}  // namespace duet::cloud
