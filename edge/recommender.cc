#include "edge/recommender.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"
#include "common/model/request_checks.h"

namespace duet::edge {
namespace {

int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

}  // namespace

Recommender::Recommender(const UserModel* user_model, CloudClient* cloud,
                         UserState* state, Hooks hooks, const Options& options)
    : user_model_(user_model),
      model_(user_model->model()),
      cloud_(cloud),
      state_(state),
      hooks_(hooks),
      options_(options),
      relay_cache_(options.relay_cache_items) {}

absl::Status Recommender::ValidateRecommend(
    const duet::v1::RecommendRequest& request) const {
  const int expected = model_.dims().dynamic_in;
  if (request.context_features_size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrFormat("context_features has %d values, model %s expects %d",
                        request.context_features_size(),
                        common::ModelLabel(model_.config()), expected));
  }
  RETURN_IF_ERROR(CheckFinite(request.context_features(), "context_features"));
  RETURN_IF_ERROR(common::ValidateItemIds(
      model_.catalog(), request.candidate_ids(), options_.max_candidates));
  RETURN_IF_ERROR(
      common::ValidateTopK(request.top_k(), request.candidate_ids_size()));
  return absl::OkStatus();
}

absl::StatusOr<duet::v1::RecommendResponse> Recommender::Recommend(
    const duet::v1::RecommendRequest& request, absl::Time deadline) {
  EdgeMetrics* m = hooks_.metrics;
  if (m != nullptr) m->inflight().Increment();
  absl::StatusOr<duet::v1::RecommendResponse> result =
      RecommendImpl(request, deadline);
  if (m != nullptr) {
    m->inflight().Decrement();
    m->CountQuery(result.status().code());
  }
  return result;
}

absl::StatusOr<duet::v1::RecommendResponse> Recommender::RecommendImpl(
    const duet::v1::RecommendRequest& request, absl::Time deadline) {
  const absl::Time start = absl::Now();
  RETURN_IF_ERROR(Serving());
  RETURN_IF_ERROR(ValidateRecommend(request));
  if (start >= deadline) {
    return absl::DeadlineExceededError("the deadline passed before the query");
  }

  // BeginQuery first: the cloud gathers and runs the item side while the
  // user model runs here.
  duet::v1::BeginQuery begin;
  begin.mutable_candidate_ids()->CopyFrom(request.candidate_ids());
  begin.set_top_k(request.top_k());
  begin.set_timeout_us(std::max<int64_t>(1, Micros(deadline - start)));
  // The rows of the best min(top_k, relay cache) items come back with the
  // answer: an interaction on what the user saw first needs no round trip.
  begin.set_relay_top(std::min(request.top_k(), options_.relay_cache_items));
  begin.set_model_version(model_.config().version());
  begin.set_model_fingerprint(model_.fingerprint());
  begin.set_device_id(options_.device_id);
  const absl::Time cloud_start = absl::Now();
  absl::StatusOr<std::unique_ptr<CloudQuery>> begun =
      cloud_->BeginQuery(begin, deadline);
  if (!begun.ok()) return ReportRefusal(begun.status());
  std::unique_ptr<CloudQuery> query = *std::move(begun);
  begin.set_query_id(query->id());

  // Per-thread output buffers: the user model allocates nothing per query.
  thread_local UserModel::Output out;
  thread_local duet::v1::UserVector vector;
  const absl::Time model_start = absl::Now();
  const double cpu_start = ThreadCpuSeconds();
  RETURN_IF_ERROR(state_->ComputeUserVector(
      *user_model_, request.context_features().data(), &out));
  user_model_->ToProto(out, query->id(), &vector);
  const double cpu_seconds = ThreadCpuSeconds() - cpu_start;
  const absl::Duration user_model_time = absl::Now() - model_start;
  RETURN_IF_ERROR(query->SendUserVector(vector));

  absl::StatusOr<duet::v1::Scores> awaited = query->Await(deadline);
  if (!awaited.ok()) return ReportRefusal(awaited.status());
  duet::v1::Scores scores = *std::move(awaited);
  const absl::Time end = absl::Now();
  if (scores.has_target() && hooks_.on_target)
    hooks_.on_target(scores.target());
  // Sized before the items move into the response, and only when counted
  // (a Scores with relayed rows is several KB to walk).
  const int64_t downlink = hooks_.metrics != nullptr
                               ? static_cast<int64_t>(scores.ByteSizeLong())
                               : 0;
  // Worst first, so the best item is the most recently used entry: it
  // outlives the others when later answers fill the cache.
  for (int i = scores.relay_size() - 1; i >= 0; --i) {
    const duet::v1::ItemEmbeddings& relayed = scores.relay(i);
    if (static_cast<int>(relayed.rows_size()) == model_.dims().pooled) {
      relay_cache_.Put(
          relayed.item_id(),
          std::vector<float>(relayed.rows().begin(), relayed.rows().end()));
    }
  }

  const int64_t uplink =
      static_cast<int64_t>(begin.ByteSizeLong() + vector.ByteSizeLong());
  duet::v1::RecommendResponse response;
  response.set_query_id(query->id());
  response.mutable_items()->Swap(scores.mutable_items());
  duet::v1::EdgeTimings* t = response.mutable_timings();
  t->set_user_model_us(Micros(user_model_time));
  t->set_cloud_us(Micros(end - cloud_start));
  t->set_total_us(Micros(end - start));
  t->set_uplink_bytes(uplink);
  *t->mutable_cloud() = scores.timings();

  if (EdgeMetrics* m = hooks_.metrics) {
    m->user_model_seconds().Observe(absl::ToDoubleSeconds(user_model_time));
    m->cloud_seconds().Observe(absl::ToDoubleSeconds(end - cloud_start));
    m->total_seconds().Observe(absl::ToDoubleSeconds(end - start));
    m->uplink_bytes().Increment(static_cast<double>(uplink));
    m->downlink_bytes().Increment(static_cast<double>(downlink));
  }
  if (hooks_.energy != nullptr) {
    hooks_.energy->ObserveQuery(cpu_seconds, static_cast<uint64_t>(uplink));
  }
  return response;
}

