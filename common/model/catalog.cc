#include "common/model/catalog.h"

namespace duet::common {

Catalog::Catalog(const duet::v1::ModelConfig& config)
    : seed_hash_(Mix(config.catalog().seed())),
      num_items_(config.catalog().num_items()) {
  for (const auto& t : config.item_tables()) {
    item_rows_.push_back(static_cast<uint64_t>(t.rows()));
    item_lookups_.push_back(t.lookups_per_item());
  }
  for (const auto& t : config.user_tables()) {
    user_rows_.push_back(static_cast<uint64_t>(t.rows()));
  }
}

void Catalog::ItemSparseIds(int64_t item, int table, int64_t* out) const {
  const uint64_t h = ItemHash(item);
  const uint64_t rows = item_rows_[table];
  const uint64_t t = static_cast<uint64_t>(table) << 32;
  for (int k = 0; k < item_lookups_[table]; ++k) {
    out[k] =
        static_cast<int64_t>(Mix(h ^ (t | static_cast<uint64_t>(k))) % rows);
  }
}

int64_t Catalog::HistoryKey(int64_t item, int table) const {
  const uint64_t h = ItemHash(item);
  const uint64_t salt = (1ULL << 63) | (static_cast<uint64_t>(table) << 32);
  return static_cast<int64_t>(Mix(h ^ salt) % user_rows_[table]);
}

}  // namespace duet::common
