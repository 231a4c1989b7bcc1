// A fixed pool of worker threads with a bounded task queue. The cloud runs
// all model compute here, never on gRPC's threads. ParallelFor charges the
// CPU time its helpers spend to the caller's ScopedCpuAccount
// (common/obs/cpu_account.h).
#ifndef DUET_COMMON_BASE_THREAD_POOL_H_
#define DUET_COMMON_BASE_THREAD_POOL_H_

#include <functional>
#include <memory>
#include <string>

namespace duet::common {

// Thread-safe. The destructor stops accepting work, runs what is queued, and
// joins the workers.
class ThreadPool {
 public:
  // `queue_capacity` bounds queued (not yet running) tasks; 0 = unbounded.
  ThreadPool(int num_threads, std::string name, int queue_capacity = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn`; false (and `fn` dropped) when the queue is full or the pool
  // is shutting down. Never blocks.
  bool TrySchedule(std::function<void()> fn);
  // Queues `fn`, ignoring the capacity bound.
  void Schedule(std::function<void()> fn);

  // Runs fn(i) for i in [0, n) spread over the workers AND the calling
  // thread, and returns when all have run. The caller takes work itself, so
  // calling this from inside a pool task cannot deadlock.
  void ParallelFor(int n, const std::function<void(int)>& fn);

  int size() const;
  // Index of the current worker in [0, size()), or -1 off the pool.
  static int CurrentWorker();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace duet::common

#endif  // DUET_COMMON_BASE_THREAD_POOL_H_
