#include "edge/grpc_cloud_client.h"

#include <algorithm>
#include <cstdio>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/mutex.h"
#include "common/base/status_macros.h"
#include "common/rpc/grpc_status.h"
#include "edge/internal/lane_schedule.h"
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

struct GrpcCloudClient::Pending {
  common::Notification done;
  absl::StatusOr<duet::v1::Scores> result;
};

// One ScoringSession stream. The lane's supervisor owns it (and joins its
// reader); queries hold a reference to write on it, which fails once it is
// half-closed or ended. Fields marked "mu_" are guarded by the client's mu_.
struct GrpcCloudClient::Session {
  using Stream = grpc::ClientReaderWriter<duet::v1::SessionRequest,
                                          duet::v1::SessionResponse>;
  using Phase = internal::StreamSchedule::Phase;

  Session(Lane* lane, int64_t number, absl::Time opened, absl::Duration age)
      : lane(lane), number(number), schedule(opened, age) {}

  bool Write(const duet::v1::SessionRequest& request) {
    common::MutexLock lock(&write_mu);
    return writable && stream->Write(request);
  }
  void HalfClose() {
    common::MutexLock lock(&write_mu);
    if (!writable) return;
    writable = false;
    stream->WritesDone();
  }
  void StopWrites() {
    common::MutexLock lock(&write_mu);
    writable = false;
  }

  Lane* const lane;
  const int64_t number;  // 1-based, over all lanes
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream;  // set before the reader starts
  std::thread reader;

  internal::StreamSchedule schedule;                  // mu_
  absl::Time latest_deadline = absl::InfinitePast();  // mu_
  bool answered = false;                              // mu_
  grpc::Status end;                                   // mu_, kEnded
  absl::flat_hash_map<uint64_t, std::shared_ptr<Pending>> pending;  // mu_

  // gRPC allows one writer at a time.
  common::Mutex write_mu;
  bool writable ABSL_GUARDED_BY(write_mu) = false;
};

// A slot holding one stream that takes queries, plus the streams it rotated
// out until they have finished.
struct GrpcCloudClient::Lane {
  Lane(int index, absl::Duration initial_backoff, absl::Duration max_backoff)
      : index(index), reconnect(initial_backoff, max_backoff) {}

  bool Ready() const { return current != nullptr && current->schedule.open(); }

  const int index;
  std::thread supervisor;
  bool wake = false;                               // mu_
  std::shared_ptr<Session> current;                // mu_; null: none yet
  std::vector<std::shared_ptr<Session>> retiring;  // mu_
  internal::ReconnectSchedule reconnect;           // the supervisor's own
};

// One open query on a session stream.
class GrpcCloudClient::Query : public CloudQuery {
 public:
  Query(GrpcCloudClient* client, std::shared_ptr<Session> session, uint64_t id,
        std::shared_ptr<Pending> pending)
      : client_(client),
        session_(std::move(session)),
        id_(id),
        pending_(std::move(pending)) {}

  ~Query() override {
    if (finished_) return;
    // Cancel before Forget: forgetting the last query of a draining stream
    // lets it be half-closed, after which the cancel could not be sent.
    duet::v1::SessionRequest cancel;
    cancel.mutable_cancel()->set_query_id(id_);
    session_->Write(cancel);
    client_->Forget(session_.get(), id_);
  }

  uint64_t id() const override { return id_; }

