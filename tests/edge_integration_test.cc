// duet-edge + duet-cloud as real processes on 127.0.0.1 (DESIGN.md §3):
// Recommend equals the in-process split reference, interactions change
// later rankings as the model says, acknowledged interactions survive
// kill -9, a cloud outage fails fast with UNAVAILABLE and the edge recovers
// when the cloud returns, and the user vector on the wire is small.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/kernels/int8_test_util.h"
#include "common/kernels/top_k.h"
#include "common/model/model.h"
#include "common/model/reference_model.h"
#include "common/model/test_util.h"
#include "duet/v1/edge.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_process.h"

namespace duet {
namespace {

using duet::test::BinaryPath;
using duet::test::PickFreePort;
using duet::test::Subprocess;
using duet::test::WaitForHealthy;
using testing::HasSubstr;

class EdgeIntegrationTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new common::TempDir();
    auto config = common::GenerateTestModel("rm2", 0.001, ModelDir());
    ASSERT_TRUE(config.ok()) << config.status();
    common::LoadOptions lo;
    lo.parts.user_tables = true;
    auto model = common::Model::Load(ModelDir(), lo);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }
  static std::string ModelDir() { return dir_->path() + "/model"; }

  void SetUp() override {
    cloud_port_ = PickFreePort();
    edge_port_ = PickFreePort();
    state_dir_ = dir_->path() + "/state-" +
                 testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  void TearDown() override {
    // Subprocess's destructor kills and reaps what still runs.
    edge_.reset();
    cloud_.reset();
  }

  void StartCloud() {
    auto cloud = Subprocess::Start(
        {BinaryPath("cloud/duet-cloud"), "--model", ModelDir(), "--listen",
         absl::StrCat("127.0.0.1:", cloud_port_), "--metrics_listen", "",
         "--calibration_ms", "100", "--workers", "1"},
        dir_->path() + "/cloud.log");
    ASSERT_TRUE(cloud.ok()) << cloud.status();
    cloud_ = *std::move(cloud);
    const absl::Status healthy =
        WaitForHealthy(absl::StrCat("127.0.0.1:", cloud_port_),
                       absl::Seconds(60), cloud_.get());
    ASSERT_TRUE(healthy.ok()) << healthy;
  }

  void StartEdge(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {BinaryPath("edge/duet-edge"),
                                     "--model",
                                     ModelDir(),
                                     "--cloud",
                                     absl::StrCat("127.0.0.1:", cloud_port_),
                                     "--listen",
                                     absl::StrCat("127.0.0.1:", edge_port_),
                                     "--metrics_listen",
                                     "",
                                     "--state_dir",
                                     state_dir_,
                                     "--snapshot_every",
                                     "7"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto edge = Subprocess::Start(argv, dir_->path() + "/edge.log");
    ASSERT_TRUE(edge.ok()) << edge.status();
    edge_ = *std::move(edge);
    const absl::Status healthy = WaitForHealthy(
        absl::StrCat("127.0.0.1:", edge_port_), absl::Seconds(30), edge_.get());
    ASSERT_TRUE(healthy.ok()) << healthy;
    stub_ = v1::EdgeService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", edge_port_),
                            grpc::InsecureChannelCredentials()));
    // The cloud session opens in the background.
    const absl::Time until = absl::Now() + absl::Seconds(15);
    while (GetState().cloud_connection() != "READY" && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  v1::EdgeState GetState() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    v1::EdgeState state;
    EXPECT_TRUE(stub_->GetState(&ctx, {}, &state).ok());
    return state;
  }

  grpc::Status Recommend(int top_k, v1::RecommendResponse* response,
                         absl::Duration timeout = absl::Seconds(5)) {
    v1::RecommendRequest r;
    r.mutable_context_features()->Assign(c_.begin(), c_.end());
    r.mutable_candidate_ids()->Assign(candidates_.begin(), candidates_.end());
    r.set_top_k(top_k);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->Recommend(&ctx, r, response);
  }

  void Interact(int64_t item, bool* relayed = nullptr) {
    v1::RecordInteractionRequest r;
    r.set_item_id(item);
    v1::RecordInteractionResponse res;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
    const grpc::Status s = stub_->RecordInteraction(&ctx, r, &res);
    ASSERT_TRUE(s.ok()) << s.error_message();
    history_.push_back(item);
    EXPECT_EQ(res.sequence(), history_.size());
    if (relayed != nullptr) *relayed = res.relayed();
  }

  void SetProfile() {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> dist(-1, 1);
    s_.clear();
    for (int i = 0; i < model_->dims().static_in; ++i) s_.push_back(dist(rng));
    v1::UpdateProfileRequest r;
    r.mutable_static_features()->Assign(s_.begin(), s_.end());
    v1::UpdateProfileResponse res;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->UpdateProfile(&ctx, r, &res).ok());
    // The memo is recomputed in the background.
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (GetState().memo_version() != res.profile_version() &&
           absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    ASSERT_EQ(GetState().memo_version(), res.profile_version());
  }

  // The in-process split reference on the raw history (of `model`, which
  // defaults to the suite's).
  std::vector<common::Scored> Reference(
      int top_k, bool int8, const common::Model* model = nullptr) const {
    if (model == nullptr) model = model_;
    std::vector<float> pooled(model->dims().pooled), u(model->dims().user_out);
    common::PoolHistory(*model, history_, pooled.data());
    common::SplitModel split(model);
    EXPECT_TRUE(
        split.UserVector(s_.data(), c_.data(), pooled.data(), int8, u.data())
            .ok());
    std::vector<float> ctr(candidates_.size());
    EXPECT_TRUE(split.ScoreItems(u.data(), candidates_, ctr.data()).ok());
    return common::TopK(candidates_.data(), ctr.data(), candidates_.size(),
                        top_k);
  }

  void InitInputs() {
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> dist(-1, 1);
    c_.resize(model_->dims().dynamic_in);
    for (float& x : c_) x = dist(rng);
    s_.assign(model_->dims().static_in, 0.0f);
    candidates_.clear();
    for (int i = 0; i < 64; ++i) {
      candidates_.push_back(rng() % model_->catalog().num_items());
    }
  }

  static common::TempDir* dir_;
  static common::Model* model_;
  int cloud_port_ = 0, edge_port_ = 0;
  std::string state_dir_;
  std::unique_ptr<Subprocess> cloud_, edge_;
  std::unique_ptr<v1::EdgeService::Stub> stub_;
  std::vector<float> c_, s_;
  std::vector<int64_t> candidates_, history_;
};
common::TempDir* EdgeIntegrationTest::dir_ = nullptr;
common::Model* EdgeIntegrationTest::model_ = nullptr;

void ExpectRanking(const v1::RecommendResponse& got,
                   const std::vector<common::Scored>& want, float tol) {
  ASSERT_EQ(got.items_size(), static_cast<int>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got.items(i).item_id(), want[i].item_id) << "rank " << i;
    EXPECT_NEAR(got.items(i).ctr(), want[i].ctr, tol) << "rank " << i;
  }
}

