#include "edge/state_store.h"

#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/base/status_matchers.h"
#include "common/model/test_util.h"
#include "edge/internal/fake_cloud.h"
#include "edge/internal/test_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::edge {
namespace {

using common::StatusIs;
using internal::ItemRows;
using internal::NewInlineUserState;
using internal::SharedTestModel;
using testing::HasSubstr;

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void Spit(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

class StateStoreTest : public testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<StateStore>> Open(const common::Model& m,
                                                   UserState* state,
                                                   bool reset = false,
                                                   int snapshot_every = 1000) {
    StateStore::Options o;
    o.dir = dir_.path() + "/state";
    o.reset = reset;
    o.snapshot_every = snapshot_every;
    return StateStore::Open(o, m, state);
  }
  // Logs and applies `count` interactions (as Recommender does); the odd
  // ones carry a client id "<seed>-<i>".
  void Interact(StateStore& store, UserState& state, int count, int seed) {
    std::mt19937 rng(seed);
    for (int i = 0; i < count; ++i) {
      const int64_t item = rng() % model_.catalog().num_items();
      const auto rows = ItemRows(model_, item);
      const std::string id = i % 2 == 1 ? absl::StrCat(seed, "-", i) : "";
      ASSERT_TRUE(store.AppendInteraction(item, rows, id).ok());
      state.PushInteraction(item, rows, id);
      if (store.ShouldCompact()) {
        ASSERT_TRUE(store.Compact(state.Export()).ok());
      }
    }
  }
  std::string LogPath() { return dir_.path() + "/state/" + kLogFile; }
  std::string SnapshotPath() { return dir_.path() + "/state/" + kSnapshotFile; }

  const common::Model& model_ = SharedTestModel();
  common::TempDir dir_;
};

void ExpectSameState(const UserStateData& a, const UserStateData& b) {
  EXPECT_EQ(a.interactions_total, b.interactions_total);
  EXPECT_EQ(a.profile_version, b.profile_version);
  EXPECT_EQ(a.profile, b.profile);
  EXPECT_EQ(a.memo_version, b.memo_version);
  EXPECT_EQ(a.memo, b.memo);
  ASSERT_EQ(a.tables.size(), b.tables.size());
  for (size_t t = 0; t < a.tables.size(); ++t) {
    EXPECT_EQ(a.tables[t].tracker, b.tables[t].tracker) << t;
    EXPECT_EQ(a.tables[t].filled, b.tables[t].filled) << t;
    EXPECT_EQ(a.tables[t].slots, b.tables[t].slots) << t;
  }
  EXPECT_EQ(a.history_items, b.history_items);
  ASSERT_EQ(a.recent_ids.size(), b.recent_ids.size());
  for (size_t i = 0; i < a.recent_ids.size(); ++i) {
    EXPECT_EQ(a.recent_ids[i].id, b.recent_ids[i].id) << i;
    EXPECT_EQ(a.recent_ids[i].sequence, b.recent_ids[i].sequence) << i;
  }
}

TEST_F(StateStoreTest, SnapshotAndLogRoundTrip) {
  auto state = NewInlineUserState(model_);
  UserStateData before;
  {
    auto store = Open(model_, state.get(), false, /*snapshot_every=*/50);
    ASSERT_TRUE(store.ok()) << store.status();
    Interact(**store, *state, 130, 1);  // 2 compactions + 30 in the log
    const std::vector<float> s(model_.dims().static_in, 0.5f);
    ASSERT_TRUE((*store)->AppendProfile(1, s).ok());
    ASSERT_TRUE(state->ReplayProfile(s, 1).ok());
    Interact(**store, *state, 5, 2);
    EXPECT_EQ((*store)->records_in_log(), 36);
    before = state->Export();
  }
  auto restored = NewInlineUserState(model_);
  auto store = Open(model_, restored.get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->recovery_report(),
              HasSubstr("loaded snapshot at sequence 100"));
  EXPECT_THAT((*store)->recovery_report(), HasSubstr("replayed 36 log"));
  ExpectSameState(before, restored->Export());
  EXPECT_EQ(before.interactions_total, 135u);
  // Client ids from the snapshot and from the log: a retry is recognized.
  EXPECT_EQ(before.recent_ids.size(), 65u + 2u);
  EXPECT_EQ(restored->FindInteraction("1-1"), 2u);
  EXPECT_EQ(restored->FindInteraction("1-129"), 130u);
  EXPECT_EQ(restored->FindInteraction("2-3"), 134u);
  EXPECT_EQ(restored->FindInteraction("2-4"), std::nullopt);
  // Pooled sums are rebuilt, so queries see the same inputs.
  EXPECT_EQ(restored->Info().tables[0].filled, 120);
}

TEST_F(StateStoreTest, TornFinalRecordIsTruncated) {
  auto state = NewInlineUserState(model_);
  std::string good_log;
  UserStateData before;
  {
    auto store = Open(model_, state.get());
    ASSERT_TRUE(store.ok()) << store.status();
    Interact(**store, *state, 3, 1);
    before = state->Export();
    good_log = Slurp(LogPath());
    // A fourth record that reached the disk only partly (the crash came
    // before its fsync returned, so it was never acknowledged).
    Interact(**store, *state, 1, 9);
  }
  const std::string full = Slurp(LogPath());
  const size_t record = full.size() - good_log.size();
  for (size_t keep : {size_t{5}, record / 2, record - 1}) {
    SCOPED_TRACE(testing::Message() << "kept " << keep << " of " << record);
    Spit(LogPath(), full.substr(0, good_log.size() + keep));
    auto restored = NewInlineUserState(model_);
    auto store = Open(model_, restored.get());
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_THAT((*store)->recovery_report(),
                HasSubstr("truncated a torn final log record"));
    ExpectSameState(before, restored->Export());
    EXPECT_EQ(Slurp(LogPath()), good_log);
  }
  // A zero-filled tail (some filesystems extend the file before the data
  // lands) is torn too.
  Spit(LogPath(), good_log + std::string(100, '\0'));
  auto restored = NewInlineUserState(model_);
  ASSERT_TRUE(Open(model_, restored.get()).ok());
  EXPECT_EQ(restored->Export().interactions_total, 3u);
}

TEST_F(StateStoreTest, CorruptRecordBeforeTheEndIsDataLoss) {
  auto state = NewInlineUserState(model_);
  {
    auto store = Open(model_, state.get());
    ASSERT_TRUE(store.ok());
    Interact(**store, *state, 3, 1);
  }
  std::string log = Slurp(LogPath());
  log[log.size() / 3] ^= 0x40;  // inside the first record's rows
  Spit(LogPath(), log);
  auto restored = NewInlineUserState(model_);
  EXPECT_THAT(Open(model_, restored.get()),
              StatusIs(absl::StatusCode::kDataLoss,
                       testing::AllOf(HasSubstr("interactions.log"),
                                      HasSubstr("checksum"),
                                      HasSubstr("--reset_state"))));
}

TEST_F(StateStoreTest, CorruptSnapshotIsDataLossUnlessReset) {
  auto state = NewInlineUserState(model_);
  {
    auto store = Open(model_, state.get(), false, /*snapshot_every=*/2);
    ASSERT_TRUE(store.ok());
    Interact(**store, *state, 4, 1);
  }
  std::string snap = Slurp(SnapshotPath());
  snap[snap.size() - 10] ^= 0x01;
  Spit(SnapshotPath(), snap);
  auto restored = NewInlineUserState(model_);
  EXPECT_THAT(Open(model_, restored.get()),
              StatusIs(absl::StatusCode::kDataLoss,
                       testing::AllOf(HasSubstr("snapshot.bin is corrupt"),
                                      HasSubstr("checksum mismatch"),
                                      HasSubstr("--reset_state"))));
  // Truncated snapshot.
  Spit(SnapshotPath(), snap.substr(0, snap.size() / 2));
  EXPECT_THAT(Open(model_, restored.get()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("header says")));
  Spit(SnapshotPath(), "hello");
  EXPECT_THAT(Open(model_, restored.get()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));

  // --reset_state: starts empty and works afterwards.
  auto store = Open(model_, restored.get(), /*reset=*/true);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->recovery_report(), HasSubstr("state reset"));
  EXPECT_EQ(restored->Export().interactions_total, 0u);
  Interact(**store, *restored, 2, 3);
  store->reset();
  auto again = NewInlineUserState(model_);
  ASSERT_TRUE(Open(model_, again.get()).ok());
  EXPECT_EQ(again->Export().interactions_total, 2u);
}

