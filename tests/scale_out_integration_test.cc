// Scale-out of the edge's cloud connection (edge/grpc_cloud_client.h; its
// in-process tests are edge/grpc_cloud_client_test.cc), with processes: one
// duet-edge with --cloud ipv4:P1,P2 --cloud_streams 4 in front of two
// duet-cloud processes; both clouds answer queries (their /metrics),
// and with --cloud_stream_max_age_s 1 (and the clouds' GOAWAY every second)
// streams rotate under load with every Recommend succeeding.
#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/base/mutex.h"
#include "common/base/wait_for.h"
#include "common/model/model.h"
#include "common/model/test_util.h"
#include "duet/v1/edge.grpc.pb.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_process.h"

namespace duet {
namespace {

using duet::common::WaitFor;
using duet::test::BinaryPath;
using duet::test::PickFreePort;
using duet::test::Subprocess;
using duet::test::WaitForHealthy;
using testing::HasSubstr;

// --- Processes: duet-edge in front of two duet-cloud -----------------------

// Like MetricValue, but 0 when the metric has no sample yet.
double MetricSumOrZero(const std::string& text, const std::string& name,
                       const std::vector<std::string>& labels) {
  return std::max(0.0, test::MetricValue(text, name, labels));
}

class EdgeScaleOutIntegrationTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new common::TempDir();
    auto config = common::GenerateTestModel("rm2", 0.001, ModelDir());
    ASSERT_TRUE(config.ok()) << config.status();
    auto model = common::Model::Load(ModelDir(), common::LoadOptions());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }
  static std::string ModelDir() { return dir_->path() + "/model"; }

  void TearDown() override {
    edge_.reset();
    for (auto& c : clouds_) c.reset();
  }

  void StartClouds(const std::vector<std::string>& extra = {}) {
    for (int i = 0; i < 2; ++i) {
      cloud_ports_[i] = PickFreePort();
      cloud_metrics_ports_[i] = PickFreePort();
      std::vector<std::string> argv = {
          BinaryPath("cloud/duet-cloud"),
          "--model",
          ModelDir(),
          "--listen",
          absl::StrCat("127.0.0.1:", cloud_ports_[i]),
          "--metrics_listen",
          absl::StrCat("127.0.0.1:", cloud_metrics_ports_[i]),
          "--calibration_ms",
          "100",
          "--workers",
          "1"};
      argv.insert(argv.end(), extra.begin(), extra.end());
      auto cloud = Subprocess::Start(
          argv, absl::StrCat(dir_->path(), "/cloud", i, ".log"));
      ASSERT_TRUE(cloud.ok()) << cloud.status();
      clouds_[i] = *std::move(cloud);
    }
    for (int i = 0; i < 2; ++i) {
      const absl::Status healthy =
          WaitForHealthy(absl::StrCat("127.0.0.1:", cloud_ports_[i]),
                         absl::Seconds(60), clouds_[i].get());
      ASSERT_TRUE(healthy.ok()) << healthy;
    }
  }

  void StartEdge(const std::vector<std::string>& extra) {
    edge_port_ = PickFreePort();
    edge_metrics_port_ = PickFreePort();
    const std::string state_dir =
        dir_->path() + "/state-" +
        testing::UnitTest::GetInstance()->current_test_info()->name();
    std::vector<std::string> argv = {
        BinaryPath("edge/duet-edge"),
        "--model",
        ModelDir(),
        "--cloud",
        absl::StrCat("ipv4:127.0.0.1:", cloud_ports_[0],
                     ",127.0.0.1:", cloud_ports_[1]),
        "--cloud_streams",
        "4",
        "--listen",
        absl::StrCat("127.0.0.1:", edge_port_),
        "--metrics_listen",
        absl::StrCat("127.0.0.1:", edge_metrics_port_),
        "--state_dir",
        state_dir};
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
    // Every stream open, so queries can reach both clouds from the start.
    ASSERT_TRUE(
        WaitFor([&] { return EdgeMetric("duet_cloud_streams_ready", {}) == 4; },
                absl::Seconds(15)))
        << edge_->ReadLog();
  }

  double EdgeMetric(const std::string& name,
                    const std::vector<std::string>& labels) {
    return MetricSumOrZero(test::HttpGet(edge_metrics_port_, "/metrics"), name,
                           labels);
  }
  // Session queries the cloud answered OK.
  double CloudQueries(int i) {
    return MetricSumOrZero(
        test::HttpGet(cloud_metrics_ports_[i], "/metrics"),
        "duet_queries_total",
        {"side=\"cloud\"", "rpc=\"ScoringSession\"", "code=\"OK\""});
  }

