// CPU-time attribution for per-query energy (docs/ENERGY.md): a scope on a
// thread collects that thread's CPU time, and the worker pool
// (common/base/thread_pool.h) adds what its helpers spend on the scope's
// behalf. No dependencies, so the pool can carry it.
#ifndef DUET_COMMON_OBS_CPU_ACCOUNT_H_
#define DUET_COMMON_OBS_CPU_ACCOUNT_H_

#include <atomic>
#include <cstdint>

namespace duet::common {

// CPU-time attribution for per-query energy: while a ScopedCpuAccount is
// alive on a thread, that thread's CPU time (CLOCK_THREAD_CPUTIME_ID) is
// added to `*nanoseconds` when the scope ends, and so is the CPU time pool
// workers spend on ParallelFor indices claimed on its behalf. Scopes nest
// (the inner one wins until it ends). `nanoseconds` must outlive the scope.
class ScopedCpuAccount {
 public:
  explicit ScopedCpuAccount(std::atomic<int64_t>* nanoseconds);
  ~ScopedCpuAccount();
  ScopedCpuAccount(const ScopedCpuAccount&) = delete;
  ScopedCpuAccount& operator=(const ScopedCpuAccount&) = delete;

  // The account of the innermost live scope on this thread, or nullptr.
  static std::atomic<int64_t>* Current();

 private:
  std::atomic<int64_t>* const account_;
  std::atomic<int64_t>* const previous_;
  const int64_t start_ns_;
};

// CPU time consumed by the calling thread, in nanoseconds.
int64_t ThreadCpuNanos();

}  // namespace duet::common

#endif  // DUET_COMMON_OBS_CPU_ACCOUNT_H_
