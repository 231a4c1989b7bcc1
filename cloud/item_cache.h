// ItemCache: a bounded LRU of item-tower outputs v_j, keyed by (item id,
// model fingerprint). v_j depends only on the item and the model, so a hit
// skips the item's gather and item top MLP. Entries of another fingerprint
// never hit (a model change invalidates them; Clear() drops everything).
// Thread-safe: the key space is split over mutex-guarded stripes, each an
// LRU with preallocated slots, so steady-state use does not allocate.
#ifndef DUET_CLOUD_ITEM_CACHE_H_
#define DUET_CLOUD_ITEM_CACHE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "common/base/aligned_buffer.h"
#include "common/base/mutex.h"

namespace duet::cloud {

class ItemCache {
 public:
  struct Options {
    int64_t capacity = 100000;  // entries in all stripes; must be >= 1
    int width = 1;              // floats per entry (item_out)
    int num_stripes = 16;       // reduced to capacity when larger
  };
  explicit ItemCache(const Options& options);
  ItemCache(const ItemCache&) = delete;
  ItemCache& operator=(const ItemCache&) = delete;

  // On a hit copies the entry to out[0, width), marks it most recently used
  // and returns true.
  bool Lookup(int64_t item, uint64_t fingerprint, float* out);
  // Inserts or refreshes; evicts the stripe's least recently used entry
  // when the stripe is full.
  void Insert(int64_t item, uint64_t fingerprint, const float* value);
  void Clear();

  int64_t size() const;
  int64_t capacity() const { return capacity_; }
  int width() const { return width_; }
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }

 private:
  struct Key {
    int64_t item;
    uint64_t fingerprint;
    bool operator==(const Key& o) const {
      return item == o.item && fingerprint == o.fingerprint;
    }
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.item, k.fingerprint);
    }
  };
  // Doubly linked LRU over slot indices; head = most recent.
  struct Stripe {
    common::Mutex mu;
    int32_t capacity = 0;
    int32_t used ABSL_GUARDED_BY(mu) = 0;
    int32_t head ABSL_GUARDED_BY(mu) = -1;
    int32_t tail ABSL_GUARDED_BY(mu) = -1;
    std::vector<Key> keys ABSL_GUARDED_BY(mu);
    std::vector<int32_t> prev ABSL_GUARDED_BY(mu), next ABSL_GUARDED_BY(mu);
    common::AlignedBuffer<float> values ABSL_GUARDED_BY(mu);
    absl::flat_hash_map<Key, int32_t, absl::Hash<Key>> index
        ABSL_GUARDED_BY(mu);
  };
  Stripe& StripeFor(int64_t item);
  static void Unlink(Stripe& s, int32_t slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  static void PushFront(Stripe& s, int32_t slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);

  const int64_t capacity_;
  const int width_;
  std::vector<std::unique_ptr<Stripe>> stripes_;
  std::atomic<uint64_t> hits_{0}, misses_{0};
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_ITEM_CACHE_H_
