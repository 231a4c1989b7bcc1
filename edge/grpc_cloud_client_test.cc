// GrpcCloudClient (edge/grpc_cloud_client.h) in-process against fake
// ScoringService servers on loopback: option checks, failing fast without a
// stream, streams spread over the backends of a multi-address target, age
// rotation on the client's clock that fails no query (even with one stream)
// and ends streams by half-close rather than cancel, and a replica started
// later reached by rotation.
#include "edge/grpc_cloud_client.h"

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/base/mutex.h"
#include "common/base/status_matchers.h"
#include "common/base/wait_for.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_process.h"

namespace duet {
namespace {

using duet::common::StatusIs;
using duet::common::WaitFor;
using duet::edge::GrpcCloudClient;
using duet::test::PickFreePort;
using testing::HasSubstr;

// A ScoringService whose sessions answer every UserVector with empty Scores
// after `delay`, counting streams, answers and how each stream ended.
class FakeScoringService final : public v1::ScoringService::Service {
 public:
  explicit FakeScoringService(absl::Duration delay) : delay_(delay) {}

  grpc::Status ScoringSession(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::SessionResponse, v1::SessionRequest>* stream)
      override {
    {
      common::MutexLock lock(&mu_);
      ++streams_;
    }
    // Answers are written by a second thread, in arrival order, so queries
    // overlap on the stream as they do on the real cloud.
    struct Due {
      bool Ready() const { return !queue.empty() || reads_done; }
      std::deque<std::pair<absl::Time, uint64_t>> queue;
      bool reads_done = false;
    } due;
    common::Mutex due_mu;
    std::thread writer([&] {
      while (true) {
        std::pair<absl::Time, uint64_t> next;
        {
          common::MutexLock lock(&due_mu);
          due_mu.Await(absl::Condition(&due, &Due::Ready));
          if (due.queue.empty()) return;
          next = due.queue.front();
          due.queue.pop_front();
        }
        absl::SleepFor(next.first - absl::Now());
        {
          // Counted before the write: the client may see the answer first.
          common::MutexLock lock(&mu_);
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
        common::MutexLock lock(&due_mu);
        due.queue.emplace_back(absl::Now() + delay_,
                               request.user_vector().query_id());
      }
    }
    {
      common::MutexLock lock(&due_mu);
      due.reads_done = true;
    }
    writer.join();
    common::MutexLock lock(&mu_);
    ++(context->IsCancelled() ? cancelled_ : half_closed_);
    return grpc::Status::OK;
  }

  // Five one-byte chunks of edge.safetensors; version 9 is not served.
  grpc::Status GetEdgeModel(
      grpc::ServerContext*, const v1::GetEdgeModelRequest* request,
      grpc::ServerWriter<v1::EdgeModelChunk>* writer) override {
    if (request->model_version() == 9) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "model version 9 is not served");
    }
    for (int i = 0; i < 5; ++i) {
      v1::EdgeModelChunk chunk;
      chunk.set_file("edge.safetensors");
      chunk.set_offset(i);
      chunk.set_data("x");
      if (!writer->Write(chunk)) break;
    }
    return grpc::Status::OK;
  }
  grpc::Status GetModelStatus(grpc::ServerContext*,
                              const v1::GetModelStatusRequest* request,
                              v1::ModelStatus* response) override {
    response->set_model_name(request->device_id());
    response->mutable_target()->set_version(7);
    return grpc::Status::OK;
  }

  int streams() const {
    common::MutexLock lock(&mu_);
    return streams_;
  }
  int answered() const {
    common::MutexLock lock(&mu_);
    return answered_;
  }
  // Streams the client ended with WritesDone / by cancelling.
  int half_closed() const {
    common::MutexLock lock(&mu_);
    return half_closed_;
  }
  int cancelled() const {
    common::MutexLock lock(&mu_);
    return cancelled_;
  }