// Rebuilds `state` (migrated by Open) from `m`'s rows of its history items,
// as HistoryRebuilder does with the cloud's, and persists it.
void Rebuild(const common::Model& m, UserState& state, StateStore& store) {
  std::vector<std::vector<float>> rows;
  for (int64_t item : state.history_items()) rows.push_back(ItemRows(m, item));
  ASSERT_TRUE(state.RebuildScratchpad(rows).ok());
  ASSERT_TRUE(store.Compact(state.Export()).ok());
}

// Table t pools the rows at HistoryKey(item, t) of the last
// history_length[t] items (DESIGN §2), from scratch.
std::vector<double> PooledFromItems(const common::Model& m,
                                    const std::vector<int64_t>& items) {
  const int d = m.config().embedding_dim();
  std::vector<double> pooled(m.dims().pooled, 0.0);
  for (int t = 0; t < m.config().user_tables_size(); ++t) {
    const int n =
        std::min<int>(items.size(), m.config().user_tables(t).history_length());
    for (size_t i = items.size() - n; i < items.size(); ++i) {
      const auto rows = ItemRows(m, items[i]);
      for (int k = 0; k < d; ++k) pooled[t * d + k] += rows[t * d + k];
    }
  }
  return pooled;
}

std::vector<double> PooledOf(const UserStateData& data, int d) {
  std::vector<double> pooled;
  for (const UserStateData::Table& t : data.tables) {
    std::vector<double> sum(d, 0.0);
    for (int i = 0; i < t.filled; ++i) {
      for (int k = 0; k < d; ++k) sum[k] += t.slots[i * d + k];
    }
    pooled.insert(pooled.end(), sum.begin(), sum.end());
  }
  return pooled;
}

