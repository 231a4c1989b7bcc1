// The item catalog: maps an item id to its sparse ids in each item table and
// to its history key (row) in each user table, by SplitMix64 hashing, so any
// component — or anyone with the spec — reproduces the ids (DESIGN.md §2).
#ifndef DUET_COMMON_MODEL_CATALOG_H_
#define DUET_COMMON_MODEL_CATALOG_H_

#include <cstdint>
#include <vector>

#include "duet/v1/model.pb.h"

namespace duet::common {

// SplitMix64's finalizer; Mix(0) == 0xE220A8397B1DCDAF.
inline uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Immutable and thread-safe. Item ids must be validated with Contains()
// before the id functions are called.
class Catalog {
 public:
  explicit Catalog(const duet::v1::ModelConfig& config);

  int64_t num_items() const { return num_items_; }
  bool Contains(int64_t item) const { return item >= 0 && item < num_items_; }

  // Writes the lookups_per_item(t) sparse ids of `item` in item table t:
  // id k = Mix(h ^ ((t << 32) | k)) % rows(item table t), h = ItemHash(item).
  void ItemSparseIds(int64_t item, int table, int64_t* out) const;
  // Row of user table t that an interaction with `item` appends:
  // Mix(h ^ ((1 << 63) | (t << 32))) % rows(user table t).
  int64_t HistoryKey(int64_t item, int table) const;

  int lookups_per_item(int table) const { return item_lookups_[table]; }
  int num_item_tables() const { return static_cast<int>(item_rows_.size()); }
  int num_user_tables() const { return static_cast<int>(user_rows_.size()); }

 private:
  uint64_t ItemHash(int64_t item) const {
    return Mix(seed_hash_ ^ static_cast<uint64_t>(item));
  }

  uint64_t seed_hash_;
  int64_t num_items_;
  std::vector<uint64_t> item_rows_;
  std::vector<int> item_lookups_;
  std::vector<uint64_t> user_rows_;
};

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_CATALOG_H_
