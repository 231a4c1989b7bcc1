#include "cloud/scoring_core.h"

#include <malloc.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cloud/user_vector_checks.h"
#include "common/base/scratch.h"
#include "common/base/status_macros.h"
#include "common/kernels/quantize.h"
#include "common/kernels/top_k.h"
#include "common/model/model_config.h"
#include "common/model/request_checks.h"
#include "common/obs/cpu_account.h"
#include "common/obs/energy_meter.h"

namespace duet::cloud {
namespace {

int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

absl::Status Unavailable() {
  return absl::UnavailableError("duet-cloud is shutting down");
}

}  // namespace

class ScoringCore::Query {
 public:
  Query(ScoringCore* core, std::shared_ptr<ModelRuntime> rt)
      : core(core), rt(std::move(rt)), buffers(this->rt->TakeBuffers()) {}
  ~Query() {
    // Dropped by its holder before it ended (nobody will get a reply): free
    // its admission slot, or the core would stay one short for good.
    if (!finished.exchange(true)) core->Abandon(rpc);
    rt->ReturnBuffers(std::move(buffers));
  }

  ScoringCore* const core;
  // The runtime the query was admitted under; a reload does not touch it.
  const std::shared_ptr<ModelRuntime> rt;
  std::unique_ptr<ModelRuntime::QueryBuffers> buffers;
  uint64_t id = 0;
  Rpc rpc = Rpc::kScoringSession;
  std::vector<int64_t> candidates;
  int top_k = 0;
  int relay_top = 0;
  absl::Time start;
  absl::Time deadline;
  Done done;
  std::atomic<bool> finished{false};
  // CPU time of this query's compute on all workers (energy attribution).
  std::atomic<int64_t> cpu_ns{0};

