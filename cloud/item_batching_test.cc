// Cross-query batching of the item side (ScoringCoreOptions::
// item_batch_max_candidates): queued queries of one runtime run as one pass
// and score as they do alone; the queue delay never runs into a query's
// deadline; a query that ended while queued is skipped.
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "cloud/internal/scoring_test_util.h"
#include "cloud/scoring_core.h"
#include "common/base/clock.h"
#include "common/base/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::HasSubstr;

// One query started with Begin and answered through its Done callback.
struct Pending {
  uint64_t id = 0;
  std::vector<int64_t> ids;
  std::vector<float> u;
  std::shared_ptr<ScoringCore::Query> query;
  common::Notification done;
  absl::StatusOr<duet::v1::Scores> result;
};

std::unique_ptr<Pending> Start(ScoringCore& core, int n, int64_t salt,
                               int64_t timeout_us = 0) {
  const common::Model& m = core.model();
  auto p = std::make_unique<Pending>();
  p->id = static_cast<uint64_t>(salt);
  p->ids = Candidates(m, n, salt);
  p->u = RandomU(m, static_cast<uint32_t>(salt));
  duet::v1::BeginQuery begin = Begin(p->ids, n, salt);
  begin.set_timeout_us(timeout_us);
  Pending* raw = p.get();
  auto q = core.Begin(begin, absl::InfiniteFuture(), Rpc::kScoringSession,
                      [raw](absl::StatusOr<duet::v1::Scores> r) {
                        raw->result = std::move(r);
                        raw->done.Notify();
                      });
  EXPECT_TRUE(q.ok()) << q.status();
  if (q.ok()) p->query = *std::move(q);
  return p;
}

// Holds the pool's only worker until released, so queries queue up.
class Gate {
 public:
  explicit Gate(ScoringCore& core) {
    core.pool().Schedule([this] {
      running_.Notify();
      open_.WaitForNotification();
    });
    running_.WaitForNotification();
  }
  ~Gate() { Open(); }
  void Open() {
    if (!open_.HasBeenNotified()) open_.Notify();
  }

 private:
  common::Notification running_, open_;
};

ScoringCoreOptions BatchingOptions() {
  ScoringCoreOptions o = FastOptions();
  o.workers = 1;
  o.item_batch_max_candidates = 64;
  return o;
}

struct Variant {
  const char* preset;
  // 0: every item side computed; else an fp32 item table of this many bytes
  // (rm2's covers part of the catalog: table rows and computed ones mix).
  int64_t item_table_bytes;
};

class ItemBatchingTest : public ::testing::TestWithParam<Variant> {};

