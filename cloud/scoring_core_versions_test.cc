// ScoringCore serving several model versions: AddVersion beside live
// queries, routing by the version a query names, retirement after the
// grace period.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
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

duet::v1::BeginQuery BeginOn(const common::Model& m,
                             const std::vector<int64_t>& ids, int top_k) {
  duet::v1::BeginQuery b = Begin(ids, top_k);
  b.set_model_version(m.config().version());
  b.set_model_fingerprint(m.fingerprint());
  return b;
}

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

TEST(ScoringCoreVersionsTest, QueriesRouteToTheVersionTheyName) {
  auto core = MakeCore("tiny", FastOptions());
  ASSERT_NE(core, nullptr);
  const auto v1 = LoadModel("tiny");
  const auto v2 = LoadTinyV2();
  ASSERT_NE(v1->config().signature(), v2->config().signature());
  const auto ids = Candidates(*v1, 40, 3);
  const auto u = RandomU(*v1, 5);
  common::Notification done;
  absl::StatusOr<duet::v1::Scores> result;
  auto q = core->Begin(BeginOn(*v1, ids, 40), absl::InfiniteFuture(),
                       Rpc::kScore, [&](absl::StatusOr<duet::v1::Scores> r) {
                         result = std::move(r);
                         done.Notify();
                       });
  ASSERT_TRUE(q.ok()) << q.status();
  // v2 arrives while the query waits for its user vector.
  auto added = core->AddVersion(LoadTinyV2());
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(core->model().config().version(), 2u);  // the newest
  core->ProvideUserVector(*q, Fp32Vector(*v1, u));
  done.WaitForNotification();
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectMatchesSplitModel(*v1, u, ids, *result);

  // Both versions keep being served, each query on its own.
  auto old = RunQuery(*core, BeginOn(*v1, ids, 40), Fp32Vector(*v1, u));
  ASSERT_TRUE(old.ok()) << old.status();
  ExpectMatchesSplitModel(*v1, u, ids, *old);
  auto fresh = RunQuery(*core, BeginOn(*v2, ids, 40), Fp32Vector(*v2, u));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ExpectMatchesSplitModel(*v2, u, ids, *fresh);
  EXPECT_TRUE(core->ValidateUserVector(Fp32Vector(*v1, u)).ok());

  // A query that names no version (an older client) gets the newest; its v1
  // vector is then refused naming both.
  auto unnamed = RunQuery(*core, Begin(ids, 40), Fp32Vector(*v1, u));
  EXPECT_EQ(unnamed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(unnamed.status().message(),
              HasSubstr(absl::StrCat("user vector is for model tiny v1 "
                                     "(signature ",
                                     v1->config().signature(),
                                     "), this server runs tiny v2 (signature ",
                                     v2->config().signature(), ")")));
  // A version not served: FAILED_PRECONDITION naming the served ones.
  duet::v1::BeginQuery v3 = Begin(ids, 40);
  v3.set_model_version(3);
  auto none = RunQuery(*core, v3, Fp32Vector(*v1, u));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.status().message(),
              HasSubstr("model tiny v3 is not served; this server serves "
                        "tiny v2"));
  EXPECT_THAT(none.status().message(), HasSubstr(", tiny v1"));
  duet::v1::UserVector wrong_fp = Fp32Vector(*v1, u);
  wrong_fp.set_model_fingerprint(v2->fingerprint());
  EXPECT_EQ(core->ValidateUserVector(wrong_fp).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(core->inflight(), 0);

  const std::vector<ServedModels::Info> list = core->served().List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].version, 2u);
  EXPECT_EQ(list[1].version, 1u);
  EXPECT_EQ(list[1].queries, 2);     // the in-flight query and `old`
  EXPECT_GT(list[0].edge_bytes, 0);  // GetEdgeModel can stream it
}

TEST(ScoringCoreVersionsTest, ReleaseUnderConcurrentQueriesFailsNone) {
  ScoringCoreOptions o = FastOptions();
  o.max_inflight = 256;
  auto core = MakeCore("tiny", o);
  ASSERT_NE(core, nullptr);
  const auto v1 = LoadModel("tiny");
  const auto v2 = LoadTinyV2();
  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<int> ok_v1{0}, ok_v2{0};
  std::vector<std::string> unexpected;
  common::Mutex mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const auto u = RandomU(*v1, t);
      for (int i = 0; !stop.load(); ++i) {
        const auto ids = Candidates(*v1, 16 + i % 32, t * 1000 + i);
        // Half the clients move to v2 once it is served; the others stay.
        const bool use_v2 = t % 2 == 1 && core->served().Serves(2);
        const common::Model& m = use_v2 ? *v2 : *v1;
        const int n = static_cast<int>(ids.size());
        auto r = RunQuery(*core, BeginOn(m, ids, n), Fp32Vector(m, u));
        if (r.ok()) {
          ExpectMatchesSplitModel(m, u, ids, *r);
          (use_v2 ? ok_v2 : ok_v1)++;
        } else {
          common::MutexLock lock(&mu);
          unexpected.push_back(r.status().ToString());
        }
      }
    });
  }
  while (ok_v1.load() < 50) absl::SleepFor(absl::Milliseconds(1));
  auto added = core->AddVersion(LoadTinyV2());
  ASSERT_TRUE(added.ok()) << added.status();
  const int v1_target = ok_v1.load() + 50;
  while (ok_v2.load() < 50 || ok_v1.load() < v1_target) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_THAT(unexpected, ::testing::IsEmpty());
  EXPECT_EQ(core->inflight(), 0);
}