  absl::Status SendUserVector(const duet::v1::UserVector& vector) override {
    duet::v1::SessionRequest request;
    *request.mutable_user_vector() = vector;
    if (!session_->Write(request)) {
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
  const std::shared_ptr<Session> session_;
  const uint64_t id_;
  std::shared_ptr<Pending> pending_;
  bool finished_ = false;
};

GrpcCloudClient::GrpcCloudClient(
    Options options, std::shared_ptr<grpc::ChannelCredentials> credentials)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock
                                       : common::Clock::Real()) {
  grpc::ChannelArguments args;
  args.SetLoadBalancingPolicyName("round_robin");
  // The channel's own reconnect backoff, aligned with the lanes' (gRPC's
  // default grows to 120 s, far too slow to notice a restarted cloud).
  args.SetInt(
      GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options_.initial_backoff)));
  args.SetInt(
      GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options_.initial_backoff)));
  args.SetInt(
      GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options_.max_backoff)));
  if (options_.keepalive_time > absl::ZeroDuration()) {
    args.SetInt(
        GRPC_ARG_KEEPALIVE_TIME_MS,
        static_cast<int>(absl::ToInt64Milliseconds(options_.keepalive_time)));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                static_cast<int>(
                    absl::ToInt64Milliseconds(options_.keepalive_timeout)));
    // The lanes' streams are calls, but ping even without one, and keep
    // pinging an idle connection: gRPC stops after 2 PINGs without data
    // otherwise, and an idle device is when a silent cloud goes unnoticed.
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  // Relayed rows make Scores large (T_u * d floats per returned item).
  args.SetMaxReceiveMessageSize(256 << 20);
  if (!options_.tls.server_name.empty()) {
    args.SetSslTargetNameOverride(options_.tls.server_name);
  }
  channel_ = grpc::CreateCustomChannel(options_.target, credentials, args);
  stub_ = duet::v1::ScoringService::NewStub(channel_);
  for (int i = 0; i < options_.streams; ++i) {
    lanes_.push_back(std::make_unique<Lane>(i, options_.initial_backoff,
                                            options_.max_backoff));
  }
}

absl::StatusOr<std::unique_ptr<GrpcCloudClient>> GrpcCloudClient::Create(
    Options options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("cloud target is empty");
  }
  if (options.streams < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cloud streams is %d, must be >= 1", options.streams));
  }
  if (options.max_stream_age < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cloud stream max age is ",
                     absl::FormatDuration(options.max_stream_age),
                     ", must be >= 0 (0: never rotate)"));
  }
  if (options.keepalive_time != absl::ZeroDuration() &&
      (options.keepalive_time < absl::Seconds(1) ||
       options.keepalive_timeout <= absl::ZeroDuration())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cloud keepalive time ", absl::FormatDuration(options.keepalive_time),
        " / timeout ", absl::FormatDuration(options.keepalive_timeout),
        ": the time must be 0 (off) or >= 1s, the timeout > 0"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                   common::MakeChannelCredentials(options.tls, nullptr));
  std::unique_ptr<GrpcCloudClient> client(
      new GrpcCloudClient(std::move(options), std::move(credentials)));
  for (auto& lane : client->lanes_) {
    lane->supervisor =
        std::thread([c = client.get(), l = lane.get()] { c->RunLane(l); });
  }
  return client;
}

GrpcCloudClient::~GrpcCloudClient() {
  {
    common::MutexLock lock(&mu_);
    shutdown_ = true;
    for (auto& lane : lanes_) lane->wake = true;
  }
  for (auto& lane : lanes_) lane->supervisor.join();
}

double GrpcCloudClient::Jitter(double low, double high) {
  common::MutexLock lock(&rng_mu_);
  return absl::Uniform(rng_, low, high);
}

void GrpcCloudClient::RunLane(Lane* lane) {
  while (true) {
    const absl::Time wake_at = StepLane(lane);
    common::MutexLock lock(&mu_);
    clock_->AwaitWithDeadline(&mu_, absl::Condition(&lane->wake), wake_at);
    lane->wake = false;
    if (shutdown_) break;
  }
  std::vector<std::shared_ptr<Session>> sessions;
  {
    common::MutexLock lock(&mu_);
    if (lane->current != nullptr) sessions.push_back(std::move(lane->current));
    for (auto& s : lane->retiring) sessions.push_back(std::move(s));
    lane->retiring.clear();
    ReportReadyLocked();
  }
  // The readers fail what is still pending with UNAVAILABLE.
  for (auto& s : sessions) s->context.TryCancel();
  for (auto& s : sessions) s->reader.join();
}

