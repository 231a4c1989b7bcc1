#include "edge/model_updater.h"

#include <atomic>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/base/mutex.h"
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

const common::Model& V1() { return SharedTestModel("rm2", 1, 1); }
const common::Model& V2() { return SharedTestModel("rm2", 2, 2); }

class EdgeModelUpdaterTest : public testing::Test {
 protected:
  EdgeModelUpdaterTest() : cloud_(&V1()) { cloud_.Serve(&V2()); }

  ModelUpdater::Options Options() {
    ModelUpdater::Options o;
    o.model_dir = V1().dir();
    o.device_id = "device-7";
    o.check_interval = absl::ZeroDuration();
    o.initial_backoff = absl::Milliseconds(1);
    o.max_backoff = absl::Milliseconds(20);
    o.batch_items = 50;
    o.runtime.load.parts.cloud = false;
    o.runtime.state.executor = [](std::function<void()> fn) { fn(); };
    o.runtime.store.dir = state_.path();
    o.runtime.recommender.max_candidates = 64;
    o.runtime.cloud = &cloud_;
    return o;
  }
  std::unique_ptr<ModelUpdater> Start(ModelUpdater::Options o) {
    auto updater = ModelUpdater::Create(std::move(o));
    EXPECT_TRUE(updater.ok()) << updater.status();
    if (!updater.ok()) std::abort();
    (*updater)->Start();
    return *std::move(updater);
  }
  void Interact(ModelUpdater& u, int64_t item) {
    duet::v1::RecordInteractionRequest r;
    r.set_item_id(item);
    auto got = u.RecordInteraction(r, absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(got.ok()) << got.status();
    items_.push_back(item);
  }
  absl::StatusOr<duet::v1::RecommendResponse> Recommend(ModelUpdater& u) {
    duet::v1::RecommendRequest r;
    r.mutable_context_features()->Resize(V1().dims().dynamic_in, 0.5f);
    for (int64_t i = 0; i < 20; ++i) r.add_candidate_ids(i * 7);
    r.set_top_k(5);
    return u.Recommend(r, absl::Now() + absl::Seconds(30));
  }
  // The last history_capacity items recorded.
  std::vector<int64_t> History(const UserState& s) const {
    const size_t keep = std::min<size_t>(items_.size(), s.history_capacity());
    return {items_.end() - keep, items_.end()};
  }

  // The scratchpad equals one fed `model`'s rows of the same items (per
  // table pooled sums, which is what the user model reads).
  void ExpectHistoryOf(const common::Model& model, const UserState& got) {
    internal::ExpectHistoryOf(model, items_, got);
  }

  common::TempDir state_;
  FakeCloud cloud_;
  std::vector<int64_t> items_;
};

// v1 with a history; the cloud announces v2; interactions recorded while v2
// downloads are kept; after the switch the pooled history is v2's rows of
// the same items; a restart (new StateStore::Open of the directory) is on
// v2 with the same state.
TEST_F(EdgeModelUpdaterTest, SwitchesToTheAnnouncedVersionKeepingTheHistory) {
  ModelUpdater::Options o = Options();
  EdgeMetrics metrics(std::make_shared<prometheus::Registry>());
  o.metrics = &metrics;
  common::Mutex mu;
  std::vector<uint32_t> models;  // on_model calls
  std::vector<bool> serving;     // on_serving calls (health)
  o.on_model = [&](const duet::v1::ModelConfig& c) {
    common::MutexLock lock(&mu);
    models.push_back(c.version());
  };
  o.on_serving = [&](bool s) {
    common::MutexLock lock(&mu);
    serving.push_back(s);
  };
  auto updater = Start(o);
  ASSERT_EQ(updater->runtime()->model().config().version(), 1u);
  EXPECT_THAT(updater->startup_report(), HasSubstr("no downloaded model"));
  std::mt19937 rng(9);
  for (int i = 0; i < 140; ++i) {
    Interact(*updater, rng() % V1().catalog().num_items());
  }

  common::Notification downloading, release;
  cloud_.chunk_bytes = 100 << 10;
  cloud_.SetChunkHook([&](duet::v1::EdgeModelChunk* chunk) {
    if (chunk->has_config() && !downloading.HasBeenNotified()) {
      downloading.Notify();
      release.WaitForNotification();
    }
  });
  cloud_.SetTarget(&V2());
  ASSERT_TRUE(Recommend(*updater).ok());  // its Scores announce v2
  downloading.WaitForNotification();
  // Meanwhile the old version answers and takes writes.
  ASSERT_TRUE(Recommend(*updater).ok());
  for (int i = 0; i < 5; ++i) {
    Interact(*updater, rng() % V1().catalog().num_items());
  }
  duet::v1::UpdateProfileRequest profile;
  profile.mutable_static_features()->Resize(V1().dims().static_in, 0.25f);
  ASSERT_TRUE(updater->UpdateProfile(profile).ok());
  EXPECT_THAT(updater->GetState().model_update(), HasSubstr("downloading v2"));
  release.Notify();
  ASSERT_TRUE(updater->WaitForVersion(2, absl::Seconds(60)));

  std::shared_ptr<EdgeRuntime> rt = updater->runtime();
  EXPECT_EQ(rt->model().fingerprint(), V2().fingerprint());
  EXPECT_EQ(rt->rebuilder(), nullptr);
  EXPECT_EQ(rt->state().history_items(), History(rt->state()));
  ExpectHistoryOf(V2(), rt->state());
  // The switch fetched the history's rows at v2, nothing else.
  for (const auto& get : cloud_.embedding_requests()) {
    EXPECT_NE(get.model_version(), 0u);
  }
  EXPECT_EQ(cloud_.embedding_requests().back().model_version(), 2u);
  EXPECT_EQ(cloud_.embedding_requests().back().model_fingerprint(),
            V2().fingerprint());
  const duet::v1::EdgeState s = updater->GetState();
  EXPECT_EQ(s.model_version(), 2u);
  EXPECT_EQ(s.target_model_version(), 2u);
  EXPECT_EQ(s.model_update(), "");
  EXPECT_EQ(s.device_id(), "device-7");
  EXPECT_EQ(s.history_items(), 120);
  EXPECT_EQ(s.interactions_total(), 145u);
  EXPECT_EQ(s.profile_version(), 1u);
  EXPECT_EQ(updater->stats().switches, 1);
  {
    common::MutexLock lock(&mu);
    EXPECT_THAT(models, testing::ElementsAre(1u, 2u));  // duet_model_info
    EXPECT_THAT(serving, testing::Each(true));          // health stays SERVING
  }
  EXPECT_EQ(metrics.model_download_bytes().Value(),
            static_cast<double>(updater->stats().download_bytes));
  EXPECT_GT(updater->stats().download_bytes, 500 << 10);
  EXPECT_EQ(metrics.model_update_seconds().Collect().histogram.sample_count,
            1u);
  // Queries now run on v2 and keep their history.
  ASSERT_TRUE(Recommend(*updater).ok());
  EXPECT_EQ(cloud_.begun().back().model_version(), 2u);
  Interact(*updater, 17);
  const UserStateData before = rt->state().Export();
  rt.reset();
  updater.reset();

  // Restarted with the same flags (--model_dir still v1): CURRENT wins.
  auto restarted = Start(Options());
  EXPECT_THAT(restarted->startup_report(), HasSubstr("CURRENT names it"));
  rt = restarted->runtime();
  EXPECT_EQ(rt->model().fingerprint(), V2().fingerprint());
  EXPECT_EQ(rt->rebuilder(), nullptr);  // the state is v2's already
  const UserStateData after = rt->state().Export();
  EXPECT_EQ(after.history_items, before.history_items);
  EXPECT_EQ(after.interactions_total, before.interactions_total);
  EXPECT_EQ(after.profile, before.profile);
  ExpectHistoryOf(V2(), rt->state());
}

// An interaction recorded while the switch prefetches the history's rows
// (before it holds writes) is in the new state too, its rows fetched at v2.
TEST_F(EdgeModelUpdaterTest, AnInteractionDuringThePrefetchIsKept) {
  auto updater = Start(Options());
  for (int64_t item : {10, 11, 12}) Interact(*updater, item);
  std::atomic<bool> interacted{false};
  cloud_.SetEmbeddingsHook([&](const duet::v1::GetItemEmbeddingsRequest& get) {
    if (get.model_version() == 2 && !interacted.exchange(true)) {
      Interact(*updater, 99);  // on v1: fetches its rows at v1
    }
  });
  cloud_.SetTarget(&V2());
  ASSERT_TRUE(Recommend(*updater).ok());
  ASSERT_TRUE(updater->WaitForVersion(2, absl::Seconds(60)));
  EXPECT_TRUE(interacted);
  std::shared_ptr<EdgeRuntime> rt = updater->runtime();
  EXPECT_EQ(rt->state().history_items(),
            (std::vector<int64_t>{10, 11, 12, 99}));
  ExpectHistoryOf(V2(), rt->state());
  const auto gets = cloud_.embedding_requests();
  ASSERT_GE(gets.size(), 2u);
  EXPECT_EQ(gets.back().model_version(), 2u);
  EXPECT_THAT(gets.back().item_ids(), testing::ElementsAre(99));
}

TEST_F(EdgeModelUpdaterTest, ACorruptDownloadKeepsTheOldVersionServing) {
  ModelUpdater::Options o = Options();
  EdgeMetrics metrics(std::make_shared<prometheus::Registry>());
  o.metrics = &metrics;
  auto updater = Start(o);
  Interact(*updater, 3);
  cloud_.SetChunkHook([](duet::v1::EdgeModelChunk* chunk) {
    if (chunk->file() == common::kEdgeFile) (*chunk->mutable_data())[9] ^= 1;
  });
  cloud_.SetTarget(&V2());
  ASSERT_TRUE(Recommend(*updater).ok());
  while (updater->stats().failures < 2) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_GE(metrics.model_updates_total("failed"), 2.0);
  // The status alternates between the last failure and the next attempt
  // (1-20 ms back-off here): wait, bounded, for it to show a failure.
  std::string status = updater->update_status();
  for (const absl::Time give_up = absl::Now() + absl::Seconds(30);
       !absl::StrContains(status, "failed:") && absl::Now() < give_up;
       status = updater->update_status()) {
    absl::SleepFor(absl::Microseconds(200));
  }
  EXPECT_THAT(status,
              HasSubstr("failed: DATA_LOSS: GetEdgeModel sent edge.safetensors "
                        "with SHA-256"));
  EXPECT_EQ(updater->runtime()->model().config().version(), 1u);
  ASSERT_TRUE(Recommend(*updater).ok());
  Interact(*updater, 4);
  EXPECT_EQ(updater->GetState().target_model_version(), 2u);
  // Nothing installed, CURRENT never written.
  ModelStore models(state_.path());
  EXPECT_THAT(models.Current(), StatusIs(absl::StatusCode::kNotFound,
                                         HasSubstr("does not exist")));
  // (The retries go on meanwhile: the temporary directory of the attempt
  // in flight may exist; a failed attempt removes its own.)
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(models.dir(), ec)) {
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) continue;
    ADD_FAILURE() << "left behind: " << e.path();
  }
  // The next good attempt switches.
  cloud_.SetChunkHook(nullptr);
  ASSERT_TRUE(updater->WaitForVersion(2, absl::Seconds(60)));
  ExpectHistoryOf(V2(), updater->runtime()->state());
  EXPECT_EQ(metrics.model_updates_total("switched"), 1.0);
}