  common::Mutex mu;
  // Its entry in the core's deadline queue (removed when the query ends).
  common::DeadlineQueue<std::weak_ptr<Query>>::Handle deadline_handle
      ABSL_GUARDED_BY(mu);
  bool item_done ABSL_GUARDED_BY(mu) = false;
  bool user_arrived ABSL_GUARDED_BY(mu) = false;
  absl::Time item_done_time ABSL_GUARDED_BY(mu);
  duet::v1::StageTimings timings ABSL_GUARDED_BY(mu);
};

absl::StatusOr<std::unique_ptr<ScoringCore>> ScoringCore::Create(
    std::unique_ptr<const common::Model> model, ScoringCoreOptions options) {
  if (model == nullptr || !model->has_cloud()) {
    return absl::InvalidArgumentError(
        "ScoringCore needs a model with its cloud part loaded");
  }
  auto core = std::unique_ptr<ScoringCore>(new ScoringCore(std::move(options)));
  RETURN_IF_ERROR(core->Init(std::move(model)));
  return core;
}

ModelRuntime::Options ScoringCore::RuntimeOptions(
    absl::Duration calibration, const ModelRuntime* calibrated_like) const {
  ModelRuntime::Options ro;
  ro.max_candidates = options_.max_candidates;
  ro.buffer_sets = options_.max_inflight;
  ro.force_lookup = options_.force_lookup;
  ro.force_user = options_.force_user;
  ro.placement = options_.placement;
  ro.placement_sample_items = options_.placement_sample_items;
  ro.item_cache_entries = options_.item_cache_entries;
  ro.item_cache_mode = options_.item_cache_mode;
  ro.item_embeddings = options_.item_embeddings;
  ro.calibration_budget = calibration;
  ro.prepare_kernels = options_.warmup;
  ro.calibrated_like = options_.warmup ? calibrated_like : nullptr;
  ro.item_table_budget_bytes = options_.item_table_budget_bytes;
  ro.item_table_precision = options_.item_table_precision;
  ro.on_item_table_progress = [metrics = metrics_,
                               done = options_.on_item_table_built](
                                  const ModelRuntime::ItemTableStatus& s) {
    metrics->SetItemTable(s.version, s.plan.num_items, s.built_rows,
                          s.plan.rows, s.bytes, s.build_seconds);
    if (s.done && done) done(s);
  };
  return ro;
}

absl::Status ScoringCore::Init(std::unique_ptr<const common::Model> model) {
  ScoringCoreOptions& o = options_;
  clock_ = o.clock != nullptr ? o.clock : common::Clock::Real();
  if (o.workers <= 0) {
    o.workers = std::max(1u, std::thread::hardware_concurrency());
  }
  if (o.max_inflight < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_inflight is %d, must be >= 1", o.max_inflight));
  }
  if (o.max_candidates < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_candidates is %d, must be >= 1", o.max_candidates));
  }
  if (o.default_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("default timeout must be positive");
  }
  if (o.item_batch_max_candidates < 0 ||
      o.item_batch_max_candidates > o.max_candidates) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "item_batch_max_candidates is %d, must be in [0, max_candidates = %d]",
        o.item_batch_max_candidates, o.max_candidates));
  }
  if (o.item_batch_max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("item batch queue delay must be >= 0");
  }
  if (o.registry == nullptr)
    o.registry = std::make_shared<prometheus::Registry>();
  metrics_ = std::make_shared<CloudMetrics>(o.registry);
  pool_ = std::make_unique<common::ThreadPool>(o.workers, "duet-cloud");
  o.placement.num_workers = o.workers;
  ASSIGN_OR_RETURN(
      std::shared_ptr<ModelRuntime> rt,
      ModelRuntime::Create(std::move(model),
                           RuntimeOptions(o.calibration_budget), pool_.get()));
  metrics_->SetPlacement(rt->placement());
  SetCacheBreakEven(*rt);
  if (o.versions.keep_latest < 1 && o.versions.versions.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "keep_latest is %d, must be >= 1", o.versions.keep_latest));
  }
  if (o.versions.grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("version grace must be >= 0");
  }
  served_ = std::make_unique<ServedModels>(o.versions);
  Serve(std::move(rt));
  PublishVersions();
  deadlines_ = std::make_unique<common::DeadlineQueue<std::weak_ptr<Query>>>(
      clock_, [this](std::vector<std::weak_ptr<Query>> expired) {
        Expire(std::move(expired));
      });
  if (o.item_batch_max_candidates > 0) {
    item_batches_ =
        std::make_unique<common::BatchQueue<std::shared_ptr<Query>>>(
            clock_,
            common::BatchQueue<std::shared_ptr<Query>>::Options{
                o.item_batch_max_candidates, o.item_batch_max_queue_delay});
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<ModelRuntime>> ScoringCore::AddVersion(
    std::unique_ptr<const common::Model> model) {
  common::MutexLock reload_lock(&reload_mu_);
  if (model == nullptr || !model->has_cloud()) {
    return absl::InvalidArgumentError(
        "a reloaded model needs its cloud part loaded");
  }
  const std::shared_ptr<ModelRuntime> newest = runtime();
  // MonolithicScore, the relay and GetItemEmbeddings must not disappear
  // with a release.
  if (newest->model().has_user_tables() && !model->has_user_tables()) {
    return absl::InvalidArgumentError(
        absl::StrCat("reloaded model ", common::ModelLabel(model->config()),
                     " lacks the user tables the serving model has"));
  }
  if (newest->monolithic() != nullptr &&
      !(model->has_edge() && model->has_user_tables())) {
    return absl::InvalidArgumentError(
        absl::StrCat("reloaded model ", common::ModelLabel(model->config()),
                     " lacks the edge part MonolithicScore needs"));
  }
  if (model->config().name() != newest->model().config().name()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", common::ModelLabel(model->config()),
                     " is not a version of the served model ",
                     newest->model().config().name()));
  }
  if (served_->Contains(model->config().signature())) {
    return absl::AlreadyExistsError(
        absl::StrCat(common::ModelLabel(model->config()), " is served"));
  }
  ASSIGN_OR_RETURN(
      std::shared_ptr<ModelRuntime> rt,
      ModelRuntime::Create(
          std::move(model),
          RuntimeOptions(options_.reload_calibration_budget, newest.get()),
          pool_.get()));
  // The new version's item table is built before it takes traffic (the
  // serving versions keep answering meanwhile).
  rt->WaitForItemTable();
  Serve(rt);
  if (runtime() == rt) {
    metrics_->SetPlacement(rt->placement());
    metrics_->SetCacheEntries(0);
    SetCacheBreakEven(*rt);
  }
  RetireOutsidePolicy();
  return rt;
}

