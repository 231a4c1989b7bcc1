#include "cloud/scoring_core.h"

#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/base/clock.h"
#include "common/kernels/quantize.h"
#include "common/model/reference_model.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::HasSubstr;

// One generated model directory per preset, shared by the whole binary and
// removed when it exits.
const std::string& ModelDir(const std::string& preset) {
  static std::map<std::string, common::TempDir> dirs;
  auto it = dirs.find(preset);
  if (it == dirs.end()) {
    it = dirs.try_emplace(preset).first;
    const double scale = preset == "tiny" ? 1.0 : 0.0005;
    auto config = common::GenerateTestModel(preset, scale, it->second.path());
    EXPECT_TRUE(config.ok()) << config.status();
  }
  return it->second.path();
}

std::unique_ptr<const common::Model> LoadModel(const std::string& preset) {
  common::LoadOptions lo;
  lo.parts.user_tables = true;
  lo.verify_checksums = false;
  auto model = common::Model::Load(ModelDir(preset), lo);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(model).value();
}

ScoringCoreOptions FastOptions() {
  ScoringCoreOptions o;
  o.workers = 2;
  o.max_candidates = 256;
  o.force_lookup = LookupStrategy::kBatch;
  o.force_user = UserStrategy::kLoad;
  o.placement_sample_items = 500;
  return o;
}

std::unique_ptr<ScoringCore> MakeCore(const std::string& preset,
                                      ScoringCoreOptions options) {
  auto core = ScoringCore::Create(LoadModel(preset), std::move(options));
  EXPECT_TRUE(core.ok()) << core.status();
  return core.ok() ? std::move(core).value() : nullptr;
}

std::vector<float> RandomU(const common::Model& m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(0, 1);
  std::vector<float> u(m.dims().user_out);
  for (float& x : u) x = dist(rng);
  return u;
}

duet::v1::UserVector Fp32Vector(const common::Model& m,
                                const std::vector<float>& u, uint64_t id = 0) {
  duet::v1::UserVector uv;
  uv.set_query_id(id);
  uv.set_model_version(m.config().version());
  uv.set_model_fingerprint(m.fingerprint());
  for (float x : u) uv.add_fp32_data(x);
  return uv;
}

duet::v1::BeginQuery Begin(const std::vector<int64_t>& ids, int top_k,
                           uint64_t id = 0) {
  duet::v1::BeginQuery b;
  b.set_query_id(id);
  for (int64_t i : ids) b.add_candidate_ids(i);
  b.set_top_k(top_k);
  return b;
}

std::vector<int64_t> Candidates(const common::Model& m, int n, int64_t salt) {
  std::vector<int64_t> ids;
  const int64_t items = m.catalog().num_items();
  for (int i = 0; i < n; ++i) ids.push_back((salt + 104729 * i) % items);
  return ids;
}

// Begin + user vector, waiting for the result.
absl::StatusOr<duet::v1::Scores> RunQuery(ScoringCore& core,
                                          const duet::v1::BeginQuery& begin,
                                          const duet::v1::UserVector& uv) {
  absl::Notification done;
  absl::StatusOr<duet::v1::Scores> result;
  auto q = core.Begin(begin, absl::InfiniteFuture(), Rpc::kScore,
                      [&](absl::StatusOr<duet::v1::Scores> r) {
                        result = std::move(r);
                        done.Notify();
                      });
  if (!q.ok()) return q.status();
  core.ProvideUserVector(*q, uv);
  done.WaitForNotification();
  return result;
}

absl::StatusOr<duet::v1::ScoreResponse> RunMonolithic(
    ScoringCore& core, const duet::v1::MonolithicScoreRequest& request) {
  absl::Notification done;
  absl::StatusOr<duet::v1::ScoreResponse> result;
  core.MonolithicScore(request, absl::InfiniteFuture(),
                       [&](absl::StatusOr<duet::v1::ScoreResponse> r) {
                         result = std::move(r);
                         done.Notify();
                       });
  done.WaitForNotification();
  return result;
}