absl::Time GrpcCloudClient::StepLane(Lane* lane) {
  using Phase = Session::Phase;
  using Action = internal::StreamSchedule::Action;
  const absl::Time now = clock_->Now();
  std::shared_ptr<Session> ended;  // the current stream, broken
  std::vector<std::shared_ptr<Session>> half_close, cancel, reap;
  bool rotate = false;
  {
    common::MutexLock lock(&mu_);
    if (shutdown_) return now;
    if (lane->current != nullptr &&
        lane->current->schedule.phase() == Phase::kEnded) {
      ended = std::move(lane->current);
    } else if (lane->current != nullptr &&
               lane->current->schedule.RotationDue(now)) {
      rotate = true;
    }
    for (auto it = lane->retiring.begin(); it != lane->retiring.end();) {
      Session* s = it->get();
      if (s->schedule.phase() == Phase::kEnded) {
        reap.push_back(std::move(*it));
        it = lane->retiring.erase(it);
        continue;
      }
      switch (s->schedule.Step(now, /*idle=*/s->pending.empty())) {
        case Action::kHalfClose:
          half_close.push_back(*it);
          break;
        case Action::kCancel:
          cancel.push_back(*it);
          break;
        case Action::kNone:
          break;
      }
      ++it;
    }
  }
  // The cloud finishes a half-closed stream once it has answered every
  // query on it (cloud/scoring_service_impl.cc).
  for (auto& s : half_close) s->HalfClose();
  for (auto& s : cancel) s->context.TryCancel();
  for (auto& s : reap) {
    s->reader.join();
    if (!s->end.ok() && s->end.error_code() != grpc::StatusCode::CANCELLED) {
      std::fprintf(
          stderr,
          "duet-edge: rotated-out cloud stream %d to %s ended (%s: "
          "%s)\n",
          static_cast<int>(s->number), options_.target.c_str(),
          absl::StatusCodeToString(common::FromGrpcStatus(s->end).code())
              .c_str(),
          s->end.error_message().c_str());
    }
  }
  if (ended != nullptr) {
    ended->reader.join();
    std::fprintf(
        stderr, "duet-edge: cloud session to %s ended (%s: %s)\n",
        options_.target.c_str(),
        absl::StatusCodeToString(common::FromGrpcStatus(ended->end).code())
            .c_str(),
        ended->end.error_message().c_str());
    // A stream that lived a while resets the backoff; a stream that fails at
    // once (e.g. the server rejects it) backs off like a failed connect.
    lane->reconnect.StreamEnded(
        now, ended->schedule.Healthy(now, ended->answered), Jitter(0.5, 1.0));
  }
  bool connect;
  {
    common::MutexLock lock(&mu_);
    connect = lane->current == nullptr && lane->reconnect.Due(now);
  }
  if (connect || rotate) {
    if (channel_->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY) {
      OpenSession(lane);
    } else if (connect) {
      lane->reconnect.ChannelNotReady(now, Jitter(0.5, 1.0));
    } else {
      common::MutexLock lock(&mu_);
      lane->current->schedule.RetryRotation(now);
    }
  }

  common::MutexLock lock(&mu_);
  absl::Time next = lane->current == nullptr
                        ? lane->reconnect.next()
                        : lane->current->schedule.NextEvent();
  for (const auto& s : lane->retiring) {
    next = std::min(next, s->schedule.NextEvent());
  }
  return next;
}

void GrpcCloudClient::OpenSession(Lane* lane) {
  int64_t number;
  {
    common::MutexLock lock(&mu_);
    if (shutdown_) return;
    number = ++sessions_;
    if (options_.on_stream_opened) options_.on_stream_opened();
  }
  auto session = std::make_shared<Session>(
      lane, number, clock_->Now(), options_.max_stream_age * Jitter(0.8, 1.2));
  // Not under mu_: starting the call may block briefly.
  session->stream = stub_->ScoringSession(&session->context);
  {
    common::MutexLock lock(&session->write_mu);
    session->writable = true;
  }
  session->reader = std::thread([this, s = session.get()] { ReadLoop(s); });

  common::MutexLock lock(&mu_);
  std::shared_ptr<Session> old = std::move(lane->current);
  lane->current = std::move(session);
  if (old != nullptr) {
    // Rotation: make (above), then break: the old stream takes no new
    // queries and is half-closed once its queries are done.
    old->schedule.StartDraining(clock_->Now(), old->latest_deadline);
    lane->retiring.push_back(std::move(old));
    lane->wake = true;
  }
  ReportReadyLocked();
}