absl::Status Recommender::ReportRefusal(absl::Status status) const {
  if (std::optional<duet::v1::ModelTarget> target = TargetPayload(status);
      target.has_value() && hooks_.on_target) {
    hooks_.on_target(*target);
  }
  if (status.code() == absl::StatusCode::kFailedPrecondition &&
      hooks_.on_model_refused) {
    hooks_.on_model_refused(status);
  }
  return status;
}

absl::StatusOr<duet::v1::RecordInteractionResponse>
Recommender::RecordInteraction(
    const duet::v1::RecordInteractionRequest& request, absl::Time deadline) {
  RETURN_IF_ERROR(Serving());
  const int64_t item = request.item_id();
  if (!model_.catalog().Contains(item)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("item_id is %d, valid item ids are [0, %d)", item,
                        model_.catalog().num_items()));
  }
  const std::string& id = request.interaction_id();
  if (id.size() > kMaxInteractionIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("interaction_id has %d bytes, at most %d are allowed",
                        id.size(), kMaxInteractionIdBytes));
  }
  auto duplicate = [](uint64_t sequence) {
    duet::v1::RecordInteractionResponse response;
    response.set_sequence(sequence);
    response.set_duplicate(true);
    return response;
  };
  // A retry of an applied interaction: answered without a row fetch.
  if (!id.empty()) {
    if (std::optional<uint64_t> seen = state_->FindInteraction(id)) {
      return duplicate(*seen);
    }
  }
  std::vector<float> rows;
  bool relayed = false;
  if (std::optional<std::vector<float>> cached = relay_cache_.Get(item)) {
    rows = *std::move(cached);
    relayed = true;
  } else {
    duet::v1::GetItemEmbeddingsRequest get;
    get.add_item_ids(item);
    get.set_model_version(model_.config().version());
    get.set_model_fingerprint(model_.fingerprint());
    ASSIGN_OR_RETURN(duet::v1::GetItemEmbeddingsResponse fetched,
                     cloud_->GetItemEmbeddings(get, deadline));
    // Rows of another model (a cloud already on the next release) would
    // corrupt the scratchpad: the interaction fails and is not logged.
    RETURN_IF_ERROR(state_->CheckRowsModel(fetched, /*allow_unreported=*/true));
    if (fetched.items_size() != 1 || fetched.items(0).item_id() != item) {
      return absl::InternalError(
          absl::StrFormat("GetItemEmbeddings for item %d returned %d entries",
                          item, fetched.items_size()));
    }
    rows.assign(fetched.items(0).rows().begin(), fetched.items(0).rows().end());
  }
  const absl::Status valid = state_->ValidateInteractionRows(rows);
  if (!valid.ok()) {
    return absl::InternalError(absl::StrFormat(
        "the cloud sent bad rows for item %d: %s", item, valid.message()));
  }
  Write w;
  w.item = item;
  w.rows = &rows;
  w.id = &id;
  Commit(&w);
  if (!w.status.ok()) return w.status;
  if (w.duplicate) return duplicate(w.sequence);
  const uint64_t sequence = w.sequence;
  if (EdgeMetrics* m = hooks_.metrics) {
    m->scratchpad_updates().Increment();
    (relayed ? m->relay_hits() : m->embedding_fetches()).Increment();
  }
  duet::v1::RecordInteractionResponse response;
  response.set_sequence(sequence);
  response.set_relayed(relayed);
  return response;
}

absl::StatusOr<duet::v1::UpdateProfileResponse> Recommender::UpdateProfile(
    const duet::v1::UpdateProfileRequest& request) {
  RETURN_IF_ERROR(Serving());
  RETURN_IF_ERROR(state_->ValidateProfile(request.static_features()));
  Write w;
  const std::vector<float> profile(request.static_features().begin(),
                                   request.static_features().end());
  w.profile = &profile;
  Commit(&w);
  if (!w.status.ok()) return w.status;
  duet::v1::UpdateProfileResponse response;
  response.set_profile_version(w.sequence);
  return response;
}