TEST_F(EdgeIntegrationTest, Fp32EqualsSplitReferenceAndInteractionsChangeIt) {
  StartCloud();
  StartEdge({"--wire", "fp32", "--user_precision", "fp32"});
  InitInputs();
  SetProfile();
  v1::RecommendResponse first;
  ASSERT_TRUE(Recommend(10, &first).ok());
  ExpectRanking(first, Reference(10, false), 1e-5f);
  EXPECT_EQ(GetState().user_precision(), "fp32");

  // A relayed item (no RPC), then items the edge must fetch, enough to
  // wrap the 120-row rings.
  bool relayed = false;
  Interact(first.items(0).item_id(), &relayed);
  EXPECT_TRUE(relayed);
  for (int i = 0; i < 125; ++i) Interact(1000 + 37 * i);
  v1::RecommendResponse later;
  ASSERT_TRUE(Recommend(10, &later).ok());
  ExpectRanking(later, Reference(10, false), 1e-5f);
  double moved = 0;
  for (int i = 0; i < 10; ++i) {
    moved += std::abs(later.items(i).ctr() - first.items(i).ctr());
  }
  EXPECT_GT(moved, 1e-5) << "interactions did not change the scores";
  const v1::EdgeState state = GetState();
  EXPECT_EQ(state.interactions_total(), 126u);
  EXPECT_EQ(state.tables(0).filled(), 120);
  EXPECT_EQ(state.tables(0).tracker(), 126 % 120);
}

