#include "common/obs/cpu_account.h"

#include <time.h>

namespace duet::common {
namespace {
thread_local std::atomic<int64_t>* current_account = nullptr;
}  // namespace

int64_t ThreadCpuNanos() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

ScopedCpuAccount::ScopedCpuAccount(std::atomic<int64_t>* nanoseconds)
    : account_(nanoseconds),
      previous_(current_account),
      start_ns_(ThreadCpuNanos()) {
  current_account = account_;
}

ScopedCpuAccount::~ScopedCpuAccount() {
  if (account_ != nullptr) {
    account_->fetch_add(ThreadCpuNanos() - start_ns_,
                        std::memory_order_relaxed);
  }
  current_account = previous_;
}

std::atomic<int64_t>* ScopedCpuAccount::Current() { return current_account; }

}  // namespace duet::common
