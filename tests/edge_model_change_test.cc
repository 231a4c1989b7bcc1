// Model releases with real duet-edge, duet-cloud and duet-loadgen processes
// (issue 14).
// * Restarts: processes on tiny v1 record interactions and a profile; the
//   model directory then gets v2 (other weights), both restart on the same
//   --state_dir without --reset_state, the edge keeps its history item ids
//   and profile, rebuilds its scratchpad from v2's rows fetched from the
//   cloud, and Recommend (fp32) equals the monolithic reference of v2 on
//   those items. Also: the cloud unreachable during the rebuild and kill -9
//   in it, then after it: nothing is lost and the edge ends on v2.
// * A staged release under load, nothing restarted: a real duet-edge (the
//   canary, by device id) and the loadgen's fleet (16 devices) query
//   without pause while v2 is published beside v1; the canary updates
//   itself, then the release policy moves everyone; v1 is retired once
//   idle. No query fails; the edge ends on v2 with its history (checked
//   against the monolithic reference); p99 before/during/after is printed.
// * kill -9 of an edge in the middle of its update, at two points: it
//   restarts on one consistent version, loses no acknowledged interaction
//   and finishes the update.
// * An edge offline through two releases (its version and the next one
//   retired) comes back, goes straight to the newest and keeps its history.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/mutex.h"
#include "common/model/reference_model.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "edge/state_store.h"
#include "edge/user_state.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "tests/edge_process_fixture.h"

namespace duet::test {
namespace {

const std::vector<std::string> kFp32 = {"--user_precision", "fp32", "--wire",
                                        "fp32"};

class EdgeModelChangeTest : public EdgeProcessTest {
 protected:
  // Writes model version `version` (weights from `seed`) into ModelDir(),
  // as a release does, and loads it with the user tables (the reference).
  void Release(uint64_t seed, uint32_t version) {
    auto config =
        common::GenerateTestModel("tiny", 1.0, ModelDir(), seed, version);
    ASSERT_TRUE(config.ok()) << config.status();
    common::LoadOptions lo;
    lo.parts.user_tables = true;
    auto model = common::Model::Load(ModelDir(), lo);
    ASSERT_TRUE(model.ok()) << model.status();
    current_ = *std::move(model);
  }

  void Interact(int64_t item) {
    v1::RecordInteractionResponse res;
    const grpc::Status s = RecordInteraction(item, &res);
    ASSERT_TRUE(s.ok()) << s.error_message();
    Acknowledged(item);
  }

  // An interaction the edge acknowledged: the history keeps the last
  // max(history_length) of them.
  void Acknowledged(int64_t item) {
    common::MutexLock lock(&history_mu_);
    history_.push_back(item);
    ++acknowledged_;
    const size_t longest = static_cast<size_t>(Longest());
    if (history_.size() > longest) {
      history_.erase(history_.begin(), history_.end() - longest);
    }
  }

  int Longest() const {
    int longest = 0;
    for (const auto& t : model_->config().user_tables()) {
      longest = std::max(longest, t.history_length());
    }
    return longest;
  }

  void SetUp() override {
    EdgeProcessTest::SetUp();
    // The model directory is the suite's: no test inherits another's policy.
    std::filesystem::remove(ModelDir() + "/release.pbtxt");
  }

  // A copy of ModelDir() (the model a device shipped with) in dir_/`name`.
  static std::string CopyOfModel(const std::string& name) {
    const std::string copy = dir_->path() + "/" + name;
    std::filesystem::create_directories(copy);
    for (const auto& e : std::filesystem::directory_iterator(ModelDir())) {
      std::filesystem::copy_file(e.path(),
                                 copy + "/" + e.path().filename().string());
    }
    return copy;
  }

  // Writes release.pbtxt (the cloud's release policy) into ModelDir().
  static void WritePolicy(const std::string& text) {
    const std::string tmp = ModelDir() + "/.release.pbtxt.tmp";
    {
      std::ofstream f(tmp);
      f << text;
    }
    std::rename(tmp.c_str(), (ModelDir() + "/release.pbtxt").c_str());
  }

