#include "edge/cloud_session.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "edge/status_conversion.h"
#include "grpc/grpc.h"

namespace duet::edge {
namespace {

const char* ChannelStateName(grpc_connectivity_state s) {
  switch (s) {
    case GRPC_CHANNEL_IDLE:
      return "IDLE";
    case GRPC_CHANNEL_CONNECTING:
      return "CONNECTING";
    case GRPC_CHANNEL_READY:
      return "READY";
    case GRPC_CHANNEL_TRANSIENT_FAILURE:
      return "TRANSIENT_FAILURE";
    case GRPC_CHANNEL_SHUTDOWN:
      return "SHUTDOWN";
  }
  return "UNKNOWN";
}

std::chrono::system_clock::time_point ToChrono(absl::Time t) {
  return absl::ToChronoTime(t);
}

}  // namespace

// One open query on the session stream.
class GrpcCloudClient::Query : public CloudQuery {
 public:
  Query(GrpcCloudClient* client, uint64_t id, uint64_t generation,
        std::shared_ptr<Pending> pending)
      : client_(client),
        id_(id),
        generation_(generation),
        pending_(std::move(pending)) {}

  ~Query() override {
    if (finished_) return;
    client_->Forget(id_);
    duet::v1::SessionRequest cancel;
    cancel.mutable_cancel()->set_query_id(id_);
    client_->Write(generation_, cancel);
  }

  uint64_t id() const override { return id_; }

  absl::Status SendUserVector(const duet::v1::UserVector& vector) override {
    duet::v1::SessionRequest request;
    *request.mutable_user_vector() = vector;
    client_->EmulateUplink(request.ByteSizeLong());
    if (!client_->Write(generation_, request)) {
      return absl::UnavailableError(absl::StrCat(
          "the session with the cloud at ", client_->options_.target,
          " broke before the user vector of query ", id_, " was sent"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<duet::v1::Scores> Await(absl::Time deadline) override {
    if (!pending_->done.WaitForNotificationWithDeadline(deadline)) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "no scores from the cloud at %s for query %d within the deadline",
          client_->options_.target, id_));
    }
    finished_ = true;
    return std::move(pending_->result);
  }

 private:
  GrpcCloudClient* const client_;
  const uint64_t id_;
  const uint64_t generation_;
  std::shared_ptr<Pending> pending_;
  bool finished_ = false;
};

GrpcCloudClient::GrpcCloudClient(const Options& options) : options_(options) {
  grpc::ChannelArguments args;
  args.SetLoadBalancingPolicyName("round_robin");
  // The channel's own reconnect backoff, aligned with the session's (gRPC's
  // default grows to 120 s, far too slow to notice a restarted cloud).
  args.SetInt(
      GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options.initial_backoff)));
  args.SetInt(
      GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options.initial_backoff)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.max_backoff)));
  // Relayed rows make Scores large (T_u * d floats per returned item).
  args.SetMaxReceiveMessageSize(256 << 20);
  channel_ = grpc::CreateCustomChannel(
      options.target, grpc::InsecureChannelCredentials(), args);
  stub_ = duet::v1::ScoringService::NewStub(channel_);
}

absl::StatusOr<std::unique_ptr<GrpcCloudClient>> GrpcCloudClient::Create(
    const Options& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("cloud target is empty");
  }
  if (options.uplink_mbps < 0 || options.uplink_rtt < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "uplink_mbps (%g) and uplink_rtt (%s) must not be negative",
        options.uplink_mbps, absl::FormatDuration(options.uplink_rtt)));
  }
  std::unique_ptr<GrpcCloudClient> client(new GrpcCloudClient(options));
  client->session_thread_ =
      std::thread([c = client.get()] { c->SessionLoop(); });
  return client;
}

GrpcCloudClient::~GrpcCloudClient() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  session_thread_.join();
}

