// The timing rules of GrpcCloudClient's lanes (edge/grpc_cloud_client.h), in
// classes of their own without gRPC or threads: when a stream rotates, how a
// rotated-out stream drains, is half-closed and (if the cloud never finishes
// it) cancelled, and when a lane reconnects after its stream ended (capped
// exponential backoff with jitter). The client calls them with its clock's
// time under its lock; the jitter factors come from its random source.
#ifndef DUET_EDGE_INTERNAL_LANE_SCHEDULE_H_
#define DUET_EDGE_INTERNAL_LANE_SCHEDULE_H_

#include "absl/time/time.h"

namespace duet::edge::internal {

// A stream that lived this long (or got an answer) was healthy: its end
// resets the lane's backoff.
inline constexpr absl::Duration kStableStream = absl::Seconds(1);
// How often a lane without a stream looks at the channel at most (the
// channel itself reconnects with the configured backoff).
inline constexpr absl::Duration kChannelPoll = absl::Milliseconds(250);
// A draining stream is half-closed this long after the latest deadline of
// its queries even if some never finished (a query object leaked).
inline constexpr absl::Duration kDrainSlack = absl::Seconds(1);
// A half-closed stream the cloud has not finished by then is cancelled.
inline constexpr absl::Duration kCloseTimeout = absl::Seconds(5);
// A rotation due while the channel is not READY is retried this much later.
inline constexpr absl::Duration kRotateRetry = absl::Seconds(1);

// One stream's phase and the time of its next transition.
class StreamSchedule {
 public:
  enum class Phase {
    kOpen,        // takes new queries (when it is its lane's current one)
    kDraining,    // rotated out: waits for its queries
    kHalfClosed,  // WritesDone sent: waits for the cloud to finish it
    kEnded,       // the stream finished
  };
  // What the lane does to a retiring stream now.
  enum class Action { kNone, kHalfClose, kCancel };

  // Opened at `now`; rotates at now + `age` (zero: never).
  StreamSchedule(absl::Time now, absl::Duration age);

  Phase phase() const { return phase_; }
  bool open() const { return phase_ == Phase::kOpen; }
  bool RotationDue(absl::Time now) const;
  // The channel was not READY for the rotation: try again a little later.
  void RetryRotation(absl::Time now);
  // Rotated out (make before break): no new queries; half-closed once
  // `idle` or kDrainSlack after the latest deadline of its queries.
  void StartDraining(absl::Time now, absl::Time latest_deadline);
  // Draining → half-closed when idle or its drain time passed; half-closed
  // → cancelled when the cloud did not finish it within kCloseTimeout.
  Action Step(absl::Time now, bool idle);
  void Ended() { phase_ = Phase::kEnded; }
  // Whether its end should reset the lane's backoff.
  bool Healthy(absl::Time now, bool answered) const;
  // When Step or RotationDue can next change something; infinite if never.
  absl::Time NextEvent() const;

 private:
  Phase phase_ = Phase::kOpen;
  absl::Time opened_;
  absl::Time rotate_at_ = absl::InfiniteFuture();
  absl::Time drain_until_ = absl::InfiniteFuture();
  absl::Time close_until_ = absl::InfiniteFuture();
};

// When a lane without a stream (re)connects.
class ReconnectSchedule {
 public:
  ReconnectSchedule(absl::Duration initial, absl::Duration max);

  bool Due(absl::Time now) const { return now >= next_; }
  absl::Time next() const { return next_; }
  absl::Duration backoff() const { return backoff_; }
  // The lane's stream ended at `now`: a healthy one resets the backoff; the
  // next attempt is after backoff x `jitter` (in [0.5, 1]), and the backoff
  // doubles up to the cap.
  void StreamEnded(absl::Time now, bool healthy, double jitter);
  // The channel was not READY: look again after the backoff x `jitter`, at
  // most kChannelPoll later (the channel reconnects on its own).
  void ChannelNotReady(absl::Time now, double jitter);

 private:
  const absl::Duration initial_, max_;
  absl::Duration backoff_;
  absl::Time next_ = absl::InfinitePast();
};

}  // namespace duet::edge::internal

#endif  // DUET_EDGE_INTERNAL_LANE_SCHEDULE_H_