void GrpcCloudClient::ReadLoop(Session* session) {
  duet::v1::SessionResponse response;
  while (session->stream->Read(&response)) Dispatch(session, &response);
  // No writer can touch the stream after this.
  session->StopWrites();
  const grpc::Status status = session->stream->Finish();
  absl::flat_hash_map<uint64_t, std::shared_ptr<Pending>> failed;
  {
    common::MutexLock lock(&mu_);
    failed.swap(session->pending);
    session->schedule.Ended();
    session->end = status;
    session->lane->wake = true;
    ReportReadyLocked();
  }
  const absl::Status error = absl::UnavailableError(absl::StrCat(
      "the session with the cloud at ", options_.target, " ended: ",
      status.error_message().empty() ? "stream closed"
                                     : status.error_message()));
  for (auto& [id, pending] : failed) {
    pending->result = error;
    pending->done.Notify();
  }
}

void GrpcCloudClient::Dispatch(Session* session,
                               duet::v1::SessionResponse* response) {
  uint64_t id = 0;
  if (response->has_scores()) {
    id = response->scores().query_id();
  } else if (response->has_error()) {
    id = response->error().query_id();
  } else {
    return;
  }
  std::shared_ptr<Pending> pending;
  {
    common::MutexLock lock(&mu_);
    session->answered = true;
    auto it = session->pending.find(id);
    if (it == session->pending.end()) return;  // abandoned (deadline passed)
    pending = std::move(it->second);
    session->pending.erase(it);
    if (session->schedule.phase() == Session::Phase::kDraining &&
        session->pending.empty()) {
      session->lane->wake = true;
    }
  }
  if (response->has_scores()) {
    // Moved, not copied: with relayed rows a Scores message is large (6 KB
    // per returned item for rm2). The next Read overwrites `response`.
    pending->result = std::move(*response->mutable_scores());
  } else {
    absl::Status error(static_cast<absl::StatusCode>(response->error().code()),
                       absl::StrCat("cloud: ", response->error().message()));
    if (response->error().has_target()) {
      SetTargetPayload(response->error().target(), &error);
    }
    pending->result = std::move(error);
  }
  pending->done.Notify();
}

void GrpcCloudClient::Forget(Session* session, uint64_t id) {
  common::MutexLock lock(&mu_);
  if (session->pending.erase(id) > 0 &&
      session->schedule.phase() == Session::Phase::kDraining &&
      session->pending.empty()) {
    session->lane->wake = true;
  }
}

absl::StatusOr<std::unique_ptr<CloudQuery>> GrpcCloudClient::BeginQuery(
    duet::v1::BeginQuery begin, absl::Time deadline) {
  auto pending = std::make_shared<Pending>();
  std::shared_ptr<Session> session;
  uint64_t id = 0;
  {
    common::MutexLock lock(&mu_);
    for (size_t i = 0; i < lanes_.size() && session == nullptr; ++i) {
      const size_t index = (next_lane_ + i) % lanes_.size();
      if (lanes_[index]->Ready()) {
        session = lanes_[index]->current;
        next_lane_ = (index + 1) % lanes_.size();
      }
    }
    if (session != nullptr) {
      id = next_id_++;
      session->pending[id] = pending;
      session->latest_deadline = std::max(session->latest_deadline, deadline);
    }
  }
  if (session == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "not connected to the cloud at ", options_.target, " (",
        ChannelStateName(channel_->GetState(false)), ", none of ",
        lanes_.size(), " streams open); reconnecting in the background"));
  }
  begin.set_query_id(id);
  duet::v1::SessionRequest request;
  *request.mutable_begin() = std::move(begin);
  if (!session->Write(request)) {
    Forget(session.get(), id);
    return absl::UnavailableError(
        absl::StrCat("the session with the cloud at ", options_.target,
                     " broke while starting a query"));
  }
  return std::unique_ptr<CloudQuery>(
      new Query(this, std::move(session), id, std::move(pending)));
}