void ScoringCore::Serve(std::shared_ptr<ModelRuntime> rt) {
  const common::Model& model = rt->model();
  absl::StatusOr<EdgePart> edge = ReadEdgePart(model.dir(), model.config());
  std::shared_ptr<const EdgePart> part;
  absl::Status edge_error;
  if (edge.ok()) {
    part = std::make_shared<const EdgePart>(*std::move(edge));
  } else {
    edge_error = edge.status();
  }
  prometheus::Counter* counter =
      metrics_->VersionQueries(model.config().version());
  served_->Add(std::move(rt), std::move(part), std::move(edge_error), counter,
               clock_->Now());
}

void ScoringCore::PublishVersions() {
  std::vector<CloudMetrics::ServedVersion> versions;
  for (const ServedModels::Info& v : served_->List()) {
    versions.push_back({v.version, v.signature, ServedStateName(v.state)});
  }
  metrics_->SetServedVersions(versions);
}

void ScoringCore::SetReleasePolicy(
    std::shared_ptr<const ReleasePolicy> policy) {
  const std::vector<uint32_t> pinned = policy->Pinned();
  {
    common::MutexLock lock(&release_mu_);
    release_ = std::move(policy);
  }
  ApplyVersionPolicy(pinned);
}

std::shared_ptr<const ReleasePolicy> ScoringCore::release_policy() const {
  common::MutexLock lock(&release_mu_);
  return release_;
}

std::optional<duet::v1::ModelTarget> ScoringCore::TargetFor(
    std::string_view device_id) const {
  return release_policy()->TargetFor(device_id, *served_);
}

std::vector<ServedModels::Retired> ScoringCore::ApplyVersionPolicy(
    const std::vector<uint32_t>& pinned) {
  common::MutexLock reload_lock(&reload_mu_);
  pinned_ = pinned;
  return RetireOutsidePolicy();
}

std::vector<ServedModels::Retired> ScoringCore::RetireOutsidePolicy() {
  // The newest version is never retired, so the placement and cache
  // metrics (of the newest) stay as they are.
  std::vector<ServedModels::Retired> retired =
      served_->Apply(clock_->Now(), pinned_);
  metrics_->CountRetired(static_cast<int>(retired.size()));
  for (const ServedModels::Retired& r : retired) {
    metrics_->RemoveItemTable(r.version);
  }
  PublishVersions();
#ifdef __GLIBC__
  // A retired runtime frees tens of MB of heap (item cache, buffers, packed
  // weights) at once: hand it back to the system rather than keep it in
  // malloc's arenas for a release that may be weeks away.
  if (!retired.empty()) ::malloc_trim(0);
#endif
  return retired;
}

void ScoringCore::SetCacheBreakEven(const ModelRuntime& rt) {
  if (const CachePolicy* p = rt.cache_policy()) {
    metrics_->SetCacheBreakEven(p->break_even());
  }
}

std::shared_ptr<ModelRuntime> ScoringCore::runtime() const {
  return served_->Newest();
}

ScoringCore::~ScoringCore() {
  draining_ = true;
  if (deadlines_ != nullptr) {
    // Every query still open has its entry in the queue.
    for (std::weak_ptr<Query>& weak : deadlines_->Stop()) {
      if (auto q = weak.lock()) Finish(*q, Unavailable());
    }
  }
  pool_.reset();  // runs what is queued: finished queries skip their work
}

absl::Status ScoringCore::Admit(Rpc rpc) {
  if (draining_.load()) {
    metrics_->CountRejected("shutdown");
    metrics_->CountQuery(rpc, absl::StatusCode::kUnavailable);
    return Unavailable();
  }
  const int now = inflight_.fetch_add(1) + 1;
  if (now > options_.max_inflight) {
    inflight_.fetch_sub(1);
    metrics_->CountRejected("inflight");
    metrics_->CountQuery(rpc, absl::StatusCode::kResourceExhausted);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%d queries are in flight, the limit is %d (--max_inflight); retry "
        "later or on another replica",
        now - 1, options_.max_inflight));
  }
  metrics_->AddInflight(1);
  return absl::OkStatus();
}

void ScoringCore::Abandon(Rpc rpc) {
  metrics_->CountQuery(rpc, absl::StatusCode::kCancelled);
  Release();
}

void ScoringCore::Release() {
  inflight_.fetch_sub(1);
  metrics_->AddInflight(-1);
}

