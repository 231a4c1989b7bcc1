#include "common/base/deadline_queue.h"

#include <string>
#include <vector>

#include "common/base/clock.h"
#include "common/base/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

// Collects what the queue fires, in order.
class Fired {
 public:
  DeadlineQueue<std::string>::OnExpired Callback() {
    return [this](std::vector<std::string> items) {
      common::MutexLock lock(&mu_);
      for (auto& s : items) got_.push_back(std::move(s));
    };
  }
  std::vector<std::string> got() {
    common::MutexLock lock(&mu_);
    return got_;
  }
  // Real-time wait for `n` items (the queue's thread runs on its own).
  std::vector<std::string> WaitFor(size_t n) {
    common::MutexLock lock(&mu_);
    const auto enough = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return got_.size() >= n;
    };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(30));
    return got_;
  }

 private:
  common::Mutex mu_;
  std::vector<std::string> got_ ABSL_GUARDED_BY(mu_);
};

TEST(DeadlineQueueTest, FiresInDeadlineOrderOnlyOnceTheClockPassesThem) {
  FakeClock clock;
  Fired fired;
  DeadlineQueue<std::string> q(&clock, fired.Callback());
  const absl::Time t0 = clock.Now();
  q.Add(t0 + absl::Seconds(3), "c");
  q.Add(t0 + absl::Seconds(1), "a");
  q.Add(t0 + absl::Seconds(2), "b");
  clock.WaitForWaiters(1);
  clock.Advance(absl::Milliseconds(999));
  // An item already due wakes the thread, which takes everything due at
  // t0 + 0.999 s: that one, not "a" (1 ms short).
  q.Add(t0, "due");
  EXPECT_THAT(fired.WaitFor(1), ElementsAre("due"));
  clock.Advance(absl::Seconds(1));  // t0 + 1.999 s
  EXPECT_THAT(fired.WaitFor(2), ElementsAre("due", "a"));
  clock.Advance(absl::Seconds(5));
  EXPECT_THAT(fired.WaitFor(4), ElementsAre("due", "a", "b", "c"));
  EXPECT_EQ(q.size(), 0u);
}

TEST(DeadlineQueueTest, AnEarlierItemWakesTheThreadWaitingForALaterOne) {
  FakeClock clock;
  Fired fired;
  DeadlineQueue<std::string> q(&clock, fired.Callback());
  const absl::Time t0 = clock.Now();
  q.Add(t0 + absl::Hours(1), "late");
  clock.WaitForWaiters(1);
  q.Add(t0 + absl::Seconds(1), "early");
  clock.Advance(absl::Seconds(2));
  EXPECT_THAT(fired.WaitFor(1), ElementsAre("early"));
  EXPECT_EQ(q.size(), 1u);
}

TEST(DeadlineQueueTest, RemovedItemsNeverFireAndRemoveSaysWhetherItWasQueued) {
  FakeClock clock;
  Fired fired;
  DeadlineQueue<std::string> q(&clock, fired.Callback());
  const absl::Time t0 = clock.Now();
  const auto a = q.Add(t0 + absl::Seconds(1), "a");
  const auto b = q.Add(t0 + absl::Seconds(1), "b");  // same instant
  EXPECT_TRUE(q.Remove(a));
  EXPECT_FALSE(q.Remove(a));
  clock.Advance(absl::Seconds(1));
  EXPECT_THAT(fired.WaitFor(1), ElementsAre("b"));
  EXPECT_FALSE(q.Remove(b));  // already fired
}

TEST(DeadlineQueueTest, AnItemAlreadyDueFiresWithoutAdvancingTheClock) {
  FakeClock clock;
  Fired fired;
  DeadlineQueue<std::string> q(&clock, fired.Callback());
  q.Add(clock.Now() - absl::Seconds(1), "past");
  q.Add(clock.Now(), "now");
  EXPECT_THAT(fired.WaitFor(2), ElementsAre("past", "now"));
}

TEST(DeadlineQueueTest, StopReturnsWhatIsQueuedAndNothingFiresAfterIt) {
  FakeClock clock;
  Fired fired;
  DeadlineQueue<std::string> q(&clock, fired.Callback());
  q.Add(clock.Now() + absl::Seconds(1), "x");
  q.Add(clock.Now() + absl::Seconds(2), "y");
  EXPECT_THAT(q.Stop(), UnorderedElementsAre("x", "y"));
  clock.Advance(absl::Seconds(10));
  EXPECT_THAT(q.Stop(), IsEmpty());
  EXPECT_THAT(fired.got(), IsEmpty());
}

TEST(DeadlineQueueTest, TheCallbackMayAddAndRemove) {
  FakeClock clock;
  std::vector<std::string> got;
  common::Mutex mu;
  DeadlineQueue<std::string>* queue = nullptr;
  DeadlineQueue<std::string> q(&clock, [&](std::vector<std::string> items) {
    for (auto& s : items) {
      if (s == "first") queue->Add(clock.Now(), "second");
      common::MutexLock lock(&mu);
      got.push_back(s);
    }
  });
  queue = &q;
  q.Add(clock.Now(), "first");
  common::MutexLock lock(&mu);
  const auto two = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return got.size() >= 2;
  };
  mu.AwaitWithTimeout(absl::Condition(&two), absl::Seconds(30));
  EXPECT_THAT(got, ElementsAre("first", "second"));
}

TEST(RealClockTest, WaitsUntilTheDeadlineOrTheCondition) {
  Clock* clock = Clock::Real();
  common::Mutex mu;
  bool flag = false;
  common::MutexLock lock(&mu);
  const absl::Time start = clock->Now();
  EXPECT_FALSE(clock->AwaitWithDeadline(&mu, absl::Condition(&flag),
                                        start + absl::Milliseconds(20)));
  EXPECT_GE(clock->Now(), start + absl::Milliseconds(20));
  flag = true;
  EXPECT_TRUE(clock->AwaitWithDeadline(&mu, absl::Condition(&flag),
                                       absl::InfiniteFuture()));
}

TEST(FakeClockTest, MovesOnlyWhenAdvanced) {
  FakeClock clock;
  const absl::Time t0 = clock.Now();
  EXPECT_EQ(clock.Now(), t0);
  clock.Advance(absl::Minutes(5));
  EXPECT_EQ(clock.Now(), t0 + absl::Minutes(5));
  common::Mutex mu;
  bool flag = true;
  common::MutexLock lock(&mu);
  // The condition already holds: no waiting, whatever the deadline.
  EXPECT_TRUE(clock.AwaitWithDeadline(&mu, absl::Condition(&flag),
                                      absl::InfiniteFuture()));
  flag = false;
  // A deadline that has passed on this clock: returns at once.
  EXPECT_FALSE(clock.AwaitWithDeadline(&mu, absl::Condition(&flag), t0));
  EXPECT_EQ(clock.waiters(), 0);
}

}  // namespace
}  // namespace duet::common
