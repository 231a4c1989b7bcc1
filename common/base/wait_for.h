// For tests: waits (in real time) for work that runs on other threads or
// processes, which no clock can advance.
#ifndef DUET_COMMON_BASE_WAIT_FOR_H_
#define DUET_COMMON_BASE_WAIT_FOR_H_

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace duet::common {

// Polls `done` every 10 ms until it holds or `timeout` passed; returns
// whether it held.
inline bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

}  // namespace duet::common

#endif  // DUET_COMMON_BASE_WAIT_FOR_H_