ScoringCore::QuerySpec ScoringCore::QuerySpec::Of(
    const duet::v1::BeginQuery& begin) {
  QuerySpec spec;
  spec.query_id = begin.query_id();
  spec.candidates = begin.candidate_ids();
  spec.top_k = begin.top_k();
  spec.relay_top = begin.relay_top();
  spec.timeout_us = begin.timeout_us();
  spec.model_version = begin.model_version();
  spec.model_fingerprint = begin.model_fingerprint();
  return spec;
}

absl::Status ScoringCore::ValidateBegin(const QuerySpec& spec,
                                        const ModelRuntime& rt) const {
  const common::Model& model = rt.model();
  RETURN_IF_ERROR(common::ValidateItemIds(model.catalog(), spec.candidates,
                                          options_.max_candidates));
  RETURN_IF_ERROR(common::ValidateTopK(
      spec.top_k, static_cast<int>(spec.candidates.size())));
  if (spec.relay_top < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("relay_top is %d, must be >= 0", spec.relay_top));
  }
  if (spec.relay_top > 0 && !model.has_user_tables()) {
    return absl::FailedPreconditionError(
        "relay_top > 0 needs the user tables, which this server did not load");
  }
  if (spec.timeout_us < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "timeout_us is %d, must be >= 0 (0: the server default)",
        spec.timeout_us));
  }
  return absl::OkStatus();
}

absl::Status ScoringCore::ValidateUserVector(
    const duet::v1::UserVector& uv) const {
  ASSIGN_OR_RETURN(std::shared_ptr<ModelRuntime> rt,
                   served_->Find(uv.model_version(), uv.model_fingerprint()));
  return cloud::ValidateUserVector(uv, rt->model());
}

absl::StatusOr<std::shared_ptr<ScoringCore::Query>> ScoringCore::Begin(
    const QuerySpec& spec, absl::Time deadline, Rpc rpc, Done done) {
  const absl::Time now = clock_->Now();
  absl::StatusOr<std::shared_ptr<ModelRuntime>> routed =
      served_->Route(spec.model_version, spec.model_fingerprint, now);
  if (!routed.ok()) {
    metrics_->CountQuery(rpc, routed.status().code());
    return routed.status();
  }
  std::shared_ptr<ModelRuntime> rt = *std::move(routed);
  if (absl::Status s = ValidateBegin(spec, *rt); !s.ok()) {
    metrics_->CountQuery(rpc, s.code());
    return s;
  }
  RETURN_IF_ERROR(Admit(rpc));
  auto q = std::make_shared<Query>(this, std::move(rt));
  q->id = spec.query_id;
  q->rpc = rpc;
  q->candidates.assign(spec.candidates.begin(), spec.candidates.end());
  q->top_k = spec.top_k;
  q->relay_top = std::min(spec.relay_top, spec.top_k);
  q->start = now;
  const absl::Duration timeout = spec.timeout_us > 0
                                     ? absl::Microseconds(spec.timeout_us)
                                     : options_.default_timeout;
  q->deadline = std::min(deadline, now + timeout);
  q->done = std::move(done);
  {
    common::MutexLock lock(&q->mu);
    q->deadline_handle = deadlines_->Add(q->deadline, q);
  }
  const int n = static_cast<int>(q->candidates.size());
  if (item_batches_ != nullptr && n <= options_.item_batch_max_candidates) {
    // A batch waits for company at most until half of this query's time is
    // gone, leaving the other half for its work.
    item_batches_->Push(q, n, q->rt.get(), now + (q->deadline - now) / 2);
    pool_->Schedule([this] { RunItemBatch(); });
  } else if (RunsInline(*q)) {
    RunItemSide(q, /*defer=*/true);
  } else {
    pool_->Schedule([this, q] { RunItemSide(q); });
  }
  return q;
}

bool ScoringCore::RunsInline(const Query& q) const {
  return static_cast<int>(q.candidates.size()) <=
         options_.inline_max_candidates;
}

void ScoringCore::RunItemSide(const std::shared_ptr<Query>& q, bool defer) {
  if (q->finished.load()) return;
  absl::Time pick, done;
  LookupStrategy strategy;
  ModelRuntime::ItemSideCounts counts;
  absl::Status status;
  {
    common::ScopedCpuAccount cpu(&q->cpu_ns);
    pick = clock_->Now();
    status = ComputeItemSide(*q->rt, q->candidates.data(),
                             static_cast<int>(q->candidates.size()),
                             q->buffers.get(), &strategy, &counts);
    done = clock_->Now();
  }
  ItemSideDone(q, std::move(status), pick, done, strategy, counts.cache_hits,
               /*batch_queries=*/1, defer);
}

