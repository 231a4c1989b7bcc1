// ScoringCore refuses bad queries and user vectors with precise errors and
// never ranks on NaN.
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

TEST(ScoringCoreTest, BadBeginQueriesGetPreciseErrors) {
  auto core = MakeCore("tiny", FastOptions());
  const common::Model& m = core->model();
  const auto ids = Candidates(m, 4, 1);
  struct Case {
    duet::v1::BeginQuery begin;
    const char* message;
  };
  std::vector<Case> cases;
  cases.push_back({Begin({}, 1), "candidate_ids is empty"});
  cases.push_back({Begin(Candidates(m, 257, 1), 1), "at most 256"});
  cases.push_back({Begin({1, 2, 500}, 1), "candidate_ids[2] is 500"});
  cases.push_back({Begin({1, -1}, 1), "candidate_ids[1] is -1"});
  cases.push_back({Begin(ids, 0), "top_k is 0, must be in [1, 4]"});
  cases.push_back({Begin(ids, 5), "top_k is 5"});
  auto relay = Begin(ids, 2);
  relay.set_relay_top(-1);
  cases.push_back({relay, "relay_top is -1"});
  auto timeout = Begin(ids, 2);
  timeout.set_timeout_us(-5);
  cases.push_back({timeout, "timeout_us is -5"});
  for (const Case& c : cases) {
    auto q = core->Begin(c.begin, absl::InfiniteFuture(), Rpc::kScore,
                         [](absl::StatusOr<duet::v1::Scores>) {
                           ADD_FAILURE() << "done must not run";
                         });
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument)
        << c.message;
    EXPECT_THAT(q.status().message(), HasSubstr(c.message));
  }
  EXPECT_EQ(core->inflight(), 0);
}

TEST(ScoringCoreTest, BadUserVectorsGetPreciseErrors) {
  auto core = MakeCore("tiny", FastOptions());
  const common::Model& m = core->model();
  const auto u = RandomU(m, 1);
  const int n = m.dims().user_out;
  struct Case {
    duet::v1::UserVector uv;
    absl::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  auto version = Fp32Vector(m, u);
  version.set_model_version(m.config().version() + 1);
  cases.push_back({version, absl::StatusCode::kFailedPrecondition,
                   "user vector is for model tiny v2"});
  auto fingerprint = Fp32Vector(m, u);
  fingerprint.set_model_fingerprint(m.fingerprint() ^ 1);
  cases.push_back(
      {fingerprint, absl::StatusCode::kFailedPrecondition,
       "this server runs tiny v1 (signature " + m.config().signature() + ")"});
  cases.push_back({Fp32Vector(m, std::vector<float>(n - 1, 0.f)),
                   absl::StatusCode::kInvalidArgument,
                   "fp32_data has " + std::to_string(n - 1) + " values"});
  auto nan = Fp32Vector(m, u);
  nan.set_fp32_data(1, std::nanf(""));
  cases.push_back(
      {nan, absl::StatusCode::kInvalidArgument, "fp32_data[1] is nan"});
  auto inf = Fp32Vector(m, u);
  inf.set_fp32_data(0, INFINITY);
  cases.push_back(
      {inf, absl::StatusCode::kInvalidArgument, "fp32_data[0] is inf"});
  cases.push_back(
      {Fp32Vector(m, {}), absl::StatusCode::kInvalidArgument, "neither"});
  auto both = Fp32Vector(m, u);
  both.set_int8_data(std::string(n, '\1'));
  both.set_scale(0.1f);
  cases.push_back({both, absl::StatusCode::kInvalidArgument, "both"});
  auto short8 = Fp32Vector(m, {});
  short8.set_int8_data(std::string(n + 1, '\1'));
  short8.set_scale(0.1f);
  cases.push_back({short8, absl::StatusCode::kInvalidArgument,
                   "int8_data has " + std::to_string(n + 1) + " values"});
  auto scale = Fp32Vector(m, {});
  scale.set_int8_data(std::string(n, '\1'));
  scale.set_scale(std::nanf(""));
  cases.push_back(
      {scale, absl::StatusCode::kInvalidArgument, "user_vector.scale is nan"});
  // 127 * 1.7e38 overflows float32 (found by cloud_request_fuzzer).
  auto huge = scale;
  huge.set_scale(1.70141183e+38f);
  cases.push_back({huge, absl::StatusCode::kInvalidArgument,
                   "user_vector.scale is 1.70141e+38, must be positive and at "
                   "most"});
  auto zp = Fp32Vector(m, {});
  zp.set_int8_data(std::string(n, '\1'));
  zp.set_scale(0.1f);
  zp.set_zero_point(300);
  cases.push_back(
      {zp, absl::StatusCode::kInvalidArgument, "zero_point is 300"});
  for (const Case& c : cases) {
    auto result = RunQuery(*core, Begin(Candidates(m, 4, 1), 2), c.uv);
    EXPECT_EQ(result.status().code(), c.code) << c.message;
    EXPECT_THAT(result.status().message(), HasSubstr(c.message));
  }
  EXPECT_EQ(core->inflight(), 0);
}

// Finite inputs at the edge of float32 overflow inside the MLPs. Whatever
// strategy runs, the reply is a precise error or CTRs in [0, 1], never a
// ranking built on NaN.
void ExpectErrorOrSaneCtrs(
    const absl::Status& status,
    const google::protobuf::RepeatedPtrField<duet::v1::ScoredItem>& items) {
  if (!status.ok()) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("the inputs overflow float32"));
    return;
  }
  for (const auto& item : items) {
    EXPECT_TRUE(item.ctr() >= 0 && item.ctr() <= 1) << item.ctr();
  }
}

