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
#include "cloud/internal/scoring_test_util.h"
#include "common/base/clock.h"
#include "common/base/mutex.h"
#include "common/base/wait_for.h"
#include "common/kernels/quantize.h"
#include "common/model/reference_model.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::HasSubstr;

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
  common::Notification done;
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

// Queries of at most inline_max_candidates run on the caller's thread: the
// item side inside Begin (which still never ends the query itself), the
// combine inside ProvideUserVector; larger ones on the pool. Same scores.
TEST(ScoringCoreTest, SmallQueriesRunOnTheCallersThread) {
  ScoringCoreOptions o = FastOptions();
  o.inline_max_candidates = 16;
  for (const char* preset : {"tiny", "rm2"}) {
    auto core = MakeCore(preset, o);
    ASSERT_NE(core, nullptr);
    const common::Model& m = core->model();
    for (int n : {1, 16, 17, 64}) {
      const auto ids = Candidates(m, n, n);
      const auto u = RandomU(m, n);
      std::thread::id done_on;
      bool done_in_begin = true;
      common::Notification done;
      absl::StatusOr<duet::v1::Scores> result;
      bool in_begin = true;
      auto q = core->Begin(Begin(ids, n), absl::InfiniteFuture(), Rpc::kScore,
                           [&](absl::StatusOr<duet::v1::Scores> r) {
                             done_in_begin = in_begin;
                             done_on = std::this_thread::get_id();
                             result = std::move(r);
                             done.Notify();
                           });
      in_begin = false;
      ASSERT_TRUE(q.ok()) << q.status();
      if (n <= 16) {
        EXPECT_FALSE(done.HasBeenNotified()) << preset << " n=" << n;
      }
      core->ProvideUserVector(*q, Fp32Vector(m, u));
      if (n <= 16) {
        // Done before ProvideUserVector returned, on this thread.
        ASSERT_TRUE(done.HasBeenNotified()) << preset << " n=" << n;
        EXPECT_EQ(done_on, std::this_thread::get_id());
      }
      done.WaitForNotification();
      EXPECT_FALSE(done_in_begin);
      if (n > 16) {
        EXPECT_NE(done_on, std::this_thread::get_id());
      }
      ASSERT_TRUE(result.ok()) << result.status();
      ExpectMatchesSplitModel(m, u, ids, *result);
    }
  }
}

TEST(ScoringCoreTest, AdmissionControlRejectsBeyondMaxInflight) {
  ScoringCoreOptions o = FastOptions();
  o.max_inflight = 2;
  auto core = MakeCore("tiny", o);
  const common::Model& m = core->model();
  std::vector<absl::Status> ends;
  common::Mutex mu;
  auto record = [&](absl::StatusOr<duet::v1::Scores> r) {
    common::MutexLock lock(&mu);
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
    common::MutexLock lock(&mu);
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
  common::Notification done;
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

TEST(ScoringCoreTest, AQueryDroppedUnfinishedFreesItsSlot) {
  ScoringCoreOptions o = FastOptions();
  o.max_inflight = 1;
  auto core = MakeCore("tiny", o);
  const common::Model& m = core->model();
  bool called = false;
  {
    auto q =
        core->Begin(Begin(Candidates(m, 8, 1), 2), absl::InfiniteFuture(),
                    Rpc::kScoringSession,
                    [&](absl::StatusOr<duet::v1::Scores>) { called = true; });
    ASSERT_TRUE(q.ok());
    EXPECT_EQ(core->inflight(), 1);
  }  // dropped before its user vector: it can never end by itself
  // The item side still holds it until that work is done.
  ASSERT_TRUE(common::WaitFor([&] { return core->inflight() == 0; },
                              absl::Seconds(30)));
  EXPECT_FALSE(called);  // nobody is waiting for a reply
  auto next = RunQuery(*core, Begin(Candidates(m, 8, 2), 2),
                       Fp32Vector(m, RandomU(m, 2)));
  EXPECT_TRUE(next.ok()) << next.status();
}

TEST(ScoringCoreTest, DeadlineExpiresQueryWithoutUserVector) {
  common::FakeClock clock;
  ScoringCoreOptions o = FastOptions();
  o.clock = &clock;
  auto core = MakeCore("tiny", o);
  const common::Model& m = core->model();
  auto begin = Begin(Candidates(m, 4, 1), 1);
  begin.set_timeout_us(50000);
  common::Notification done;
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
  common::Notification due_done;
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
    common::Notification done;
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
  common::Notification probe_done;
  auto probe_q = core->Begin(
      probe, clock.Now(), Rpc::kScoringSession,
      [&](absl::StatusOr<duet::v1::Scores>) { probe_done.Notify(); });
  ASSERT_TRUE(probe_q.ok());
  ASSERT_TRUE(probe_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(calls.load(), 5);
  EXPECT_EQ(core->inflight(), 0);
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
}  // namespace
}  // namespace duet::cloud
