#include "edge/history_rebuilder.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status_matchers.h"
#include "common/model/model_config.h"
#include "common/model/test_util.h"
#include "edge/internal/fake_cloud.h"
#include "edge/internal/test_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::edge {
namespace {

using common::StatusIs;
using internal::FakeCloud;
using internal::ItemRows;
using internal::NewInlineUserState;
using internal::SharedTestModel;
using testing::HasSubstr;

absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir,
                                                 const common::Model& m,
                                                 UserState* state) {
  StateStore::Options o;
  o.dir = dir;
  return StateStore::Open(o, m, state);
}

// v1 history of `count` interactions in `dir`; returns its item ids.
std::vector<int64_t> WriteV1History(const std::string& dir, int count) {
  const common::Model& v1 = SharedTestModel("rm2", 1);
  auto state = NewInlineUserState(v1);
  auto store = Open(dir, v1, state.get());
  EXPECT_TRUE(store.ok()) << store.status();
  std::mt19937 rng(3);
  for (int i = 0; i < count; ++i) {
    const int64_t item = rng() % v1.catalog().num_items();
    EXPECT_TRUE((*store)->AppendInteraction(item, ItemRows(v1, item)).ok());
    state->PushInteraction(item, ItemRows(v1, item));
  }
  return state->history_items();
}

// A cloud still on the old model answers GetItemEmbeddings with its rows,
// which say so: the rebuilder refuses them and keeps waiting, and nothing is
// imported or persisted.
TEST(EdgeHistoryRebuilderTest, RefusesRowsOfAnotherModel) {
  common::TempDir dir;
  WriteV1History(dir.path(), 150);
  const common::Model& v1 = SharedTestModel("rm2", 1);
  const common::Model& v2 = SharedTestModel("rm2", 2);
  auto state = NewInlineUserState(v2);
  auto store = Open(dir.path(), v2, state.get());
  ASSERT_TRUE(store.ok()) << store.status();
  auto user_model = UserModel::Create(&v2, {});
  ASSERT_TRUE(user_model.ok()) << user_model.status();
  FakeCloud old_cloud(&v1);
  HistoryRebuilder::Options o;
  o.initial_backoff = absl::Milliseconds(1);
  o.max_backoff = absl::Milliseconds(5);
  HistoryRebuilder rebuilder(user_model->get(), &old_cloud, state.get(),
                             store->get(), o);
  rebuilder.Start();
  while (rebuilder.report().attempts < 3) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_THAT(rebuilder.status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr(absl::StrCat(
                           "the cloud sent rows of model v1 (signature ",
                           v1.config().signature(), "), this edge runs ",
                           common::ModelLabel(v2.config())))));
  EXPECT_TRUE((*store)->needs_rebuild());
}

TEST(EdgeHistoryRebuilderTest, RetriesUntilTheCloudAnswersThenPersists) {
  common::TempDir dir;
  const std::vector<int64_t> items = WriteV1History(dir.path(), 150);
  const common::Model& v2 = SharedTestModel("rm2", 2);
  auto state = NewInlineUserState(v2);
  auto store = Open(dir.path(), v2, state.get());
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->needs_rebuild());
  auto user_model = UserModel::Create(&v2, {});
  ASSERT_TRUE(user_model.ok()) << user_model.status();

  FakeCloud cloud(&v2);
  cloud.available = false;  // unreachable: nothing is lost, it retries
  HistoryRebuilder::Options o;
  o.batch_items = 50;
  o.initial_backoff = absl::Milliseconds(1);
  o.max_backoff = absl::Milliseconds(5);
  std::atomic<int> done{0};
  o.on_done = [&done] { ++done; };
  HistoryRebuilder rebuilder(user_model->get(), &cloud, state.get(),
                             store->get(), o);
  EXPECT_THAT(rebuilder.status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("rebuilding its history")));
  rebuilder.Start();
  while (rebuilder.report().attempts < 3) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_THAT(rebuilder.status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("cloud is not connected")));
  EXPECT_TRUE((*store)->needs_rebuild());
  cloud.available = true;
  ASSERT_TRUE(rebuilder.WaitUntilDone(absl::Seconds(60)));
  EXPECT_TRUE(rebuilder.status().ok());
  EXPECT_EQ(done, 1);
  EXPECT_FALSE((*store)->needs_rebuild());
  const HistoryRebuilder::Report r = rebuilder.report();
  EXPECT_EQ(r.items, 120);  // max(history_length) of rm2
  EXPECT_EQ(r.calls, 3);
  EXPECT_GT(r.bytes, 120 * v2.dims().pooled * 4);

  // The scratchpad equals one fed v2's rows of the same items.
  internal::ExpectHistoryOf(v2, items, *state);

  // Persisted under v2: reopening needs no rebuild.
  auto reopened_state = NewInlineUserState(v2);
  auto reopened = Open(dir.path(), v2, reopened_state.get());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_FALSE((*reopened)->needs_rebuild());
  EXPECT_EQ(reopened_state->history_items(), state->history_items());
}

TEST(EdgeHistoryRebuilderTest, DestroyedWhileTheCloudIsDownLeavesTheOldState) {
  common::TempDir dir;
  const std::vector<int64_t> items = WriteV1History(dir.path(), 10);
  const common::Model& v2 = SharedTestModel("rm2", 2);
  {
    auto state = NewInlineUserState(v2);
    auto store = Open(dir.path(), v2, state.get());
    ASSERT_TRUE(store.ok()) << store.status();
    auto user_model = UserModel::Create(&v2, {});
    ASSERT_TRUE(user_model.ok());
    FakeCloud cloud(&v2);
    cloud.available = false;
    HistoryRebuilder::Options o;
    o.initial_backoff = absl::Milliseconds(1);
    HistoryRebuilder rebuilder(user_model->get(), &cloud, state.get(),
                               store->get(), o);
    rebuilder.Start();
    while (rebuilder.report().attempts < 2) {
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
  auto state = NewInlineUserState(v2);
  auto store = Open(dir.path(), v2, state.get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->needs_rebuild());
  EXPECT_EQ(state->history_items(), items);
}

}  // namespace
}  // namespace duet::edge
