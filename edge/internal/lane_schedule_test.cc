#include "edge/internal/lane_schedule.h"

#include "gtest/gtest.h"

namespace duet::edge::internal {
namespace {

using Action = StreamSchedule::Action;
using Phase = StreamSchedule::Phase;

const absl::Time kT0 = absl::FromUnixSeconds(1'000'000);

TEST(StreamScheduleTest, RotatesAtItsAgeAndNeverWithoutOne) {
  StreamSchedule s(kT0, absl::Seconds(60));
  EXPECT_TRUE(s.open());
  EXPECT_EQ(s.NextEvent(), kT0 + absl::Seconds(60));
  EXPECT_FALSE(s.RotationDue(kT0 + absl::Seconds(59)));
  EXPECT_TRUE(s.RotationDue(kT0 + absl::Seconds(60)));
  // The channel was not READY: due again kRotateRetry later, not before.
  s.RetryRotation(kT0 + absl::Seconds(60));
  EXPECT_FALSE(s.RotationDue(kT0 + absl::Seconds(60)));
  EXPECT_EQ(s.NextEvent(), kT0 + absl::Seconds(60) + kRotateRetry);

  StreamSchedule forever(kT0, absl::ZeroDuration());
  EXPECT_FALSE(forever.RotationDue(kT0 + absl::Hours(24 * 365)));
  EXPECT_EQ(forever.NextEvent(), absl::InfiniteFuture());
}

TEST(StreamScheduleTest, DrainsUntilIdleThenHalfClosesThenCancelsOnce) {
  StreamSchedule s(kT0, absl::Seconds(60));
  const absl::Time rotated = kT0 + absl::Seconds(61);
  const absl::Time latest_deadline = rotated + absl::Seconds(2);
  s.StartDraining(rotated, latest_deadline);
  EXPECT_EQ(s.phase(), Phase::kDraining);
  EXPECT_FALSE(s.RotationDue(rotated));  // a draining stream never rotates
  EXPECT_EQ(s.NextEvent(), latest_deadline + kDrainSlack);
  // Queries still open and before the drain time: nothing.
  EXPECT_EQ(s.Step(rotated + absl::Seconds(1), /*idle=*/false), Action::kNone);
  // Its last query answered: half-close at once.
  const absl::Time idle_at = rotated + absl::Seconds(1);
  EXPECT_EQ(s.Step(idle_at, /*idle=*/true), Action::kHalfClose);
  EXPECT_EQ(s.phase(), Phase::kHalfClosed);
  EXPECT_EQ(s.NextEvent(), idle_at + kCloseTimeout);
  EXPECT_EQ(s.Step(idle_at + kCloseTimeout - absl::Nanoseconds(1), true),
            Action::kNone);
  // The cloud never finished it: cancel, once.
  EXPECT_EQ(s.Step(idle_at + kCloseTimeout, true), Action::kCancel);
  EXPECT_EQ(s.Step(idle_at + kCloseTimeout + absl::Hours(1), true),
            Action::kNone);
  EXPECT_EQ(s.NextEvent(), absl::InfiniteFuture());
  s.Ended();
  EXPECT_EQ(s.phase(), Phase::kEnded);
  EXPECT_EQ(s.Step(absl::InfiniteFuture(), true), Action::kNone);
}

TEST(StreamScheduleTest, ALeakedQueryDelaysTheHalfCloseOnlyUntilTheSlack) {
  StreamSchedule s(kT0, absl::Seconds(60));
  // Rotated after its queries' deadlines had passed: the drain time is
  // counted from the rotation.
  s.StartDraining(kT0 + absl::Seconds(70), kT0 + absl::Seconds(65));
  EXPECT_EQ(s.NextEvent(), kT0 + absl::Seconds(70) + kDrainSlack);
  EXPECT_EQ(s.Step(kT0 + absl::Seconds(70) + kDrainSlack, /*idle=*/false),
            Action::kHalfClose);
}

TEST(StreamScheduleTest, OnlyAnOpenStreamStartsDraining) {
  StreamSchedule s(kT0, absl::Seconds(60));
  s.Ended();
  s.StartDraining(kT0, kT0);
  EXPECT_EQ(s.phase(), Phase::kEnded);
}

TEST(StreamScheduleTest, HealthyIfItAnsweredOrLivedLongerThanAMoment) {
  StreamSchedule s(kT0, absl::ZeroDuration());
  EXPECT_FALSE(s.Healthy(kT0 + kStableStream, /*answered=*/false));
  EXPECT_TRUE(s.Healthy(kT0 + kStableStream + absl::Nanoseconds(1), false));
  EXPECT_TRUE(s.Healthy(kT0, /*answered=*/true));
}

TEST(ReconnectScheduleTest, BacksOffExponentiallyWithJitterUpToTheCap) {
  ReconnectSchedule r(absl::Milliseconds(100), absl::Milliseconds(700));
  EXPECT_TRUE(r.Due(kT0));  // connects at once at first
  r.StreamEnded(kT0, /*healthy=*/false, /*jitter=*/1.0);
  EXPECT_EQ(r.next(), kT0 + absl::Milliseconds(100));
  EXPECT_FALSE(r.Due(kT0 + absl::Milliseconds(99)));
  EXPECT_TRUE(r.Due(kT0 + absl::Milliseconds(100)));
  r.StreamEnded(kT0, false, 0.5);
  EXPECT_EQ(r.next(), kT0 + absl::Milliseconds(100));  // 200 ms x 0.5
  r.StreamEnded(kT0, false, 1.0);
  EXPECT_EQ(r.next(), kT0 + absl::Milliseconds(400));
  r.StreamEnded(kT0, false, 1.0);
  EXPECT_EQ(r.next(), kT0 + absl::Milliseconds(700));  // capped
  EXPECT_EQ(r.backoff(), absl::Milliseconds(700));
  // A healthy stream's end starts over.
  r.StreamEnded(kT0, /*healthy=*/true, 1.0);
  EXPECT_EQ(r.next(), kT0 + absl::Milliseconds(100));
  EXPECT_EQ(r.backoff(), absl::Milliseconds(200));
}

TEST(ReconnectScheduleTest, AChannelNotReadyIsPolledAtMostEveryPollPeriod) {
  ReconnectSchedule r(absl::Milliseconds(100), absl::Seconds(5));
  r.ChannelNotReady(kT0, 1.0);
  EXPECT_EQ(r.next(), kT0 + absl::Milliseconds(100));
  for (int i = 0; i < 6; ++i) r.StreamEnded(kT0, false, 1.0);  // 5 s
  r.ChannelNotReady(kT0, 1.0);
  EXPECT_EQ(r.next(), kT0 + kChannelPoll);
}

}  // namespace
}  // namespace duet::edge::internal
