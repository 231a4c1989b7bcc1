// DeadlineQueue<T>: items with a deadline; a thread of its own hands every
// item whose deadline passed (on the Clock) to a callback, once. Removing an
// item before then (its work finished) is O(log n). The cloud's queries use
// it for their deadlines; a FakeClock makes it deterministic in tests.
#ifndef DUET_COMMON_BASE_DEADLINE_QUEUE_H_
#define DUET_COMMON_BASE_DEADLINE_QUEUE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/base/mutex.h"

namespace duet::common {

template <typename T>
class DeadlineQueue {
 public:
  // Identifies one Add; stays valid (and harmless) after the item fired or
  // was removed.
  struct Handle {
    absl::Time when;
    uint64_t id = 0;
  };
  using OnExpired = std::function<void(std::vector<T> expired)>;

  // `on_expired` runs on the queue's thread, without the queue's lock held
  // (it may Add and Remove), with the items in deadline order.
  DeadlineQueue(Clock* clock, OnExpired on_expired)
      : clock_(clock), on_expired_(std::move(on_expired)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~DeadlineQueue() { Stop(); }
  DeadlineQueue(const DeadlineQueue&) = delete;
  DeadlineQueue& operator=(const DeadlineQueue&) = delete;

  Handle Add(absl::Time when, T item) {
    common::MutexLock lock(&mu_);
    const Handle h{when, next_id_++};
    auto it = items_.emplace(Key(h), std::move(item)).first;
    if (it == items_.begin()) earliest_changed_ = true;
    return h;
  }

  // True when the item was still queued (it will not fire).
  bool Remove(const Handle& h) {
    common::MutexLock lock(&mu_);
    return items_.erase(Key(h)) > 0;
  }

  // Stops the thread (after a callback in progress returns) and returns the
  // items still queued; they never fire. Idempotent.
  std::vector<T> Stop() {
    {
      common::MutexLock lock(&mu_);
      stop_ = true;
    }
    if (thread_.joinable()) thread_.join();
    common::MutexLock lock(&mu_);
    std::vector<T> left;
    left.reserve(items_.size());
    for (auto& [key, item] : items_) left.push_back(std::move(item));
    items_.clear();
    return left;
  }

  size_t size() {
    common::MutexLock lock(&mu_);
    return items_.size();
  }

 private:
  using KeyType = std::pair<absl::Time, uint64_t>;
  static KeyType Key(const Handle& h) { return {h.when, h.id}; }

  void Loop() {
    mu_.Lock();
    const auto woken = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return stop_ || earliest_changed_;
    };
    while (!stop_) {
      const absl::Time next =
          items_.empty() ? absl::InfiniteFuture() : items_.begin()->first.first;
      earliest_changed_ = false;
      clock_->AwaitWithDeadline(&mu_, absl::Condition(&woken), next);
      if (stop_) break;
      const absl::Time now = clock_->Now();
      std::vector<T> expired;
      while (!items_.empty() && items_.begin()->first.first <= now) {
        expired.push_back(std::move(items_.begin()->second));
        items_.erase(items_.begin());
      }
      if (expired.empty()) continue;
      mu_.Unlock();
      on_expired_(std::move(expired));
      mu_.Lock();
    }
    mu_.Unlock();
  }

  Clock* const clock_;
  const OnExpired on_expired_;
  common::Mutex mu_;
  std::map<KeyType, T> items_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool earliest_changed_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace duet::common

#endif  // DUET_COMMON_BASE_DEADLINE_QUEUE_H_
