// The time seam. Code that waits for deadlines, backoff or poll periods asks
// a Clock for the time and waits through it, so tests drive time with a
// FakeClock instead of sleeping (STYLE.md "Time").
#ifndef DUET_COMMON_BASE_CLOCK_H_
#define DUET_COMMON_BASE_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "common/base/mutex.h"

namespace duet::common {

class Clock {
 public:
  virtual ~Clock() = default;

  virtual absl::Time Now() = 0;

  // With `mu` held: waits (releasing `mu` meanwhile) until `cond` holds or
  // Now() >= deadline; returns whether `cond` holds. `cond` is evaluated
  // with `mu` held, as by common::Mutex::Await.
  virtual bool AwaitWithDeadline(common::Mutex* mu, const absl::Condition& cond,
                                 absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;

  // Blocks the calling thread until Now() >= t.
  void SleepUntil(absl::Time t);

  // The process's clock (absl::Now). Never destroyed; thread-safe.
  static Clock* Real();
};

// A clock that moves only when told to. Thread-safe. A thread waiting in
// AwaitWithDeadline re-checks the time every millisecond of real time, so
// Advance() wakes it without any registry of waiters.
class FakeClock final : public Clock {
 public:
  // Starts at an arbitrary fixed instant (not the real time).
  FakeClock();
  explicit FakeClock(absl::Time start);

  absl::Time Now() override;
  bool AwaitWithDeadline(common::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  void Advance(absl::Duration d);
  // Threads blocked in AwaitWithDeadline right now: a test waits for the
  // code under test to be waiting before it advances the time.
  int waiters();
  // Blocks (in real time) until at least `n` threads wait.
  void WaitForWaiters(int n);

 private:
  common::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  int waiters_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace duet::common

#endif  // DUET_COMMON_BASE_CLOCK_H_
