// A model release does not erase the edge's history (issue 14, item 3):
// real duet-edge and duet-cloud processes on tiny v1 record interactions and
// a profile; the model directory then gets v2 (other weights), both restart
// on the same --state_dir without --reset_state, the edge keeps its history
// item ids and profile, rebuilds its scratchpad from v2's rows fetched from
// the cloud, and Recommend (fp32) equals the monolithic reference of v2 on
// those items. Also: the cloud unreachable during the rebuild and kill -9
// in it, then after it: nothing is lost and the edge ends on v2.
#include <signal.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model/reference_model.h"
#include "edge/state_store.h"
#include "edge/user_state.h"
#include "gmock/gmock.h"
#include "tests/edge_process_fixture.h"

namespace duet::test {
namespace {

const std::vector<std::string> kFp32 = {"--user_precision", "fp32", "--wire",
                                        "fp32"};

class EdgeModelChangeTest : public EdgeProcessTest {
 protected:
  // Writes model version `version` (weights from `seed`) into ModelDir(),
  // as a release does, and loads it with the user tables (the reference).
  void Release(uint64_t seed, uint32_t version) {
    auto config =
        common::GenerateTestModel("tiny", 1.0, ModelDir(), seed, version);
    ASSERT_TRUE(config.ok()) << config.status();
    common::LoadOptions lo;
    lo.parts.user_tables = true;
    auto model = common::Model::Load(ModelDir(), lo);
    ASSERT_TRUE(model.ok()) << model.status();
    current_ = *std::move(model);
  }

  void Interact(int64_t item) {
    v1::RecordInteractionResponse res;
    const grpc::Status s = RecordInteraction(item, &res);
    ASSERT_TRUE(s.ok()) << s.error_message();
    history_.push_back(item);
  }

  void SetProfile() {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> dist(-1, 1);
    s_.clear();
    for (int i = 0; i < current_->dims().static_in; ++i) {
      s_.push_back(dist(rng));
    }
    UpdateProfileAndWait(s_);
  }

  // v1: a profile and more interactions than the longest history.
  void RecordV1History() {
    ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/1, /*version=*/1));
    ASSERT_NO_FATAL_FAILURE(StartCloud());
    ASSERT_NO_FATAL_FAILURE(StartEdge(kFp32));
    ASSERT_NO_FATAL_FAILURE(SetProfile());
    int longest = 0;
    for (const auto& t : current_->config().user_tables()) {
      longest = std::max(longest, t.history_length());
    }
    std::mt19937 rng(7);
    for (int i = 0; i < longest + 5; ++i) {
      ASSERT_NO_FATAL_FAILURE(
          Interact(rng() % current_->catalog().num_items()));
    }
    history_.erase(history_.begin(), history_.end() - longest);
    edge_.reset();  // SIGKILL
    cloud_.reset();
  }

