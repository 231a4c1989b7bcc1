#include "cloud/scoring_service_impl.h"

#include <chrono>
#include <deque>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cloud/session_multiplexer.h"
#include "common/rpc/grpc_status.h"

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

// One ScoringSession stream. Reads requests one at a time and feeds them to
// its SessionMultiplexer; responses (from any thread) are queued and written
// one at a time. Finishes once the client has half-closed (or the call is
// cancelled), every query has been answered and every write has completed.
class SessionReactor final
    : public grpc::ServerBidiReactor<SessionRequest, SessionResponse> {
 public:
  SessionReactor(ScoringCore* core, grpc::CallbackServerContext* context)
      : mux_(core, Deadline(context),
             [this](SessionResponse r) { Enqueue(std::move(r)); }) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      mux_.OnRequest(request_);
      StartRead(&request_);
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
    }
    MaybeFinish();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) {
        broken_ = true;  // the client is gone: drop what is queued
        queue_.clear();
      }
      if (!queue_.empty()) {
        StartWrite(&queue_.front());
        return;
      }
      writing_ = false;
    }
    MaybeFinish();
  }

  void OnCancel() override { mux_.CancelAll(); }

  void OnDone() override { delete this; }

 private:
  void Enqueue(SessionResponse response) {
    absl::MutexLock lock(&mu_);
    if (broken_ || finished_) return;
    queue_.push_back(std::move(response));
    if (!writing_) {
      writing_ = true;
      StartWrite(&queue_.front());
    }
  }

  void MaybeFinish() {
    // Read the query count first (the multiplexer queues a query's response
    // before the count drops), then the write state.
    const int open = mux_.open_queries();
    absl::MutexLock lock(&mu_);
    if (finished_ || !reads_done_ || open > 0 || writing_ || !queue_.empty()) {
      return;
    }
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  SessionRequest request_;
  SessionMultiplexer mux_;
  absl::Mutex mu_;
  std::deque<SessionResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerBidiReactor<SessionRequest, SessionResponse>*
ScoringServiceImpl::ScoringSession(grpc::CallbackServerContext* context) {
  return new SessionReactor(core_, context);
}

grpc::ServerUnaryReactor* ScoringServiceImpl::Score(
    grpc::CallbackServerContext* context, const duet::v1::ScoreRequest* request,
    duet::v1::ScoreResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // Check the user vector before any item-side work is spent on the query.
  if (absl::Status s = core_->ValidateUserVector(request->user_vector());
      !s.ok()) {
    core_->metrics().CountQuery(Rpc::kScore, s.code());
    reactor->Finish(common::ToGrpcStatus(s));
    return reactor;
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
      [reactor, response](absl::StatusOr<duet::v1::Scores> result) {
        if (!result.ok()) {
          reactor->Finish(common::ToGrpcStatus(result.status()));
          return;
        }
        response->mutable_items()->Swap(result->mutable_items());
        response->mutable_timings()->Swap(result->mutable_timings());
        response->mutable_relay()->Swap(result->mutable_relay());
        reactor->Finish(grpc::Status::OK);
      });
  if (!query.ok()) {
    reactor->Finish(common::ToGrpcStatus(query.status()));
    return reactor;
  }
  core_->ProvideUserVector(*query, request->user_vector());
  return reactor;
}

grpc::ServerUnaryReactor* ScoringServiceImpl::MonolithicScore(
    grpc::CallbackServerContext* context,
    const duet::v1::MonolithicScoreRequest* request,
    duet::v1::ScoreResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  core_->MonolithicScore(
      *request, Deadline(context),
      [reactor, response](absl::StatusOr<duet::v1::ScoreResponse> result) {
        if (result.ok()) response->Swap(&*result);
        reactor->Finish(common::ToGrpcStatus(result.status()));
      });
  return reactor;
}

grpc::ServerUnaryReactor* ScoringServiceImpl::GetItemEmbeddings(
    grpc::CallbackServerContext* context,
    const duet::v1::GetItemEmbeddingsRequest* request,
    duet::v1::GetItemEmbeddingsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  core_->GetItemEmbeddings(
      *request, Deadline(context),
      [reactor,
       response](absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> result) {
        if (result.ok()) response->Swap(&*result);
        reactor->Finish(common::ToGrpcStatus(result.status()));
      });
  return reactor;
}

}  // namespace duet::cloud
