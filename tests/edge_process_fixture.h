// A fixture for tests that run duet-cloud and duet-edge as real processes
// on 127.0.0.1 over one generated model (tiny unless the suite picks
// another): start either with extra flags, talk to the edge, and build
// Recommend requests. Start helpers ASSERT; call them inside
// ASSERT_NO_FATAL_FAILURE. TearDown kills (SIGKILL) and reaps what runs.
#ifndef DUET_TESTS_EDGE_PROCESS_FIXTURE_H_
#define DUET_TESTS_EDGE_PROCESS_FIXTURE_H_

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/model/model.h"
#include "common/model/test_util.h"
#include "duet/v1/edge.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_process.h"

namespace duet::test {

class EdgeProcessTest : public testing::Test {
 protected:
  static void GenerateModel(const std::string& preset, double rows_scale) {
    dir_ = new common::TempDir();
    auto config = common::GenerateTestModel(preset, rows_scale, ModelDir());
    ASSERT_TRUE(config.ok()) << config.status();
    common::LoadOptions lo;
    lo.parts.user_tables = true;
    auto model = common::Model::Load(ModelDir(), lo);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void SetUpTestSuite() { GenerateModel("tiny", 1.0); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  static std::string ModelDir() { return dir_->path() + "/model"; }
  static std::string TestName() {
    return testing::UnitTest::GetInstance()->current_test_info()->name();
  }

  void SetUp() override {
    ASSERT_NE(model_, nullptr);
    cloud_port_ = PickFreePort();
    edge_port_ = PickFreePort();
    state_dir_ = dir_->path() + "/state-" + TestName();
  }
  void TearDown() override {
    edge_.reset();
    cloud_.reset();
  }

  std::string CloudTarget() const {
    return absl::StrCat("127.0.0.1:", cloud_port_);
  }
  std::string EdgeTarget() const {
    return absl::StrCat("127.0.0.1:", edge_port_);
  }

  // duet-cloud on cloud_port_; waits for SERVING unless `wait` is false
  // (a TLS cloud: the plaintext health probe cannot reach it).
  void StartCloud(const std::vector<std::string>& extra = {},
                  bool wait = true) {
    std::vector<std::string> argv = {BinaryPath("cloud/duet-cloud"),
                                     "--model",
                                     ModelDir(),
                                     "--listen",
                                     CloudTarget(),
                                     "--metrics_listen",
                                     "",
                                     "--calibration_ms",
                                     "100",
                                     "--workers",
                                     "1"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto cloud =
        Subprocess::Start(argv, dir_->path() + "/cloud-" + TestName() + ".log");
    ASSERT_TRUE(cloud.ok()) << cloud.status();
    cloud_ = *std::move(cloud);
    if (!wait) return;
    const absl::Status healthy =
        WaitForHealthy(CloudTarget(), absl::Seconds(60), cloud_.get());
    ASSERT_TRUE(healthy.ok()) << healthy;
  }

  // The command line of duet-edge on edge_port_ with state in state_dir_,
  // talking to the cloud on cloud_port_, plus `extra` flags.
  std::vector<std::string> EdgeArgv(
      const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> argv = {BinaryPath("edge/duet-edge"),
                                     "--model",
                                     ModelDir(),
                                     "--cloud",
                                     CloudTarget(),
                                     "--listen",
                                     EdgeTarget(),
                                     "--metrics_listen",
                                     "",
                                     "--state_dir",
                                     state_dir_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  // Starts EdgeArgv(extra); waits for SERVING and (if `wait_cloud`) for its
  // cloud session to be READY.
  void StartEdge(const std::vector<std::string>& extra = {},
                 bool wait_cloud = true) {
    StartEdgeArgv(EdgeArgv(extra), wait_cloud);
  }
  // StartEdge with the whole command line given.
  void StartEdgeArgv(const std::vector<std::string>& argv,
                     bool wait_cloud = true) {
    auto edge =
        Subprocess::Start(argv, dir_->path() + "/edge-" + TestName() + ".log");
    ASSERT_TRUE(edge.ok()) << edge.status();
    edge_ = *std::move(edge);
    const absl::Status healthy =
        WaitForHealthy(EdgeTarget(), absl::Seconds(30), edge_.get());
    ASSERT_TRUE(healthy.ok()) << healthy;
    stub_ = v1::EdgeService::NewStub(
        grpc::CreateChannel(EdgeTarget(), grpc::InsecureChannelCredentials()));
    if (!wait_cloud) return;
    const absl::Time until = absl::Now() + absl::Seconds(20);
    while (GetState().cloud_connection() != "READY" && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_EQ(GetState().cloud_connection(), "READY") << edge_->ReadLog();
  }

  // Runs a binary that must refuse to start: its exit code and log.
  static void RunToExit(const std::vector<std::string>& argv, int* code,
                        std::string* log) {
    auto process = Subprocess::Start(
        argv, dir_->path() + "/refused-" + TestName() + ".log");
    ASSERT_TRUE(process.ok()) << process.status();
    auto exit = (*process)->Wait(absl::Seconds(60));
    ASSERT_TRUE(exit.ok()) << exit.status();
    *code = *exit;
    *log = (*process)->ReadLog();
  }

  v1::EdgeState GetState() {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::EdgeState state;
    const grpc::Status s = stub_->GetState(&ctx, {}, &state);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return state;
  }

  // A valid request: random context features, `n` candidates, top_k.
  static v1::RecommendRequest ValidRequest(int n = 32, int top_k = 5,
                                           uint32_t seed = 5) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1, 1);
    v1::RecommendRequest r;
    for (int i = 0; i < model_->dims().dynamic_in; ++i) {
      r.add_context_features(dist(rng));
    }
    for (int i = 0; i < n; ++i) {
      r.add_candidate_ids(rng() % model_->catalog().num_items());
    }
    r.set_top_k(top_k);
    return r;
  }

  // RecordInteraction(item) with a 5 s deadline, on `stub` (default: the
  // running edge's), with the client's `interaction_id` (empty: none).
  grpc::Status RecordInteraction(int64_t item,
                                 v1::RecordInteractionResponse* response,
                                 v1::EdgeService::Stub* stub = nullptr,
                                 const std::string& interaction_id = "") {
    v1::RecordInteractionRequest r;
    r.set_item_id(item);
    r.set_interaction_id(interaction_id);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    return (stub != nullptr ? stub : stub_.get())
        ->RecordInteraction(&ctx, r, response);
  }

  // UpdateProfile(s), then waits (10 s at most) until the edge's memoized
  // static bottom MLP is of that profile: it is recomputed in the
  // background, and a query before that runs on the previous one.
  void UpdateProfileAndWait(const std::vector<float>& s) {
    v1::UpdateProfileRequest r;
    r.mutable_static_features()->Assign(s.begin(), s.end());
    v1::UpdateProfileResponse res;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    const grpc::Status status = stub_->UpdateProfile(&ctx, r, &res);
    ASSERT_TRUE(status.ok()) << status.error_message();
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (GetState().memo_version() != res.profile_version() &&
           absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    ASSERT_EQ(GetState().memo_version(), res.profile_version());
  }

  grpc::Status Recommend(const v1::RecommendRequest& request,
                         v1::RecommendResponse* response,
                         absl::Duration timeout = absl::Seconds(5)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->Recommend(&ctx, request, response);
  }

  static common::TempDir* dir_;
  static common::Model* model_;
  int cloud_port_ = 0, edge_port_ = 0;
  std::string state_dir_;
  std::unique_ptr<Subprocess> cloud_, edge_;
  std::unique_ptr<v1::EdgeService::Stub> stub_;
};

inline common::TempDir* EdgeProcessTest::dir_ = nullptr;
inline common::Model* EdgeProcessTest::model_ = nullptr;

}  // namespace duet::test

#endif  // DUET_TESTS_EDGE_PROCESS_FIXTURE_H_
