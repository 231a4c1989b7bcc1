#include "edge/recommender.h"

#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "common/base/status_matchers.h"
#include "common/kernels/top_k.h"
#include "common/model/reference_model.h"
#include "common/model/test_util.h"
#include "edge/edge_metrics.h"
#include "edge/file_system.h"
#include "edge/internal/fake_cloud.h"
#include "edge/internal/test_model.h"
#include "edge/state_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::edge {
namespace {

using common::StatusIs;
using internal::FakeCloud;
using internal::SharedTestModel;
using testing::ElementsAre;
using testing::HasSubstr;

class RecommenderTest : public testing::Test {
 protected:
  void Init(Precision precision, Precision wire, int relay_items = 64) {
    model_ = &SharedTestModel();
    auto um = UserModel::Create(model_, {precision, wire});
    ASSERT_TRUE(um.ok());
    user_model_ = *std::move(um);
    state_ = internal::NewInlineUserState(*model_);
    cloud_ = std::make_unique<FakeCloud>(model_);
    Recommender::Options ro;
    ro.max_candidates = 64;
    ro.relay_cache_items = relay_items;
    rec_ =
        std::make_unique<Recommender>(user_model_.get(), cloud_.get(),
                                      state_.get(), Recommender::Hooks{}, ro);
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> dist(-1, 1);
    c_.resize(model_->dims().dynamic_in);
    for (float& x : c_) x = dist(rng);
    s_.assign(model_->dims().static_in, 0.0f);
    for (int i = 0; i < 40; ++i) {
      candidates_.push_back(rng() % model_->catalog().num_items());
    }
  }

  duet::v1::RecommendRequest Request(int top_k) const {
    duet::v1::RecommendRequest r;
    r.mutable_context_features()->Assign(c_.begin(), c_.end());
    r.mutable_candidate_ids()->Assign(candidates_.begin(), candidates_.end());
    r.set_top_k(top_k);
    return r;
  }
  absl::Time Deadline() const { return absl::Now() + absl::Seconds(10); }

  // The split reference on the raw history: PoolHistory + SplitModel.
  std::vector<common::Scored> Reference(int top_k, bool int8) const {
    std::vector<float> pooled(model_->dims().pooled),
        u(model_->dims().user_out);
    common::PoolHistory(*model_, history_, pooled.data());
    common::SplitModel split(model_);
    EXPECT_TRUE(
        split.UserVector(s_.data(), c_.data(), pooled.data(), int8, u.data())
            .ok());
    std::vector<float> ctr(candidates_.size());
    EXPECT_TRUE(split.ScoreItems(u.data(), candidates_, ctr.data()).ok());
    return common::TopK(candidates_.data(), ctr.data(), candidates_.size(),
                        top_k);
  }

  void Interact(int64_t item) {
    duet::v1::RecordInteractionRequest r;
    r.set_item_id(item);
    ASSERT_TRUE(rec_->RecordInteraction(r, Deadline()).ok());
    history_.push_back(item);
  }

  const common::Model* model_ = nullptr;
  std::unique_ptr<UserModel> user_model_;
  std::unique_ptr<UserState> state_;
  std::unique_ptr<FakeCloud> cloud_;
  std::unique_ptr<Recommender> rec_;
  std::vector<float> c_, s_;
  std::vector<int64_t> candidates_, history_;
};

void ExpectRanking(const duet::v1::RecommendResponse& got,
                   const std::vector<common::Scored>& want, float tol) {
  ASSERT_EQ(got.items_size(), static_cast<int>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got.items(i).item_id(), want[i].item_id) << "rank " << i;
    EXPECT_NEAR(got.items(i).ctr(), want[i].ctr, tol) << "rank " << i;
  }
}