void ExpectMatchesSplitModel(const common::Model& m,
                             const std::vector<float>& u,
                             const std::vector<int64_t>& ids,
                             const duet::v1::Scores& scores) {
  std::vector<float> want(ids.size());
  ASSERT_TRUE(
      common::SplitModel(&m).ScoreItems(u.data(), ids, want.data()).ok());
  ASSERT_EQ(scores.items_size(), static_cast<int>(ids.size()));
  std::map<int64_t, float> got;
  for (const auto& item : scores.items()) got[item.item_id()] = item.ctr();
  for (size_t j = 0; j < ids.size(); ++j) {
    ASSERT_TRUE(got.count(ids[j])) << ids[j];
    EXPECT_NEAR(got[ids[j]], want[j], 1e-5) << "candidate " << j;
  }
  for (int i = 1; i < scores.items_size(); ++i) {
    EXPECT_GE(scores.items(i - 1).ctr(), scores.items(i).ctr());
  }
}

enum class Placement { kReplicate, kShard, kShardHot };

using MatrixParam =
    std::tuple<const char*, LookupStrategy, UserStrategy, Placement, bool>;

std::string MatrixName(const ::testing::TestParamInfo<MatrixParam>& info) {
  const char* placements[] = {"replicate", "shard", "shardhot"};
  return std::string(std::get<0>(info.param)) + "_" +
         LookupStrategyName(std::get<1>(info.param)) + "_" +
         UserStrategyName(std::get<2>(info.param)) + "_" +
         placements[static_cast<int>(std::get<3>(info.param))] + "_" +
         (std::get<4>(info.param) ? "cache" : "nocache");
}

class StrategyMatrixTest : public ::testing::TestWithParam<MatrixParam> {};