absl::Status ScoringCore::ComputeItemSide(
    const ModelRuntime& rt, const int64_t* candidates, int n,
    ModelRuntime::QueryBuffers* b, LookupStrategy* strategy,
    ModelRuntime::ItemSideCounts* counts) {
  *strategy = rt.selector().ChooseLookup(n);
  metrics_->CountLookup(*strategy);
  CachePolicy* policy = rt.cache_policy();
  const bool use_cache = policy != nullptr && policy->UseForQuery();
  const absl::Status status =
      rt.ComputeItemSide(candidates, n, *strategy, use_cache, b, counts);
  metrics_->CountItemTable(counts->table_rows, counts->computed);
  if (policy != nullptr && counts->computed > 0) {
    metrics_->CountCacheQuery(use_cache);
    if (use_cache && status.ok()) {
      policy->Observe(counts->cache_hits, counts->computed);
      metrics_->CountCache(counts->cache_hits,
                           counts->computed - counts->cache_hits);
    }
  }
  return status;
}

void ScoringCore::RunItemBatch() {
  thread_local common::BatchQueue<std::shared_ptr<Query>>::Batch batch;
  item_batches_->Take(&batch);
  if (batch.more) pool_->Schedule([this] { RunItemBatch(); });
  // Queries that ended while queued (deadline, cancel) are skipped.
  std::vector<std::shared_ptr<Query>>& queries = batch.items;
  queries.erase(std::remove_if(queries.begin(), queries.end(),
                               [](const std::shared_ptr<Query>& q) {
                                 return q->finished.load();
                               }),
                queries.end());
  if (queries.size() == 1) {
    metrics_->ObserveItemBatch(
        1, static_cast<int>(queries.front()->candidates.size()));
    RunItemSide(queries.front());
  } else if (queries.size() > 1) {
    RunBatchedItemSide(queries);
  }
  queries.clear();  // the queries are not kept alive by this thread
}

void ScoringCore::RunBatchedItemSide(
    const std::vector<std::shared_ptr<Query>>& queries) {
  const ModelRuntime& rt = *queries.front()->rt;
  int total = 0;
  for (const std::shared_ptr<Query>& q : queries) {
    total += static_cast<int>(q->candidates.size());
  }
  metrics_->ObserveItemBatch(static_cast<int>(queries.size()), total);
  // The batch's rows go to a buffer set of the runtime (sized for
  // max_candidates >= item_batch_max_candidates), then to each query's.
  std::unique_ptr<ModelRuntime::QueryBuffers> b = rt.TakeBuffers();
  std::atomic<int64_t> cpu_ns{0};
  absl::Time pick, done;
  LookupStrategy strategy;
  ModelRuntime::ItemSideCounts counts;
  absl::Status status;
  {
    common::ScopedCpuAccount cpu(&cpu_ns);
    pick = clock_->Now();
    thread_local std::vector<int64_t> ids;
    int64_t* all = common::GrowTo(ids, static_cast<size_t>(total));
    int first = 0;
    for (const std::shared_ptr<Query>& q : queries) {
      std::copy(q->candidates.begin(), q->candidates.end(), all + first);
      first += static_cast<int>(q->candidates.size());
    }
    status = ComputeItemSide(rt, all, total, b.get(), &strategy, &counts);
    if (status.ok()) {
      first = 0;
      for (const std::shared_ptr<Query>& q : queries) {
        const int n = static_cast<int>(q->candidates.size());
        rt.CopyItemSide(*b, first, n, q->buffers.get());
        first += n;
      }
    }
    done = clock_->Now();
  }
  rt.ReturnBuffers(std::move(b));
  for (size_t i = 0; i < queries.size(); ++i) {
    const std::shared_ptr<Query>& q = queries[i];
    // Each query is charged its candidates' share of the pass.
    q->cpu_ns +=
        cpu_ns.load() * static_cast<int64_t>(q->candidates.size()) / total;
    // The first query's combine runs here, the others' on the pool: a
    // batch's combines must not queue behind each other on this worker
    // while the other workers are idle.
    ItemSideDone(q, status, pick, done, strategy, counts.cache_hits,
                 static_cast<int>(queries.size()), /*defer=*/i > 0);
  }
}

