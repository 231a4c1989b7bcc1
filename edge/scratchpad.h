// The user-specific scratchpad (Duet paper §5.1): per user table a ring of
// the last `history_length` embedding rows (d fp32 each) with a
// LocationTracker at the oldest slot, and the SUM-pooled vector p_t that the
// user model reads. Pooled sums are kept incrementally (add the new row,
// subtract the overwritten one) in double precision and recomputed exactly
// from the rows every `refresh_every` pushes, so drift stays bounded.
// Not thread-safe: UserState serializes access.
#ifndef DUET_EDGE_SCRATCHPAD_H_
#define DUET_EDGE_SCRATCHPAD_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/base/aligned_buffer.h"
#include "edge/location_tracker.h"

namespace duet::edge {

class Scratchpad {
 public:
  struct Options {
    std::vector<int> history_lengths;  // per user table, each >= 1
    int dim = 0;                       // embedding dim d
    // Exact recomputation of a table's sum after this many pushes into it;
    // 0 means history_length (an amortized O(d) per push).
    int refresh_every = 0;
  };

  explicit Scratchpad(const Options& options);
  Scratchpad(const Scratchpad&) = delete;
  Scratchpad& operator=(const Scratchpad&) = delete;

  int num_tables() const { return static_cast<int>(tables_.size()); }
  int dim() const { return dim_; }
  int history_length(int t) const { return tables_[t].tracker.capacity(); }
  int filled(int t) const { return tables_[t].filled; }
  int tracker(int t) const { return tables_[t].tracker.oldest(); }
  // Bytes of row storage (sum_t history_length[t] * d * 4).
  int64_t row_bytes() const;

  // Appends one interaction: rows holds num_tables() * d floats, table t's
  // row at [t * d, (t + 1) * d). Overwrites each table's oldest slot.
  void Push(absl::Span<const float> rows);

  // The pooled user-table features [p_1 .. p_Tu] (num_tables() * d floats).
  const float* pooled() const { return pooled_.data(); }

  // Table t's ring in slot order (history_length * d floats, 64-byte aligned;
  // slots >= filled are zero while the ring is not full).
  absl::Span<const float> table_slots(int t) const;
  // Restores a persisted table; recomputes its sum. INVALID_ARGUMENT when
  // the sizes or positions do not fit this scratchpad.
  absl::Status Restore(int t, absl::Span<const float> slots, int tracker,
                       int filled);

  // Recomputes every sum from the rows (oldest to newest).
  void RefreshAll();

 private:
  struct Table {
    explicit Table(int n) : tracker(n) {}
    LocationTracker tracker;
    int filled = 0;
    int pushes_since_refresh = 0;
    float* slots = nullptr;  // into storage_
    std::vector<double> sum;
  };
  void Refresh(int t);

  const int dim_;
  const int refresh_every_;
  common::AlignedBuffer<float> storage_;
  std::vector<Table> tables_;
  std::vector<float> pooled_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_SCRATCHPAD_H_
