#include "common/base/clock.h"

#include "absl/time/clock.h"

namespace duet::common {
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
  bool AwaitWithDeadline(common::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return mu->AwaitWithDeadline(cond, deadline);
  }
};

}  // namespace

void Clock::SleepUntil(absl::Time t) {
  static const bool kNever = false;
  common::Mutex mu;
  common::MutexLock lock(&mu);
  AwaitWithDeadline(&mu, absl::Condition(&kNever), t);
}

Clock* Clock::Real() {
  static RealClock* const clock = new RealClock();
  return clock;
}

FakeClock::FakeClock()
    : FakeClock(absl::FromUnixSeconds(1'800'000'000)) {}  // 2027-01-15

FakeClock::FakeClock(absl::Time start) : now_(start) {}

absl::Time FakeClock::Now() {
  common::MutexLock lock(&mu_);
  return now_;
}

void FakeClock::Advance(absl::Duration d) {
  common::MutexLock lock(&mu_);
  now_ += d;
}

int FakeClock::waiters() {
  common::MutexLock lock(&mu_);
  return waiters_;
}

void FakeClock::WaitForWaiters(int n) {
  common::MutexLock lock(&mu_);
  const auto enough = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return waiters_ >= n;
  };
  mu_.Await(absl::Condition(&enough));
}

bool FakeClock::AwaitWithDeadline(common::Mutex* mu,
                                  const absl::Condition& cond,
                                  absl::Time deadline) {
  {
    common::MutexLock lock(&mu_);
    ++waiters_;
  }
  // `mu` then `mu_` (inside the condition): the only order these two are
  // ever taken in.
  const auto done = [&] { return cond.Eval() || Now() >= deadline; };
  while (!mu->AwaitWithTimeout(absl::Condition(&done), absl::Milliseconds(1))) {
  }
  {
    common::MutexLock lock(&mu_);
    --waiters_;
  }
  return cond.Eval();
}

}  // namespace duet::common
