// GrpcCloudClient: the edge's connection to duet-cloud. One long-lived
// bidirectional ScoringSession stream carries every query, multiplexed by
// query_id; a reader thread dispatches Scores / QueryError to the waiting
// query. When the stream breaks, open queries fail with UNAVAILABLE and a
// session thread reconnects with exponential backoff and jitter (capped);
// while disconnected, BeginQuery fails at once with UNAVAILABLE, so a
// Recommend never hangs past its deadline. The target is any gRPC target
// (host:port, dns:///name:port, ipv4:a:p,b:p), balanced round_robin.
//
// Uplink emulation (uplink_mbps / uplink_rtt > 0): each upstream message is
// delayed by rtt/2 + bytes * 8 / (mbps * 1e6), where bytes is its serialized
// size (HTTP/2 and TCP framing are not counted), serialized on one virtual
// link, so concurrent queries share its bandwidth (a message waits for the
// ones before it). The caller's thread sleeps for the delay.
// Thread-safe.
#ifndef DUET_EDGE_CLOUD_SESSION_H_
#define DUET_EDGE_CLOUD_SESSION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "edge/cloud_client.h"
#include "grpcpp/grpcpp.h"

namespace duet::edge {

class GrpcCloudClient : public CloudClient {
 public:
  struct Options {
    std::string target;
    double uplink_mbps = 0;  // 0: unlimited bandwidth
    absl::Duration uplink_rtt = absl::ZeroDuration();
    absl::Duration initial_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(5);
  };

  // Starts connecting in the background; never waits for the cloud.
  // INVALID_ARGUMENT for an empty target or negative link parameters.
  static absl::StatusOr<std::unique_ptr<GrpcCloudClient>> Create(
      const Options& options);
  ~GrpcCloudClient() override;

  absl::StatusOr<std::unique_ptr<CloudQuery>> BeginQuery(
      duet::v1::BeginQuery begin, absl::Time deadline) override;
  absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> GetItemEmbeddings(
      const std::vector<int64_t>& item_ids, absl::Time deadline) override;
  std::string ConnectionState() const override;

  // True once a session stream is open (start-up logs, tests).
  bool WaitUntilReady(absl::Duration timeout);
  // Streams opened so far (1 + reconnects).
  int64_t sessions_opened() const;

 private:
  struct Pending {
    absl::Notification done;
    absl::StatusOr<duet::v1::Scores> result;
  };
  using Stream = grpc::ClientReaderWriter<duet::v1::SessionRequest,
                                          duet::v1::SessionResponse>;
  class Query;

  explicit GrpcCloudClient(const Options& options);
  void SessionLoop();
  void Dispatch(const duet::v1::SessionResponse& response);
  void FailAllPending(const absl::Status& status);
  // Sends on the stream of `generation` if it is still the current one;
  // false otherwise (a generation, not a pointer: no ABA on reconnect).
  bool Write(uint64_t generation, const duet::v1::SessionRequest& request);
  // Sleeps for the emulated uplink delay of `bytes`.
  void EmulateUplink(size_t bytes);
  void Forget(uint64_t id);
  absl::Duration Jittered(absl::Duration d);

  const Options options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<duet::v1::ScoringService::Stub> stub_;

  mutable absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  Stream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;  // null: disconnected
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t sessions_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Pending>> pending_
      ABSL_GUARDED_BY(mu_);

  // Serializes writers on the stream (gRPC allows one writer at a time).
  absl::Mutex write_mu_;
  Stream* writable_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  uint64_t writable_generation_ ABSL_GUARDED_BY(write_mu_) = 0;

  absl::Mutex link_mu_;
  absl::Time link_free_at_ ABSL_GUARDED_BY(link_mu_) = absl::InfinitePast();
  absl::BitGen rng_ ABSL_GUARDED_BY(link_mu_);

  std::thread session_thread_;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_CLOUD_SESSION_H_