TEST_P(StrategyMatrixTest, MatchesSplitReference) {
  const auto [preset, lookup, user, placement, cache] = GetParam();
  ScoringCoreOptions o = FastOptions();
  o.force_lookup = lookup;
  o.force_user = user;
  o.placement.mode = placement == Placement::kReplicate
                         ? PlacementMode::kReplicate
                         : PlacementMode::kShard;
  o.placement.force_hot_rows = placement == Placement::kShardHot ? 32 : -1;
  o.item_cache_entries = cache ? 1000 : 0;
  o.item_cache_mode = CacheMode::kAlways;
  auto core = MakeCore(preset, o);
  ASSERT_NE(core, nullptr);
  const common::Model& m = core->model();
  if (placement == Placement::kShardHot) {
    ASSERT_FALSE(core->placement().tables[0].hot_rows.empty());
  }
  for (int n : {1, 17, 256}) {
    const auto ids = Candidates(m, n, n);
    const auto u = RandomU(m, n);
    for (int round = 0; round < 2; ++round) {
      auto scores = RunQuery(*core, Begin(ids, n), Fp32Vector(m, u));
      ASSERT_TRUE(scores.ok()) << scores.status();
      ExpectMatchesSplitModel(m, u, ids, *scores);
      EXPECT_EQ(scores->timings().lookup_strategy(),
                LookupStrategyName(lookup));
      EXPECT_EQ(scores->timings().user_strategy(), UserStrategyName(user));
      // The second round of the same candidates is served from the cache.
      EXPECT_EQ(scores->timings().cache_hits(), cache && round == 1 ? n : 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, StrategyMatrixTest,
    ::testing::Combine(
        ::testing::Values("tiny", "rm2"),
        ::testing::Values(LookupStrategy::kBatch, LookupStrategy::kTable),
        ::testing::Values(UserStrategy::kLoad, UserStrategy::kRecompute),
        ::testing::Values(Placement::kReplicate, Placement::kShard,
                          Placement::kShardHot),
        ::testing::Bool()),
    MatrixName);

// The auto cache policy measures the model's break-even hit ratio at load;
// queries still match the reference whether they use the cache or not.
TEST(ScoringCoreTest, AutoCachePolicyIsCalibratedAtLoad) {
  ScoringCoreOptions o = FastOptions();
  o.item_cache_entries = 1000;
  o.item_cache_mode = CacheMode::kAuto;
  auto core = MakeCore("tiny", o);
  ASSERT_NE(core, nullptr);
  const CachePolicy* policy = core->runtime()->cache_policy();
  ASSERT_NE(policy, nullptr);
  EXPECT_GT(policy->break_even(), 0);
  EXPECT_LE(policy->break_even(), 2);
  EXPECT_THAT(core->runtime()->CacheDebugString(),
              HasSubstr("item cache: per row"));
  const common::Model& m = core->model();
  const auto ids = Candidates(m, 64, 4);
  const auto u = RandomU(m, 4);
  for (int round = 0; round < 3; ++round) {
    auto r = RunQuery(*core, Begin(ids, 64), Fp32Vector(m, u));
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectMatchesSplitModel(m, u, ids, *r);
  }

  o.item_cache_mode = CacheMode::kAlways;
  auto always = MakeCore("tiny", o);
  ASSERT_NE(always, nullptr);
  EXPECT_EQ(always->runtime()->cache_policy()->break_even(), 0);
  o.item_cache_entries = 0;
  auto off = MakeCore("tiny", o);
  ASSERT_NE(off, nullptr);
  EXPECT_EQ(off->runtime()->cache_policy(), nullptr);
  EXPECT_EQ(off->runtime()->CacheDebugString(), "item cache: off");
}

TEST(ScoringCoreTest, AutoSelectorCalibratesAndCountsChoices) {
  ScoringCoreOptions o = FastOptions();
  o.force_lookup.reset();
  o.force_user.reset();
  o.calibration_budget = absl::Milliseconds(100);
  auto core = MakeCore("tiny", o);
  ASSERT_NE(core, nullptr);
  EXPECT_EQ(core->selector().lookup_measurements().size(), 6u);  // 8..256
  EXPECT_EQ(core->selector().user_measurements().size(), 6u);
  const common::Model& m = core->model();
  const auto u = RandomU(m, 1);
  for (int n : {8, 100, 256}) {
    const auto ids = Candidates(m, n, 3);
    auto scores = RunQuery(*core, Begin(ids, n), Fp32Vector(m, u));
    ASSERT_TRUE(scores.ok()) << scores.status();
    ExpectMatchesSplitModel(m, u, ids, *scores);
  }
  const StrategySelector& s = core->selector();
  EXPECT_EQ(s.lookup_count(LookupStrategy::kBatch) +
                s.lookup_count(LookupStrategy::kTable),
            3u);
  EXPECT_EQ(s.user_count(UserStrategy::kLoad) +
                s.user_count(UserStrategy::kRecompute),
            3u);
}

TEST(ScoringCoreTest, Int8UserVectorIsDequantized) {
  auto core = MakeCore("tiny", FastOptions());
  const common::Model& m = core->model();
  const auto u = RandomU(m, 5);
  std::vector<int8_t> q(u.size());
  const common::AffineParams p = common::QuantizeAffineInt8(
      u.data(), static_cast<int>(u.size()), q.data());
  std::vector<float> deq(u.size());
  common::DequantizeAffineInt8(q.data(), static_cast<int>(q.size()), p,
                               deq.data());
  duet::v1::UserVector uv = Fp32Vector(m, {});
  uv.set_int8_data(std::string(q.begin(), q.end()));
  uv.set_scale(p.scale);
  uv.set_zero_point(p.zero_point);
  const auto ids = Candidates(m, 40, 1);
  auto scores = RunQuery(*core, Begin(ids, 40), uv);
  ASSERT_TRUE(scores.ok()) << scores.status();
  ExpectMatchesSplitModel(m, deq, ids, *scores);
}

TEST(ScoringCoreTest, RelayCarriesUserTableRowsOfTopItems) {
  auto core = MakeCore("tiny", FastOptions());
  const common::Model& m = core->model();
  auto begin = Begin(Candidates(m, 20, 9), 5);
  begin.set_relay_top(3);
  auto scores = RunQuery(*core, begin, Fp32Vector(m, RandomU(m, 2)));
  ASSERT_TRUE(scores.ok()) << scores.status();
  ASSERT_EQ(scores->relay_size(), 3);
  const int dim = m.config().embedding_dim();
  for (int i = 0; i < 3; ++i) {
    const auto& e = scores->relay(i);
    EXPECT_EQ(e.item_id(), scores->items(i).item_id());
    ASSERT_EQ(e.rows_size(), m.config().user_tables_size() * dim);
    for (int t = 0; t < m.config().user_tables_size(); ++t) {
      const float* row = static_cast<const float*>(m.user_table(t).data) +
                         m.catalog().HistoryKey(e.item_id(), t) * dim;
      for (int k = 0; k < dim; ++k) ASSERT_EQ(e.rows(t * dim + k), row[k]);
    }
  }
}

TEST(ScoringCoreTest, ItemSideOverlapsWithUserVector) {
  auto core = MakeCore("tiny", FastOptions());
  const common::Model& m = core->model();
  absl::Notification done;
  absl::StatusOr<duet::v1::Scores> result;
  auto q = core->Begin(Begin(Candidates(m, 64, 1), 4), absl::InfiniteFuture(),
                       Rpc::kScoringSession,
                       [&](absl::StatusOr<duet::v1::Scores> r) {
                         result = std::move(r);
                         done.Notify();
                       });
  ASSERT_TRUE(q.ok());
  absl::SleepFor(absl::Milliseconds(200));
  core->ProvideUserVector(*q, Fp32Vector(m, RandomU(m, 1)));
  done.WaitForNotification();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->timings().item_side_ready_first());
  EXPECT_GT(result->timings().user_wait_us(), 0);
  EXPECT_GT(result->timings().total_us(), result->timings().user_wait_us());

  // User vector first: the item side could not have been ready.
  auto scores = RunQuery(*core, Begin(Candidates(m, 8, 1), 4),
                         Fp32Vector(m, RandomU(m, 1)));
  ASSERT_TRUE(scores.ok());
  if (!scores->timings().item_side_ready_first()) {
    EXPECT_EQ(scores->timings().user_wait_us(), 0);
  }
}

TEST(ScoringCoreTest, AdmissionControlRejectsBeyondMaxInflight) {
  ScoringCoreOptions o = FastOptions();
  o.max_inflight = 2;
  auto core = MakeCore("tiny", o);
  const common::Model& m = core->model();
  std::vector<absl::Status> ends;
  absl::Mutex mu;
  auto record = [&](absl::StatusOr<duet::v1::Scores> r) {
    absl::MutexLock lock(&mu);
    ends.push_back(r.status());
  };
  auto a = core->Begin(Begin(Candidates(m, 4, 1), 1, 1), absl::InfiniteFuture(),
                       Rpc::kScoringSession, record);
  auto b = core->Begin(Begin(Candidates(m, 4, 2), 1, 2), absl::InfiniteFuture(),
                       Rpc::kScoringSession, record);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(core->inflight(), 2);
  auto c = core->Begin(Begin(Candidates(m, 4, 3), 1, 3), absl::InfiniteFuture(),
                       Rpc::kScoringSession, record);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("the limit is 2"));
  core->Cancel(*a);
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(ends.size(), 1u);
    EXPECT_EQ(ends[0].code(), absl::StatusCode::kCancelled);
  }
  auto d = core->Begin(Begin(Candidates(m, 4, 4), 1, 4), absl::InfiniteFuture(),
                       Rpc::kScoringSession, record);
  EXPECT_TRUE(d.ok()) << d.status();
  core->Cancel(*b);
  core->Cancel(*d);
  EXPECT_EQ(core->inflight(), 0);
}