TEST_F(RecommenderTest, Fp32EqualsSplitReferenceAndInteractionsChangeIt) {
  Init(Precision::kFp32, Precision::kFp32);
  auto first = rec_->Recommend(Request(10), Deadline());
  ASSERT_TRUE(first.ok()) << first.status();
  ExpectRanking(*first, Reference(10, false), 1e-5f);
  // BeginQuery went out before the user vector, under the same id.
  EXPECT_THAT(cloud_->events(),
              ElementsAre(absl::StrCat("begin ", first->query_id()),
                          absl::StrCat("vector ", first->query_id())));

  for (int i = 0; i < 130; ++i) Interact(candidates_[i % 7] + i);
  auto later = rec_->Recommend(Request(10), Deadline());
  ASSERT_TRUE(later.ok());
  const auto want = Reference(10, false);
  ExpectRanking(*later, want, 1e-5f);
  bool changed = false;
  for (int i = 0; i < 10; ++i) {
    changed |= std::abs(later->items(i).ctr() - first->items(i).ctr()) > 1e-6;
  }
  EXPECT_TRUE(changed) << "interactions did not change the scores";
}

TEST_F(RecommenderTest, DownlinkBytesCountTheReturnedItems) {
  Init(Precision::kFp32, Precision::kFp32, /*relay_items=*/0);
  EdgeMetrics metrics(std::make_shared<prometheus::Registry>());
  Recommender::Options ro;
  ro.max_candidates = 64;
  ro.relay_cache_items = 0;
  Recommender::Hooks hooks;
  hooks.metrics = &metrics;
  Recommender rec(user_model_.get(), cloud_.get(), state_.get(), hooks, ro);
  auto got = rec.Recommend(Request(30), Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  // The cloud's Scores carried these 30 items (plus an id and timings); the
  // counter must not be taken after they moved into the response.
  duet::v1::RecommendResponse items_only;
  *items_only.mutable_items() = got->items();
  EXPECT_GE(metrics.downlink_bytes().Value(),
            static_cast<double>(items_only.ByteSizeLong()));
}

// The cloud routes by the query's model and device, and the rows an
// interaction appends must be of this edge's model: every request names it.
TEST_F(RecommenderTest, RequestsNameTheModelAndDeviceAndTargetsReachTheHook) {
  Init(Precision::kInt8, Precision::kInt8, /*relay_items=*/0);
  const common::Model& v2 = SharedTestModel("rm2", 2, 2);
  cloud_->Serve(&v2);  // the newest served is v2: version 0 would get it
  cloud_->SetTarget(&v2);
  std::vector<duet::v1::ModelTarget> targets;
  Recommender::Hooks hooks;
  hooks.on_target = [&targets](const duet::v1::ModelTarget& t) {
    targets.push_back(t);
  };
  Recommender::Options ro;
  ro.max_candidates = 64;
  ro.relay_cache_items = 0;
  ro.device_id = "phone-42";
  Recommender rec(user_model_.get(), cloud_.get(), state_.get(), hooks, ro);
  ASSERT_TRUE(rec.Recommend(Request(5), Deadline()).ok());
  const duet::v1::BeginQuery begin = cloud_->begun().back();
  EXPECT_EQ(begin.model_version(), model_->config().version());
  EXPECT_EQ(begin.model_fingerprint(), model_->fingerprint());
  EXPECT_EQ(begin.device_id(), "phone-42");
  ASSERT_EQ(targets.size(), 1u);
  EXPECT_EQ(targets[0].version(), 2u);
  EXPECT_EQ(targets[0].fingerprint(), v2.fingerprint());

  duet::v1::RecordInteractionRequest r;
  r.set_item_id(11);
  ASSERT_TRUE(rec.RecordInteraction(r, Deadline()).ok());
  const duet::v1::GetItemEmbeddingsRequest get =
      cloud_->embedding_requests().back();
  EXPECT_EQ(get.model_version(), model_->config().version());
  EXPECT_EQ(get.model_fingerprint(), model_->fingerprint());
  EXPECT_EQ(rec.GetState().device_id(), "phone-42");
  EXPECT_EQ(rec.GetState().history_items(), 1);
}

TEST_F(RecommenderTest, ARefusedQueryReachesTheHookWithItsTarget) {
  Init(Precision::kInt8, Precision::kInt8);
  const common::Model& v2 = SharedTestModel("rm2", 2, 2);
  internal::FakeCloud v2_only(&v2);
  v2_only.SetTarget(&v2);
  std::vector<absl::Status> refused;
  Recommender::Hooks hooks;
  hooks.on_model_refused = [&refused](const absl::Status& s) {
    refused.push_back(s);
  };
  Recommender rec(user_model_.get(), &v2_only, state_.get(), hooks, {});
  EXPECT_THAT(rec.Recommend(Request(5), Deadline()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("model version 1 is not served")));
  ASSERT_EQ(refused.size(), 1u);
  absl::Status with_target = absl::FailedPreconditionError("retired");
  duet::v1::ModelTarget t;
  t.set_version(2);
  SetTargetPayload(t, &with_target);
  ASSERT_TRUE(TargetPayload(with_target).has_value());
  EXPECT_EQ(TargetPayload(with_target)->version(), 2u);
  EXPECT_FALSE(TargetPayload(absl::FailedPreconditionError("x")).has_value());
}

TEST_F(RecommenderTest, Int8IsCloseToReference) {
  Init(Precision::kInt8, Precision::kInt8);
  for (int i = 0; i < 20; ++i) Interact(1000 + i);
  auto got = rec_->Recommend(Request(40), Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  const auto want = Reference(40, /*int8=*/false);
  double mean = 0;
  for (const auto& item : got->items()) {
    for (const auto& w : want) {
      if (w.item_id == item.item_id()) mean += std::abs(w.ctr - item.ctr());
    }
  }
  mean /= want.size();
  EXPECT_LT(mean, 0.01) << "mean |dCTR| int8 vs fp32";
  EXPECT_GT(got->timings().uplink_bytes(), 0);
}

TEST_F(RecommenderTest, RelaysTheBestItemsTheCacheHolds) {
  // A cache of 4 and top_k 10: the cloud is asked for 4 rows, those of the
  // 4 best items; the best is relayed, the 5th is fetched.
  Init(Precision::kFp32, Precision::kFp32, /*relay_items=*/4);
  auto got = rec_->Recommend(Request(10), Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->items_size(), 10);
  ASSERT_FALSE(cloud_->begun().empty());
  EXPECT_EQ(cloud_->begun().back().relay_top(), 4);
  EXPECT_EQ(rec_->relay_cache().size(), 4);
  duet::v1::RecordInteractionRequest r;
  r.set_item_id(got->items(0).item_id());
  auto best = rec_->RecordInteraction(r, Deadline());
  ASSERT_TRUE(best.ok()) << best.status();
  EXPECT_TRUE(best->relayed());
  r.set_item_id(got->items(4).item_id());
  auto fifth = rec_->RecordInteraction(r, Deadline());
  ASSERT_TRUE(fifth.ok()) << fifth.status();
  EXPECT_FALSE(fifth->relayed());
  EXPECT_EQ(cloud_->embedding_calls, 1);
  // top_k below the cache: top_k rows.
  auto again = rec_->Recommend(Request(3), Deadline());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(cloud_->begun().back().relay_top(), 3);
}

TEST_F(RecommenderTest, ARetriedInteractionIdIsAppliedOnce) {
  Init(Precision::kFp32, Precision::kFp32, /*relay_items=*/0);
  duet::v1::RecordInteractionRequest r;
  r.set_item_id(7);
  r.set_interaction_id("tap-1");
  auto first = rec_->RecordInteraction(r, Deadline());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->duplicate());
  EXPECT_EQ(cloud_->embedding_calls, 1);
  // The retry (the app never saw the answer): same sequence, no new rows,
  // no row fetch.
  auto retry = rec_->RecordInteraction(r, Deadline());
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->duplicate());
  EXPECT_EQ(retry->sequence(), first->sequence());
  EXPECT_EQ(cloud_->embedding_calls, 1);
  EXPECT_EQ(rec_->GetState().interactions_total(), 1u);
  // Another id, or none, is a new interaction.
  r.set_interaction_id("tap-2");
  auto second = rec_->RecordInteraction(r, Deadline());
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->duplicate());
  r.clear_interaction_id();
  ASSERT_TRUE(rec_->RecordInteraction(r, Deadline()).ok());
  ASSERT_TRUE(rec_->RecordInteraction(r, Deadline()).ok());
  EXPECT_EQ(rec_->GetState().interactions_total(), 4u);
  // Concurrent retries of one id: exactly one is applied.
  r.set_interaction_id("tap-3");
  std::vector<std::thread> threads;
  std::atomic<int> applied{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      auto got = rec_->RecordInteraction(r, Deadline());
      if (got.ok() && !got->duplicate()) ++applied;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(applied.load(), 1);
  EXPECT_EQ(rec_->GetState().interactions_total(), 5u);
  r.set_interaction_id(std::string(129, 'x'));
  EXPECT_THAT(rec_->RecordInteraction(r, Deadline()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("interaction_id has 129 bytes, at most 128")));
}

