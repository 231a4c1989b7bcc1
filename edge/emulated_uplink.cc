#include "edge/emulated_uplink.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "google/protobuf/io/coded_stream.h"

namespace duet::edge {
namespace {

// The serialized size of a SessionRequest carrying a message of `bytes` in
// its oneof (fields 1-3: a one-byte tag and the length), without copying it.
size_t InSessionRequest(size_t bytes) {
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(bytes) +
         bytes;
}

}  // namespace

class EmulatedUplink::Query : public CloudQuery {
 public:
  Query(EmulatedUplink* link, std::unique_ptr<CloudQuery> inner)
      : link_(link), inner_(std::move(inner)) {}

  uint64_t id() const override { return inner_->id(); }

  absl::Status SendUserVector(const duet::v1::UserVector& vector) override {
    link_->Transmit(InSessionRequest(vector.ByteSizeLong()));
    return inner_->SendUserVector(vector);
  }

  absl::StatusOr<duet::v1::Scores> Await(absl::Time deadline) override {
    return inner_->Await(deadline);
  }

 private:
  EmulatedUplink* const link_;
  const std::unique_ptr<CloudQuery> inner_;
};

absl::Status EmulatedUplink::Validate(const Link& link) {
  if (link.mbps < 0 || link.rtt < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "uplink_mbps (%g) and uplink_rtt (%s) must not be negative", link.mbps,
        absl::FormatDuration(link.rtt)));
  }
  return absl::OkStatus();
}

EmulatedUplink::EmulatedUplink(CloudClient* inner, Link link,
                               common::Clock* clock)
    : inner_(inner),
      link_(link),
      clock_(clock != nullptr ? clock : common::Clock::Real()) {}

absl::Time EmulatedUplink::Reserve(size_t bytes) {
  common::MutexLock lock(&mu_);
  const absl::Duration transmit =
      link_.mbps > 0 ? absl::Seconds(bytes * 8.0 / (link_.mbps * 1e6))
                     : absl::ZeroDuration();
  link_free_at_ = std::max(clock_->Now(), link_free_at_) + transmit;
  return link_free_at_ + link_.rtt / 2;
}

void EmulatedUplink::Transmit(size_t bytes) {
  clock_->SleepUntil(Reserve(bytes));
}

absl::StatusOr<std::unique_ptr<CloudQuery>> EmulatedUplink::BeginQuery(
    duet::v1::BeginQuery begin, absl::Time deadline) {
  Transmit(InSessionRequest(begin.ByteSizeLong()));
  if (clock_->Now() >= deadline) {
    return absl::DeadlineExceededError(
        "the deadline passed on the emulated uplink");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<CloudQuery> query,
                   inner_->BeginQuery(std::move(begin), deadline));
  return std::unique_ptr<CloudQuery>(new Query(this, std::move(query)));
}

absl::StatusOr<duet::v1::GetItemEmbeddingsResponse>
EmulatedUplink::GetItemEmbeddings(
    const duet::v1::GetItemEmbeddingsRequest& request, absl::Time deadline) {
  Transmit(request.ByteSizeLong());
  return inner_->GetItemEmbeddings(request, deadline);
}

absl::Status EmulatedUplink::GetEdgeModel(
    const duet::v1::GetEdgeModelRequest& request, absl::Time deadline,
    const EdgeModelChunkFn& on_chunk, CallCanceller* canceller) {
  Transmit(request.ByteSizeLong());
  return inner_->GetEdgeModel(request, deadline, on_chunk, canceller);
}

absl::StatusOr<duet::v1::ModelStatus> EmulatedUplink::GetModelStatus(
    const duet::v1::GetModelStatusRequest& request, absl::Time deadline) {
  Transmit(request.ByteSizeLong());
  return inner_->GetModelStatus(request, deadline);
}

std::string EmulatedUplink::ConnectionState() const {
  return inner_->ConnectionState();
}

}  // namespace duet::edge