Recommender::~Recommender() {
  WaitForCompaction();
  if (compactor_.joinable()) compactor_.join();
}

void Recommender::WaitForCompaction() {
  common::MutexLock lock(&write_mu_);
  write_mu_.Await(absl::Condition(
      +[](bool* compacting) { return !*compacting; }, &compacting_));
}

void Recommender::Commit(Write* w) {
  common::MutexLock lock(&write_mu_);
  queue_.push_back(w);
  auto leads_or_done = [this, w]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
    return w->done || (queue_.front() == w && !compacting_);
  };
  write_mu_.Await(absl::Condition(&leads_or_done));
  if (!w->done) CommitBatchLocked();  // w heads the batch
}

void Recommender::CommitBatchLocked() {
  StateStore* const store = hooks_.store;
  Write* const front = queue_.front();
  if (front->profile != nullptr) {
    // A profile update commits alone, in its place in the order.
    const uint64_t version = state_->profile_version() + 1;
    if (store != nullptr) {
      write_mu_.Unlock();
      front->status = store->AppendProfile(version, *front->profile);
      write_mu_.Lock();
    }
    if (front->status.ok()) {
      front->sequence = state_->UpdateProfile(*front->profile);
    }
    queue_.pop_front();
    front->done = true;
  } else {
    // The interactions queued behind it, up to the next profile update.
    constexpr size_t kMaxBatch = 256;
    std::vector<Write*> batch;
    for (Write* x : queue_) {
      if (x->profile != nullptr || batch.size() == kMaxBatch) break;
      batch.push_back(x);
    }
    std::vector<StateStore::Interaction> records;
    std::vector<Write*> fresh;
    absl::flat_hash_map<std::string, Write*> ids;
    for (Write* x : batch) {
      if (!x->id->empty()) {
        // A retry of an applied call, or two calls with one id in a batch.
        if (std::optional<uint64_t> seen = state_->FindInteraction(*x->id)) {
          x->duplicate = true;
          x->sequence = *seen;
          continue;
        }
        auto [it, first] = ids.emplace(*x->id, x);
        if (!first) {
          x->same_id = it->second;
          continue;
        }
      }
      records.push_back({x->item, *x->rows, *x->id});
      fresh.push_back(x);
    }
    absl::Status status;
    if (store != nullptr && !records.empty()) {
      // Durable before applied and acknowledged. The queue's front stays
      // this batch's, so no other write starts during the sync.
      write_mu_.Unlock();
      status = store->AppendInteractions(records);
      write_mu_.Lock();
    }
    for (Write* x : fresh) {
      x->status = status;
      if (status.ok()) {
        x->sequence = state_->PushInteraction(x->item, *x->rows, *x->id);
      }
    }
    for (Write* x : batch) {
      if (x->same_id != nullptr) {
        x->status = x->same_id->status;
        x->sequence = x->same_id->sequence;
        x->duplicate = x->status.ok();
      }
      queue_.pop_front();
      x->done = true;
    }
  }
  if (store != nullptr && store->ShouldCompact() && !compacting_) {
    StartCompactionLocked();
  }
}

void Recommender::StartCompactionLocked() {
  compacting_ = true;
  // The previous compactor has cleared compacting_ and is exiting.
  if (compactor_.joinable()) compactor_.join();
  compactor_ = std::thread([this] {
    // Off the request path; no write starts until it is done (the snapshot
    // must be exactly the state the log holds so far). The log records are
    // durable already, so a failed compaction loses nothing: the next
    // batch tries again.
    const absl::Status compacted = hooks_.store->Compact(state_->Export());
    if (!compacted.ok()) {
      std::fprintf(stderr, "duet-edge: state compaction failed: %s\n",
                   compacted.ToString().c_str());
    }
    common::MutexLock lock(&write_mu_);
    compacting_ = false;
  });
}

duet::v1::EdgeState Recommender::GetState() const {
  const UserStateInfo info = state_->Info();
  duet::v1::EdgeState s;
  s.set_model_name(model_.config().name());
  s.set_model_version(model_.config().version());
  s.set_model_signature(model_.config().signature());
  for (const UserStateInfo::Table& t : info.tables) {
    duet::v1::UserTableState* table = s.add_tables();
    table->set_name(t.name);
    table->set_history_length(t.history_length);
    table->set_filled(t.filled);
    table->set_tracker(t.tracker);
  }
  s.set_interactions_total(info.interactions_total);
  s.set_profile_version(info.profile_version);
  s.set_memo_version(info.memo_version);
  s.set_cloud_connection(cloud_->ConnectionState());
  s.set_user_precision(PrecisionName(user_model_->options().precision));
  s.set_int8_arithmetic(
      model_.has_user_top_int8()
          ? common::Int8ArithmeticName(model_.int8_arithmetic())
          : "none");
  s.set_device_id(options_.device_id);
  s.set_history_items(static_cast<int>(info.history_items));
  return s;
}

}  // namespace duet::edge