  v1::ModelStatus CloudStatus() {
    auto stub = v1::ScoringService::NewStub(
        grpc::CreateChannel(CloudTarget(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ModelStatus status;
    const grpc::Status s =
        stub->GetModelStatus(&ctx, v1::GetModelStatusRequest(), &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status;
  }

  // Polls `done` every 10 ms for at most `timeout`.
  template <typename F>
  static bool WaitFor(F done, absl::Duration timeout) {
    const absl::Time until = absl::Now() + timeout;
    while (!done()) {
      if (absl::Now() > until) return false;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return true;
  }

  void SetProfile() {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> dist(-1, 1);
    s_.clear();
    for (int i = 0; i < current_->dims().static_in; ++i) {
      s_.push_back(dist(rng));
    }
    UpdateProfileAndWait(s_);
  }

  // v1: a profile and more interactions than the longest history.
  void RecordV1History() {
    ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/1, /*version=*/1));
    ASSERT_NO_FATAL_FAILURE(StartCloud());
    ASSERT_NO_FATAL_FAILURE(StartEdge(kFp32));
    ASSERT_NO_FATAL_FAILURE(SetProfile());
    std::mt19937 rng(7);
    for (int i = 0; i < Longest() + 5; ++i) {
      ASSERT_NO_FATAL_FAILURE(
          Interact(rng() % current_->catalog().num_items()));
    }
    edge_.reset();  // SIGKILL
    cloud_.reset();
  }

  // Recommend equals the monolithic reference of the current model on the
  // history's item ids, the profile and the context, within 1e-5.
  void ExpectReferenceCtrs() {
    const v1::RecommendRequest request = ValidRequest(48, 48, /*seed=*/9);
    v1::RecommendResponse response;
    const grpc::Status s = Recommend(request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << edge_->ReadLog();
    common::UserInputs user;
    user.static_features = s_;
    user.dynamic_features.assign(request.context_features().begin(),
                                 request.context_features().end());
    {
      common::MutexLock lock(&history_mu_);
      user.history = history_;
    }
    const std::vector<int64_t> ids(request.candidate_ids().begin(),
                                   request.candidate_ids().end());
    std::vector<float> ctr(ids.size());
    ASSERT_TRUE(common::MonolithicModel(current_.get())
                    .Score(user, ids, ctr.data())
                    .ok());
    ASSERT_EQ(response.items_size(), 48);
    for (const auto& item : response.items()) {
      bool found = false;
      for (size_t j = 0; j < ids.size(); ++j) {
        if (ids[j] != item.item_id()) continue;
        EXPECT_NEAR(item.ctr(), ctr[j], 1e-5) << "item " << ids[j];
        found = true;
      }
      EXPECT_TRUE(found) << item.item_id();
    }
  }

  // The history item ids persisted in state_dir_ (the edge must be down).
  std::vector<int64_t> StoredHistory() {
    auto state = edge::UserState::Create(current_.get(), {});
    EXPECT_TRUE(state.ok()) << state.status();
    edge::StateStore::Options o;
    o.dir = state_dir_;
    auto store = edge::StateStore::Open(o, *current_, state->get());
    EXPECT_TRUE(store.ok()) << store.status();
    EXPECT_FALSE((*store)->needs_rebuild());
    return (*state)->history_items();
  }

  std::unique_ptr<common::Model> current_;
  common::Mutex history_mu_;
  std::vector<int64_t> history_;  // guarded by history_mu_ under load
  int64_t acknowledged_ = 0;
  std::vector<float> s_;
};

// p99 of `ms` in milliseconds (0 when empty).
double P99(std::vector<double> ms) {
  if (ms.empty()) return 0;
  std::sort(ms.begin(), ms.end());
  return ms[std::min(ms.size() - 1, static_cast<size_t>(0.99 * ms.size()))];
}

TEST_F(EdgeModelChangeTest, HistoryAndProfileSurviveARelease) {
  ASSERT_NO_FATAL_FAILURE(RecordV1History());
  const std::string v1_signature = current_->config().signature();
  ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/2, /*version=*/2));
  ASSERT_NE(current_->config().signature(), v1_signature);

  ASSERT_NO_FATAL_FAILURE(StartCloud());
  ASSERT_NO_FATAL_FAILURE(StartEdge(kFp32));  // SERVING once rebuilt
  const v1::EdgeState state = GetState();
  EXPECT_EQ(state.model_version(), 2u);
  EXPECT_EQ(state.model_signature(), current_->config().signature());
  EXPECT_EQ(state.profile_version(), 1u);
  EXPECT_EQ(state.interactions_total(), history_.size() + 5);
  for (const auto& t : state.tables()) {
    EXPECT_EQ(t.filled(), t.history_length()) << t.name();
  }
  const std::string log = edge_->ReadLog();
  EXPECT_THAT(log, testing::HasSubstr(absl::StrCat("kept ", history_.size(),
                                                   " history item ids")));
  EXPECT_THAT(log, testing::HasSubstr("rebuilt the scratchpad"));
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());

  // v2 goes on from there: new interactions, same reference.
  ASSERT_NO_FATAL_FAILURE(Interact(3));
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());
  edge_.reset();
  EXPECT_EQ(StoredHistory(), history_);
}

TEST_F(EdgeModelChangeTest, CloudDownAndKillDuringTheRebuildLoseNothing) {
  ASSERT_NO_FATAL_FAILURE(RecordV1History());
  ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/2, /*version=*/2));