TEST_F(EdgeIntegrationTest, Int8IsCloseAndTheWirePayloadIsSmall) {
  StartCloud();
  StartEdge();
  InitInputs();
  // The daemon runs the int8 arithmetic this CPU computes exactly (the same
  // probe here, under the same ONEDNN_MAX_CPU_ISA: reduced-weights @avx2).
  EXPECT_EQ(GetState().int8_arithmetic(),
            common::Int8ArithmeticName(common::Int8Kernels().recommended));
  for (int i = 0; i < 30; ++i) Interact(500 + i);
  v1::RecommendResponse got;
  ASSERT_TRUE(Recommend(64, &got).ok());
  const auto want = Reference(64, /*int8=*/false);
  double mean = 0;
  for (const auto& item : got.items()) {
    for (const auto& w : want) {
      if (w.item_id == item.item_id()) mean += std::abs(w.ctr - item.ctr());
    }
  }
  mean /= want.size();
  EXPECT_LT(mean, 0.01) << "mean |dCTR| of int8 vs the fp32 reference";

  // uplink_bytes = BeginQuery + UserVector; rebuild the BeginQuery to
  // isolate the user vector: 96 int8 values plus a small header.
  v1::BeginQuery begin;
  begin.set_query_id(got.query_id());
  begin.mutable_candidate_ids()->Assign(candidates_.begin(), candidates_.end());
  begin.set_top_k(64);
  begin.set_timeout_us(4'999'999);  // same varint width as the real one
  begin.set_relay_top(64);
  const int64_t vector_bytes =
      got.timings().uplink_bytes() - static_cast<int64_t>(begin.ByteSizeLong());
  EXPECT_EQ(model_->dims().user_out, 96);  // rm2, personalizing split
  EXPECT_GE(vector_bytes, 96);
  EXPECT_LE(vector_bytes, 160);
  EXPECT_GT(got.timings().user_model_us(), 0);
  EXPECT_GE(got.timings().total_us(), got.timings().cloud_us());
}

TEST_F(EdgeIntegrationTest, AcknowledgedInteractionsSurviveKillNine) {
  StartCloud();
  StartEdge();
  InitInputs();
  SetProfile();
  for (int i = 0; i < 20; ++i) Interact(7000 + 13 * i);  // snapshot every 7
  const v1::EdgeState before = GetState();
  v1::RecommendResponse scores_before;
  ASSERT_TRUE(Recommend(10, &scores_before).ok());

  ASSERT_TRUE(edge_->Signal(SIGKILL).ok());
  ASSERT_TRUE(edge_->Wait(absl::Seconds(10)).ok());
  StartEdge();
  const v1::EdgeState after = GetState();
  EXPECT_EQ(after.interactions_total(), 20u);
  EXPECT_EQ(after.profile_version(), before.profile_version());
  EXPECT_EQ(after.memo_version(), before.memo_version());
  ASSERT_EQ(after.tables_size(), before.tables_size());
  for (int t = 0; t < after.tables_size(); ++t) {
    EXPECT_EQ(after.tables(t).filled(), before.tables(t).filled());
    EXPECT_EQ(after.tables(t).tracker(), before.tables(t).tracker());
  }
  v1::RecommendResponse scores_after;
  ASSERT_TRUE(Recommend(10, &scores_after).ok());
  ASSERT_EQ(scores_after.items_size(), 10);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(scores_after.items(i).item_id(),
              scores_before.items(i).item_id());
    EXPECT_EQ(scores_after.items(i).ctr(), scores_before.items(i).ctr());
  }
  // And the same as the reference on the full history (int8 user top MLP).
  ExpectRanking(scores_after, Reference(10, /*int8=*/true), 2e-3f);
}

TEST_F(EdgeIntegrationTest, ForcedInt8ArithmeticIsServedExportedAndExact) {
  // An operator can make every device of a fleet compute the same codes
  // whatever its CPU: the edge runs the arithmetic it is told, reports it in
  // GetState and /metrics, and ranks as the reference in that arithmetic.
  const common::Int8Arithmetic forced =
      common::Int8Arithmetic::kReducedActivations;
  if (const std::string why = common::InexactInt8Reason(forced); !why.empty()) {
    // This CPU (or the run's ISA cap) cannot compute the forced arithmetic
    // exactly, so "ranks as the reference" cannot be checked; `why` names
    // the CPU and the ISA.
    GTEST_SKIP() << why;
  }
  common::LoadOptions lo;
  lo.parts.user_tables = true;  // the reference pools the raw history
  lo.int8_arithmetic = forced;
  auto model = common::Model::Load(ModelDir(), lo);
  ASSERT_TRUE(model.ok()) << model.status();
  StartCloud();
  const int metrics_port = PickFreePort();
  StartEdge({"--int8_arithmetic", "reduced-activations", "--metrics_listen",
             absl::StrCat("127.0.0.1:", metrics_port)});
  InitInputs();
  for (int i = 0; i < 30; ++i) Interact(700 + i);
  EXPECT_EQ(GetState().int8_arithmetic(), "reduced-activations");
  v1::RecommendResponse got;
  ASSERT_TRUE(Recommend(10, &got).ok());
  ExpectRanking(got, Reference(10, /*int8=*/true, model->get()), 2e-3f);
  const std::string metrics = test::HttpGet(metrics_port, "/metrics");
  EXPECT_EQ(test::MetricValue(
                metrics, "duet_int8_arithmetic_info",
                {"arithmetic=\"reduced-activations\"",
                 absl::StrCat("isa=\"", common::Int8Kernels().isa, "\"")}),
            1.0)
      << metrics;

  // A name that is not an arithmetic is bad usage: exit 2 with the list.
  edge_.reset();
  auto bad = Subprocess::Start(
      {BinaryPath("edge/duet-edge"), "--model", ModelDir(), "--cloud",
       absl::StrCat("127.0.0.1:", cloud_port_), "--listen",
       absl::StrCat("127.0.0.1:", edge_port_), "--metrics_listen", "",
       "--state_dir", state_dir_, "--int8_arithmetic", "7bit"},
      dir_->path() + "/edge-bad.log");
  ASSERT_TRUE(bad.ok()) << bad.status();
  auto exit = (*bad)->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(*exit, 2) << (*bad)->ReadLog();
  EXPECT_THAT((*bad)->ReadLog(),
              HasSubstr("ERROR: --int8_arithmetic: int8 arithmetic '7bit' is "
                        "not one of full, reduced-weights, "
                        "reduced-activations"));
}

