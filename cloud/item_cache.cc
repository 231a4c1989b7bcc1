#include "cloud/item_cache.h"

#include <algorithm>
#include <cstring>

#include "common/model/catalog.h"

namespace duet::cloud {

ItemCache::ItemCache(const Options& options)
    : capacity_(std::max<int64_t>(options.capacity, 1)),
      width_(std::max(options.width, 1)) {
  const int stripes =
      static_cast<int>(std::clamp<int64_t>(options.num_stripes, 1, capacity_));
  for (int i = 0; i < stripes; ++i) {
    auto s = std::make_unique<Stripe>();
    // Spread the remainder so the stripes add up to exactly capacity_.
    s->capacity = static_cast<int32_t>(capacity_ / stripes +
                                       (i < capacity_ % stripes ? 1 : 0));
    common::MutexLock lock(&s->mu);
    s->keys.resize(s->capacity);
    s->prev.resize(s->capacity);
    s->next.resize(s->capacity);
    s->values =
        common::AlignedBuffer<float>(static_cast<size_t>(s->capacity) * width_);
    s->index.reserve(s->capacity);
    stripes_.push_back(std::move(s));
  }
}

ItemCache::Stripe& ItemCache::StripeFor(int64_t item) {
  return *stripes_[common::Mix(static_cast<uint64_t>(item)) % stripes_.size()];
}

void ItemCache::Unlink(Stripe& s, int32_t slot) {
  const int32_t p = s.prev[slot], n = s.next[slot];
  if (p >= 0)
    s.next[p] = n;
  else
    s.head = n;
  if (n >= 0)
    s.prev[n] = p;
  else
    s.tail = p;
}

void ItemCache::PushFront(Stripe& s, int32_t slot) {
  s.prev[slot] = -1;
  s.next[slot] = s.head;
  if (s.head >= 0) s.prev[s.head] = slot;
  s.head = slot;
  if (s.tail < 0) s.tail = slot;
}

bool ItemCache::Lookup(int64_t item, uint64_t fingerprint, float* out) {
  Stripe& s = StripeFor(item);
  {
    common::MutexLock lock(&s.mu);
    auto it = s.index.find(Key{item, fingerprint});
    if (it != s.index.end()) {
      const int32_t slot = it->second;
      std::memcpy(out, s.values.data() + static_cast<size_t>(slot) * width_,
                  width_ * sizeof(float));
      if (s.head != slot) {
        Unlink(s, slot);
        PushFront(s, slot);
      }
      hits_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void ItemCache::Insert(int64_t item, uint64_t fingerprint, const float* value) {
  Stripe& s = StripeFor(item);
  const Key key{item, fingerprint};
  common::MutexLock lock(&s.mu);
  int32_t slot;
  auto it = s.index.find(key);
  if (it != s.index.end()) {
    slot = it->second;
    Unlink(s, slot);
  } else if (s.used < s.capacity) {
    slot = s.used++;
    s.index.emplace(key, slot);
  } else {
    slot = s.tail;
    Unlink(s, slot);
    s.index.erase(s.keys[slot]);
    s.index.emplace(key, slot);
  }
  s.keys[slot] = key;
  std::memcpy(s.values.data() + static_cast<size_t>(slot) * width_, value,
              width_ * sizeof(float));
  PushFront(s, slot);
}

void ItemCache::Clear() {
  for (auto& s : stripes_) {
    common::MutexLock lock(&s->mu);
    s->index.clear();
    s->used = 0;
    s->head = s->tail = -1;
  }
}

int64_t ItemCache::size() const {
  int64_t n = 0;
  for (const auto& s : stripes_) {
    common::MutexLock lock(&s->mu);
    n += s->used;
  }
  return n;
}

}  // namespace duet::cloud