  // No cloud: the edge starts, says it is rebuilding, retries.
  auto edge =
      Subprocess::Start(EdgeArgv(kFp32), dir_->path() + "/edge-rebuild.log");
  ASSERT_TRUE(edge.ok()) << edge.status();
  edge_ = *std::move(edge);
  const absl::Time until = absl::Now() + absl::Seconds(30);
  while (edge_->ReadLog().find("history rebuild attempt 2 failed") ==
             std::string::npos &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_THAT(edge_->ReadLog(),
              testing::HasSubstr("history rebuild attempt 2 failed"));
  stub_ = v1::EdgeService::NewStub(
      grpc::CreateChannel(EdgeTarget(), grpc::InsecureChannelCredentials()));
  v1::RecommendResponse response;
  const grpc::Status refused = Recommend(ValidRequest(), &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.error_message(),
              testing::HasSubstr("rebuilding its history"));
  ASSERT_TRUE(edge_->Signal(SIGKILL).ok());
  edge_.reset();

  // The cloud comes back: the restarted edge rebuilds from the same items.
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  ASSERT_NO_FATAL_FAILURE(StartEdge(kFp32));
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());
  // kill -9 after the rebuild: it restarts on v2 with no rebuild to do.
  edge_.reset();
  ASSERT_NO_FATAL_FAILURE(StartEdge(kFp32));
  EXPECT_THAT(edge_->ReadLog(), testing::Not(testing::HasSubstr("migrating")));
  EXPECT_EQ(GetState().model_version(), 2u);
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());
  edge_.reset();
  EXPECT_EQ(StoredHistory(), history_);
}

