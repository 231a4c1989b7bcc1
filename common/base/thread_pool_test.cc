#include "common/base/thread_pool.h"

#include <atomic>
#include <set>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "common/base/mutex.h"
#include "common/obs/cpu_account.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::Ge;
using ::testing::Lt;

TEST(ThreadPoolTest, DestructorRunsEveryQueuedTask) {
  std::atomic<int> count{0};
  {
    ThreadPool pool(3, "test");
    EXPECT_EQ(pool.size(), 3);
    for (int i = 0; i < 1000; ++i) {
      pool.Schedule([&count] { count.fetch_add(1); });
    }
  }
  EXPECT_EQ(count.load(), 1000);
}

TEST(ThreadPoolTest, TryScheduleFailsWhenQueueFull) {
  std::atomic<int> count{0};
  common::Notification started, release;
  {
    ThreadPool pool(1, "bounded", /*queue_capacity=*/2);
    ASSERT_TRUE(pool.TrySchedule([&] {
      started.Notify();
      release.WaitForNotification();
      count.fetch_add(1);
    }));
    started.WaitForNotification();  // the worker is busy, the queue empty
    EXPECT_TRUE(pool.TrySchedule([&count] { count.fetch_add(1); }));
    EXPECT_TRUE(pool.TrySchedule([&count] { count.fetch_add(1); }));
    EXPECT_FALSE(pool.TrySchedule([&count] { count.fetch_add(100); }));
    // Schedule ignores the bound.
    pool.Schedule([&count] { count.fetch_add(1); });
    release.Notify();
  }
  EXPECT_EQ(count.load(), 4);
}

TEST(ThreadPoolTest, ParallelForRunsEachIndexOnce) {
  ThreadPool pool(2, "pfor");
  for (int n : {0, 1, 2, 7, 1000}) {
    std::vector<std::atomic<int>> hits(n);
    pool.ParallelFor(n, [&hits](int i) { hits[i].fetch_add(1); });
    for (int i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n=" << n;
  }
}

TEST(ThreadPoolTest, ParallelForFromInsideTasksDoesNotDeadlock) {
  // Every worker is inside a task that itself calls ParallelFor: only the
  // callers' own participation can make progress.
  for (int threads : {1, 2}) {
    ThreadPool pool(threads, "nested");
    std::atomic<int> sum{0};
    absl::BlockingCounter finished(threads);
    for (int t = 0; t < threads; ++t) {
      pool.Schedule([&] {
        pool.ParallelFor(100, [&](int i) {
          // Nested ParallelFor inside a ParallelFor body too.
          pool.ParallelFor(3, [&](int j) { sum.fetch_add(i * 3 + j); });
        });
        finished.DecrementCount();
      });
    }
    finished.Wait();
    EXPECT_EQ(sum.load(), threads * (300 * 299 / 2)) << "threads=" << threads;
  }
}

TEST(ThreadPoolTest, CurrentWorkerIsInRangeOnPoolAndMinusOneOff) {
  EXPECT_EQ(ThreadPool::CurrentWorker(), -1);
  std::set<int> seen;
  {
    ThreadPool pool(2, "who");
    common::Mutex mu;
    for (int i = 0; i < 200; ++i) {
      pool.Schedule([&] {
        common::MutexLock lock(&mu);
        seen.insert(ThreadPool::CurrentWorker());
      });
    }
  }
  EXPECT_THAT(seen, Each(AllOf(Ge(0), Lt(2))));
  EXPECT_FALSE(seen.empty());
}

TEST(ThreadPoolTest, ParallelForRecordsCallerAsMinusOne) {
  ThreadPool pool(1, "caller");
  std::vector<int> worker_of(64, -2);
  pool.ParallelFor(64,
                   [&](int i) { worker_of[i] = ThreadPool::CurrentWorker(); });
  // Every index ran on the caller (-1) or the one worker (0).
  EXPECT_THAT(worker_of, Each(AllOf(Ge(-1), Lt(1))));
}

}  // namespace
}  // namespace duet::common

namespace duet::common {
namespace {

// Spins until this thread has used at least `ns` of CPU; returns what it used.
int64_t BurnCpu(int64_t ns) {
  const int64_t start = ThreadCpuNanos();
  volatile uint64_t x = 0;
  while (ThreadCpuNanos() - start < ns) {
    for (int i = 0; i < 1000; ++i) x = x * 31 + i;
  }
  return ThreadCpuNanos() - start;
}

TEST(ScopedCpuAccountTest, ChargesParallelForWorkOnEveryThread) {
  ThreadPool pool(2, "acct");
  std::atomic<int64_t> account{0};
  std::atomic<int64_t> burned{0};
  {
    ScopedCpuAccount scope(&account);
    EXPECT_EQ(ScopedCpuAccount::Current(), &account);
    pool.ParallelFor(6, [&](int) { burned += BurnCpu(2'000'000); });
  }
  EXPECT_EQ(ScopedCpuAccount::Current(), nullptr);
  // Every body's CPU time reached the account, wherever it ran.
  EXPECT_GE(account.load(), burned.load());
  EXPECT_GE(burned.load(), 6 * 2'000'000);
}

TEST(ScopedCpuAccountTest, NestedScopesRestoreTheOuterAccount) {
  std::atomic<int64_t> outer{0}, inner{0};
  {
    ScopedCpuAccount a(&outer);
    {
      ScopedCpuAccount b(&inner);
      EXPECT_EQ(ScopedCpuAccount::Current(), &inner);
      BurnCpu(1'000'000);
    }
    EXPECT_EQ(ScopedCpuAccount::Current(), &outer);
  }
  EXPECT_GE(inner.load(), 1'000'000);
  EXPECT_GE(outer.load(), inner.load());
}

}  // namespace
}  // namespace duet::common
