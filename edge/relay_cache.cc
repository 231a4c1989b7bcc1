#include "edge/relay_cache.h"

#include <utility>

namespace duet::edge {

void RelayCache::Put(int64_t item_id, std::vector<float> rows) {
  if (capacity_ <= 0) return;
  common::MutexLock lock(&mu_);
  auto it = index_.find(item_id);
  if (it != index_.end()) {
    it->second->rows = std::move(rows);
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.push_front(Entry{item_id, std::move(rows)});
  index_[item_id] = lru_.begin();
  if (static_cast<int>(lru_.size()) > capacity_) {
    index_.erase(lru_.back().item_id);
    lru_.pop_back();
  }
}

std::optional<std::vector<float>> RelayCache::Get(int64_t item_id) {
  common::MutexLock lock(&mu_);
  auto it = index_.find(item_id);
  if (it == index_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->rows;
}

int RelayCache::size() const {
  common::MutexLock lock(&mu_);
  return static_cast<int>(lru_.size());
}

}  // namespace duet::edge