TEST(ScoringCoreVersionsTest, VersionOutsidePolicyRetiresAfterIdleGrace) {
  common::FakeClock clock(absl::FromUnixSeconds(1000));
  ScoringCoreOptions o = FastOptions();
  o.clock = &clock;
  o.versions.keep_latest = 1;
  o.versions.grace = absl::Seconds(10);
  auto core = MakeCore("tiny", o);
  ASSERT_NE(core, nullptr);
  const auto v1 = LoadModel("tiny");
  const auto ids = Candidates(*v1, 8, 1);
  const auto u = RandomU(*v1, 1);
  ASSERT_TRUE(core->AddVersion(LoadTinyV2()).ok());
  std::vector<ServedModels::Info> list = core->served().List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1].state, ServedModels::State::kRetiring);
  const std::weak_ptr<ModelRuntime> v1_runtime = *core->served().Find(1, 0);
  // Still served while devices use it: each query restarts the grace.
  clock.Advance(absl::Seconds(8));
  ASSERT_TRUE(RunQuery(*core, BeginOn(*v1, ids, 2), Fp32Vector(*v1, u)).ok());
  clock.Advance(absl::Seconds(8));
  EXPECT_THAT(core->ApplyVersionPolicy({}), ::testing::IsEmpty());
  // Pinned (a release policy names it): never retired.
  clock.Advance(absl::Seconds(30));
  EXPECT_THAT(core->ApplyVersionPolicy({1}), ::testing::IsEmpty());
  EXPECT_EQ(core->served().List()[1].state, ServedModels::State::kAvailable);
  // Unpinned and idle past the grace: retired.
  EXPECT_THAT(core->ApplyVersionPolicy({}),
              ::testing::IsEmpty());  // turns RETIRING
  clock.Advance(absl::Seconds(11));
  const auto retired = core->ApplyVersionPolicy({});
  ASSERT_EQ(retired.size(), 1u);
  EXPECT_EQ(retired[0].version, 1u);
  EXPECT_EQ(retired[0].queries, 1);
  // Nothing holds the retired runtime once the last query's task has let go
  // of it (a worker drops its closure just after the reply): its model and
  // memory are released.
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (!v1_runtime.expired() && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_TRUE(v1_runtime.expired());
  auto gone = RunQuery(*core, BeginOn(*v1, ids, 2), Fp32Vector(*v1, u));
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(gone.status().message(), HasSubstr("model tiny v1 (signature"));
  EXPECT_THAT(gone.status().message(),
              HasSubstr("is not served; this server serves tiny v2"));
  // The newest is never retired, however idle.
  clock.Advance(absl::Hours(1));
  EXPECT_THAT(core->ApplyVersionPolicy({}), ::testing::IsEmpty());
  EXPECT_EQ(core->served().List().size(), 1u);
}

TEST(ScoringCoreVersionsTest, EachVersionHasItsOwnItemCache) {
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
    auto r = RunQuery(*core, BeginOn(*v1, ids, 64), Fp32Vector(*v1, u));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->timings().cache_hits(), round == 0 ? 0 : 64);
  }
  const ItemCache* old_cache = core->runtime()->cache();
  ASSERT_NE(old_cache, nullptr);
  EXPECT_EQ(old_cache->size(), 64);
  ASSERT_TRUE(core->AddVersion(LoadTinyV2()).ok());
  ASSERT_NE(core->runtime()->cache(), nullptr);
  EXPECT_EQ(core->runtime()->cache()->size(), 0);
  EXPECT_EQ(old_cache->size(), 64);  // v1 keeps its own
  for (int round = 0; round < 2; ++round) {
    auto r = RunQuery(*core, BeginOn(*v2, ids, 64), Fp32Vector(*v2, u));
    ASSERT_TRUE(r.ok()) << r.status();
    // No v1 vector is ever served for v2: the first round misses entirely.
    EXPECT_EQ(r->timings().cache_hits(), round == 0 ? 0 : 64);
    ExpectMatchesSplitModel(*v2, u, ids, *r);
  }
}

TEST(ScoringCoreVersionsTest, VersionWithoutNeededPartsOrServedTwiceIsRefused) {
  auto core = MakeCore("tiny", FastOptions());
  ASSERT_NE(core, nullptr);
  const std::string signature = core->model().config().signature();
  common::LoadOptions lo;  // edge + cloud, no user tables
  auto model = common::Model::Load(ModelDir("tiny"), lo);
  ASSERT_TRUE(model.ok()) << model.status();
  auto r = core->AddVersion(*std::move(model));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("lacks the user tables"));
  EXPECT_EQ(core->AddVersion(nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto twice = core->AddVersion(LoadModel("tiny"));
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(core->served().List().size(), 1u);
  EXPECT_EQ(core->model().config().signature(), signature);
  const auto v1 = LoadModel("tiny");
  const auto ids = Candidates(*v1, 8, 1);
  EXPECT_TRUE(
      RunQuery(*core, Begin(ids, 2), Fp32Vector(*v1, RandomU(*v1, 1))).ok());
}

}  // namespace
}  // namespace duet::cloud
