#include "cloud/session_multiplexer.h"

#include <utility>
#include <vector>

#include "absl/strings/str_format.h"

namespace duet::cloud {

SessionMultiplexer::~SessionMultiplexer() { CancelAll(); }

void SessionMultiplexer::EmitError(
    uint64_t query_id, const absl::Status& status,
    const std::optional<duet::v1::ModelTarget>& target) {
  duet::v1::SessionResponse response;
  duet::v1::QueryError* error = response.mutable_error();
  error->set_query_id(query_id);
  error->set_code(static_cast<int32_t>(status.code()));
  error->set_message(std::string(status.message()));
  if (target.has_value()) *error->mutable_target() = *target;
  emit_(std::move(response));
}

std::shared_ptr<ScoringCore::Query> SessionMultiplexer::Find(
    uint64_t id) const {
  common::MutexLock lock(&mu_);
  auto it = open_.find(id);
  return it == open_.end() ? nullptr : it->second;
}

void SessionMultiplexer::OnRequest(const duet::v1::SessionRequest& request) {
  switch (request.kind_case()) {
    case duet::v1::SessionRequest::kBegin:
      return OnBegin(request.begin());
    case duet::v1::SessionRequest::kUserVector:
      return OnUserVector(request.user_vector());
    case duet::v1::SessionRequest::kCancel:
      return OnCancel(request.cancel());
    case duet::v1::SessionRequest::KIND_NOT_SET:
      break;
  }
  common::MutexLock lock(&mu_);
  EmitError(0, absl::InvalidArgumentError(
                   "SessionRequest has none of begin, user_vector, cancel"));
}

void SessionMultiplexer::OnBegin(const duet::v1::BeginQuery& begin) {
  const uint64_t id = begin.query_id();
  // Held across Begin so the query's completion (which takes mu_) cannot
  // run before it is registered; Begin never calls `done` synchronously.
  common::MutexLock lock(&mu_);
  if (open_.contains(id)) {
    EmitError(id, absl::InvalidArgumentError(absl::StrFormat(
                      "query_id %d is already open on this stream; query ids "
                      "must be unique among open queries",
                      id)));
    return;
  }
  auto query =
      core_->Begin(begin, deadline_, Rpc::kScoringSession,
                   [this, id, device = begin.device_id()](
                       absl::StatusOr<duet::v1::Scores> result) {
                     // The device's target rides on every answer (a release in
                     // progress).
                     const std::optional<duet::v1::ModelTarget> target =
                         core_->TargetFor(device);
                     common::MutexLock lock(&mu_);
                     open_.erase(id);
                     if (!result.ok()) {
                       EmitError(id, result.status(), target);
                       return;
                     }
                     duet::v1::SessionResponse response;
                     *response.mutable_scores() = std::move(*result);
                     if (target.has_value())
                       *response.mutable_scores()->mutable_target() = *target;
                     emit_(std::move(response));
                   });
  if (!query.ok()) {
    EmitError(id, query.status(), core_->TargetFor(begin.device_id()));
    return;
  }
  open_.emplace(id, *std::move(query));
}

void SessionMultiplexer::OnUserVector(const duet::v1::UserVector& uv) {
  std::shared_ptr<ScoringCore::Query> query = Find(uv.query_id());
  if (query == nullptr) {
    common::MutexLock lock(&mu_);
    EmitError(uv.query_id(),
              absl::NotFoundError(absl::StrFormat(
                  "user vector for query_id %d, which is not open on this "
                  "stream (never begun, already finished or expired)",
                  uv.query_id())));
    return;
  }
  core_->ProvideUserVector(query, uv);
}

void SessionMultiplexer::OnCancel(const duet::v1::CancelQuery& cancel) {
  // Unknown ids are ignored: the query may have just finished.
  if (auto query = Find(cancel.query_id())) core_->Cancel(query);
}

void SessionMultiplexer::CancelAll() {
  std::vector<std::shared_ptr<ScoringCore::Query>> open;
  {
    common::MutexLock lock(&mu_);
    for (auto& [id, q] : open_) open.push_back(q);
  }
  for (auto& q : open) core_->Cancel(q);
}

int SessionMultiplexer::open_queries() const {
  common::MutexLock lock(&mu_);
  return static_cast<int>(open_.size());
}

}  // namespace duet::cloud
