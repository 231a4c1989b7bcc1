#include "common/base/batch_queue.h"

#include <string>
#include <thread>
#include <vector>

#include "common/base/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

using Queue = BatchQueue<std::string>;

constexpr absl::Time kNoDeadline = absl::InfiniteFuture();
const int kA = 0, kB = 0;  // two keys (their addresses)

Queue::Options Greedy(int max_batch_size) {
  return {max_batch_size, absl::ZeroDuration()};
}

Queue::Batch Take(Queue* q) {
  Queue::Batch b;
  b.items.push_back("left from a previous batch");
  b.size = 99;
  q->Take(&b);
  return b;
}

TEST(BatchQueueTest, NothingQueuedIsAnEmptyBatch) {
  FakeClock clock;
  Queue q(&clock, Greedy(16));
  const Queue::Batch b = Take(&q);
  EXPECT_THAT(b.items, IsEmpty());
  EXPECT_EQ(b.size, 0);
  EXPECT_FALSE(b.more);
}

TEST(BatchQueueTest, GreedyTakesWhatIsQueuedUpToTheMaximumSize) {
  FakeClock clock;
  Queue q(&clock, Greedy(16));
  q.Push("a", 8, &kA, kNoDeadline);
  q.Push("b", 8, &kA, kNoDeadline);
  q.Push("c", 8, &kA, kNoDeadline);
  Queue::Batch b = Take(&q);
  EXPECT_THAT(b.items, ElementsAre("a", "b"));
  EXPECT_EQ(b.size, 16);
  EXPECT_TRUE(b.more);  // "c" is left
  b = Take(&q);
  EXPECT_THAT(b.items, ElementsAre("c"));
  EXPECT_FALSE(b.more);
  EXPECT_EQ(q.queued(), 0);
}

TEST(BatchQueueTest, OnlyItemsOfTheOldestItemsKeyJoinItsBatch) {
  FakeClock clock;
  Queue q(&clock, Greedy(64));
  q.Push("a1", 8, &kA, kNoDeadline);
  q.Push("b1", 8, &kB, kNoDeadline);
  q.Push("a2", 8, &kA, kNoDeadline);
  Queue::Batch b = Take(&q);
  EXPECT_THAT(b.items, ElementsAre("a1", "a2"));
  EXPECT_TRUE(b.more);
  b = Take(&q);
  EXPECT_THAT(b.items, ElementsAre("b1"));
  EXPECT_FALSE(b.more);
}

TEST(BatchQueueTest, AnItemThatDoesNotFitWaitsAndLaterOnesThatFitJoin) {
  FakeClock clock;
  Queue q(&clock, Greedy(16));
  q.Push("8", 8, &kA, kNoDeadline);
  q.Push("12", 12, &kA, kNoDeadline);
  q.Push("6", 6, &kA, kNoDeadline);
  EXPECT_THAT(Take(&q).items, ElementsAre("8", "6"));
  EXPECT_THAT(Take(&q).items, ElementsAre("12"));
}

TEST(BatchQueueTest, AnItemLargerThanTheMaximumIsABatchOfItsOwn) {
  FakeClock clock;
  Queue q(&clock, Greedy(16));
  q.Push("big", 40, &kA, kNoDeadline);
  q.Push("small", 4, &kA, kNoDeadline);
  const Queue::Batch b = Take(&q);
  EXPECT_THAT(b.items, ElementsAre("big"));
  EXPECT_EQ(b.size, 40);
  EXPECT_THAT(Take(&q).items, ElementsAre("small"));
}

// Takes one batch on a thread of its own (a consumer that may wait).
class Consumer {
 public:
  explicit Consumer(Queue* q) : thread_([this, q] { batch_ = Take(q); }) {}
  Queue::Batch Join() {
    thread_.join();
    return std::move(batch_);
  }

 private:
  Queue::Batch batch_;
  std::thread thread_;
};

TEST(BatchQueueTest, WithADelayTheConsumerWaitsUntilTheBatchIsFull) {
  FakeClock clock;
  Queue q(&clock, {16, absl::Milliseconds(1)});
  q.Push("a", 8, &kA, kNoDeadline);
  Consumer first(&q);
  clock.WaitForWaiters(1);
  // Another consumer takes nothing while the first collects.
  const Queue::Batch other = Take(&q);
  EXPECT_THAT(other.items, IsEmpty());
  EXPECT_FALSE(other.more);
  q.Push("b", 8, &kA, kNoDeadline);  // full: no time needs to pass
  const Queue::Batch b = first.Join();
  EXPECT_THAT(b.items, ElementsAre("a", "b"));
  EXPECT_FALSE(b.more);
}

TEST(BatchQueueTest, WithADelayTheOldestItemWaitsAtMostTheDelay) {
  FakeClock clock;
  Queue q(&clock, {16, absl::Milliseconds(1)});
  q.Push("a", 8, &kA, kNoDeadline);
  Consumer first(&q);
  clock.WaitForWaiters(1);
  clock.Advance(absl::Microseconds(999));
  q.Push("b", 4, &kA, kNoDeadline);
  clock.Advance(absl::Microseconds(1));  // "a" has waited 1 ms
  const Queue::Batch b = first.Join();
  EXPECT_THAT(b.items, ElementsAre("a", "b"));
  EXPECT_EQ(b.size, 12);
}

TEST(BatchQueueTest, WithADelayNoItemWaitsPastItsLatestStart) {
  FakeClock clock;
  Queue q(&clock, {16, absl::Seconds(10)});
  q.Push("a", 8, &kA, kNoDeadline);
  q.Push("b", 4, &kA, clock.Now() + absl::Milliseconds(2));
  Consumer first(&q);
  clock.WaitForWaiters(1);
  clock.Advance(absl::Milliseconds(2));
  EXPECT_THAT(first.Join().items, ElementsAre("a", "b"));
}

TEST(BatchQueueTest, ItemsLeftBehindByACollectingConsumerAreReported) {
  FakeClock clock;
  Queue q(&clock, {16, absl::Milliseconds(1)});
  q.Push("a", 8, &kA, kNoDeadline);
  Consumer first(&q);
  clock.WaitForWaiters(1);
  // Its consumer found the first one collecting and took nothing.
  q.Push("b1", 4, &kB, kNoDeadline);
  EXPECT_THAT(Take(&q).items, IsEmpty());
  q.Push("a2", 8, &kA, kNoDeadline);  // fills the first one's batch
  const Queue::Batch b = first.Join();
  EXPECT_THAT(b.items, ElementsAre("a", "a2"));
  EXPECT_TRUE(b.more);                   // "b1" needs a consumer
  clock.Advance(absl::Milliseconds(1));  // "b1" has waited its delay
  EXPECT_THAT(Take(&q).items, ElementsAre("b1"));
}

}  // namespace
}  // namespace duet::common