void ScoringCore::ItemSideDone(const std::shared_ptr<Query>& q,
                               absl::Status status, absl::Time pick,
                               absl::Time done, LookupStrategy strategy,
                               int cache_hits, int batch_queries, bool defer) {
  if (!status.ok()) {
    if (defer) {
      pool_->Schedule([this, q, status] { Finish(*q, status); });
    } else {
      Finish(*q, status);
    }
    return;
  }
  bool combine;
  {
    common::MutexLock lock(&q->mu);
    q->timings.set_queue_us(Micros(pick - q->start));
    q->timings.set_item_model_us(Micros(done - pick));
    q->timings.set_lookup_strategy(LookupStrategyName(strategy));
    q->timings.set_cache_hits(cache_hits);
    q->timings.set_item_batch_queries(batch_queries);
    q->item_done = true;
    q->item_done_time = done;
    combine = q->user_arrived;
  }
  if (combine && defer) {
    pool_->Schedule([this, q] { RunCombine(q); });
  } else if (combine) {
    RunCombine(q);
  }
}

void ScoringCore::ProvideUserVector(const std::shared_ptr<Query>& q,
                                    const duet::v1::UserVector& uv) {
  if (q->finished.load()) return;
  if (absl::Status s = cloud::ValidateUserVector(uv, q->rt->model()); !s.ok()) {
    Finish(*q, s);
    return;
  }
  const absl::Time now = clock_->Now();
  bool duplicate = false, combine = false;
  {
    common::MutexLock lock(&q->mu);
    if (q->user_arrived) {
      duplicate = true;
    } else {
      float* u = q->buffers->u.data();
      const int n = q->rt->model().dims().user_out;
      if (uv.fp32_data_size() > 0) {
        std::memcpy(u, uv.fp32_data().data(), n * sizeof(float));
      } else {
        common::DequantizeAffineInt8(
            reinterpret_cast<const int8_t*>(uv.int8_data().data()), n,
            {uv.scale(), uv.zero_point()}, u);
      }
      q->user_arrived = true;
      q->timings.set_item_side_ready_first(q->item_done);
      q->timings.set_user_wait_us(q->item_done ? Micros(now - q->item_done_time)
                                               : 0);
      combine = q->item_done;
    }
  }
  if (duplicate) {
    Finish(*q, absl::InvalidArgumentError(absl::StrFormat(
                   "query_id %d already received its user vector", q->id)));
    return;
  }
  if (!combine) return;
  if (RunsInline(*q)) {
    RunCombine(q);
  } else {
    pool_->Schedule([this, q] { RunCombine(q); });
  }
}

void ScoringCore::RunCombine(const std::shared_ptr<Query>& q) {
  if (q->finished.load()) return;
  absl::StatusOr<duet::v1::Scores> result;
  {
    // Finish (and with it the energy observation) runs after the scope has
    // charged this thread's CPU time to the query.
    common::ScopedCpuAccount cpu(&q->cpu_ns);
    result = Combine(*q);
  }
  Finish(*q, std::move(result));
}

absl::StatusOr<duet::v1::Scores> ScoringCore::Combine(Query& query) {
  Query* q = &query;
  const absl::Time t0 = clock_->Now();
  const int n = static_cast<int>(q->candidates.size());
  const UserStrategy strategy = q->rt->selector().ChooseUser(n);
  metrics_->CountUser(strategy);
  float* ctr = q->buffers->ctr.data();
  RETURN_IF_ERROR(q->rt->Combine(n, strategy, q->buffers.get()));
  RETURN_IF_ERROR(common::CheckFiniteScores(q->candidates.data(), ctr, n));
  const std::vector<common::Scored> top =
      common::TopK(q->candidates.data(), ctr, n, q->top_k);
  duet::v1::Scores scores;
  scores.set_query_id(q->id);
  scores.mutable_items()->Reserve(static_cast<int>(top.size()));
  std::vector<int64_t> relay_ids;
  for (const common::Scored& s : top) {
    duet::v1::ScoredItem* item = scores.add_items();
    item->set_item_id(s.item_id);
    item->set_ctr(s.ctr);
    if (static_cast<int>(relay_ids.size()) < q->relay_top) {
      relay_ids.push_back(s.item_id);
    }
  }
  FillRelay(q->rt->model(), relay_ids.data(),
            static_cast<int>(relay_ids.size()), scores.mutable_relay());
  const absl::Time t1 = clock_->Now();
  {
    common::MutexLock lock(&q->mu);
    q->timings.set_combine_us(Micros(t1 - t0));
    q->timings.set_user_strategy(UserStrategyName(strategy));
    q->timings.set_total_us(Micros(t1 - q->start));
    *scores.mutable_timings() = q->timings;
  }
  return scores;
}