absl::StatusOr<duet::v1::GetItemEmbeddingsResponse>
GrpcCloudClient::GetItemEmbeddings(
    const duet::v1::GetItemEmbeddingsRequest& request, absl::Time deadline) {
  grpc::ClientContext context;
  context.set_deadline(ToChrono(deadline));
  duet::v1::GetItemEmbeddingsResponse response;
  const grpc::Status status =
      stub_->GetItemEmbeddings(&context, request, &response);
  if (!status.ok()) return CallError("GetItemEmbeddings", status);
  return response;
}

absl::Status GrpcCloudClient::GetEdgeModel(
    const duet::v1::GetEdgeModelRequest& request, absl::Time deadline,
    const EdgeModelChunkFn& on_chunk, CallCanceller* canceller) {
  grpc::ClientContext context;
  context.set_deadline(ToChrono(deadline));
  if (canceller != nullptr &&
      !canceller->Attach([&context] { context.TryCancel(); })) {
    return absl::CancelledError("GetEdgeModel: cancelled");
  }
  std::unique_ptr<grpc::ClientReader<duet::v1::EdgeModelChunk>> reader =
      stub_->GetEdgeModel(&context, request);
  duet::v1::EdgeModelChunk chunk;
  absl::Status result;
  while (reader->Read(&chunk)) {
    if (absl::Status s = on_chunk(chunk); !s.ok()) {
      // Cancelling makes Finish return at once instead of draining the
      // rest of the stream.
      context.TryCancel();
      reader->Finish().IgnoreError();
      result = s;
      break;
    }
  }
  if (result.ok()) {
    const grpc::Status status = reader->Finish();
    if (!status.ok()) result = CallError("GetEdgeModel", status);
  }
  if (canceller != nullptr) canceller->Detach();
  return result;
}

absl::StatusOr<duet::v1::ModelStatus> GrpcCloudClient::GetModelStatus(
    const duet::v1::GetModelStatusRequest& request, absl::Time deadline) {
  grpc::ClientContext context;
  context.set_deadline(ToChrono(deadline));
  duet::v1::ModelStatus response;
  const grpc::Status status =
      stub_->GetModelStatus(&context, request, &response);
  if (!status.ok()) return CallError("GetModelStatus", status);
  return response;
}

absl::Status GrpcCloudClient::CallError(const char* call,
                                        const grpc::Status& status) const {
  const absl::Status s = common::FromGrpcStatus(status);
  return absl::Status(
      s.code(), absl::StrCat(call, " at ", options_.target, ": ", s.message()));
}

bool GrpcCloudClient::AnyLaneReady() const {
  for (const auto& lane : lanes_) {
    if (lane->Ready()) return true;
  }
  return false;
}

int GrpcCloudClient::ReadyStreamsLocked() const {
  int ready = 0;
  for (const auto& lane : lanes_) ready += lane->Ready() ? 1 : 0;
  return ready;
}

void GrpcCloudClient::ReportReadyLocked() {
  const int ready = ReadyStreamsLocked();
  if (ready == reported_ready_) return;
  reported_ready_ = ready;
  if (options_.on_ready_streams) options_.on_ready_streams(ready);
}

std::string GrpcCloudClient::ConnectionState() const {
  {
    common::MutexLock lock(&mu_);
    if (AnyLaneReady()) return "READY";
  }
  const grpc_connectivity_state s = channel_->GetState(false);
  // The channel may be READY a moment before a session stream opens.
  return s == GRPC_CHANNEL_READY ? "CONNECTING" : ChannelStateName(s);
}

bool GrpcCloudClient::WaitUntilReady(absl::Duration timeout) {
  common::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(
      absl::Condition(
          +[](const GrpcCloudClient* self)
               ABSL_NO_THREAD_SAFETY_ANALYSIS { return self->AnyLaneReady(); },
          static_cast<const GrpcCloudClient*>(this)),
      timeout);
}

int GrpcCloudClient::ready_streams() const {
  common::MutexLock lock(&mu_);
  return ReadyStreamsLocked();
}

int64_t GrpcCloudClient::sessions_opened() const {
  common::MutexLock lock(&mu_);
  return sessions_;
}

}  // namespace duet::edge
