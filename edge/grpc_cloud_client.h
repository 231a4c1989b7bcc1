// GrpcCloudClient: the edge's connection to duet-cloud. One channel to the
// target (host:port, dns:///name:port, ipv4:a:p,b:p), balanced round_robin,
// carries a pool of `streams` lanes; each lane keeps one long-lived
// bidirectional ScoringSession stream on which queries are multiplexed by
// query_id, and a reader thread per stream dispatches Scores / QueryError to
// the waiting query. round_robin picks a backend per call, not per message,
// so it is the lanes' several streams that spread queries over replicas:
// BeginQuery takes the next ready lane in turn. round_robin picks among
// READY backends only and the channel is READY once its first connection is,
// so lanes that open before the other connections are up all land on the
// first backend; rotation (below) spreads them within one stream age.
// GetItemEmbeddings and GetModelStatus are unary calls on the channel,
// GetEdgeModel a server-streaming one.
//
// Failure: when a stream breaks, its open queries fail with UNAVAILABLE and
// its lane reopens a stream once the channel is READY again, backing off
// exponentially with jitter (capped) while new streams end at once. With no
// lane ready, BeginQuery fails at once with UNAVAILABLE, so a Recommend never
// hangs past its deadline. A cloud that stops answering without closing (hung,
// stopped, behind a silent partition) is found by HTTP/2 keepalive: the
// connection is closed after keepalive_time + keepalive_timeout at most and
// its streams fail as above (tests/netfault_test.cc).
//
// Rotation (max_stream_age > 0): a stream older than its age (jittered
// +-20 % per stream, so lanes do not rotate together) is replaced make-before-
// break: its lane opens a new stream, which round_robin places on the next
// backend, and takes new queries there; the old stream drains (its in-flight
// queries finish, bounded by their deadlines), is half-closed and finishes
// cleanly. No query fails because of rotation. Why: a stream stays on the
// backend it was opened on, so without rotation replicas discovered later
// (dns:///, --scale cloud=N) would never receive traffic, and the cloud's
// --max_connection_age_s would eventually cut the stream with queries in it.
// Keep the cloud's --max_connection_age_grace_s above 1.2 x this age plus a
// query deadline: a stream may open just before its connection's GOAWAY.
//
// An emulated slow uplink for benchmarks is a decorator around this client
// (edge/emulated_uplink.h). Thread-safe. Queries must not outlive the client.
#ifndef DUET_EDGE_GRPC_CLOUD_CLIENT_H_
#define DUET_EDGE_GRPC_CLOUD_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/base/mutex.h"
#include "common/rpc/tls.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "edge/cloud_client.h"
#include "grpcpp/grpcpp.h"

namespace duet::edge {

class GrpcCloudClient : public CloudClient {
 public:
  struct Options {
    std::string target;
    // Lanes, i.e. concurrent ScoringSession streams (>= 1).
    int streams = 4;
    // Rotate a stream after this long (jittered +-20 %); zero: never.
    absl::Duration max_stream_age = absl::Seconds(60);
    // TLS / mutual TLS to the cloud (common/rpc/tls.h); all empty: plaintext.
    common::ClientTlsOptions tls;
    absl::Duration initial_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(5);
    // HTTP/2 PING every keepalive_time, with or without calls; no answer
    // within keepalive_timeout closes the connection. Zero time: no
    // keepalive (gRPC's default). The cloud accepts PINGs every 500 ms
    // (cloud/cloud_server.cc), so keep keepalive_time >= 1 s.
    absl::Duration keepalive_time = absl::Seconds(10);
    absl::Duration keepalive_timeout = absl::Seconds(5);
    // Rotation, drain and backoff times run on it; null: the real clock.
    // (Query deadlines are the caller's, in real time.)
    common::Clock* clock = nullptr;
    // For metrics. Called with the client's lock held; must not call back
    // into the client.
    std::function<void()> on_stream_opened;
    std::function<void(int ready)> on_ready_streams;
  };

  // Starts connecting in the background; never waits for the cloud.
  // INVALID_ARGUMENT for an empty target, streams < 1, negative durations or
  // a keepalive_time below 1 s (but not zero) or without a timeout;
  // the TLS errors of common::MakeChannelCredentials.
  static absl::StatusOr<std::unique_ptr<GrpcCloudClient>> Create(
      Options options);
  ~GrpcCloudClient() override;

  absl::StatusOr<std::unique_ptr<CloudQuery>> BeginQuery(
      duet::v1::BeginQuery begin, absl::Time deadline) override;
  absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> GetItemEmbeddings(
      const duet::v1::GetItemEmbeddingsRequest& request,
      absl::Time deadline) override;
  absl::Status GetEdgeModel(const duet::v1::GetEdgeModelRequest& request,
                            absl::Time deadline,
                            const EdgeModelChunkFn& on_chunk,
                            CallCanceller* canceller) override;
  absl::StatusOr<duet::v1::ModelStatus> GetModelStatus(
      const duet::v1::GetModelStatusRequest& request,
      absl::Time deadline) override;
  // "READY" while at least one lane takes queries, else the channel's state
  // ("CONNECTING" while the channel is READY but no stream is open yet).
  std::string ConnectionState() const override;

  // True once at least one lane takes queries (start-up logs, tests).
  bool WaitUntilReady(absl::Duration timeout);
  // Lanes taking queries now (0..streams).
  int ready_streams() const;
  // Streams opened so far by all lanes (first opens, reconnects, rotations).
  int64_t sessions_opened() const;

 private:
  struct Pending;
  struct Session;
  struct Lane;
  class Query;

  GrpcCloudClient(Options options,
                  std::shared_ptr<grpc::ChannelCredentials> credentials);
  // A lane's supervisor: opens, rotates, drains and reaps its streams.
  void RunLane(Lane* lane);
  // One pass of RunLane; returns when the lane should next wake up.
  absl::Time StepLane(Lane* lane);
  // Opens a stream on `lane` and makes it the current one; a current stream
  // still open is retired as draining (rotation: make before break).
  void OpenSession(Lane* lane);
  void ReadLoop(Session* session);
  void Dispatch(Session* session, duet::v1::SessionResponse* response);
  void Forget(Session* session, uint64_t id);
  // A uniform random factor in [low, high) (the lanes' jitter).
  double Jitter(double low, double high);
  int ReadyStreamsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportReadyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AnyLaneReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A failed unary or server-streaming call as a status naming it.
  absl::Status CallError(const char* call, const grpc::Status& status) const;

  const Options options_;
  common::Clock* const clock_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<duet::v1::ScoringService::Stub> stub_;

  // Guards the lanes, their sessions' state and pending queries. Never held
  // across a blocking gRPC call; taken before a session's write_mu.
  mutable common::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Lane>> lanes_;  // fixed after construction
  size_t next_lane_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t sessions_ ABSL_GUARDED_BY(mu_) = 0;
  int reported_ready_ ABSL_GUARDED_BY(mu_) = -1;

  common::Mutex rng_mu_;  // the lanes' jitter
  absl::BitGen rng_ ABSL_GUARDED_BY(rng_mu_);
};

}  // namespace duet::edge

#endif  // DUET_EDGE_GRPC_CLOUD_CLIENT_H_