TEST_P(ItemBatchingTest, QueuedItemSidesRunAsOnePassAndScoreAsAlone) {
  ScoringCoreOptions o = BatchingOptions();
  o.item_table_budget_bytes = GetParam().item_table_bytes;
  o.item_table_precision = ItemTablePrecisionChoice::kFp32;
  auto core = MakeCore(GetParam().preset, o);
  ASSERT_NE(core, nullptr);
  core->runtime()->WaitForItemTable();
  if (GetParam().item_table_bytes > 0) {
    ASSERT_NE(core->runtime()->item_table(), nullptr);
  }
  const common::Model& m = core->model();
  std::vector<std::unique_ptr<Pending>> queries;
  {
    Gate gate(*core);
    // 8 + 16 + 8 + 24 = 56 candidates fit one batch of 64; the fifth query
    // (16 more) does not and runs in the next pass.
    int salt = 1;
    for (int n : {8, 16, 8, 24, 16}) queries.push_back(Start(*core, n, salt++));
    for (const auto& p : queries) {
      core->ProvideUserVector(p->query, Fp32Vector(m, p->u, p->id));
    }
  }
  for (size_t i = 0; i < queries.size(); ++i) {
    Pending& p = *queries[i];
    ASSERT_TRUE(p.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    ASSERT_TRUE(p.result.ok()) << p.result.status();
    ExpectMatchesSplitModel(m, p.u, p.ids, *p.result);
    EXPECT_EQ(p.result->timings().item_batch_queries(), i < 4 ? 4 : 1)
        << "query " << i;
  }
  EXPECT_EQ(core->inflight(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    All, ItemBatchingTest,
    ::testing::Values(Variant{"tiny", 0}, Variant{"rm2", 0},
                      Variant{"tiny", int64_t{64} << 20},
                      Variant{"rm2", int64_t{64} << 20}),
    [](const ::testing::TestParamInfo<Variant>& info) {
      return std::string(info.param.preset) +
             (info.param.item_table_bytes > 0 ? "_item_table" : "_computed");
    });

TEST(ItemBatchingTest, ABatchWaitsForCompanyAtMostHalfAQuerysTime) {
  common::FakeClock clock;
  ScoringCoreOptions o = BatchingOptions();
  o.clock = &clock;
  o.item_batch_max_queue_delay = absl::Seconds(10);
  auto core = MakeCore("tiny", o);
  ASSERT_NE(core, nullptr);
  const common::Model& m = core->model();
  // Waiters: the deadline queue's thread, then the collecting worker.
  clock.WaitForWaiters(1);
  auto first = Start(*core, 8, 1, /*timeout_us=*/1'000'000);
  clock.WaitForWaiters(2);
  auto second = Start(*core, 8, 2, /*timeout_us=*/1'000'000);
  for (Pending* p : {first.get(), second.get()}) {
    core->ProvideUserVector(p->query, Fp32Vector(m, p->u, p->id));
  }
  // 16 of 64 candidates: the batch keeps waiting until half of the first
  // query's second has passed, not the 10 s queue delay.
  clock.Advance(absl::Milliseconds(499));
  EXPECT_FALSE(
      first->done.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  clock.Advance(absl::Milliseconds(1));
  for (Pending* p : {first.get(), second.get()}) {
    ASSERT_TRUE(p->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    ASSERT_TRUE(p->result.ok()) << p->result.status();
    ExpectMatchesSplitModel(m, p->u, p->ids, *p->result);
    EXPECT_EQ(p->result->timings().item_batch_queries(), 2);
    // Both were queued at the same (fake) instant.
    EXPECT_EQ(p->result->timings().queue_us(), 500000);
  }
}

TEST(ItemBatchingTest, AQueryThatEndedWhileQueuedIsSkipped) {
  common::FakeClock clock;
  ScoringCoreOptions o = BatchingOptions();
  o.clock = &clock;
  auto core = MakeCore("tiny", o);
  ASSERT_NE(core, nullptr);
  const common::Model& m = core->model();
  std::unique_ptr<Pending> expires, cancelled, kept;
  {
    Gate gate(*core);
    expires = Start(*core, 8, 1, /*timeout_us=*/10'000);
    cancelled = Start(*core, 8, 2);
    kept = Start(*core, 8, 3, /*timeout_us=*/1'000'000);
    clock.Advance(absl::Milliseconds(10));
    ASSERT_TRUE(
        expires->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    core->Cancel(cancelled->query);
    core->ProvideUserVector(kept->query, Fp32Vector(m, kept->u, kept->id));
  }
  EXPECT_EQ(expires->result.status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(expires->result.status().message(),
              HasSubstr("item side not done"));
  EXPECT_EQ(cancelled->result.status().code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(kept->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  ASSERT_TRUE(kept->result.ok()) << kept->result.status();
  ExpectMatchesSplitModel(m, kept->u, kept->ids, *kept->result);
  EXPECT_EQ(kept->result->timings().item_batch_queries(), 1);
  EXPECT_EQ(core->inflight(), 0);
}

TEST(ItemBatchingTest, TheBatchLimitIsCheckedAgainstMaxCandidates) {
  ScoringCoreOptions o = BatchingOptions();
  o.item_batch_max_candidates = o.max_candidates + 1;
  auto core = ScoringCore::Create(LoadModel("tiny"), o);
  ASSERT_FALSE(core.ok());
  EXPECT_EQ(core.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(core.status().message(),
              HasSubstr("item_batch_max_candidates is 257, must be in [0, "
                        "max_candidates = 256]"));
}

}  // namespace
}  // namespace duet::cloud
