// The scratchpad's location tracker (Duet paper §5.1): points at the oldest
// slot of a fixed-length history ring, which the next push overwrites; the
// push then advances it to the next-oldest slot. Not thread-safe (the owning
// Scratchpad serializes access).
#ifndef DUET_EDGE_LOCATION_TRACKER_H_
#define DUET_EDGE_LOCATION_TRACKER_H_

namespace duet::edge {

class LocationTracker {
 public:
  // capacity >= 1: the history length n.
  explicit LocationTracker(int capacity) : capacity_(capacity) {}

  int capacity() const { return capacity_; }
  // The slot the next push overwrites: the oldest once the ring is full.
  int oldest() const { return oldest_; }
  // Returns the slot to write now and moves to the next oldest.
  int Advance() {
    const int slot = oldest_;
    oldest_ = (oldest_ + 1 == capacity_) ? 0 : oldest_ + 1;
    return slot;
  }
  // Restores a persisted position; false if out of range.
  bool Reset(int oldest) {
    if (oldest < 0 || oldest >= capacity_) return false;
    oldest_ = oldest;
    return true;
  }

 private:
  int capacity_;
  int oldest_ = 0;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_LOCATION_TRACKER_H_