TEST(ScoringCoreTest, SlotIsFreeBeforeTheReplyIsDelivered) {
  // A closed-loop client at exactly max_inflight sends its next query from
  // the reply of the previous one: it must be admitted, not refused.
  ScoringCoreOptions o = FastOptions();
  o.max_inflight = 1;
  auto core = MakeCore("tiny", o);
  const common::Model& m = core->model();
  const auto ids = Candidates(m, 4, 1);
  absl::Notification done;
  absl::Status next;
  auto q = core->Begin(Begin(ids, 1), absl::InfiniteFuture(), Rpc::kScore,
                       [&](absl::StatusOr<duet::v1::Scores> r) {
                         EXPECT_TRUE(r.ok()) << r.status();
                         auto second = core->Begin(
                             Begin(ids, 1), absl::InfiniteFuture(), Rpc::kScore,
                             [](absl::StatusOr<duet::v1::Scores>) {});
                         next = second.status();
                         if (second.ok()) core->Cancel(*second);
                         done.Notify();
                       });
  ASSERT_TRUE(q.ok()) << q.status();
  core->ProvideUserVector(*q, Fp32Vector(m, RandomU(m, 1)));
  done.WaitForNotification();
  EXPECT_TRUE(next.ok()) << next;
  EXPECT_EQ(core->inflight(), 0);
}

