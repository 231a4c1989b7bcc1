// LinkDirection: one direction of duet-link-emulator's emulated link, as
// pure timing logic (no I/O, no clock): a bounded FIFO of packets, each
// given a departure time when it arrives. In order, a packet is
//   dropped if the link is partitioned, with probability `loss`, or when
//   `capacity` packets are already queued (tail drop, like netem's limit);
//   serialized: done = max(arrival, previous done) + bytes * 8 / rate;
//   delayed: departs at done + delay + uniform(-jitter, +jitter), but never
//   before the previous packet (order is kept per direction, as on a cellular
//   link whose RLC layer delivers in order; netem would reorder instead).
// Partitioning drops what is queued (packets on a cut link are lost).
// Storage is allocated once. Not thread-safe.
#ifndef DUET_TESTS_NETEM_LINK_DIRECTION_H_
#define DUET_TESTS_NETEM_LINK_DIRECTION_H_

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace duet::netem {

struct LinkParams {
  int64_t delay_ns = 0;
  int64_t jitter_ns = 0;  // uniform in [-jitter, +jitter], clamped at 0
  double loss = 0;        // probability in [0, 1]
  double rate_bps = 0;    // 0: unlimited
  bool partitioned = false;
};

struct LinkStats {
  uint64_t delivered = 0;
  uint64_t delivered_bytes = 0;
  uint64_t lost = 0;         // random loss
  uint64_t overflowed = 0;   // queue full
  uint64_t partitioned = 0;  // dropped by a partition
};

class LinkDirection {
 public:
  // `capacity` packets of at most `max_packet` bytes each.
  LinkDirection(size_t capacity, size_t max_packet, uint64_t seed);

  void SetParams(const LinkParams& params);
  const LinkParams& params() const { return params_; }
  const LinkStats& stats() const { return stats_; }

  // Where the next arriving packet is to be written (max_packet bytes), or
  // null when the queue is full (the caller reads it elsewhere and calls
  // Overflow()).
  uint8_t* Slot();
  void Overflow() { ++stats_.overflowed; }
  // The packet written to Slot() arrived at `now_ns` with `bytes`: queues it
  // with its departure time or drops it.
  void Arrive(int64_t now_ns, size_t bytes);

  bool empty() const { return count_ == 0; }
  // Departure time of the oldest queued packet; only when !empty().
  int64_t NextDeparture() const { return queue_[head_].depart_ns; }
  // The oldest queued packet; only when !empty().
  const uint8_t* FrontData() const;
  size_t FrontBytes() const { return queue_[head_].bytes; }
  // Removes the oldest packet, counted as delivered.
  void Pop();

 private:
  struct Entry {
    int64_t depart_ns = 0;
    size_t bytes = 0;
  };

  const size_t capacity_;
  const size_t max_packet_;
  std::vector<uint8_t> data_;  // capacity_ slots of max_packet_ bytes
  std::vector<Entry> queue_;   // ring of capacity_
  size_t head_ = 0, count_ = 0;
  LinkParams params_;
  LinkStats stats_;
  int64_t serialized_until_ns_ = 0;
  int64_t last_departure_ns_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace duet::netem

#endif  // DUET_TESTS_NETEM_LINK_DIRECTION_H_
