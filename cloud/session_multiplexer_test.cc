#include "cloud/session_multiplexer.h"

#include <set>
#include <vector>

#include "common/base/mutex.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::HasSubstr;

class SessionMultiplexerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(common::GenerateTestModel("tiny", 1.0, dir_.path()).ok());
    common::LoadOptions lo;
    lo.parts.user_tables = true;
    auto model = common::Model::Load(dir_.path(), lo);
    ASSERT_TRUE(model.ok()) << model.status();
    ScoringCoreOptions o;
    o.workers = 2;
    o.force_lookup = LookupStrategy::kBatch;
    o.force_user = UserStrategy::kLoad;
    auto core = ScoringCore::Create(std::move(model).value(), o);
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(core).value();
    mux_ = std::make_unique<SessionMultiplexer>(
        core_.get(), absl::InfiniteFuture(),
        [this](duet::v1::SessionResponse r) {
          common::MutexLock lock(&mu_);
          responses_.push_back(std::move(r));
        });
  }

  duet::v1::SessionRequest BeginReq(uint64_t id, int n = 8) {
    duet::v1::SessionRequest r;
    r.mutable_begin()->set_query_id(id);
    for (int i = 0; i < n; ++i) r.mutable_begin()->add_candidate_ids(i * 3);
    r.mutable_begin()->set_top_k(2);
    return r;
  }
  duet::v1::SessionRequest UserReq(uint64_t id) {
    duet::v1::SessionRequest r;
    duet::v1::UserVector* uv = r.mutable_user_vector();
    uv->set_query_id(id);
    uv->set_model_version(core_->model().config().version());
    uv->set_model_fingerprint(core_->model().fingerprint());
    for (int i = 0; i < core_->model().dims().user_out; ++i) {
      uv->add_fp32_data(0.1f * i);
    }
    return r;
  }
  // Waits (bounded) for `count` responses and returns all so far.
  std::vector<duet::v1::SessionResponse> Await(size_t count) {
    common::MutexLock lock(&mu_);
    want_ = count;
    mu_.AwaitWithTimeout(absl::Condition(this, &SessionMultiplexerTest::Enough),
                         absl::Seconds(10));
    return responses_;
  }
  bool Enough() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return responses_.size() >= want_;
  }

  common::TempDir dir_;
  std::unique_ptr<ScoringCore> core_;
  std::unique_ptr<SessionMultiplexer> mux_;
  common::Mutex mu_;
  std::vector<duet::v1::SessionResponse> responses_ ABSL_GUARDED_BY(mu_);
  size_t want_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST_F(SessionMultiplexerTest, InterleavedQueriesEachGetScores) {
  mux_->OnRequest(BeginReq(1));
  mux_->OnRequest(BeginReq(2));
  EXPECT_EQ(mux_->open_queries(), 2);
  mux_->OnRequest(UserReq(2));
  mux_->OnRequest(UserReq(1));
  auto r = Await(2);
  ASSERT_EQ(r.size(), 2u);
  std::set<uint64_t> ids;
  for (const auto& x : r) {
    ASSERT_TRUE(x.has_scores()) << x.DebugString();
    EXPECT_EQ(x.scores().items_size(), 2);
    ids.insert(x.scores().query_id());
  }
  EXPECT_EQ(ids, (std::set<uint64_t>{1, 2}));
  EXPECT_EQ(mux_->open_queries(), 0);
}

TEST_F(SessionMultiplexerTest, ErrorsAreScopedToTheQuery) {
  mux_->OnRequest(BeginReq(5));
  mux_->OnRequest(BeginReq(5));     // duplicate while open
  mux_->OnRequest(UserReq(6));      // never begun
  mux_->OnRequest(BeginReq(7, 0));  // no candidates
  auto r = Await(3);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].error().query_id(), 5u);
  EXPECT_EQ(r[0].error().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r[0].error().message(), HasSubstr("query_id 5 is already open"));
  EXPECT_EQ(r[1].error().query_id(), 6u);
  EXPECT_EQ(r[1].error().code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(r[2].error().code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r[2].error().message(), HasSubstr("candidate_ids is empty"));
  // The stream still works: query 5 completes, and its id can be reused.
  mux_->OnRequest(UserReq(5));
  r = Await(4);
  ASSERT_TRUE(r[3].has_scores());
  EXPECT_EQ(r[3].scores().query_id(), 5u);
  mux_->OnRequest(BeginReq(5));
  mux_->OnRequest(UserReq(5));
  r = Await(5);
  EXPECT_TRUE(r[4].has_scores());
}

TEST_F(SessionMultiplexerTest, BadUserVectorEndsOnlyThatQuery) {
  mux_->OnRequest(BeginReq(1));
  mux_->OnRequest(BeginReq(2));
  auto bad = UserReq(1);
  bad.mutable_user_vector()->set_model_version(99);
  mux_->OnRequest(bad);
  mux_->OnRequest(UserReq(2));
  auto r = Await(2);
  ASSERT_EQ(r.size(), 2u);
  int errors = 0, scores = 0;
  for (const auto& x : r) {
    if (x.has_error()) {
      ++errors;
      EXPECT_EQ(x.error().query_id(), 1u);
      EXPECT_EQ(x.error().code(),
                static_cast<int>(absl::StatusCode::kFailedPrecondition));
    } else {
      ++scores;
      EXPECT_EQ(x.scores().query_id(), 2u);
    }
  }
  EXPECT_EQ(errors, 1);
  EXPECT_EQ(scores, 1);
}

TEST_F(SessionMultiplexerTest, CancelAndCancelAllAnswerEveryQuery) {
  mux_->OnRequest(BeginReq(1));
  mux_->OnRequest(BeginReq(2));
  duet::v1::SessionRequest cancel;
  cancel.mutable_cancel()->set_query_id(1);
  mux_->OnRequest(cancel);
  mux_->CancelAll();
  auto r = Await(2);
  ASSERT_EQ(r.size(), 2u);
  for (const auto& x : r) {
    EXPECT_EQ(x.error().code(), static_cast<int>(absl::StatusCode::kCancelled));
  }
  EXPECT_EQ(mux_->open_queries(), 0);
  EXPECT_EQ(core_->inflight(), 0);
}

}  // namespace
}  // namespace duet::cloud
