#include "cloud/scoring_service_impl.h"

#include <chrono>
#include <deque>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "cloud/session_multiplexer.h"
#include "common/base/mutex.h"
#include "common/rpc/grpc_status.h"
#include "common/rpc/message_bytes.h"

namespace duet::cloud {
namespace {

using duet::v1::SessionRequest;
using duet::v1::SessionResponse;

absl::Time Deadline(const grpc::CallbackServerContext* context) {
  const auto d = context->deadline();
  if (d == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

// One ScoringSession stream. Reads requests one at a time, parses each and
// feeds it to its SessionMultiplexer; responses (from any thread) are
// serialized, queued and written one at a time. Finishes once the client has
// half-closed (or the call is cancelled), every query has been answered and
// every write has completed. A message that does not parse ends the stream
// INVALID_ARGUMENT (its open queries cancelled), never OK.
class SessionReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  SessionReactor(ScoringCore* core, grpc::CallbackServerContext* context)
      : core_(core), mux_(core, Deadline(context), [this](SessionResponse r) {
          Enqueue(std::move(r));
        }) {
    common::tsan::Release(this);
    StartRead(&request_bytes_);
  }

  // Each callback starts with Acquire and each operation handed to gRPC is
  // preceded by Release: the hand-offs through gRPC's (uninstrumented)
  // completion queues, told to TSan (common/base/mutex.h).
  void OnReadDone(bool ok) override {
    common::tsan::Acquire(this);
    grpc::Status end;  // OK: the client half-closed (or the call ended)
    if (ok) {
      end = common::ParseMessage(request_bytes_, &request_);
      if (end.ok()) {
        mux_.OnRequest(request_);
        common::tsan::Release(this);
        StartRead(&request_bytes_);
        return;
      }
      core_->metrics().CountQuery(Rpc::kScoringSession,
                                  absl::StatusCode::kInvalidArgument);
      mux_.CancelAll();
    }
    {
      common::MutexLock lock(&mu_);
      reads_done_ = true;
      if (!end.ok()) end_status_ = std::move(end);
    }
    MaybeFinish();
  }

  void OnWriteDone(bool ok) override {
    common::tsan::Acquire(this);
    {
      common::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) {
        broken_ = true;  // the client is gone: drop what is queued
        queue_.clear();
      }
      if (!queue_.empty()) {
        common::tsan::Release(this);
        StartWrite(&queue_.front());
        return;
      }
      writing_ = false;
    }
    MaybeFinish();
  }

  void OnCancel() override {
    common::tsan::Acquire(this);
    mux_.CancelAll();
    common::tsan::Release(this);
  }

  void OnDone() override {
    common::tsan::Acquire(this);
    delete this;
  }

 private:
  void Enqueue(SessionResponse response) {
    grpc::ByteBuffer bytes;
    const grpc::Status serialized = common::SerializeMessage(response, &bytes);
    common::MutexLock lock(&mu_);
    if (broken_ || finished_) return;
    if (!serialized.ok()) {  // cannot happen for a message we built
      end_status_ = serialized;
      return;
    }
    queue_.push_back(std::move(bytes));
    if (!writing_) {
      writing_ = true;
      common::tsan::Release(this);
      StartWrite(&queue_.front());
    }
  }

  void MaybeFinish() {
    // Read the query count first (the multiplexer queues a query's response
    // before the count drops), then the write state.
    const int open = mux_.open_queries();
    bool finish = false;
    grpc::Status end;
    {
      common::MutexLock lock(&mu_);
      if (!finished_ && reads_done_ && open == 0 && !writing_ &&
          queue_.empty()) {
        finished_ = finish = true;
        end = end_status_;
      }
    }
    // The callback's last access: OnDone (another thread) follows it.
    common::tsan::Release(this);
    // Not under mu_: once finished, gRPC may run OnDone, which deletes this
    // (mu_ with it), on another thread before Finish returns (TSan found the
    // unlock after the delete).
    if (finish) Finish(end);
  }

  ScoringCore* const core_;
  grpc::ByteBuffer request_bytes_;
  SessionRequest request_;
  SessionMultiplexer mux_;
  common::Mutex mu_;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);  // OK unless a message failed
  std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
ScoringServiceImpl::ScoringSession(grpc::CallbackServerContext* context) {
  return new SessionReactor(core_, context);
}

grpc::ServerUnaryReactor* ScoringServiceImpl::Score(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes,
    grpc::ByteBuffer* out) {
  auto* call =
      new common::UnaryCall<duet::v1::ScoreRequest, duet::v1::ScoreResponse>(
          bytes, out);
  if (!Parsed(Rpc::kScore, *call)) return call->HandOff();
  const duet::v1::ScoreRequest* request = &call->request();
  duet::v1::ScoreResponse* response = call->response();
  // Check the user vector before any item-side work is spent on the query.
  if (absl::Status s = core_->ValidateUserVector(request->user_vector());
      !s.ok()) {
    core_->metrics().CountQuery(Rpc::kScore, s.code());
    call->Reply(common::ToGrpcStatus(s));
    return call->HandOff();
  }
  ScoringCore::QuerySpec spec;
  spec.candidates = request->candidate_ids();
  spec.top_k = request->top_k();
  spec.relay_top = request->relay_top();
  spec.model_version = request->user_vector().model_version();
  spec.model_fingerprint = request->user_vector().model_fingerprint();
  if (std::optional<duet::v1::ModelTarget> target =
          core_->TargetFor(request->device_id())) {
    *response->mutable_target() = *target;
  }
  auto query = core_->Begin(
      spec, Deadline(context), Rpc::kScore,
      [call, response](absl::StatusOr<duet::v1::Scores> result) {
        if (!result.ok()) {
          call->Reply(common::ToGrpcStatus(result.status()));
          return;
        }
        response->mutable_items()->Swap(result->mutable_items());
        response->mutable_timings()->Swap(result->mutable_timings());
        response->mutable_relay()->Swap(result->mutable_relay());
        call->Reply(grpc::Status::OK);
      });
  if (!query.ok()) {
    call->Reply(common::ToGrpcStatus(query.status()));
    return call->HandOff();
  }
  core_->ProvideUserVector(*query, request->user_vector());
  return call->HandOff();
}

grpc::ServerUnaryReactor* ScoringServiceImpl::MonolithicScore(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes,
    grpc::ByteBuffer* out) {
  auto* call = new common::UnaryCall<duet::v1::MonolithicScoreRequest,
                                     duet::v1::ScoreResponse>(bytes, out);
  if (!Parsed(Rpc::kMonolithicScore, *call)) return call->HandOff();
  core_->MonolithicScore(
      call->request(), Deadline(context),
      [call](absl::StatusOr<duet::v1::ScoreResponse> result) {
        call->ReplyWith(std::move(result));
      });
  return call->HandOff();
}

grpc::ServerUnaryReactor* ScoringServiceImpl::GetItemEmbeddings(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes,
    grpc::ByteBuffer* out) {
  auto* call =
      new common::UnaryCall<duet::v1::GetItemEmbeddingsRequest,
                            duet::v1::GetItemEmbeddingsResponse>(bytes, out);
  if (!Parsed(Rpc::kGetItemEmbeddings, *call)) return call->HandOff();
  core_->GetItemEmbeddings(
      call->request(), Deadline(context),
      [call](absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> result) {
        call->ReplyWith(std::move(result));
      });
  return call->HandOff();
}

}  // namespace duet::cloud