// The real file system, except that each log Sync waits until the test
// opens it: the test sees which writes wait for which sync.
class GatedSyncFileSystem : public FileSystem {
 public:
  class File : public AppendableFile {
   public:
    File(std::unique_ptr<AppendableFile> inner, GatedSyncFileSystem* fs)
        : inner_(std::move(inner)), fs_(fs) {}
    absl::Status Append(absl::string_view data) override {
      return inner_->Append(data);
    }
    absl::Status Sync() override {
      common::MutexLock lock(&fs_->mu_);
      ++fs_->syncs_waiting_;
      fs_->mu_.Await(absl::Condition(fs_, &GatedSyncFileSystem::SyncAllowed));
      --fs_->syncs_waiting_;
      ++fs_->syncs_done_;
      return inner_->Sync();
    }

   private:
    std::unique_ptr<AppendableFile> inner_;
    GatedSyncFileSystem* fs_;
  };
  absl::StatusOr<std::string> ReadFile(const std::string& p) override {
    return PosixFileSystem()->ReadFile(p);
  }
  bool Exists(const std::string& p) override {
    return PosixFileSystem()->Exists(p);
  }
  absl::Status WriteFileAtomically(const std::string& p,
                                   absl::string_view data) override {
    return PosixFileSystem()->WriteFileAtomically(p, data);
  }
  absl::StatusOr<std::unique_ptr<AppendableFile>> OpenAppendable(
      const std::string& p) override {
    auto f = PosixFileSystem()->OpenAppendable(p);
    if (!f.ok()) return f.status();
    return std::unique_ptr<AppendableFile>(new File(*std::move(f), this));
  }
  absl::Status Truncate(const std::string& p, uint64_t size) override {
    return PosixFileSystem()->Truncate(p, size);
  }
  absl::Status Remove(const std::string& p) override {
    return PosixFileSystem()->Remove(p);
  }
  absl::Status CreateDirs(const std::string& p) override {
    return PosixFileSystem()->CreateDirs(p);
  }
  absl::Status SyncDir(const std::string& d) override {
    return PosixFileSystem()->SyncDir(d);
  }