// A back-off shorter than the updater's own turn-around (here 1 ns; on a
// loaded or emulated device, any back-off can be) has passed before the
// updater waits again: the retry is due then, not forgotten until the next
// announcement.
TEST_F(EdgeModelUpdaterTest, RetriesWhoseBackOffHasAlreadyPassedStillHappen) {
  ModelUpdater::Options o = Options();
  o.initial_backoff = absl::Nanoseconds(1);
  o.max_backoff = absl::Nanoseconds(1);
  auto updater = Start(o);
  cloud_.SetChunkHook([](duet::v1::EdgeModelChunk* chunk) {
    if (chunk->file() == common::kEdgeFile) (*chunk->mutable_data())[9] ^= 1;
  });
  cloud_.SetTarget(&V2());
  ASSERT_TRUE(Recommend(*updater).ok());
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (updater->stats().failures < 5 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_GE(updater->stats().failures, 5) << updater->update_status();
  cloud_.SetChunkHook(nullptr);
  ASSERT_TRUE(updater->WaitForVersion(2, absl::Seconds(60)));
}

// Releases v2, v3, then a roll-back to v1: each is downloaded and switched
// to; models/ keeps the running version and the one before it.
TEST_F(EdgeModelUpdaterTest, KeepsTheCurrentAndThePreviousDownload) {
  const common::Model& v3 = SharedTestModel("rm2", 3, 3);
  cloud_.Serve(&v3);
  auto updater = Start(Options());
  for (int64_t item : {1, 2, 3}) Interact(*updater, item);
  ModelStore models(state_.path());
  auto dirs = [&models] {
    std::set<std::string> names;
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator(models.dir(), ec)) {
      if (e.is_directory()) names.insert(e.path().filename().string());
    }
    return names;
  };
  const std::string d1 = ModelStore::DirName(V1().config()),
                    d2 = ModelStore::DirName(V2().config()),
                    d3 = ModelStore::DirName(v3.config());
  for (const common::Model* next : {&V2(), &v3, &V1()}) {
    cloud_.SetTarget(next);
    ASSERT_TRUE(Recommend(*updater).ok());
    ASSERT_TRUE(
        updater->WaitForVersion(next->config().version(), absl::Seconds(60)));
    EXPECT_EQ(*models.Current(),
              models.PathOf(ModelStore::DirName(next->config())));
    ExpectHistoryOf(*next, updater->runtime()->state());
    if (next == &V2()) {
      EXPECT_EQ(dirs(), (std::set<std::string>{d2}));
    } else if (next == &v3) {
      EXPECT_EQ(dirs(), (std::set<std::string>{d2, d3}));
    }
  }
  EXPECT_EQ(dirs(), (std::set<std::string>{d3, d1}));
  EXPECT_EQ(updater->stats().switches, 3);
  EXPECT_EQ(cloud_.edge_model_calls, 3);
}