TEST(ScoringCoreTest, DeadlineExpiresQueryWithoutUserVector) {
  common::FakeClock clock;
  ScoringCoreOptions o = FastOptions();
  o.clock = &clock;
  auto core = MakeCore("tiny", o);
  const common::Model& m = core->model();
  auto begin = Begin(Candidates(m, 4, 1), 1);
  begin.set_timeout_us(50000);
  absl::Notification done;
  absl::Status status;
  auto q = core->Begin(begin, absl::InfiniteFuture(), Rpc::kScoringSession,
                       [&](absl::StatusOr<duet::v1::Scores> r) {
                         status = r.status();
                         done.Notify();
                       });
  ASSERT_TRUE(q.ok());
  // 1 ms short of the deadline: an already-due query ends, this one not.
  clock.Advance(absl::Milliseconds(49));
  auto due = Begin(Candidates(m, 4, 2), 1);
  due.set_query_id(2);
  due.set_timeout_us(1);
  absl::Notification due_done;
  // Kept, as a session keeps its queries: a query nobody holds is abandoned.
  auto due_q = core->Begin(due, clock.Now(), Rpc::kScoringSession,
                           [&](absl::StatusOr<duet::v1::Scores> r) {
                             EXPECT_EQ(r.status().code(),
                                       absl::StatusCode::kDeadlineExceeded);
                             due_done.Notify();
                           });
  ASSERT_TRUE(due_q.ok());
  ASSERT_TRUE(due_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_FALSE(done.HasBeenNotified());
  clock.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(status.message(), HasSubstr("exceeded its deadline of 50 ms"));
  EXPECT_THAT(status.message(), HasSubstr("user vector not received"));
  EXPECT_EQ(core->inflight(), 0);
  // A late user vector is ignored (the query already ended once).
  core->ProvideUserVector(*q, Fp32Vector(m, RandomU(m, 1)));
}

TEST(ScoringCoreTest, AnsweredQueriesLeaveNoDeadlineBehind) {
  common::FakeClock clock;
  ScoringCoreOptions o = FastOptions();
  o.clock = &clock;
  auto core = MakeCore("tiny", o);
  const common::Model& m = core->model();
  std::atomic<int> calls{0};
  for (int i = 0; i < 5; ++i) {
    auto begin = Begin(Candidates(m, 8, i), 2);
    begin.set_query_id(i);
    absl::Notification done;
    auto q = core->Begin(begin, absl::InfiniteFuture(), Rpc::kScoringSession,
                         [&](absl::StatusOr<duet::v1::Scores> r) {
                           EXPECT_TRUE(r.ok()) << r.status();
                           ++calls;
                           done.Notify();
                         });
    ASSERT_TRUE(q.ok());
    core->ProvideUserVector(*q, Fp32Vector(m, RandomU(m, i)));
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  }
  // Past every deadline: nothing is left to expire, nothing ends twice.
  clock.Advance(absl::Hours(1));
  auto probe = Begin(Candidates(m, 4, 9), 1);
  probe.set_query_id(99);
  absl::Notification probe_done;
  auto probe_q = core->Begin(
      probe, clock.Now(), Rpc::kScoringSession,
      [&](absl::StatusOr<duet::v1::Scores>) { probe_done.Notify(); });
  ASSERT_TRUE(probe_q.ok());
  ASSERT_TRUE(probe_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(calls.load(), 5);
  EXPECT_EQ(core->inflight(), 0);
}

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
  absl::Notification done;
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
  absl::Notification done;
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

TEST(ScoringCoreTest, DrainRejectsNewQueries) {
  auto core = MakeCore("tiny", FastOptions());
  const common::Model& m = core->model();
  EXPECT_EQ(core->Drain(absl::Now() + absl::Seconds(1)), 0);
  auto q = core->Begin(Begin(Candidates(m, 4, 1), 1), absl::InfiniteFuture(),
                       Rpc::kScore, [](absl::StatusOr<duet::v1::Scores>) {});
  EXPECT_EQ(q.status().code(), absl::StatusCode::kUnavailable);
}

TEST(ScoringCoreTest, PlacementOverBudgetFailsCreate) {
  ScoringCoreOptions o = FastOptions();
  o.placement.memory_budget_bytes = 1000;
  auto core = ScoringCore::Create(LoadModel("tiny"), o);
  EXPECT_EQ(core.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(core.status().message(), HasSubstr("memory budget"));
}

// A second version of the tiny model (other seed, so other weights and
// signature), generated once.
std::unique_ptr<const common::Model> LoadTinyV2() {
  static const common::TempDir dir;  // removed when the binary exits
  static const bool generated = [] {
    auto config = common::GenerateTestModel("tiny", 1.0, dir.path(),
                                            /*seed=*/2, /*version=*/2);
    EXPECT_TRUE(config.ok()) << config.status();
    return config.ok();
  }();
  EXPECT_TRUE(generated);
  common::LoadOptions lo;
  lo.parts.user_tables = true;
  auto model = common::Model::Load(dir.path(), lo);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(model).value();
}

TEST(ScoringCoreReloadTest, InFlightQueryFinishesOnOldModel) {
  auto core = MakeCore("tiny", FastOptions());
  ASSERT_NE(core, nullptr);
  const auto v1 = LoadModel("tiny");
  const auto v2 = LoadTinyV2();
  ASSERT_NE(v1->config().signature(), v2->config().signature());
  const auto ids = Candidates(*v1, 40, 3);
  const auto u = RandomU(*v1, 5);
  absl::Notification done;
  absl::StatusOr<duet::v1::Scores> result;
  auto q = core->Begin(Begin(ids, 40), absl::InfiniteFuture(), Rpc::kScore,
                       [&](absl::StatusOr<duet::v1::Scores> r) {
                         result = std::move(r);
                         done.Notify();
                       });
  ASSERT_TRUE(q.ok()) << q.status();
  // The swap happens while the query waits for its user vector.
  auto swapped = core->Reload(LoadTinyV2());
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  EXPECT_EQ(core->model().config().version(), 2u);
  EXPECT_EQ(core->model().config().signature(), v2->config().signature());
  core->ProvideUserVector(*q, Fp32Vector(*v1, u));
  done.WaitForNotification();
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectMatchesSplitModel(*v1, u, ids, *result);

  // New queries run on v2: a v1 vector is refused naming both versions, a
  // v2 vector gets v2's scores.
  auto stale = RunQuery(*core, Begin(ids, 40), Fp32Vector(*v1, u));
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(stale.status().message(),
              HasSubstr(absl::StrCat("user vector is for model tiny v1 "
                                     "(signature ",
                                     v1->config().signature(),
                                     "), this server runs tiny v2 (signature ",
                                     v2->config().signature(), ")")));
  EXPECT_EQ(core->ValidateUserVector(Fp32Vector(*v1, u)).code(),
            absl::StatusCode::kFailedPrecondition);
  auto fresh = RunQuery(*core, Begin(ids, 40), Fp32Vector(*v2, u));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ExpectMatchesSplitModel(*v2, u, ids, *fresh);
  EXPECT_EQ(core->inflight(), 0);
}

TEST(ScoringCoreReloadTest, SwapUnderConcurrentQueriesFailsNone) {
  ScoringCoreOptions o = FastOptions();
  o.max_inflight = 256;
  auto core = MakeCore("tiny", o);
  ASSERT_NE(core, nullptr);
  const auto v1 = LoadModel("tiny");
  const auto v2 = LoadTinyV2();
  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<int> ok_v1{0}, ok_v2{0}, refused{0};
  std::vector<std::string> unexpected;
  absl::Mutex mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const auto u = RandomU(*v1, t);
      for (int i = 0; !stop.load(); ++i) {
        const auto ids = Candidates(*v1, 16 + i % 32, t * 1000 + i);
        // Each client sends the version it last saw served.
        const bool use_v2 = core->model().config().version() == 2;
        const common::Model& m = use_v2 ? *v2 : *v1;
        const int n = static_cast<int>(ids.size());
        auto r = RunQuery(*core, Begin(ids, n), Fp32Vector(m, u));
        if (r.ok()) {
          ExpectMatchesSplitModel(m, u, ids, *r);
          (use_v2 ? ok_v2 : ok_v1)++;
        } else if (!use_v2 &&
                   r.status().code() == absl::StatusCode::kFailedPrecondition &&
                   absl::StrContains(r.status().message(), "tiny v1") &&
                   absl::StrContains(r.status().message(),
                                     "this server runs tiny v2")) {
          refused++;  // admitted after the swap with a v1 vector
        } else {
          absl::MutexLock lock(&mu);
          unexpected.push_back(r.status().ToString());
        }
      }
    });
  }
  while (ok_v1.load() < 50) absl::SleepFor(absl::Milliseconds(1));
  auto swapped = core->Reload(LoadTinyV2());
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  const int v2_target = ok_v2.load() + 50;
  while (ok_v2.load() < v2_target) absl::SleepFor(absl::Milliseconds(1));
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_THAT(unexpected, ::testing::IsEmpty());
  EXPECT_LE(refused.load(), kThreads);  // at most one per client
  EXPECT_EQ(core->inflight(), 0);
}