  // Recommend equals the monolithic reference of the current model on the
  // history's item ids, the profile and the context, within 1e-5.
  void ExpectReferenceCtrs() {
    const v1::RecommendRequest request = ValidRequest(48, 48, /*seed=*/9);
    v1::RecommendResponse response;
    const grpc::Status s = Recommend(request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << edge_->ReadLog();
    common::UserInputs user;
    user.static_features = s_;
    user.dynamic_features.assign(request.context_features().begin(),
                                 request.context_features().end());
    user.history = history_;
    const std::vector<int64_t> ids(request.candidate_ids().begin(),
                                   request.candidate_ids().end());
    std::vector<float> ctr(ids.size());
    ASSERT_TRUE(common::MonolithicModel(current_.get())
                    .Score(user, ids, ctr.data())
                    .ok());
    ASSERT_EQ(response.items_size(), 48);
    for (const auto& item : response.items()) {
      bool found = false;
      for (size_t j = 0; j < ids.size(); ++j) {
        if (ids[j] != item.item_id()) continue;
        EXPECT_NEAR(item.ctr(), ctr[j], 1e-5) << "item " << ids[j];
        found = true;
      }
      EXPECT_TRUE(found) << item.item_id();
    }
  }

  // The history item ids persisted in state_dir_ (the edge must be down).
  std::vector<int64_t> StoredHistory() {
    auto state = edge::UserState::Create(current_.get(), {});
    EXPECT_TRUE(state.ok()) << state.status();
    edge::StateStore::Options o;
    o.dir = state_dir_;
    auto store = edge::StateStore::Open(o, *current_, state->get());
    EXPECT_TRUE(store.ok()) << store.status();
    EXPECT_FALSE((*store)->needs_rebuild());
    return (*state)->history_items();
  }

  std::unique_ptr<common::Model> current_;
  std::vector<int64_t> history_;
  std::vector<float> s_;
};

TEST_F(EdgeModelChangeTest, HistoryAndProfileSurviveARelease) {
  ASSERT_NO_FATAL_FAILURE(RecordV1History());
  const std::string v1_signature = current_->config().signature();
  ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/2, /*version=*/2));
  ASSERT_NE(current_->config().signature(), v1_signature);

  ASSERT_NO_FATAL_FAILURE(StartCloud());
  ASSERT_NO_FATAL_FAILURE(StartEdge(kFp32));  // SERVING once rebuilt
  const v1::EdgeState state = GetState();
  EXPECT_EQ(state.model_version(), 2u);
  EXPECT_EQ(state.model_signature(), current_->config().signature());
  EXPECT_EQ(state.profile_version(), 1u);
  EXPECT_EQ(state.interactions_total(), history_.size() + 5);
  for (const auto& t : state.tables()) {
    EXPECT_EQ(t.filled(), t.history_length()) << t.name();
  }
  const std::string log = edge_->ReadLog();
  EXPECT_THAT(log, testing::HasSubstr(absl::StrCat("kept ", history_.size(),
                                                   " history item ids")));
  EXPECT_THAT(log, testing::HasSubstr("rebuilt the scratchpad"));
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());

  // v2 goes on from there: new interactions, same reference.
  ASSERT_NO_FATAL_FAILURE(Interact(3));
  history_.erase(history_.begin());
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());
  edge_.reset();
  EXPECT_EQ(StoredHistory(), history_);
}

TEST_F(EdgeModelChangeTest, CloudDownAndKillDuringTheRebuildLoseNothing) {
  ASSERT_NO_FATAL_FAILURE(RecordV1History());
  ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/2, /*version=*/2));

  // No cloud: the edge starts, says it is rebuilding, retries.
  auto edge =
      Subprocess::Start(EdgeArgv(kFp32), dir_->path() + "/edge-rebuild.log");
  ASSERT_TRUE(edge.ok()) << edge.status();
  edge_ = *std::move(edge);
  const absl::Time until = absl::Now() + absl::Seconds(30);
  while (edge_->ReadLog().find("history rebuild attempt 2 failed") ==
             std::string::npos &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_THAT(edge_->ReadLog(),
              testing::HasSubstr("history rebuild attempt 2 failed"));
  stub_ = v1::EdgeService::NewStub(
      grpc::CreateChannel(EdgeTarget(), grpc::InsecureChannelCredentials()));
  v1::RecommendResponse response;
  const grpc::Status refused = Recommend(ValidRequest(), &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.error_message(),
              testing::HasSubstr("rebuilding its history"));
  ASSERT_TRUE(edge_->Signal(SIGKILL).ok());
  edge_.reset();

  // The cloud comes back: the restarted edge rebuilds from the same items.
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  ASSERT_NO_FATAL_FAILURE(StartEdge(kFp32));
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());
  // kill -9 after the rebuild: it restarts on v2 with no rebuild to do.
  edge_.reset();
  ASSERT_NO_FATAL_FAILURE(StartEdge(kFp32));
  EXPECT_THAT(edge_->ReadLog(), testing::Not(testing::HasSubstr("migrating")));
  EXPECT_EQ(GetState().model_version(), 2u);
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());
  edge_.reset();
  EXPECT_EQ(StoredHistory(), history_);
}

}  // namespace
}  // namespace duet::test