TEST_F(EdgeModelChangeTest, StagedReleaseUnderLoadFailsNoQuery) {
  ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/1, /*version=*/1));
  // The fleet starts from v1's files, as devices shipped with v1 do.
  const std::string fleet_model = CopyOfModel("fleet-v1");
  // Stage: everyone stays on v1, the device "edge-A" is the canary for v2
  // (not served yet: nothing is announced for it).
  WritePolicy(
      "target_version: 1\ncanary_version: 2\n"
      "canary_devices: \"edge-A\"\n");
  ASSERT_NO_FATAL_FAILURE(
      StartCloud({"--reload_poll_ms=100", "--keep_versions=1",
                  "--version_grace_s=2", "--workers=2", "--max_inflight=256"}));
  ASSERT_NO_FATAL_FAILURE(
      StartEdge({"--user_precision", "fp32", "--wire", "fp32",
                 "--device_id=edge-A", "--model_check_interval_s=1"}));
  ASSERT_NO_FATAL_FAILURE(SetProfile());
  std::mt19937 rng(3);
  for (int i = 0; i < Longest() + 2; ++i) {
    ASSERT_NO_FATAL_FAILURE(Interact(rng() % current_->catalog().num_items()));
  }

  // Load on the real edge: Recommend without pause, every 4th query an
  // interaction; every outcome and latency kept.
  struct Sample {
    absl::Time at;
    double ms;
  };
  common::Mutex mu;
  std::vector<Sample> samples;
  std::vector<std::string> failures;
  std::atomic<bool> stop{false};
  std::thread load([&] {
    std::mt19937 r(5);
    for (int i = 0; !stop.load(); ++i) {
      const v1::RecommendRequest request = ValidRequest(32, 5, r());
      v1::RecommendResponse response;
      const absl::Time start = absl::Now();
      const grpc::Status s = Recommend(request, &response);
      const absl::Time end = absl::Now();
      common::MutexLock lock(&mu);
      if (!s.ok()) {
        failures.push_back(absl::StrCat("Recommend: ", s.error_message()));
        continue;
      }
      samples.push_back({end, absl::ToDoubleMilliseconds(end - start)});
      if (i % 4 != 3) continue;
      const int64_t item = r() % model_->catalog().num_items();
      v1::RecordInteractionResponse res;
      const grpc::Status w = RecordInteraction(item, &res);
      if (w.ok()) {
        Acknowledged(item);
      } else {
        failures.push_back(
            absl::StrCat("RecordInteraction: ", w.error_message()));
      }
    }
  });
  // The loadgen's fleet through the whole release.
  const std::string fleet_json = dir_->path() + "/fleet.json";
  auto fleet = Subprocess::Start({BinaryPath("tools/duet-loadgen"),
                                  "--target",
                                  "fleet",
                                  "--addr",
                                  CloudTarget(),
                                  "--model",
                                  fleet_model,
                                  "--qps",
                                  "60",
                                  "--devices",
                                  "16",
                                  "--candidates",
                                  "32",
                                  "--warmup_s",
                                  "0",
                                  "--duration_s",
                                  "16",
                                  "--interaction_rate",
                                  "0.2",
                                  "--progress=false",
                                  "--json",
                                  fleet_json},
                                 dir_->path() + "/fleet.log");
  ASSERT_TRUE(fleet.ok()) << fleet.status();

  absl::SleepFor(absl::Seconds(2));
  const absl::Time published = absl::Now();
  ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/2, /*version=*/2));
  // The canary updates itself, nothing restarted.
  ASSERT_TRUE(WaitFor([&] { return GetState().model_version() == 2; },
                      absl::Seconds(30)))
      << edge_->ReadLog();
  const absl::Time canary_done = absl::Now();
  {
    const v1::ModelStatus status = CloudStatus();
    ASSERT_EQ(status.versions_size(), 2);  // v1 pinned for the fleet
    EXPECT_EQ(status.target().version(), 1u);
  }
  absl::SleepFor(absl::Seconds(2));
  // Roll out to everyone; v1 retires once the fleet has left it.
  WritePolicy("target_version: 2\n");
  const absl::Time rolled_out = absl::Now();
  ASSERT_TRUE(WaitFor([&] { return CloudStatus().versions_size() == 1; },
                      absl::Seconds(40)))
      << cloud_->ReadLog();
  const absl::Time retired = absl::Now();
  EXPECT_EQ(CloudStatus().versions(0).version(), 2u);
  auto fleet_exit = (*fleet)->Wait(absl::Seconds(60));
  ASSERT_TRUE(fleet_exit.ok()) << fleet_exit.status();
  EXPECT_EQ(*fleet_exit, 0) << (*fleet)->ReadLog();
  absl::SleepFor(absl::Seconds(1));
  stop = true;
  load.join();

  {
    common::MutexLock lock(&mu);
    EXPECT_THAT(failures, testing::IsEmpty());
  }
  std::ifstream in(fleet_json);
  const nlohmann::json run = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(run.is_discarded()) << (*fleet)->ReadLog();
  EXPECT_GT(run["queries"]["ok"].get<int64_t>(), 300);
  EXPECT_EQ(run["queries"]["errors"].get<int64_t>(), 0)
      << run["queries"].dump();
  EXPECT_EQ(run["interactions"]["failed"].get<int64_t>(), 0);
  const std::string fleet_log = (*fleet)->ReadLog();
  EXPECT_THAT(fleet_log, testing::HasSubstr("model switches: 16 devices"));

  // The canary kept its history across the switch: Recommend equals v2's
  // monolithic reference on the acknowledged items.
  const v1::EdgeState state = GetState();
  EXPECT_EQ(state.model_version(), 2u);
  EXPECT_EQ(state.target_model_version(), 2u);
  EXPECT_EQ(state.model_update(), "");
  EXPECT_EQ(state.history_items(), Longest());
  EXPECT_EQ(static_cast<int64_t>(state.interactions_total()), acknowledged_);
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());

  std::vector<double> before, during, after;
  for (const Sample& x : samples) {
    (x.at < published ? before
     : x.at < retired ? during
                      : after)
        .push_back(x.ms);
  }
  std::printf(
      "release timeline: canary edge on v2 %.2f s after publishing, "
      "roll-out at %.2f s, v1 retired %.2f s after the roll-out\n"
      "edge Recommend p99 (ms, %zu/%zu/%zu queries): before %.2f, during "
      "%.2f, after %.2f; fleet: %lld queries OK, p99 %.2f ms\n",
      absl::ToDoubleSeconds(canary_done - published),
      absl::ToDoubleSeconds(rolled_out - published),
      absl::ToDoubleSeconds(retired - rolled_out), before.size(), during.size(),
      after.size(), P99(before), P99(during), P99(after),
      static_cast<long long>(run["queries"]["ok"].get<int64_t>()),
      run["latency_ms"]["p99"].get<double>());
}