TEST(ScoringCoreReloadTest, ItemCacheStartsEmptyAfterSwap) {
  ScoringCoreOptions o = FastOptions();
  o.item_cache_entries = 1000;
  o.item_cache_mode = CacheMode::kAlways;
  auto core = MakeCore("tiny", o);
  ASSERT_NE(core, nullptr);
  const auto v1 = LoadModel("tiny");
  const auto v2 = LoadTinyV2();
  const auto ids = Candidates(*v1, 64, 9);
  const auto u = RandomU(*v1, 9);
  for (int round = 0; round < 2; ++round) {
    auto r = RunQuery(*core, Begin(ids, 64), Fp32Vector(*v1, u));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->timings().cache_hits(), round == 0 ? 0 : 64);
  }
  const ItemCache* old_cache = core->runtime()->cache();
  ASSERT_NE(old_cache, nullptr);
  EXPECT_EQ(old_cache->size(), 64);
  ASSERT_TRUE(core->Reload(LoadTinyV2()).ok());
  ASSERT_NE(core->runtime()->cache(), nullptr);
  EXPECT_EQ(core->runtime()->cache()->size(), 0);
  for (int round = 0; round < 2; ++round) {
    auto r = RunQuery(*core, Begin(ids, 64), Fp32Vector(*v2, u));
    ASSERT_TRUE(r.ok()) << r.status();
    // No v1 vector is ever served for v2: the first round misses entirely.
    EXPECT_EQ(r->timings().cache_hits(), round == 0 ? 0 : 64);
    ExpectMatchesSplitModel(*v2, u, ids, *r);
  }
}

TEST(ScoringCoreReloadTest, ReloadWithoutNeededPartsKeepsOldModel) {
  auto core = MakeCore("tiny", FastOptions());
  ASSERT_NE(core, nullptr);
  const std::string signature = core->model().config().signature();
  common::LoadOptions lo;  // edge + cloud, no user tables
  auto model = common::Model::Load(ModelDir("tiny"), lo);
  ASSERT_TRUE(model.ok()) << model.status();
  auto r = core->Reload(*std::move(model));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("lacks the user tables"));
  EXPECT_EQ(core->Reload(nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core->model().config().signature(), signature);
  const auto v1 = LoadModel("tiny");
  const auto ids = Candidates(*v1, 8, 1);
  EXPECT_TRUE(
      RunQuery(*core, Begin(ids, 2), Fp32Vector(*v1, RandomU(*v1, 1))).ok());
}

}  // namespace
}  // namespace duet::cloud