TEST_F(EdgeModelUpdaterTest, WithUpdatesOffTheTargetIsOnlyReported) {
  ModelUpdater::Options o = Options();
  o.updates = false;
  auto updater = Start(o);
  cloud_.SetTarget(&V2());
  ASSERT_TRUE(Recommend(*updater).ok());
  while (updater->update_status().empty())
    absl::SleepFor(absl::Milliseconds(1));
  EXPECT_THAT(updater->update_status(),
              HasSubstr("target v2 announced; not updating"));
  EXPECT_EQ(updater->GetState().target_model_version(), 2u);
  EXPECT_EQ(cloud_.edge_model_calls, 0);
  EXPECT_EQ(updater->runtime()->model().config().version(), 1u);
}

// A refused query (the cloud no longer serves this version) makes the edge
// ask GetModelStatus, which names the target.
TEST_F(EdgeModelUpdaterTest, ARefusedQueryAsksForTheModelStatus) {
  FakeCloud v2_only(&V2());
  v2_only.SetTarget(&V2());
  ModelUpdater::Options o = Options();
  o.runtime.cloud = &v2_only;
  auto updater = Start(o);
  EXPECT_THAT(Recommend(*updater),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("model version 1 is not served")));
  ASSERT_TRUE(updater->WaitForVersion(2, absl::Seconds(60)));
  EXPECT_GE(v2_only.status_calls, 1);
  ASSERT_TRUE(Recommend(*updater).ok());
}