TEST_F(EdgeModelChangeTest, KillDuringAnUpdateLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/1, /*version=*/1));
  // The edge ships with v1 (its own --model); updates come from the cloud.
  const std::string shipped = CopyOfModel("edge-v1");
  ASSERT_NO_FATAL_FAILURE(StartCloud({"--reload_poll_ms=100"}));
  const std::vector<std::string> flags = {
      "--model", shipped, "--user_precision",          "fp32",
      "--wire",  "fp32",  "--model_check_interval_s=1"};
  ASSERT_NO_FATAL_FAILURE(StartEdge(flags));
  ASSERT_NO_FATAL_FAILURE(SetProfile());
  std::mt19937 rng(9);
  for (int i = 0; i < Longest() + 3; ++i) {
    ASSERT_NO_FATAL_FAILURE(Interact(rng() % current_->catalog().num_items()));
  }
  // Two releases; the edge is killed at a different point of each update:
  // as soon as it knows its new target (the download starting), and once
  // the download is installed (the switch starting).
  struct Point {
    uint32_t version;
    std::string name;
    std::function<bool()> reached;
  };
  const Point points[] = {
      {2, "target announced",
       [&] { return GetState().target_model_version() == 2; }},
      {3, "download installed", [&] {
         return edge_->ReadLog().find("model update: downloaded v3") !=
                std::string::npos;
       }}};
  for (const Point& p : points) {
    SCOPED_TRACE(absl::StrCat("v", p.version, ", killed at ", p.name));
    ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/p.version, p.version));
    ASSERT_TRUE(WaitFor(p.reached, absl::Seconds(30)))
        << edge_->ReadLog() << cloud_->ReadLog();
    ASSERT_TRUE(edge_->Signal(SIGKILL).ok());
    const std::string killed_log = edge_->ReadLog();
    edge_.reset();
    const bool switched = killed_log.find(absl::StrCat(
                              "switched to v", p.version)) != std::string::npos;
    // Restarted: one consistent version, every acknowledged interaction.
    ASSERT_NO_FATAL_FAILURE(StartEdge(flags));
    const v1::EdgeState restarted = GetState();
    EXPECT_TRUE(restarted.model_version() == p.version ||
                restarted.model_version() == p.version - 1)
        << restarted.model_version();
    EXPECT_EQ(static_cast<int64_t>(restarted.interactions_total()),
              acknowledged_);
    // It finishes the update and ranks as that version on the same history.
    ASSERT_TRUE(WaitFor([&] { return GetState().model_version() == p.version; },
                        absl::Seconds(30)))
        << edge_->ReadLog();
    ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());
    ASSERT_NO_FATAL_FAILURE(Interact(rng() % current_->catalog().num_items()));
    std::printf(
        "kill -9 when the %s (switched before the kill: %s): "
        "restarted on v%u, finished on v%u\n",
        p.name.c_str(), switched ? "yes" : "no", restarted.model_version(),
        p.version);
  }
  edge_.reset();
  EXPECT_EQ(StoredHistory(), history_);
}

