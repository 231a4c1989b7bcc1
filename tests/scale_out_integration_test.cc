// Scale-out of the edge's cloud connection (edge/grpc_cloud_client.h).
// In-process: GrpcCloudClient against fake ScoringService servers on
// loopback — its streams spread queries over the backends of a multi-address
// target, age rotation fails no query (even with one stream), ends streams
// by half-close rather than cancel and reaches a replica started later.
// Processes: one duet-edge with --cloud ipv4:P1,P2 --cloud_streams 4 in front
// of two duet-cloud processes; both clouds answer queries (their /metrics),
// and with --cloud_stream_max_age_s 1 (and the clouds' GOAWAY every second)
// streams rotate under load with every Recommend succeeding.
#include <unistd.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/base/status_matchers.h"
#include "common/model/model.h"
#include "common/model/test_util.h"
#include "duet/v1/edge.grpc.pb.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "edge/grpc_cloud_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_process.h"

namespace duet {
namespace {

using duet::common::StatusIs;
using duet::edge::GrpcCloudClient;
using duet::test::BinaryPath;
using duet::test::PickFreePort;
using duet::test::Subprocess;
using duet::test::WaitForHealthy;
using testing::HasSubstr;

// --- In-process: GrpcCloudClient against fake clouds -----------------------

// A ScoringService whose sessions answer every UserVector with empty Scores
// after `delay`, counting streams, answers and how each stream ended.
class FakeCloud final : public v1::ScoringService::Service {
 public:
  explicit FakeCloud(absl::Duration delay) : delay_(delay) {}

  grpc::Status ScoringSession(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::SessionResponse, v1::SessionRequest>* stream)
      override {
    {
      absl::MutexLock lock(&mu_);
      ++streams_;
    }
    // Answers are written by a second thread, in arrival order, so queries
    // overlap on the stream as they do on the real cloud.
    struct Due {
      bool Ready() const { return !queue.empty() || reads_done; }
      std::deque<std::pair<absl::Time, uint64_t>> queue;
      bool reads_done = false;
    } due;
    absl::Mutex due_mu;
    std::thread writer([&] {
      while (true) {
        std::pair<absl::Time, uint64_t> next;
        {
          absl::MutexLock lock(&due_mu);
          due_mu.Await(absl::Condition(&due, &Due::Ready));
          if (due.queue.empty()) return;
          next = due.queue.front();
          due.queue.pop_front();
        }
        absl::SleepFor(next.first - absl::Now());
        {
          // Counted before the write: the client may see the answer first.
          absl::MutexLock lock(&mu_);
          ++answered_;
        }
        v1::SessionResponse response;
        response.mutable_scores()->set_query_id(next.second);
        stream->Write(response);
      }
    });
    v1::SessionRequest request;
    while (stream->Read(&request)) {
      if (request.has_user_vector()) {
        absl::MutexLock lock(&due_mu);
        due.queue.emplace_back(absl::Now() + delay_,
                               request.user_vector().query_id());
      }
    }
    {
      absl::MutexLock lock(&due_mu);
      due.reads_done = true;
    }
    writer.join();
    absl::MutexLock lock(&mu_);
    ++(context->IsCancelled() ? cancelled_ : half_closed_);
    return grpc::Status::OK;
  }

