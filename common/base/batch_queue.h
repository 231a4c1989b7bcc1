// BatchQueue<T>: work items queued by producers and taken in batches by
// consumers (the cloud's pool tasks), the way Triton's dynamic batcher and
// TF Serving's batch scheduler form batches:
//  * a batch is the oldest item plus the items queued after it with the same
//    key (only those can share one pass), while the sum of their sizes stays
//    within max_batch_size;
//  * with a max_queue_delay the consumer that takes the oldest item waits for
//    more until the batch is full, the oldest item has been queued for
//    max_queue_delay, or the earliest latest_start of the batch's items (a
//    query's deadline) comes — whichever is first. Zero: greedy, never waits
//    (a batch is whatever queued up while the workers were busy);
//  * while one consumer collects, the others take nothing (the items are its
//    to take); Take() reports when items are left behind so the caller
//    schedules a consumer for them.
// The producer schedules one Take per Push, so every item has a consumer.
// Thread-safe; waits go through the Clock (a FakeClock in tests).
#ifndef DUET_COMMON_BASE_BATCH_QUEUE_H_
#define DUET_COMMON_BASE_BATCH_QUEUE_H_

#include <algorithm>
#include <deque>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/base/mutex.h"

namespace duet::common {

template <typename T>
class BatchQueue {
 public:
  struct Options {
    int max_batch_size = 1;
    absl::Duration max_queue_delay = absl::ZeroDuration();
  };
  struct Batch {
    std::vector<T> items;  // oldest first
    int size = 0;          // sum of the items' sizes
    // Items are still queued and no consumer may be left for them: the
    // caller schedules one more Take.
    bool more = false;
  };

  BatchQueue(Clock* clock, Options options)
      : clock_(clock), options_(options) {}
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Queues `item` (`size` >= 1; one larger than max_batch_size makes a batch
  // of its own). Items batch only with items of an equal `key`.
  // `latest_start`: the batch holding it must not wait past this time.
  void Push(T item, int size, const void* key, absl::Time latest_start) {
    common::MutexLock lock(&mu_);
    queue_.push_back({std::move(item), size, key, clock_->Now(), latest_start});
  }

  // The next batch into *batch (see the header comment; its vector's
  // capacity is reused); empty when nothing is queued or another consumer
  // is collecting.
  void Take(Batch* batch) {
    batch->items.clear();
    batch->size = 0;
    batch->more = false;
    common::MutexLock lock(&mu_);
    if (queue_.empty() || collecting_) return;
    if (options_.max_queue_delay > absl::ZeroDuration() &&
        Fill() < options_.max_batch_size) {
      collecting_ = true;
      const Entry& oldest = queue_.front();
      const absl::Time until = std::min(
          oldest.queued + options_.max_queue_delay, EarliestLatestStart());
      clock_->AwaitWithDeadline(&mu_, absl::Condition(this, &BatchQueue::Full),
                                until);
      collecting_ = false;
    }
    const void* key = queue_.front().key;
    for (auto it = queue_.begin(); it != queue_.end();) {
      const bool first = batch->items.empty();
      if (it->key == key &&
          (first || batch->size + it->size <= options_.max_batch_size)) {
        batch->size += it->size;
        batch->items.push_back(std::move(it->item));
        it = queue_.erase(it);
        if (batch->size >= options_.max_batch_size) break;
      } else {
        ++it;
      }
    }
    batch->more = !queue_.empty();
  }

  int queued() const {
    common::MutexLock lock(&mu_);
    return static_cast<int>(queue_.size());
  }

 private:
  struct Entry {
    T item;
    int size;
    const void* key;
    absl::Time queued;
    absl::Time latest_start;
  };

  // The size the oldest item's batch would have now.
  int Fill() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const void* key = queue_.front().key;
    int fill = 0;
    for (const Entry& e : queue_) {
      if (e.key != key) continue;
      if (fill > 0 && fill + e.size > options_.max_batch_size) continue;
      fill += e.size;
      if (fill >= options_.max_batch_size) break;
    }
    return fill;
  }
  bool Full() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return Fill() >= options_.max_batch_size;
  }
  // Over every item that could join the oldest one's batch.
  absl::Time EarliestLatestStart() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const void* key = queue_.front().key;
    absl::Time t = absl::InfiniteFuture();
    for (const Entry& e : queue_) {
      if (e.key == key) t = std::min(t, e.latest_start);
    }
    return t;
  }

  Clock* const clock_;
  const Options options_;
  mutable common::Mutex mu_;
  std::deque<Entry> queue_ ABSL_GUARDED_BY(mu_);
  bool collecting_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace duet::common

#endif  // DUET_COMMON_BASE_BATCH_QUEUE_H_
