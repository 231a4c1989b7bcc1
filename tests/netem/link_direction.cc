#include "tests/netem/link_direction.h"

#include <algorithm>
#include <cmath>

namespace duet::netem {

LinkDirection::LinkDirection(size_t capacity, size_t max_packet, uint64_t seed)
    : capacity_(capacity),
      max_packet_(max_packet),
      data_(capacity * max_packet),
      queue_(capacity),
      rng_(seed) {}

void LinkDirection::SetParams(const LinkParams& params) {
  params_ = params;
  if (params_.partitioned) {
    stats_.partitioned += count_;
    head_ = count_ = 0;
  }
}

uint8_t* LinkDirection::Slot() {
  if (count_ == capacity_) return nullptr;
  return &data_[((head_ + count_) % capacity_) * max_packet_];
}

void LinkDirection::Arrive(int64_t now_ns, size_t bytes) {
  if (params_.partitioned) {
    ++stats_.partitioned;
    return;
  }
  if (params_.loss > 0 &&
      std::uniform_real_distribution<double>(0, 1)(rng_) < params_.loss) {
    ++stats_.lost;
    return;
  }
  int64_t done = std::max(now_ns, serialized_until_ns_);
  if (params_.rate_bps > 0) {
    done += static_cast<int64_t>(
        std::llround(static_cast<double>(bytes) * 8e9 / params_.rate_bps));
  }
  serialized_until_ns_ = done;
  int64_t delay = params_.delay_ns;
  if (params_.jitter_ns > 0) {
    delay += std::uniform_int_distribution<int64_t>(-params_.jitter_ns,
                                                    params_.jitter_ns)(rng_);
  }
  const int64_t depart = std::max(done + std::max<int64_t>(delay, 0),
                                  std::max(last_departure_ns_, now_ns));
  last_departure_ns_ = depart;
  queue_[(head_ + count_) % capacity_] = Entry{depart, bytes};
  ++count_;
}

const uint8_t* LinkDirection::FrontData() const {
  return &data_[head_ * max_packet_];
}

void LinkDirection::Pop() {
  ++stats_.delivered;
  stats_.delivered_bytes += queue_[head_].bytes;
  head_ = (head_ + 1) % capacity_;
  --count_;
}

}  // namespace duet::netem
