#include "common/base/thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/base/mutex.h"
#include "common/obs/cpu_account.h"

namespace duet::common {
namespace {

thread_local int current_worker = -1;

// Shared between the caller of ParallelFor and the helper tasks it queues.
// Helpers may start after the loop has finished (the queue is FIFO and other
// work may be ahead of them), so the state is reference-counted and a late
// helper simply finds no index left to claim.
struct ParallelForState {
  ParallelForState(int n, const std::function<void(int)>& fn)
      : n(n), fn(fn), account(ScopedCpuAccount::Current()) {}

  // Claims and runs indices until none are left. A helper (not the caller,
  // whose own scope already counts its time) charges its CPU time to the
  // caller's account before reporting completion, i.e. while the caller is
  // still blocked and the account is alive.
  void Work(bool helper) {
    const int64_t start = helper && account != nullptr ? ThreadCpuNanos() : 0;
    int ran = 0;
    for (int i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      fn(i);
      ++ran;
    }
    if (ran > 0) {
      if (helper && account != nullptr) {
        account->fetch_add(ThreadCpuNanos() - start, std::memory_order_relaxed);
      }
      common::MutexLock lock(&mu);
      done += ran;
    }
  }

  bool AllDone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return done == n; }

  const int n;
  // Only dereferenced while an index is unclaimed, i.e. while the caller is
  // still blocked in ParallelFor, so the reference stays valid.
  const std::function<void(int)>& fn;
  std::atomic<int64_t>* const account;
  std::atomic<int> next{0};
  common::Mutex mu;
  int done ABSL_GUARDED_BY(mu) = 0;
};

}  // namespace

struct ThreadPool::Impl {
  Impl(int num_threads, std::string name, int queue_capacity)
      : name(std::move(name)), capacity(queue_capacity) {
    workers.reserve(num_threads);
    for (int i = 0; i < num_threads; ++i) {
      workers.emplace_back([this, i] { WorkerLoop(i); });
    }
  }

  void WorkerLoop(int index) {
    current_worker = index;
    // Linux limits thread names to 15 characters.
    const std::string thread_name =
        (name.substr(0, 10) + "/" + std::to_string(index)).substr(0, 15);
    pthread_setname_np(pthread_self(), thread_name.c_str());
    while (true) {
      std::function<void()> task;
      {
        common::MutexLock lock(&mu);
        mu.Await(absl::Condition(this, &Impl::HasWorkOrStopping));
        // Drain before exiting: stopping only ends the loop once the queue is
        // empty (tasks may still Schedule more work while draining).
        if (queue.empty()) return;
        task = std::move(queue.front());
        queue.pop_front();
      }
      task();
    }
  }

  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return stopping || !queue.empty();
  }

  const std::string name;
  const int capacity;
  std::vector<std::thread> workers;
  common::Mutex mu;
  std::deque<std::function<void()>> queue ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
};

ThreadPool::ThreadPool(int num_threads, std::string name, int queue_capacity)
    : impl_(std::make_unique<Impl>(std::max(num_threads, 1), std::move(name),
                                   std::max(queue_capacity, 0))) {}

ThreadPool::~ThreadPool() {
  {
    common::MutexLock lock(&impl_->mu);
    impl_->stopping = true;
  }
  for (std::thread& t : impl_->workers) t.join();
}

bool ThreadPool::TrySchedule(std::function<void()> fn) {
  common::MutexLock lock(&impl_->mu);
  if (impl_->stopping) return false;
  if (impl_->capacity > 0 &&
      impl_->queue.size() >= static_cast<size_t>(impl_->capacity)) {
    return false;
  }
  impl_->queue.push_back(std::move(fn));
  return true;
}

void ThreadPool::Schedule(std::function<void()> fn) {
  common::MutexLock lock(&impl_->mu);
  impl_->queue.push_back(std::move(fn));
}

void ThreadPool::ParallelFor(int n, const std::function<void(int)>& fn) {
  if (n <= 0) return;
  if (n == 1) {
    fn(0);
    return;
  }
  auto state = std::make_shared<ParallelForState>(n, fn);
  // One helper per worker at most; the caller is the remaining participant.
  const int helpers = std::min(n - 1, size());
  for (int h = 0; h < helpers; ++h) {
    Schedule([state] { state->Work(/*helper=*/true); });
  }
  state->Work(/*helper=*/false);
  common::MutexLock lock(&state->mu);
  state->mu.Await(absl::Condition(state.get(), &ParallelForState::AllDone));
}

int ThreadPool::size() const { return static_cast<int>(impl_->workers.size()); }

int ThreadPool::CurrentWorker() { return current_worker; }

}  // namespace duet::common
