// EmulatedUplink: a CloudClient decorator that delays every upstream message
// as the device's radio would, for benchmarks without a real network
// (duet-edge --uplink_mbps, --uplink_rtt_ms). Each upstream message waits
// rtt/2 + bytes * 8 / (mbps * 1e6), where bytes is the serialized size of the
// SessionRequest (or unary request) that carries it — HTTP/2 and TCP framing
// are not counted, nor the query id, which the inner client assigns — on one
// virtual link shared by all queries, so concurrent queries share its
// bandwidth. The calling thread sleeps (on the clock) for the delay; a query
// whose deadline passes on the link fails DEADLINE_EXCEEDED without being
// sent. Downstream messages are not delayed. Thread-safe.
#ifndef DUET_EDGE_EMULATED_UPLINK_H_
#define DUET_EDGE_EMULATED_UPLINK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/base/mutex.h"
#include "edge/cloud_client.h"

namespace duet::edge {

class EmulatedUplink : public CloudClient {
 public:
  struct Link {
    double mbps = 0;                            // 0: unlimited bandwidth
    absl::Duration rtt = absl::ZeroDuration();  // half of it per message
  };

  // INVALID_ARGUMENT for a negative bandwidth or RTT.
  static absl::Status Validate(const Link& link);
  // `inner` must outlive this. `clock` null: the real clock.
  EmulatedUplink(CloudClient* inner, Link link, common::Clock* clock = nullptr);

  absl::StatusOr<std::unique_ptr<CloudQuery>> BeginQuery(
      duet::v1::BeginQuery begin, absl::Time deadline) override;
  absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> GetItemEmbeddings(
      const duet::v1::GetItemEmbeddingsRequest& request,
      absl::Time deadline) override;
  // Downstream (the model's bytes) is not delayed: only the request.
  absl::Status GetEdgeModel(const duet::v1::GetEdgeModelRequest& request,
                            absl::Time deadline,
                            const EdgeModelChunkFn& on_chunk,
                            CallCanceller* canceller) override;
  absl::StatusOr<duet::v1::ModelStatus> GetModelStatus(
      const duet::v1::GetModelStatusRequest& request,
      absl::Time deadline) override;
  std::string ConnectionState() const override;

  // When a message of `bytes` sent now would arrive; reserves the link.
  absl::Time Reserve(size_t bytes);
  // Reserve, then sleep on the clock until the arrival.
  void Transmit(size_t bytes);

 private:
  class Query;

  CloudClient* const inner_;
  const Link link_;
  common::Clock* const clock_;
  common::Mutex mu_;
  absl::Time link_free_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace duet::edge

#endif  // DUET_EDGE_EMULATED_UPLINK_H_