absl::Duration GrpcCloudClient::Jittered(absl::Duration d) {
  absl::MutexLock lock(&link_mu_);
  // Full range [d/2, d): spreads reconnect storms of many edges.
  return d / 2 + absl::Uniform(rng_, 0.0, 0.5) * d;
}

void GrpcCloudClient::SessionLoop() {
  absl::Duration backoff = options_.initial_backoff;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
    }
    // Connect (the channel retries on its own; wake up regularly to notice
    // shutdown).
    if (!channel_->WaitForConnected(
            ToChrono(absl::Now() + std::min(backoff, absl::Seconds(1))))) {
      absl::MutexLock lock(&mu_);
      const absl::Duration wait = Jittered(backoff);
      backoff = std::min(backoff * 2, options_.max_backoff);
      mu_.AwaitWithTimeout(absl::Condition(&shutdown_), wait);
      continue;
    }
    grpc::ClientContext context;
    std::unique_ptr<Stream> stream;
    int64_t sessions;
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return;
      context_ = &context;
      stream = stub_->ScoringSession(&context);
      stream_ = stream.get();
      sessions = ++sessions_;
      // Lock order: mu_ before write_mu_ (Write takes only write_mu_).
      absl::MutexLock write_lock(&write_mu_);
      writable_ = stream.get();
      writable_generation_ = sessions;
    }
    const absl::Time opened = absl::Now();
    duet::v1::SessionResponse response;
    while (stream->Read(&response)) {
      backoff = options_.initial_backoff;
      Dispatch(response);
    }
    {
      absl::MutexLock lock(&mu_);
      stream_ = nullptr;
    }
    {
      // No writer can touch the stream after this.
      absl::MutexLock lock(&write_mu_);
      writable_ = nullptr;
    }
    const grpc::Status status = stream->Finish();
    bool shutdown;
    {
      absl::MutexLock lock(&mu_);
      context_ = nullptr;
      shutdown = shutdown_;
    }
    FailAllPending(absl::UnavailableError(absl::StrCat(
        "the session with the cloud at ", options_.target, " ended: ",
        status.error_message().empty() ? "stream closed"
                                       : status.error_message())));
    if (shutdown) return;
    std::fprintf(
        stderr, "duet-edge: cloud session to %s ended (%s: %s)\n",
        options_.target.c_str(),
        absl::StatusCodeToString(FromGrpcStatus(status).code()).c_str(),
        status.error_message().c_str());
    // A stream that lived a while resets the backoff; a stream that fails at
    // once (e.g. the server rejects it) backs off like a failed connect.
    if (absl::Now() - opened > absl::Seconds(1)) {
      backoff = options_.initial_backoff;
    }
    absl::MutexLock lock(&mu_);
    const absl::Duration wait = Jittered(backoff);
    backoff = std::min(backoff * 2, options_.max_backoff);
    mu_.AwaitWithTimeout(absl::Condition(&shutdown_), wait);
  }
}

void GrpcCloudClient::Dispatch(const duet::v1::SessionResponse& response) {
  uint64_t id = 0;
  if (response.has_scores()) {
    id = response.scores().query_id();
  } else if (response.has_error()) {
    id = response.error().query_id();
  } else {
    return;
  }
  std::shared_ptr<Pending> pending;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // abandoned (deadline passed)
    pending = std::move(it->second);
    pending_.erase(it);
  }
  if (response.has_scores()) {
    pending->result = response.scores();
  } else {
    pending->result =
        absl::Status(static_cast<absl::StatusCode>(response.error().code()),
                     absl::StrCat("cloud: ", response.error().message()));
  }
  pending->done.Notify();
}

void GrpcCloudClient::FailAllPending(const absl::Status& status) {
  absl::flat_hash_map<uint64_t, std::shared_ptr<Pending>> failed;
  {
    absl::MutexLock lock(&mu_);
    failed.swap(pending_);
  }
  for (auto& [id, pending] : failed) {
    pending->result = status;
    pending->done.Notify();
  }
}