// kill -9 after CURRENT named v2 but before the state was compacted: the
// restart runs v2 and migrates the v1 state (its rows refetched at v2).
TEST_F(EdgeModelUpdaterTest,
       ARestartAfterTheCommitPointRebuildsOnTheNewVersion) {
  {
    auto updater = Start(Options());
    for (int64_t item : {5, 6, 7, 8}) Interact(*updater, item);
  }
  ModelStore models(state_.path());
  auto installed = models.Install([](const std::string& dir) {
    for (const char* f : {common::kEdgeFile, common::kEdgeInt8File}) {
      std::filesystem::copy_file(V2().dir() + "/" + f, dir + "/" + f);
    }
    const duet::v1::ModelConfig config = V2().config();
    absl::Status s =
        common::WriteConfig(dir + "/" + common::kConfigFile, config);
    if (!s.ok()) return absl::StatusOr<duet::v1::ModelConfig>(s);
    return absl::StatusOr<duet::v1::ModelConfig>(config);
  });
  ASSERT_TRUE(installed.ok()) << installed.status();
  ASSERT_TRUE(models.SetCurrent(ModelStore::DirName(V2().config())).ok());

  ModelUpdater::Options o = Options();
  common::Mutex mu;
  std::vector<bool> serving;
  o.on_serving = [&](bool s) {
    common::MutexLock lock(&mu);
    serving.push_back(s);
  };
  auto restarted = Start(o);
  std::shared_ptr<EdgeRuntime> rt = restarted->runtime();
  EXPECT_EQ(rt->model().fingerprint(), V2().fingerprint());
  ASSERT_NE(rt->rebuilder(), nullptr);
  ASSERT_TRUE(rt->rebuilder()->WaitUntilDone(absl::Seconds(60)));
  {
    // NOT_SERVING while the history is rebuilt, as any migration.
    common::MutexLock lock(&mu);
    EXPECT_THAT(serving, testing::ElementsAre(false, true));
  }
  EXPECT_EQ(rt->state().history_items(), items_);
  ExpectHistoryOf(V2(), rt->state());
}

}  // namespace
}  // namespace duet::edge