TEST(ScoringCoreTest, ExtremeInputsNeverRankOnNaN) {
  auto core = MakeCore("tiny", FastOptions());
  const common::Model& m = core->model();
  for (const float magnitude : {3e38f, 1e30f, 1e20f}) {
    std::vector<float> u(m.dims().user_out);
    for (size_t i = 0; i < u.size(); ++i) u[i] = i % 2 ? -magnitude : magnitude;
    for (const UserStrategy strategy :
         {UserStrategy::kLoad, UserStrategy::kRecompute}) {
      ScoringCoreOptions o = FastOptions();
      o.force_user = strategy;
      auto pinned = MakeCore("tiny", o);
      auto result =
          RunQuery(*pinned, Begin(Candidates(m, 8, 1), 8), Fp32Vector(m, u));
      ExpectErrorOrSaneCtrs(result.status(), result.ok()
                                                 ? result->items()
                                                 : duet::v1::Scores().items());
      EXPECT_EQ(pinned->inflight(), 0);
    }
    duet::v1::MonolithicScoreRequest req;
    for (int i = 0; i < m.dims().static_in; ++i) {
      req.add_static_features(magnitude);
    }
    for (int i = 0; i < m.dims().dynamic_in; ++i) {
      req.add_dynamic_features(i % 2 ? -magnitude : magnitude);
    }
    for (int64_t id : Candidates(m, 8, 2)) req.add_candidate_ids(id);
    req.set_top_k(8);
    const auto result = RunMonolithic(*core, req);
    ExpectErrorOrSaneCtrs(
        result.status(),
        result.ok() ? result->items() : duet::v1::ScoreResponse().items());
  }
  EXPECT_EQ(core->inflight(), 0);
}

TEST(ScoringCoreTest, SecondUserVectorFailsTheQuery) {
  auto core = MakeCore("tiny", FastOptions());
  const common::Model& m = core->model();
  common::Notification done;
  absl::StatusOr<duet::v1::Scores> result;
  auto begin = Begin(Candidates(m, 4, 1), 2, 77);
  auto q = core->Begin(begin, absl::InfiniteFuture(), Rpc::kScoringSession,
                       [&](absl::StatusOr<duet::v1::Scores> r) {
                         result = std::move(r);
                         done.Notify();
                       });
  ASSERT_TRUE(q.ok());
  // Hold the item side back is not possible; send both at once: either the
  // first completes the query (the second is ignored) or the second fails it.
  core->ProvideUserVector(*q, Fp32Vector(m, RandomU(m, 1)));
  core->ProvideUserVector(*q, Fp32Vector(m, RandomU(m, 1)));
  done.WaitForNotification();
  if (!result.ok()) {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(result.status().message(),
                HasSubstr("query_id 77 already received its user vector"));
  }
}

}  // namespace
}  // namespace duet::cloud