TEST_F(EdgeModelChangeTest, OfflineThroughTwoReleasesGoesStraightToTarget) {
  ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/1, /*version=*/1));
  const std::string shipped = CopyOfModel("offline-v1");
  // One version at a time: an idle old version is retired at once.
  ASSERT_NO_FATAL_FAILURE(StartCloud(
      {"--reload_poll_ms=100", "--keep_versions=1", "--version_grace_s=0"}));
  const std::vector<std::string> flags = {
      "--model", shipped, "--user_precision",          "fp32",
      "--wire",  "fp32",  "--model_check_interval_s=1"};
  ASSERT_NO_FATAL_FAILURE(StartEdge(flags));
  ASSERT_NO_FATAL_FAILURE(SetProfile());
  std::mt19937 rng(4);
  for (int i = 0; i < Longest() + 1; ++i) {
    ASSERT_NO_FATAL_FAILURE(Interact(rng() % current_->catalog().num_items()));
  }
  edge_.reset();  // the device goes offline (kill -9)
  for (uint32_t v : {2u, 3u}) {
    ASSERT_NO_FATAL_FAILURE(Release(/*seed=*/v, v));
    ASSERT_TRUE(WaitFor(
        [&] {
          const v1::ModelStatus st = CloudStatus();
          return st.versions_size() == 1 && st.versions(0).version() == v;
        },
        absl::Seconds(30)))
        << cloud_->ReadLog();
  }
  // Back online on v1, which nobody serves: it learns its target at start
  // and goes straight to v3 (v2's edge part is never fetched), history kept.
  ASSERT_NO_FATAL_FAILURE(StartEdge(flags));
  ASSERT_TRUE(WaitFor([&] { return GetState().model_version() == 3; },
                      absl::Seconds(30)))
      << edge_->ReadLog();
  const std::string log = edge_->ReadLog();
  EXPECT_THAT(log, testing::HasSubstr("model update: downloaded v3"));
  EXPECT_THAT(log, testing::Not(testing::HasSubstr("downloaded v2")));
  EXPECT_EQ(static_cast<int64_t>(GetState().interactions_total()),
            acknowledged_);
  ASSERT_NO_FATAL_FAILURE(ExpectReferenceCtrs());
}

}  // namespace
}  // namespace duet::test
