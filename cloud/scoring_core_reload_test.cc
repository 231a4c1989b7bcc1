// ScoringCore::Reload: a new model beside live queries, swapped in atomically.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "cloud/internal/scoring_test_util.h"
#include "cloud/scoring_core.h"
#include "common/model/reference_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::HasSubstr;

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