TEST_F(EdgeIntegrationTest, CorruptStateStopsTheDaemonUnlessReset) {
  StartCloud();
  StartEdge();
  InitInputs();
  for (int i = 0; i < 8; ++i) Interact(100 + i);  // writes a snapshot
  ASSERT_TRUE(edge_->Signal(SIGKILL).ok());
  ASSERT_TRUE(edge_->Wait(absl::Seconds(10)).ok());
  const std::string snapshot = state_dir_ + "/snapshot.bin";
  {
    std::fstream f(snapshot, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  auto refused =
      Subprocess::Start({BinaryPath("edge/duet-edge"), "--model", ModelDir(),
                         "--cloud", absl::StrCat("127.0.0.1:", cloud_port_),
                         "--listen", absl::StrCat("127.0.0.1:", edge_port_),
                         "--metrics_listen", "", "--state_dir", state_dir_},
                        dir_->path() + "/edge-refused.log");
  ASSERT_TRUE(refused.ok()) << refused.status();
  auto exit = (*refused)->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(*exit, 1);
  const std::string text = (*refused)->ReadLog();
  EXPECT_THAT(text, HasSubstr("DATA_LOSS"));
  EXPECT_THAT(text, HasSubstr("checksum mismatch"));
  StartEdge({"--reset_state"});
  EXPECT_EQ(GetState().interactions_total(), 0u);
}

TEST_F(EdgeIntegrationTest, CloudOutageFailsFastAndTheEdgeRecovers) {
  StartCloud();
  StartEdge();
  InitInputs();
  v1::RecommendResponse got;
  ASSERT_TRUE(Recommend(5, &got).ok());

  ASSERT_TRUE(cloud_->Signal(SIGKILL).ok());
  ASSERT_TRUE(cloud_->Wait(absl::Seconds(10)).ok());
  const absl::Duration deadline = absl::Seconds(2);
  for (int i = 0; i < 3; ++i) {
    const absl::Time start = absl::Now();
    const grpc::Status s = Recommend(5, &got, deadline);
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
        << s.error_message();
    EXPECT_LT(took, deadline) << "did not fail fast";
  }
  // Each stream of the pool learns of the outage when its own call ends,
  // which on a loaded machine (ASan) can trail the failed queries a little.
  const absl::Time noticed = absl::Now() + absl::Seconds(10);
  while (GetState().cloud_connection() == "READY" && absl::Now() < noticed) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_NE(GetState().cloud_connection(), "READY");

  StartCloud();  // same port
  const absl::Time until = absl::Now() + absl::Seconds(20);
  grpc::Status s;
  do {
    absl::SleepFor(absl::Milliseconds(50));
    s = Recommend(5, &got, deadline);
  } while (!s.ok() && absl::Now() < until);
  EXPECT_TRUE(s.ok()) << "edge did not recover: " << s.error_message();
  EXPECT_EQ(GetState().cloud_connection(), "READY");
}

TEST_F(EdgeIntegrationTest, BadInputIsInvalidArgument) {
  StartCloud();
  StartEdge();
  InitInputs();
  v1::RecommendResponse got;
  EXPECT_EQ(Recommend(0, &got).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  c_.push_back(1);
  const grpc::Status s = Recommend(5, &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("context_features"));
}

}  // namespace
}  // namespace duet
