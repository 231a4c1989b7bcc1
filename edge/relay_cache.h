// Bounded LRU cache of relayed user-table rows (Scores.relay): an item the
// user just saw comes with the rows an interaction with it appends, so
// RecordInteraction needs no round trip. Thread-safe.
#ifndef DUET_EDGE_RELAY_CACHE_H_
#define DUET_EDGE_RELAY_CACHE_H_

#include <cstdint>
#include <list>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "common/base/mutex.h"

namespace duet::edge {

class RelayCache {
 public:
  // capacity 0 disables the cache.
  explicit RelayCache(int capacity) : capacity_(capacity) {}

  void Put(int64_t item_id, std::vector<float> rows);
  // The rows if cached (and marks them recently used).
  std::optional<std::vector<float>> Get(int64_t item_id);
  int size() const;

 private:
  struct Entry {
    int64_t item_id;
    std::vector<float> rows;
  };
  const int capacity_;
  mutable common::Mutex mu_;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);  // most recent first
  absl::flat_hash_map<int64_t, std::list<Entry>::iterator> index_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace duet::edge

#endif  // DUET_EDGE_RELAY_CACHE_H_
