#include "edge/history_rebuilder.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"

namespace duet::edge {

HistoryRebuilder::HistoryRebuilder(const UserModel* user_model,
                                   CloudClient* cloud, UserState* state,
                                   StateStore* store, Options options)
    : user_model_(user_model),
      cloud_(cloud),
      state_(state),
      store_(store),
      options_(std::move(options)),
      items_(state->history_items()) {}

HistoryRebuilder::~HistoryRebuilder() { Stop(); }

void HistoryRebuilder::Start() {
  {
    common::MutexLock lock(&mu_);
    if (done_) return;
    stop_ = false;
  }
  thread_ = std::thread([this] { Run(); });
}

void HistoryRebuilder::Stop() {
  {
    common::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

absl::Status HistoryRebuilder::status() const {
  common::MutexLock lock(&mu_);
  if (done_) return absl::OkStatus();
  return absl::UnavailableError(absl::StrFormat(
      "the edge is rebuilding its history for model %s (%d items, attempt "
      "%d%s); it serves once the rows are fetched from the cloud",
      common::ModelLabel(user_model_->model().config()), items_.size(),
      report_.attempts,
      last_error_.empty() ? "" : absl::StrCat("; last error: ", last_error_)));
}

bool HistoryRebuilder::WaitUntilDone(absl::Duration timeout) const {
  common::MutexLock lock(&mu_);
  auto done = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return done_; };
  return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
}

HistoryRebuilder::Report HistoryRebuilder::report() const {
  common::MutexLock lock(&mu_);
  return report_;
}

void HistoryRebuilder::Run() {
  const absl::Time start = absl::Now();
  absl::Duration backoff = options_.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    Report pass;
    {
      common::MutexLock lock(&mu_);
      if (stop_) return;
      report_.attempts = attempt;
    }
    const absl::Time pass_start = absl::Now();
    const absl::Status s = Attempt(&pass);
    common::MutexLock lock(&mu_);
    if (s.ok()) {
      pass.attempts = attempt;
      pass.duration = absl::Now() - start;
      pass.pass_duration = absl::Now() - pass_start;
      report_ = pass;
      break;
    }
    last_error_ = s.ToString();
    std::fprintf(stderr,
                 "duet-edge: history rebuild attempt %d failed (retrying in "
                 "%s): %s\n",
                 attempt, absl::FormatDuration(backoff).c_str(),
                 last_error_.c_str());
    auto stopped = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&stopped), backoff)) return;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  const Report r = report();
  std::fprintf(stderr,
               "duet-edge: rebuilt the scratchpad of %d history items at "
               "model %s: %d GetItemEmbeddings calls, %lld bytes; %s (the "
               "successful pass: fetch, rebuild, persist), %s since "
               "start (%d attempts)\n",
               r.items,
               common::ModelLabel(user_model_->model().config()).c_str(),
               r.calls, static_cast<long long>(r.bytes),
               absl::FormatDuration(r.pass_duration).c_str(),
               absl::FormatDuration(r.duration).c_str(), r.attempts);
  if (options_.on_done) options_.on_done();
  common::MutexLock lock(&mu_);
  done_ = true;
}

absl::Status HistoryRebuilder::Attempt(Report* report) {
  report->items = static_cast<int>(items_.size());
  std::vector<std::vector<float>> rows(items_.size());
  const int batch = std::max(1, options_.batch_items);
  for (size_t begin = 0; begin < items_.size(); begin += batch) {
    {
      common::MutexLock lock(&mu_);
      if (stop_) return absl::CancelledError("the edge is shutting down");
    }
    // A batch holds distinct ids (an item may recur in a history).
    const size_t end = std::min(items_.size(), begin + batch);
    std::vector<int64_t> ids(items_.begin() + begin, items_.begin() + end);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    duet::v1::GetItemEmbeddingsRequest get;
    get.mutable_item_ids()->Assign(ids.begin(), ids.end());
    get.set_model_version(user_model_->model().config().version());
    get.set_model_fingerprint(user_model_->model().fingerprint());
    ASSIGN_OR_RETURN(
        duet::v1::GetItemEmbeddingsResponse fetched,
        cloud_->GetItemEmbeddings(get, absl::Now() + options_.call_timeout));
    ++report->calls;
    report->bytes += static_cast<int64_t>(fetched.ByteSizeLong());
    // A cloud still on the old model (or already on a newer one) answers
    // with rows of that model: retried until it serves this edge's.
    RETURN_IF_ERROR(
        state_->CheckRowsModel(fetched, /*allow_unreported=*/false));
    for (const duet::v1::ItemEmbeddings& item : fetched.items()) {
      for (size_t i = begin; i < end; ++i) {
        if (items_[i] == item.item_id()) {
          rows[i].assign(item.rows().begin(), item.rows().end());
        }
      }
    }
    for (size_t i = begin; i < end; ++i) {
      if (rows[i].empty()) {
        return absl::InternalError(absl::StrFormat(
            "GetItemEmbeddings returned no rows for history item %d",
            items_[i]));
      }
    }
  }
  const absl::Status rebuilt = state_->RebuildScratchpad(rows);
  if (!rebuilt.ok()) {
    return absl::InternalError(
        absl::StrCat("the cloud sent bad rows: ", rebuilt.message()));
  }
  return store_->Compact(state_->Export());
}

}  // namespace duet::edge