void GrpcCloudClient::Forget(uint64_t id) {
  absl::MutexLock lock(&mu_);
  pending_.erase(id);
}

bool GrpcCloudClient::Write(uint64_t generation,
                            const duet::v1::SessionRequest& request) {
  absl::MutexLock lock(&write_mu_);
  if (writable_ == nullptr || generation != writable_generation_) {
    return false;
  }
  return writable_->Write(request);
}

void GrpcCloudClient::EmulateUplink(size_t bytes) {
  if (options_.uplink_mbps <= 0 &&
      options_.uplink_rtt <= absl::ZeroDuration()) {
    return;
  }
  absl::Time deliver;
  {
    absl::MutexLock lock(&link_mu_);
    const absl::Time now = absl::Now();
    const absl::Duration transmit =
        options_.uplink_mbps > 0
            ? absl::Seconds(bytes * 8.0 / (options_.uplink_mbps * 1e6))
            : absl::ZeroDuration();
    link_free_at_ = std::max(now, link_free_at_) + transmit;
    deliver = link_free_at_ + options_.uplink_rtt / 2;
  }
  absl::SleepFor(deliver - absl::Now());
}

absl::StatusOr<std::unique_ptr<CloudQuery>> GrpcCloudClient::BeginQuery(
    duet::v1::BeginQuery begin, absl::Time deadline) {
  auto pending = std::make_shared<Pending>();
  uint64_t generation;
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    if (stream_ == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("not connected to the cloud at ", options_.target, " (",
                       ChannelStateName(channel_->GetState(false)),
                       "); reconnecting in the background"));
    }
    generation = sessions_;
    id = next_id_++;
    pending_[id] = pending;
  }
  begin.set_query_id(id);
  duet::v1::SessionRequest request;
  *request.mutable_begin() = std::move(begin);
  EmulateUplink(request.ByteSizeLong());
  if (absl::Now() >= deadline) {
    Forget(id);
    return absl::DeadlineExceededError(
        "the deadline passed on the emulated uplink");
  }
  if (!Write(generation, request)) {
    Forget(id);
    return absl::UnavailableError(
        absl::StrCat("the session with the cloud at ", options_.target,
                     " broke while starting a query"));
  }
  return std::unique_ptr<CloudQuery>(
      new Query(this, id, generation, std::move(pending)));
}

absl::StatusOr<duet::v1::GetItemEmbeddingsResponse>
GrpcCloudClient::GetItemEmbeddings(const std::vector<int64_t>& item_ids,
                                   absl::Time deadline) {
  duet::v1::GetItemEmbeddingsRequest request;
  request.mutable_item_ids()->Assign(item_ids.begin(), item_ids.end());
  EmulateUplink(request.ByteSizeLong());
  grpc::ClientContext context;
  context.set_deadline(ToChrono(deadline));
  duet::v1::GetItemEmbeddingsResponse response;
  const grpc::Status status =
      stub_->GetItemEmbeddings(&context, request, &response);
  if (!status.ok()) {
    const absl::Status s = FromGrpcStatus(status);
    return absl::Status(
        s.code(), absl::StrCat("GetItemEmbeddings at ", options_.target, ": ",
                               s.message()));
  }
  return response;
}

std::string GrpcCloudClient::ConnectionState() const {
  absl::MutexLock lock(&mu_);
  if (stream_ != nullptr) return "READY";
  const grpc_connectivity_state s = channel_->GetState(false);
  // The channel may be READY a moment before the session stream opens.
  return s == GRPC_CHANNEL_READY ? "CONNECTING" : ChannelStateName(s);
}

bool GrpcCloudClient::WaitUntilReady(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  struct Arg {
    GrpcCloudClient* self;
  } arg{this};
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                    return a->self->stream_ != nullptr;
                                  },
                                  &arg),
                              timeout);
}

int64_t GrpcCloudClient::sessions_opened() const {
  absl::MutexLock lock(&mu_);
  return sessions_;
}

}  // namespace duet::edge