TEST_F(StateStoreTest, ModelChangeKeepsItemsAndProfileAndRebuildsRows) {
  auto state = NewInlineUserState(model_);
  const std::vector<float> s(model_.dims().static_in, 0.25f);
  {
    auto store = Open(model_, state.get(), false, /*snapshot_every=*/100);
    ASSERT_TRUE(store.ok());
    Interact(**store, *state, 130, 1);  // snapshot at 100 + 30 in the log
    ASSERT_TRUE((*store)->AppendProfile(1, s).ok());
    ASSERT_TRUE(state->ReplayProfile(s, 1).ok());
  }
  const UserStateData v1 = state->Export();
  ASSERT_EQ(v1.history_items.size(), 120u);  // max(history_length) of rm2
  const common::Model& v2 = SharedTestModel("rm2", /*seed=*/2);
  ASSERT_NE(v2.config().signature(), model_.config().signature());
  const std::string old_log = Slurp(LogPath());

  auto migrated = NewInlineUserState(v2);
  auto store = Open(v2, migrated.get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->needs_rebuild());
  EXPECT_THAT((*store)->recovery_report(),
              HasSubstr("migrating from model rm2 v"));
  UserStateData data = migrated->Export();
  EXPECT_EQ(data.history_items, v1.history_items);
  EXPECT_EQ(data.profile, s);
  EXPECT_EQ(data.profile_version, 1u);
  EXPECT_EQ(data.interactions_total, 130u);
  EXPECT_EQ(data.tables[0].filled, 0);  // no rows of another model
  // Retries stay deduplicated across the release.
  EXPECT_EQ(migrated->FindInteraction("1-99"), 100u);   // from the snapshot
  EXPECT_EQ(migrated->FindInteraction("1-129"), 130u);  // from the log
  // Nothing is written until the rebuild is persisted.
  EXPECT_THAT((*store)->AppendInteraction(1, ItemRows(v2, 1)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("rebuilt")));
  EXPECT_EQ(Slurp(LogPath()), old_log);

  Rebuild(v2, *migrated, **store);
  EXPECT_FALSE((*store)->needs_rebuild());
  const std::vector<double> want = PooledFromItems(v2, v1.history_items);
  const std::vector<double> got =
      PooledOf(migrated->Export(), v2.config().embedding_dim());
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4);
  Interact(**store, *migrated, 2, 7);
  const UserStateData after = migrated->Export();
  store->reset();

  // A crash between the rebuilt snapshot and the new log left the old
  // model's log beside it: its records are all in the snapshot.
  auto again = NewInlineUserState(v2);
  {
    auto reopened = Open(v2, again.get());
    ASSERT_TRUE(reopened.ok()) << reopened.status();
    EXPECT_FALSE((*reopened)->needs_rebuild());
    ExpectSameState(after, again->Export());
    ASSERT_TRUE((*reopened)->Compact(again->Export()).ok());
  }
  Spit(LogPath(), old_log);
  auto leftover = NewInlineUserState(v2);
  auto reopened = Open(v2, leftover.get());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_THAT((*reopened)->recovery_report(), HasSubstr("replaced the log"));
  ExpectSameState(after, leftover->Export());
}