  grpc::Status Recommend() {
    std::mt19937 rng(static_cast<uint32_t>(next_seed_++));
    std::uniform_real_distribution<float> dist(-1, 1);
    v1::RecommendRequest r;
    for (int i = 0; i < model_->dims().dynamic_in; ++i) {
      r.add_context_features(dist(rng));
    }
    for (int i = 0; i < 32; ++i) {
      r.add_candidate_ids(rng() % model_->catalog().num_items());
    }
    r.set_top_k(5);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::RecommendResponse response;
    return stub_->Recommend(&ctx, r, &response);
  }

  static common::TempDir* dir_;
  static common::Model* model_;
  int cloud_ports_[2] = {0, 0}, cloud_metrics_ports_[2] = {0, 0};
  int edge_port_ = 0, edge_metrics_port_ = 0;
  std::unique_ptr<Subprocess> clouds_[2], edge_;
  std::unique_ptr<v1::EdgeService::Stub> stub_;
  std::atomic<int> next_seed_{1};
};
common::TempDir* EdgeScaleOutIntegrationTest::dir_ = nullptr;
common::Model* EdgeScaleOutIntegrationTest::model_ = nullptr;

TEST_F(EdgeScaleOutIntegrationTest, OneEdgeSpreadsQueriesOverTwoClouds) {
  ASSERT_NO_FATAL_FAILURE(StartClouds());
  // round_robin places a stream on a READY backend, and the channel is READY
  // as soon as its first connection is: a lane that opens its stream before
  // the second connection is up lands on the first cloud (CI saw all four
  // there under load). Rotation moves streams to whatever backends are ready
  // by then, so with streams replaced every ~1 s the queries reach both
  // clouds within a few seconds however the lanes started.
  ASSERT_NO_FATAL_FAILURE(StartEdge({"--cloud_stream_max_age_s", "1"}));
  int sent = 0;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (sent < 40 || ((CloudQueries(0) == 0 || CloudQueries(1) == 0) &&
                       absl::Now() < give_up)) {
    const grpc::Status s = Recommend();
    ASSERT_TRUE(s.ok()) << "Recommend " << sent << ": " << s.error_message();
    ++sent;
    if (sent >= 40) absl::SleepFor(absl::Milliseconds(50));
  }
  const double first = CloudQueries(0), second = CloudQueries(1);
  EXPECT_GT(first, 0) << "cloud 1 answered none of " << sent << " queries";
  EXPECT_GT(second, 0) << "cloud 2 answered none of " << sent << " queries";
  // Each query answered once, by one of them.
  EXPECT_EQ(first + second, sent);
  EXPECT_EQ(EdgeMetric("duet_queries_total", {"side=\"edge\"", "code=\"OK\""}),
            sent);
  EXPECT_GE(EdgeMetric("duet_cloud_streams_opened_total", {}), 4);
}

TEST_F(EdgeScaleOutIntegrationTest, StreamRotationUnderLoadFailsNoQuery) {
  // The clouds' GOAWAY every second too: the default grace (120 s) lets the
  // edge's own rotation close every stream first.
  ASSERT_NO_FATAL_FAILURE(StartClouds({"--max_connection_age_s", "1"}));
  ASSERT_NO_FATAL_FAILURE(StartEdge({"--cloud_stream_max_age_s", "1"}));
  const double opened_before =
      EdgeMetric("duet_cloud_streams_opened_total", {});
  std::atomic<int> total{0};
  common::Mutex mu;
  std::vector<std::string> failures;
  const absl::Time until = absl::Now() + absl::Seconds(4);
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&] {
      while (absl::Now() < until) {
        const grpc::Status s = Recommend();
        ++total;
        if (!s.ok()) {
          common::MutexLock lock(&mu);
          failures.push_back(
              absl::StrCat(s.error_code(), ": ", s.error_message()));
        }
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_THAT(failures, testing::IsEmpty());
  EXPECT_GT(total, 20);
  // 4 streams, each replaced about every second for 4 s.
  const double opened = EdgeMetric("duet_cloud_streams_opened_total", {});
  EXPECT_GE(opened - opened_before, 8)
      << "streams opened before " << opened_before << ", after " << opened;
  EXPECT_GT(CloudQueries(0), 0);
  EXPECT_GT(CloudQueries(1), 0);
  EXPECT_EQ(CloudQueries(0) + CloudQueries(1), total);
  EXPECT_THAT(edge_->ReadLog(), testing::Not(HasSubstr("ended (")))
      << "a stream ended other than by rotation";
}

}  // namespace
}  // namespace duet