 private:
  const absl::Duration delay_;
  mutable common::Mutex mu_;
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
  FakeScoringService service;
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

// `threads` callers run queries back to back for `duration`; returns the
// failures (as text) and counts the queries in `*total`.
std::vector<std::string> QueryLoad(GrpcCloudClient& client, int threads,
                                   absl::Duration duration, int* total) {
  common::Mutex mu;
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
          common::MutexLock lock(&mu);
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
  // UNAVAILABLE, not a wait for the 5 s deadline (DEADLINE_EXCEEDED).
  EXPECT_THAT(
      (*client)->BeginQuery(v1::BeginQuery(), absl::Now() + absl::Seconds(5)),
      StatusIs(absl::StatusCode::kUnavailable,
               HasSubstr("none of 2 streams open")));
  EXPECT_NE((*client)->ConnectionState(), "READY");
  EXPECT_EQ((*client)->ready_streams(), 0);
}

// The release calls: GetEdgeModel hands over every chunk in order, an error
// of the consumer ends the stream and is returned as is, and the cloud's
// errors keep their code with the call named; GetModelStatus answers.
TEST(GrpcCloudClientTest, ReleaseCallsPassChunksStatusAndErrorsThrough) {
  const int port = PickFreePort();
  FakeServer server(port, absl::ZeroDuration());
  GrpcCloudClient::Options o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.streams = 1;
  auto client = GrpcCloudClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  std::vector<int64_t> offsets;
  auto collect = [&offsets](const v1::EdgeModelChunk& chunk) {
    offsets.push_back(chunk.offset());
    return absl::OkStatus();
  };
  v1::GetEdgeModelRequest request;
  request.set_model_version(2);
  ASSERT_TRUE(
      (*client)->GetEdgeModel(request, deadline, collect, nullptr).ok());
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 1, 2, 3, 4}));

  offsets.clear();
  auto refuse_third = [&offsets](const v1::EdgeModelChunk& chunk) {
    offsets.push_back(chunk.offset());
    return chunk.offset() == 2 ? absl::DataLossError("bad chunk 2")
                               : absl::OkStatus();
  };
  EXPECT_THAT((*client)->GetEdgeModel(request, deadline, refuse_third, nullptr),
              StatusIs(absl::StatusCode::kDataLoss, "bad chunk 2"));
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 1, 2}));

  request.set_model_version(9);
  EXPECT_THAT(
      (*client)->GetEdgeModel(request, deadline, collect, nullptr),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr(absl::StrCat("GetEdgeModel at 127.0.0.1:", port,
                                      ": model version 9 is not served"))));

  edge::CallCanceller canceller;
  canceller.Cancel();
  EXPECT_THAT((*client)->GetEdgeModel(request, deadline, collect, &canceller),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")));

  v1::GetModelStatusRequest status_request;
  status_request.set_device_id("dev");
  auto status = (*client)->GetModelStatus(status_request, deadline);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->model_name(), "dev");
  EXPECT_EQ(status->target().version(), 7u);
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

TEST(GrpcCloudClientTest, AStreamRotatesOnlyOnceItsJitteredAgeHasPassed) {
  const int port = PickFreePort();
  FakeServer cloud(port, absl::ZeroDuration());
  common::FakeClock clock;
  GrpcCloudClient::Options o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.streams = 1;
  o.max_stream_age = absl::Seconds(60);  // jittered into [48 s, 72 s]
  o.clock = &clock;
  auto client = GrpcCloudClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  // The lane polls the channel every 250 ms of its clock until it is READY.
  ASSERT_TRUE(WaitFor(
      [&] {
        clock.Advance(absl::Milliseconds(250));
        return (*client)->ready_streams() == 1;
      },
      absl::Seconds(10)));
  ASSERT_TRUE(RunQuery(**client, absl::Seconds(5)).ok());
  // Opened at most 250 ms ago on the clock: 47 s later it is younger than
  // any jittered age, and the lane waits on the clock, so nothing rotates.
  clock.Advance(absl::Seconds(47));
  ASSERT_TRUE(RunQuery(**client, absl::Seconds(5)).ok());
  EXPECT_EQ((*client)->sessions_opened(), 1);
  EXPECT_EQ(cloud.service.streams(), 1);
  // Past the longest jittered age: a new stream, the old one drained and
  // half-closed (never cancelled), no query lost.
  clock.Advance(absl::Seconds(26));
  ASSERT_TRUE(WaitFor([&] { return (*client)->sessions_opened() == 2; },
                      absl::Seconds(10)));
  ASSERT_TRUE(RunQuery(**client, absl::Seconds(5)).ok());
  EXPECT_TRUE(WaitFor([&] { return cloud.service.half_closed() == 1; },
                      absl::Seconds(10)));
  EXPECT_EQ(cloud.service.cancelled(), 0);
  EXPECT_EQ(cloud.service.answered(), 3);
  EXPECT_EQ((*client)->ready_streams(), 1);
}

}  // namespace
}  // namespace duet