TEST_F(StateStoreTest, ModelChangeFromALogOnly) {
  auto state = NewInlineUserState(model_);
  {
    auto store = Open(model_, state.get());
    ASSERT_TRUE(store.ok());
    Interact(**store, *state, 5, 1);
  }
  const common::Model& v2 = SharedTestModel("rm2", /*seed=*/2);
  auto migrated = NewInlineUserState(v2);
  auto store = Open(v2, migrated.get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->needs_rebuild());
  EXPECT_EQ(migrated->history_items(), state->history_items());
}

TEST_F(StateStoreTest, FormatTwoSnapshotLoadsWithoutClientIds) {
  auto state = NewInlineUserState(model_);
  {
    auto store = Open(model_, state.get());
    ASSERT_TRUE(store.ok());
    Interact(**store, *state, 30, 1);
  }
  UserStateData before = state->Export();
  // duet-edge before client ids: snapshot format 2, empty log.
  Spit(SnapshotPath(), EncodeSnapshot(model_.config(), 30, before, 2));
  std::remove(LogPath().c_str());
  auto restored = NewInlineUserState(model_);
  auto store = Open(model_, restored.get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->recovery_report(), HasSubstr("(format 2)"));
  before.recent_ids.clear();
  ExpectSameState(before, restored->Export());
  EXPECT_EQ(restored->FindInteraction("1-1"), std::nullopt);
}