  int streams() const {
    absl::MutexLock lock(&mu_);
    return streams_;
  }
  int answered() const {
    absl::MutexLock lock(&mu_);
    return answered_;
  }
  // Streams the client ended with WritesDone / by cancelling.
  int half_closed() const {
    absl::MutexLock lock(&mu_);
    return half_closed_;
  }
  int cancelled() const {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

 private:
  const absl::Duration delay_;
  mutable absl::Mutex mu_;
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
  int answered_ ABSL_GUARDED_BY(mu_) = 0;
  int half_closed_ ABSL_GUARDED_BY(mu_) = 0;
  int cancelled_ ABSL_GUARDED_BY(mu_) = 0;
};

struct FakeServer {
  FakeServer(int port, absl::Duration delay) : service(delay) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port),
                             grpc::InsecureServerCredentials());
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~FakeServer() {
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }
  FakeCloud service;
  std::unique_ptr<grpc::Server> server;
};

// One query through `client`: BeginQuery, SendUserVector, Await.
absl::Status RunQuery(GrpcCloudClient& client, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  auto query = client.BeginQuery(v1::BeginQuery(), deadline);
  if (!query.ok()) return query.status();
  v1::UserVector vector;
  vector.set_query_id((*query)->id());
  if (absl::Status s = (*query)->SendUserVector(vector); !s.ok()) return s;
  return (*query)->Await(deadline).status();
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

// `threads` callers run queries back to back for `duration`; returns the
// failures (as text) and counts the queries in `*total`.
std::vector<std::string> QueryLoad(GrpcCloudClient& client, int threads,
                                   absl::Duration duration, int* total) {
  absl::Mutex mu;
  std::vector<std::string> failures;
  std::atomic<int> count{0};
  const absl::Time until = absl::Now() + duration;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      while (absl::Now() < until) {
        const absl::Status s = RunQuery(client, absl::Seconds(2));
        ++count;
        if (!s.ok()) {
          absl::MutexLock lock(&mu);
          failures.push_back(s.ToString());
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  *total = count;
  return failures;
}

TEST(GrpcCloudClientTest, CreateRejectsBadOptions) {
  GrpcCloudClient::Options o;
  o.target = "127.0.0.1:1";
  o.streams = 0;
  EXPECT_THAT(GrpcCloudClient::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cloud streams is 0, must be >= 1")));
  o.streams = 2;
  o.max_stream_age = absl::Seconds(-1);
  EXPECT_THAT(GrpcCloudClient::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max age is -1s")));
}

TEST(GrpcCloudClientTest, NoOpenStreamFailsAtOnceWithUnavailable) {
  GrpcCloudClient::Options o;
  o.target = absl::StrCat("127.0.0.1:", PickFreePort());  // nothing listens
  o.streams = 2;
  auto client = GrpcCloudClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time start = absl::Now();
  EXPECT_THAT(
      (*client)->BeginQuery(v1::BeginQuery(), absl::Now() + absl::Seconds(5)),
      StatusIs(absl::StatusCode::kUnavailable,
               HasSubstr("none of 2 streams open")));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
  EXPECT_NE((*client)->ConnectionState(), "READY");
  EXPECT_EQ((*client)->ready_streams(), 0);
}

TEST(GrpcCloudClientTest, StreamsSpreadQueriesOverBackends) {
  const int p1 = PickFreePort(), p2 = PickFreePort();
  FakeServer a(p1, absl::ZeroDuration()), b(p2, absl::ZeroDuration());
  GrpcCloudClient::Options o;
  o.target = absl::StrCat("ipv4:127.0.0.1:", p1, ",127.0.0.1:", p2);
  o.streams = 4;
  o.max_stream_age = absl::ZeroDuration();
  std::atomic<int> opened{0}, ready{0};
  o.on_stream_opened = [&] { ++opened; };
  o.on_ready_streams = [&](int n) { ready = n; };
  auto client = GrpcCloudClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(WaitFor([&] { return (*client)->ready_streams() == 4; },
                      absl::Seconds(10)));
  EXPECT_EQ((*client)->ConnectionState(), "READY");
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(RunQuery(**client, absl::Seconds(5)).ok());
  }
  EXPECT_EQ(a.service.answered() + b.service.answered(), 40);
  EXPECT_GT(a.service.answered(), 0);
  EXPECT_GT(b.service.answered(), 0);
  EXPECT_EQ(a.service.streams() + b.service.streams(), 4);
  EXPECT_EQ((*client)->sessions_opened(), 4);
  EXPECT_EQ(opened, 4);
  EXPECT_EQ(ready, 4);
}

TEST(GrpcCloudClientTest, RotationFailsNoQueryEvenWithOneStream) {
  const int port = PickFreePort();
  FakeServer cloud(port, absl::Milliseconds(40));
  GrpcCloudClient::Options o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.streams = 1;
  o.max_stream_age = absl::Milliseconds(300);
  auto client = GrpcCloudClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->WaitUntilReady(absl::Seconds(10)));
  int total = 0;
  const auto failures =
      QueryLoad(**client, /*threads=*/4, absl::Seconds(2), &total);
  EXPECT_THAT(failures, testing::IsEmpty());
  EXPECT_GT(total, 50);
  // 2 s / (300 ms +- 20 %): at least 5 rotations; allow for scheduling.
  EXPECT_GE((*client)->sessions_opened(), 4);
  // Rotated streams were drained and half-closed, never cancelled.
  EXPECT_TRUE(WaitFor(
      [&] {
        return cloud.service.half_closed() >= (*client)->sessions_opened() - 2;
      },
      absl::Seconds(5)))
      << cloud.service.half_closed() << " of " << (*client)->sessions_opened()
      << " streams half-closed";
  EXPECT_EQ(cloud.service.cancelled(), 0);
  EXPECT_EQ(cloud.service.answered(), total);
}

TEST(GrpcCloudClientTest, RotationReachesAReplicaStartedLater) {
  const int p1 = PickFreePort(), p2 = PickFreePort();
  FakeServer a(p1, absl::Milliseconds(5));
  GrpcCloudClient::Options o;
  o.target = absl::StrCat("ipv4:127.0.0.1:", p1, ",127.0.0.1:", p2);
  o.streams = 2;
  o.max_stream_age = absl::Milliseconds(300);
  o.max_backoff = absl::Milliseconds(200);  // the channel retries p2 often
  auto client = GrpcCloudClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(WaitFor([&] { return (*client)->ready_streams() == 2; },
                      absl::Seconds(10)));
  ASSERT_TRUE(RunQuery(**client, absl::Seconds(5)).ok());
  EXPECT_EQ(a.service.streams(), 2)
      << "every stream starts on the only backend";

  FakeServer b(p2, absl::Milliseconds(5));
  int total = 0, failed = 0;
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (b.service.answered() == 0 && absl::Now() < until) {
    ++total;
    if (!RunQuery(**client, absl::Seconds(2)).ok()) ++failed;
  }
  EXPECT_GT(b.service.answered(), 0)
      << "no query reached the replica started later (" << total << " queries)";
  EXPECT_EQ(failed, 0);
}

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
  ASSERT_NO_FATAL_FAILURE(StartEdge({}));
  for (int i = 0; i < 40; ++i) {
    const grpc::Status s = Recommend();
    ASSERT_TRUE(s.ok()) << "Recommend " << i << ": " << s.error_message();
  }
  const double first = CloudQueries(0), second = CloudQueries(1);
  EXPECT_GT(first, 0) << "cloud 1 answered no query";
  EXPECT_GT(second, 0) << "cloud 2 answered no query";
  EXPECT_EQ(first + second, 40);
  EXPECT_EQ(EdgeMetric("duet_queries_total", {"side=\"edge\"", "code=\"OK\""}),
            40);
  EXPECT_EQ(EdgeMetric("duet_cloud_streams_opened_total", {}), 4);
}

TEST_F(EdgeScaleOutIntegrationTest, StreamRotationUnderLoadFailsNoQuery) {
  // The clouds' GOAWAY every second too: the default grace (120 s) lets the
  // edge's own rotation close every stream first.
  ASSERT_NO_FATAL_FAILURE(StartClouds({"--max_connection_age_s", "1"}));
  ASSERT_NO_FATAL_FAILURE(StartEdge({"--cloud_stream_max_age_s", "1"}));
  const double opened_before =
      EdgeMetric("duet_cloud_streams_opened_total", {});
  std::atomic<int> total{0};
  absl::Mutex mu;
  std::vector<std::string> failures;
  const absl::Time until = absl::Now() + absl::Seconds(4);
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&] {
      while (absl::Now() < until) {
        const grpc::Status s = Recommend();
        ++total;
        if (!s.ok()) {
          absl::MutexLock lock(&mu);
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
