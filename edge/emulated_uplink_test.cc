#include "edge/emulated_uplink.h"

#include <memory>
#include <thread>

#include "common/base/clock.h"
#include "common/base/status_matchers.h"
#include "edge/internal/fake_cloud.h"
#include "edge/internal/test_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::edge {
namespace {

using common::StatusIs;
using internal::FakeCloud;
using internal::SharedTestModel;
using testing::ElementsAre;
using testing::HasSubstr;
using testing::IsEmpty;

duet::v1::BeginQuery Begin(int candidates) {
  duet::v1::BeginQuery b;
  for (int i = 0; i < candidates; ++i) b.add_candidate_ids(i);
  b.set_top_k(1);
  return b;
}

// 8 Mbit/s: one byte takes exactly 1 us on the link.
constexpr double kMbps = 8;

TEST(EmulatedUplinkTest, MessagesShareOneLinkAndEachAddsHalfTheRtt) {
  common::FakeClock clock;
  FakeCloud cloud(&SharedTestModel());
  EmulatedUplink link(&cloud, {kMbps, absl::Milliseconds(10)}, &clock);
  const absl::Time t0 = clock.Now();
  EXPECT_EQ(link.Reserve(1000), t0 + absl::Milliseconds(1 + 5));
  // Sent at once after the first: it waits for the link to be free.
  EXPECT_EQ(link.Reserve(1000), t0 + absl::Milliseconds(2 + 5));
  // Later, on an idle link: only its own transmission and the half RTT.
  clock.Advance(absl::Milliseconds(10));
  EXPECT_EQ(link.Reserve(500), t0 + absl::Milliseconds(10) +
                                   absl::Microseconds(500) +
                                   absl::Milliseconds(5));
}

TEST(EmulatedUplinkTest, AQueryReachesTheCloudOnlyWhenTheLinkDeliversIt) {
  common::FakeClock clock;
  FakeCloud cloud(&SharedTestModel());
  EmulatedUplink link(&cloud, {kMbps, absl::Milliseconds(4)}, &clock);
  const duet::v1::BeginQuery begin = Begin(100);
  // The SessionRequest around it: a one-byte tag and a one-byte length.
  const size_t bytes = begin.ByteSizeLong() + 2;
  const absl::Duration delay =
      absl::Microseconds(static_cast<int64_t>(bytes)) + absl::Milliseconds(2);

  absl::StatusOr<std::unique_ptr<CloudQuery>> query;
  std::thread sender(
      [&] { query = link.BeginQuery(begin, clock.Now() + absl::Seconds(1)); });
  clock.WaitForWaiters(1);
  clock.Advance(delay - absl::Microseconds(1));
  EXPECT_EQ(clock.waiters(), 1);  // still on the link
  EXPECT_THAT(cloud.events(), IsEmpty());
  clock.Advance(absl::Microseconds(1));
  sender.join();
  ASSERT_TRUE(query.ok()) << query.status();
  EXPECT_THAT(cloud.events(), ElementsAre("begin 1"));

  // The user vector takes the link too; then it reaches the same query.
  duet::v1::UserVector uv;
  uv.set_query_id((*query)->id());
  uv.add_fp32_data(0.5f);
  absl::Status sent;
  std::thread vector_sender([&] { sent = (*query)->SendUserVector(uv); });
  clock.WaitForWaiters(1);
  EXPECT_THAT(cloud.events(), ElementsAre("begin 1"));
  clock.Advance(absl::Milliseconds(3));
  vector_sender.join();
  EXPECT_TRUE(sent.ok()) << sent;
  EXPECT_THAT(cloud.events(), ElementsAre("begin 1", "vector 1"));
}

TEST(EmulatedUplinkTest, ADeadlinePassedOnTheLinkNeverReachesTheCloud) {
  common::FakeClock clock;
  FakeCloud cloud(&SharedTestModel());
  EmulatedUplink link(&cloud, {0, absl::Milliseconds(10)}, &clock);
  absl::StatusOr<std::unique_ptr<CloudQuery>> query;
  std::thread sender([&] {
    query = link.BeginQuery(Begin(4), clock.Now() + absl::Milliseconds(3));
  });
  clock.WaitForWaiters(1);
  clock.Advance(absl::Milliseconds(5));
  sender.join();
  EXPECT_THAT(query, StatusIs(absl::StatusCode::kDeadlineExceeded,
                              HasSubstr("emulated uplink")));
  EXPECT_EQ(cloud.begins.load(), 0);
}

TEST(EmulatedUplinkTest, PassesTheInnerClientsAnswersThrough) {
  FakeCloud cloud(&SharedTestModel());
  EmulatedUplink link(&cloud, {}, nullptr);  // a free link, real clock
  duet::v1::GetItemEmbeddingsRequest get;
  get.add_item_ids(3);
  get.add_item_ids(4);
  auto rows = link.GetItemEmbeddings(get, absl::InfiniteFuture());
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->items_size(), 2);
  EXPECT_EQ(link.ConnectionState(), "READY");
  cloud.available = false;
  EXPECT_EQ(link.ConnectionState(), "TRANSIENT_FAILURE");
  EXPECT_THAT(link.BeginQuery(Begin(4), absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cloud")));
}

TEST(EmulatedUplinkTest, RejectsNegativeLinks) {
  EXPECT_TRUE(EmulatedUplink::Validate({24, absl::Milliseconds(20)}).ok());
  EXPECT_THAT(EmulatedUplink::Validate({-1, absl::ZeroDuration()}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must not be negative")));
  EXPECT_THAT(EmulatedUplink::Validate({1, -absl::Milliseconds(1)}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must not be negative")));
}

}  // namespace
}  // namespace duet::edge