TEST_F(StateStoreTest, FormatOneSnapshotLoads) {
  auto state = NewInlineUserState(model_);
  {
    auto store = Open(model_, state.get());
    ASSERT_TRUE(store.ok());
    Interact(**store, *state, 130, 1);
  }
  const UserStateData before = state->Export();
  // duet-edge before item ids: snapshot format 1 at sequence 130, empty log.
  Spit(SnapshotPath(), EncodeSnapshot(model_.config(), 130, before, 1));
  std::remove(LogPath().c_str());
  auto restored = NewInlineUserState(model_);
  {
    auto store = Open(model_, restored.get());
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_THAT((*store)->recovery_report(), HasSubstr("(format 1)"));
    EXPECT_FALSE((*store)->needs_rebuild());
    UserStateData got = restored->Export();
    EXPECT_EQ(got.history_items,
              std::vector<int64_t>(120, kUnknownItem));  // rows only
    got.history_items = before.history_items;
    EXPECT_TRUE(got.recent_ids.empty());  // nor client ids
    got.recent_ids = before.recent_ids;
    ExpectSameState(before, got);          // rows, trackers, profile, memo kept
    Interact(**store, *restored, 100, 2);  // ids known for the last 100
  }
  // Another model needs ids the old format did not keep: refused precisely.
  const common::Model& v2 = SharedTestModel("rm2", /*seed=*/2);
  auto migrated = NewInlineUserState(v2);
  EXPECT_THAT(
      Open(v2, migrated.get()),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               testing::AllOf(HasSubstr("snapshot.bin"),
                              HasSubstr("last 120 items, and 20 of them are "
                                        "not known (snapshot format 1"),
                              HasSubstr("--reset_state"))));
  // The old model, 20 interactions later, can move.
  {
    auto again = NewInlineUserState(model_);
    auto store = Open(model_, again.get());
    ASSERT_TRUE(store.ok()) << store.status();
    Interact(**store, *again, 20, 3);
  }
  auto moved = NewInlineUserState(v2);
  auto store = Open(v2, moved.get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->needs_rebuild());
  EXPECT_EQ(moved->history_items().size(), 120u);
}

TEST_F(StateStoreTest, ModelChangeWithOtherWidthsDropsOnlyTheProfile) {
  // A snapshot of "the same model" whose static input was 3 wide.
  auto writer = NewInlineUserState(model_);
  for (int64_t item : {4, 5, 6})
    writer->PushInteraction(item, ItemRows(model_, item));
  UserStateData old = writer->Export();
  old.profile = {1.0f, 2.0f, 3.0f};
  old.profile_version = 4;
  old.memo_version = 4;
  old.tables.resize(2);  // other tables, other rows: ignored
  duet::v1::ModelConfig config = model_.config();
  config.set_signature("0000000000000001");
  ASSERT_TRUE(
      Open(model_, NewInlineUserState(model_).get()).ok());  // creates the dir
  Spit(SnapshotPath(), EncodeSnapshot(config, 0, old, 2));
  std::remove(LogPath().c_str());
  auto migrated = NewInlineUserState(model_);
  auto store = Open(model_, migrated.get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->recovery_report(),
              HasSubstr("dropped the profile (3 static features"));
  const UserStateData data = migrated->Export();
  EXPECT_EQ(data.history_items, (std::vector<int64_t>{4, 5, 6}));
  EXPECT_EQ(data.profile_version, 0u);
  EXPECT_EQ(data.profile, std::vector<float>(model_.dims().static_in, 0.0f));

  // An item the loaded model's catalog does not have: refused precisely.
  old.history_items = {4, model_.catalog().num_items() + 7};
  Spit(SnapshotPath(), EncodeSnapshot(config, 0, old, 2));
  auto refused = NewInlineUserState(model_);
  EXPECT_THAT(Open(model_, refused.get()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       testing::AllOf(HasSubstr("snapshot.bin"),
                                      HasSubstr("is not in its catalog"),
                                      HasSubstr("--reset_state"))));
}

TEST_F(StateStoreTest, ForeignModelIsFailedPrecondition) {
  auto state = NewInlineUserState(model_);
  {
    auto store = Open(model_, state.get(), false, /*snapshot_every=*/2);
    ASSERT_TRUE(store.ok());
    Interact(**store, *state, 3, 1);  // snapshot + 1 log record
  }
  // Another model's history: its item ids mean other items.
  const common::Model& other = SharedTestModel("tiny", /*seed=*/1);
  auto foreign = NewInlineUserState(other);
  EXPECT_THAT(Open(other, foreign.get()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       testing::AllOf(HasSubstr("snapshot.bin holds the state "
                                                "of model rm2 v"),
                                      HasSubstr("another model (rm2)"),
                                      HasSubstr("--reset_state"))));
  EXPECT_TRUE(Open(other, foreign.get(), /*reset=*/true).ok());
}

}  // namespace
}  // namespace duet::edge