  void Allow(int n) {
    common::MutexLock lock(&mu_);
    syncs_allowed_ += n;
  }
  void AwaitWaiting(int n) {
    common::MutexLock lock(&mu_);
    auto waiting = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return syncs_waiting_ >= n;
    };
    mu_.Await(absl::Condition(&waiting));
  }
  int syncs_done() {
    common::MutexLock lock(&mu_);
    return syncs_done_;
  }
  bool SyncAllowed() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return syncs_allowed_ > syncs_done_;
  }

 private:
  common::Mutex mu_;
  int syncs_allowed_ ABSL_GUARDED_BY(mu_) = 0;
  int syncs_done_ ABSL_GUARDED_BY(mu_) = 0;
  int syncs_waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST_F(RecommenderTest, ConcurrentInteractionsShareOneSyncAndWaitForIt) {
  Init(Precision::kFp32, Precision::kFp32, /*relay_items=*/0);
  GatedSyncFileSystem fs;
  common::TempDir dir;
  StateStore::Options so;
  so.dir = dir.path();
  so.fs = &fs;
  auto state = internal::NewInlineUserState(*model_);
  auto store = StateStore::Open(so, *model_, state.get());
  ASSERT_TRUE(store.ok()) << store.status();
  Recommender::Hooks hooks;
  hooks.store = store->get();
  Recommender::Options ro;
  ro.max_candidates = 64;
  ro.relay_cache_items = 0;
  Recommender rec(user_model_.get(), cloud_.get(), state.get(), hooks, ro);

  std::atomic<int> acked{0};
  auto interact = [&](int64_t item) {
    duet::v1::RecordInteractionRequest r;
    r.set_item_id(item);
    auto got = rec.RecordInteraction(r, Deadline());
    EXPECT_TRUE(got.ok()) << got.status();
    ++acked;
  };
  // The first write syncs alone and holds the queue.
  std::vector<std::thread> threads;
  threads.emplace_back(interact, 1);
  fs.AwaitWaiting(1);
  // Eight more queue behind it meanwhile.
  for (int i = 0; i < 8; ++i) threads.emplace_back(interact, 10 + i);
  while (cloud_->embedding_calls < 9) absl::SleepFor(absl::Milliseconds(1));
  absl::SleepFor(absl::Milliseconds(50));  // let them reach the queue
  EXPECT_EQ(acked.load(), 0);  // nothing acknowledged before its sync
  fs.Allow(1);
  fs.AwaitWaiting(1);  // the batch's one sync
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (acked.load() < 1 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  absl::SleepFor(absl::Milliseconds(50));  // a wrong ack would show here
  EXPECT_EQ(acked.load(), 1);              // the 8 wait for their sync
  fs.Allow(1);
  for (auto& t : threads) t.join();
  EXPECT_EQ(acked.load(), 9);
  EXPECT_EQ(fs.syncs_done(), 2);  // 9 durable interactions, 2 syncs
  EXPECT_EQ(state->Info().interactions_total, 9u);
  EXPECT_EQ((*store)->last_sequence(), 9u);
}

TEST_F(RecommenderTest, RelayedInteractionMakesNoRpc) {
  Init(Precision::kInt8, Precision::kInt8);
  auto got = rec_->Recommend(Request(5), Deadline());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(rec_->relay_cache().size(), 5);
  duet::v1::RecordInteractionRequest r;
  r.set_item_id(got->items(0).item_id());
  auto relayed = rec_->RecordInteraction(r, Deadline());
  ASSERT_TRUE(relayed.ok());
  EXPECT_TRUE(relayed->relayed());
  EXPECT_EQ(relayed->sequence(), 1u);
  EXPECT_EQ(cloud_->embedding_calls, 0);

  // An item that was not returned is fetched once.
  int64_t other = 0;
  while (true) {
    bool returned = false;
    for (const auto& i : got->items()) returned |= i.item_id() == other;
    if (!returned) break;
    ++other;
  }
  r.set_item_id(other);
  auto fetched = rec_->RecordInteraction(r, Deadline());
  ASSERT_TRUE(fetched.ok());
  EXPECT_FALSE(fetched->relayed());
  EXPECT_EQ(fetched->sequence(), 2u);
  EXPECT_EQ(cloud_->embedding_calls, 1);
  const auto state = rec_->GetState();
  EXPECT_EQ(state.interactions_total(), 2u);
  EXPECT_EQ(state.tables(0).filled(), 2);
  EXPECT_EQ(state.tables(0).tracker(), 2);
  EXPECT_EQ(state.tables_size(), model_->config().user_tables_size());
  EXPECT_EQ(state.user_precision(), "int8");
  EXPECT_EQ(state.cloud_connection(), "READY");
}

TEST_F(RecommenderTest, NoRelayCacheMeansFetch) {
  Init(Precision::kInt8, Precision::kInt8, /*relay_items=*/0);
  auto got = rec_->Recommend(Request(5), Deadline());
  ASSERT_TRUE(got.ok());
  duet::v1::RecordInteractionRequest r;
  r.set_item_id(got->items(0).item_id());
  auto res = rec_->RecordInteraction(r, Deadline());
  ASSERT_TRUE(res.ok());
  EXPECT_FALSE(res->relayed());
  EXPECT_EQ(cloud_->embedding_calls, 1);
}

TEST_F(RecommenderTest, BadInputIsInvalidArgumentNamingTheField) {
  Init(Precision::kInt8, Precision::kInt8);
  const auto invalid = [](const std::string& what) {
    return StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(what));
  };
  auto r = Request(5);
  r.add_context_features(1);
  EXPECT_THAT(rec_->Recommend(r, Deadline()),
              invalid(absl::StrCat("context_features has ",
                                   model_->dims().dynamic_in + 1, " values")));
  r = Request(5);
  r.set_context_features(1, std::nanf(""));
  EXPECT_THAT(rec_->Recommend(r, Deadline()), invalid("context_features[1]"));
  r = Request(5);
  r.set_context_features(0, INFINITY);
  EXPECT_THAT(rec_->Recommend(r, Deadline()), invalid("context_features[0]"));
  r = Request(1);
  r.clear_candidate_ids();
  EXPECT_THAT(rec_->Recommend(r, Deadline()),
              invalid("candidate_ids is empty"));
  r = Request(1);
  for (int i = 0; i < 30; ++i) r.add_candidate_ids(i);
  EXPECT_THAT(
      rec_->Recommend(r, Deadline()),
      invalid("candidate_ids has 70 ids, this server accepts at most 64"));
  r = Request(1);
  r.set_candidate_ids(3, model_->catalog().num_items());
  EXPECT_THAT(rec_->Recommend(r, Deadline()), invalid("candidate_ids[3]"));
  r.set_candidate_ids(3, -1);
  EXPECT_THAT(rec_->Recommend(r, Deadline()),
              invalid("candidate_ids[3] is -1"));
  EXPECT_THAT(rec_->Recommend(Request(0), Deadline()),
              invalid("top_k is 0, must be in [1, 40]"));
  EXPECT_THAT(rec_->Recommend(Request(41), Deadline()), invalid("top_k is 41"));
  EXPECT_EQ(cloud_->begins, 0) << "invalid queries reached the cloud";

  duet::v1::RecordInteractionRequest ri;
  ri.set_item_id(-5);
  EXPECT_THAT(rec_->RecordInteraction(ri, Deadline()),
              invalid("item_id is -5"));
  duet::v1::UpdateProfileRequest up;
  up.add_static_features(1);
  EXPECT_THAT(rec_->UpdateProfile(up), invalid("static_features has 1 values"));
  up.clear_static_features();
  for (int i = 0; i < model_->dims().static_in; ++i) up.add_static_features(0);
  up.set_static_features(2, NAN);
  EXPECT_THAT(rec_->UpdateProfile(up), invalid("static_features[2]"));
}

TEST_F(RecommenderTest, UnavailableCloudFailsFast) {
  Init(Precision::kInt8, Precision::kInt8);
  cloud_->available = false;
  EXPECT_THAT(rec_->Recommend(Request(5), Deadline()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cloud")));
  EXPECT_EQ(rec_->GetState().cloud_connection(), "TRANSIENT_FAILURE");
}

TEST_F(RecommenderTest, UpdateProfileChangesScoresAsTheModelSays) {
  Init(Precision::kFp32, Precision::kFp32);
  duet::v1::UpdateProfileRequest up;
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> dist(-1, 1);
  s_.clear();
  for (int i = 0; i < model_->dims().static_in; ++i) s_.push_back(dist(rng));
  up.mutable_static_features()->Assign(s_.begin(), s_.end());
  auto res = rec_->UpdateProfile(up);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->profile_version(), 1u);
  EXPECT_EQ(rec_->GetState().memo_version(), 1u);  // inline executor
  auto got = rec_->Recommend(Request(10), Deadline());
  ASSERT_TRUE(got.ok());
  ExpectRanking(*got, Reference(10, false), 1e-5f);
}

}  // namespace
}  // namespace duet::edge
