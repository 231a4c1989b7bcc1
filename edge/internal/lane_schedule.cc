#include "edge/internal/lane_schedule.h"

#include <algorithm>

namespace duet::edge::internal {

StreamSchedule::StreamSchedule(absl::Time now, absl::Duration age)
    : opened_(now) {
  if (age > absl::ZeroDuration()) rotate_at_ = now + age;
}

bool StreamSchedule::RotationDue(absl::Time now) const {
  return phase_ == Phase::kOpen && now >= rotate_at_;
}

void StreamSchedule::RetryRotation(absl::Time now) {
  rotate_at_ = now + kRotateRetry;
}

void StreamSchedule::StartDraining(absl::Time now, absl::Time latest_deadline) {
  if (phase_ != Phase::kOpen) return;
  phase_ = Phase::kDraining;
  drain_until_ = std::max(now, latest_deadline) + kDrainSlack;
}

StreamSchedule::Action StreamSchedule::Step(absl::Time now, bool idle) {
  if (phase_ == Phase::kDraining && (idle || now >= drain_until_)) {
    phase_ = Phase::kHalfClosed;
    close_until_ = now + kCloseTimeout;
    return Action::kHalfClose;
  }
  if (phase_ == Phase::kHalfClosed && now >= close_until_) {
    close_until_ = absl::InfiniteFuture();  // cancelled once
    return Action::kCancel;
  }
  return Action::kNone;
}

bool StreamSchedule::Healthy(absl::Time now, bool answered) const {
  return answered || now - opened_ > kStableStream;
}

absl::Time StreamSchedule::NextEvent() const {
  switch (phase_) {
    case Phase::kOpen:
      return rotate_at_;
    case Phase::kDraining:
      return drain_until_;
    case Phase::kHalfClosed:
      return close_until_;
    case Phase::kEnded:
      break;
  }
  return absl::InfiniteFuture();
}

ReconnectSchedule::ReconnectSchedule(absl::Duration initial, absl::Duration max)
    : initial_(initial), max_(max), backoff_(initial) {}

void ReconnectSchedule::StreamEnded(absl::Time now, bool healthy,
                                    double jitter) {
  if (healthy) backoff_ = initial_;
  next_ = now + backoff_ * jitter;
  backoff_ = std::min(backoff_ * 2, max_);
}

void ReconnectSchedule::ChannelNotReady(absl::Time now, double jitter) {
  next_ = now + std::min(backoff_ * jitter, kChannelPoll);
}

}  // namespace duet::edge::internal