void ScoringCore::Cancel(const std::shared_ptr<Query>& q) {
  Finish(*q, absl::CancelledError(
                 absl::StrFormat("query_id %d was cancelled", q->id)));
}

void ScoringCore::Finish(Query& q, absl::StatusOr<duet::v1::Scores> result) {
  if (q.finished.exchange(true)) return;
  {
    common::MutexLock lock(&q.mu);
    deadlines_->Remove(q.deadline_handle);
  }
  metrics_->CountQuery(
      q.rpc, result.ok() ? absl::StatusCode::kOk : result.status().code());
  if (result.ok()) {
    const duet::v1::StageTimings& t = result->timings();
    metrics_->ObserveStage(q.rpc, Stage::kQueue, t.queue_us() * 1e-6);
    metrics_->ObserveStage(q.rpc, Stage::kItemModel, t.item_model_us() * 1e-6);
    metrics_->ObserveStage(q.rpc, Stage::kUserWait, t.user_wait_us() * 1e-6);
    metrics_->ObserveStage(q.rpc, Stage::kCombine, t.combine_us() * 1e-6);
    metrics_->ObserveStage(q.rpc, Stage::kTotal, t.total_us() * 1e-6);
    metrics_->AddCandidates(static_cast<int64_t>(q.candidates.size()));
    if (const ItemCache* cache = q.rt->cache()) {
      metrics_->SetCacheEntries(cache->size());
    }
    if (options_.energy != nullptr) {
      options_.energy->ObserveQuery(q.cpu_ns.load() * 1e-9, 0);
    }
  }
  Done done = std::move(q.done);
  q.done = nullptr;
  // The slot is free before the reply leaves: a client that sends its next
  // query as soon as it has the answer must not find it still taken.
  Release();
  if (done) done(std::move(result));
}

void ScoringCore::Expire(std::vector<std::weak_ptr<Query>> expired) {
  for (std::weak_ptr<Query>& weak : expired) {
    std::shared_ptr<Query> q = weak.lock();
    if (q == nullptr) continue;
    bool item_done, user_arrived;
    {
      common::MutexLock lock(&q->mu);
      item_done = q->item_done;
      user_arrived = q->user_arrived;
    }
    Finish(*q, absl::DeadlineExceededError(absl::StrFormat(
                   "query_id %d exceeded its deadline of %d ms (item side "
                   "%s, user vector %s); its pending work was cancelled",
                   q->id, absl::ToInt64Milliseconds(q->deadline - q->start),
                   item_done ? "done" : "not done",
                   user_arrived ? "received" : "not received")));
  }
}

void ScoringCore::FillRelay(
    const common::Model& model, const int64_t* items, int n,
    google::protobuf::RepeatedPtrField<duet::v1::ItemEmbeddings>* out) {
  if (n == 0) return;
  const int tables = model.config().user_tables_size();
  const int dim = model.config().embedding_dim();
  out->Reserve(n);
  for (int i = 0; i < n; ++i) {
    duet::v1::ItemEmbeddings* e = out->Add();
    e->set_item_id(items[i]);
    e->mutable_rows()->Resize(tables * dim, 0.0f);
    float* dst = e->mutable_rows()->mutable_data();
    for (int t = 0; t < tables; ++t) {
      const common::EmbeddingTable& table = model.user_table(t);
      const int64_t key = model.catalog().HistoryKey(items[i], t);
      std::memcpy(dst + t * dim,
                  static_cast<const uint8_t*>(table.data) +
                      static_cast<size_t>(key) * table.row_stride(),
                  dim * sizeof(float));
    }
  }
}

int ScoringCore::Drain(absl::Time deadline) {
  draining_ = true;
  while (inflight_.load() > 0 && clock_->Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  return inflight_.load();
}

}  // namespace duet::cloud
