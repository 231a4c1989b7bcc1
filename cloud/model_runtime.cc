#include "cloud/model_runtime.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/mutex.h"
#include "common/base/scratch.h"
#include "common/base/status_macros.h"
#include "common/model/catalog.h"
#include "google/protobuf/util/message_differencer.h"

namespace duet::cloud {
namespace {

// nice 19 for the calling thread (Linux sets niceness per thread).
void LowerThisThreadsPriority() {
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 19);
}

}  // namespace

absl::StatusOr<std::shared_ptr<ModelRuntime>> ModelRuntime::Create(
    std::unique_ptr<const common::Model> model, const Options& options,
    common::ThreadPool* pool) {
  if (model == nullptr || !model->has_cloud()) {
    return absl::InvalidArgumentError(
        "the scoring runtime needs a model with its cloud part loaded");
  }
  auto runtime = std::shared_ptr<ModelRuntime>(
      new ModelRuntime(std::move(model), options));
  RETURN_IF_ERROR(runtime->Init(pool));
  if (runtime->item_table_ != nullptr) {
    ModelRuntime* rt = runtime.get();
    runtime->builder_ = std::thread([rt] { rt->BuildItemTable(); });
  } else {
    common::MutexLock lock(&runtime->build_mu_);
    runtime->build_done_ = true;
  }
  return runtime;
}

ModelRuntime::~ModelRuntime() {
  stop_build_ = true;
  if (builder_.joinable()) builder_.join();
}

absl::Status ModelRuntime::Init(common::ThreadPool* pool) {
  const Options& o = options_;
  const int top_rows = static_cast<int>(std::max<int64_t>(
      {o.placement.max_hot_rows, o.placement.force_hot_rows, 0}));
  const std::vector<TableStats> stats = LookupEngine::SampleStats(
      *model_, o.placement_sample_items, top_rows, o.item_embeddings);
  ASSIGN_OR_RETURN(const PlacementPlan plan,
                   TablePlacement::Plan(stats, o.placement));
  ASSIGN_OR_RETURN(engine_, LookupEngine::Create(model_.get(), plan, pool,
                                                 o.item_embeddings));
  if (o.item_cache_entries > 0) {
    ItemCache::Options co;
    co.capacity = o.item_cache_entries;
    co.width = model_->dims().item_out;
    cache_ = std::make_unique<ItemCache>(co);
  }
  item_model_ = std::make_unique<ItemModel>(model_.get(), engine_.get(), pool,
                                            cache_.get());
  ASSIGN_OR_RETURN(combined_, CombinedTop::Create(model_.get()));
  if (model_->has_edge() && model_->has_user_tables()) {
    monolithic_ = std::make_unique<common::MonolithicModel>(model_.get());
  }

  if (o.calibrated_like != nullptr && SameArchitecture(*o.calibrated_like)) {
    const ModelRuntime& prior = *o.calibrated_like;
    selector_ = StrategySelector::Inherit(*prior.selector_);
    calibration_from_ = prior.model_->config().version();
    if (cache_ != nullptr) {
      row_seconds_ = prior.row_seconds_;
      hit_seconds_ = prior.hit_seconds_;
      miss_seconds_ = prior.miss_seconds_;
      SetCachePolicyFromCosts();
    }
  } else {
    const absl::Time t0 = absl::Now();
    RETURN_IF_ERROR(Calibrate(pool));
    calibration_seconds_ = absl::ToDoubleSeconds(absl::Now() - t0);
  }
  if (o.prepare_kernels) {
    // On its own low-priority thread: a release prepares beside queries.
    const absl::Time t0 = absl::Now();
    absl::Status status;
    std::thread([&] {
      LowerThisThreadsPriority();
      status = PrepareKernels();
    }).join();
    RETURN_IF_ERROR(status);
    prepare_seconds_ = absl::ToDoubleSeconds(absl::Now() - t0);
  }

  RETURN_IF_ERROR(PlanItemTable());
  common::MutexLock lock(&buffers_mu_);
  for (int i = 0; i < o.buffer_sets; ++i) {
    free_buffers_.push_back(std::make_unique<QueryBuffers>(
        o.max_candidates, model_->dims(), z_width()));
  }
  return absl::OkStatus();
}

absl::Status ModelRuntime::Calibrate(common::ThreadPool* pool) {
  const Options& o = options_;
  // Calibration runs on the pool, as queries do, over fixed pseudo-random
  // candidates with the cache bypassed.
  const common::ModelDims& d = model_->dims();
  const int max_n = o.max_candidates;
  std::vector<int64_t> ids(max_n);
  for (int i = 0; i < max_n; ++i) {
    ids[i] = static_cast<int64_t>(
        common::Mix(i) % static_cast<uint64_t>(model_->catalog().num_items()));
  }
  std::vector<float> v(static_cast<size_t>(max_n) * d.item_out, 0.5f);
  std::vector<float> u(d.user_out, 0.25f), ctr(max_n);
  auto on_pool = [pool](const std::function<absl::Status()>& fn)
      -> absl::StatusOr<absl::Duration> {
    common::Notification done;
    absl::Status status;
    absl::Duration took;
    pool->Schedule([&] {
      const absl::Time t0 = absl::Now();
      status = fn();
      took = absl::Now() - t0;
      done.Notify();
    });
    done.WaitForNotification();
    if (!status.ok()) return status;
    return took;
  };
  StrategySelector::Options so;
  so.force_lookup = o.force_lookup;
  so.force_user = o.force_user;
  so.max_n = max_n;
  so.budget = o.calibration_budget;
  ASSIGN_OR_RETURN(
      selector_,
      StrategySelector::Create(
          so,
          [&](int choice, int n) {
            return on_pool([&] {
              return item_model_->ComputeUncached(
                  ids.data(), n, static_cast<LookupStrategy>(choice), v.data());
            });
          },
          [&](int choice, int n) {
            return on_pool([&] {
              return combined_->Score(u.data(), v.data(), n,
                                      static_cast<UserStrategy>(choice),
                                      ctr.data());
            });
          }));

  if (cache_ != nullptr) {
    if (o.item_cache_mode == CacheMode::kAuto) {
      RETURN_IF_ERROR(CalibrateCache(pool));
    } else {
      cache_policy_ = std::make_unique<CachePolicy>(CachePolicy::Always());
    }
  }
  return absl::OkStatus();
}

bool ModelRuntime::SameArchitecture(const ModelRuntime& prior) const {
  // The config without what names or fingerprints the weights: widths,
  // table geometry, catalog size, split depth and rows scale remain.
  auto shapes = [](const duet::v1::ModelConfig& config) {
    duet::v1::ModelConfig c = config;
    c.clear_version();
    c.clear_description();
    c.clear_files();
    c.clear_user_top_int8();
    c.clear_seed();
    c.clear_signature();
    c.mutable_catalog()->clear_seed();
    return c;
  };
  if (!google::protobuf::util::MessageDifferencer::Equals(
          shapes(model_->config()), shapes(prior.model_->config()))) {
    return false;
  }
  if (engine_->precision() != prior.engine_->precision()) return false;
  const std::vector<TablePlan>& a = engine_->plan().tables;
  const std::vector<TablePlan>& b = prior.engine_->plan().tables;
  if (a.size() != b.size()) return false;
  for (size_t t = 0; t < a.size(); ++t) {
    if (a[t].name != b[t].name || a[t].mode != b[t].mode ||
        a[t].num_shards != b[t].num_shards ||
        a[t].hot_rows.size() != b[t].hot_rows.size()) {
      return false;
    }
  }
  return (cache_ == nullptr) == (prior.cache_ == nullptr);
}

absl::Status ModelRuntime::PrepareKernels() const {
  const int max_n = options_.max_candidates;
  std::vector<const common::Fp32Mlp*> mlps = {model_->item_top()};
  if (monolithic_ != nullptr) {
    mlps.insert(mlps.end(), {model_->static_bottom(), model_->dynamic_bottom(),
                             &model_->user_top()});
  }
  for (const common::Fp32Mlp* mlp : mlps) {
    if (mlp != nullptr) RETURN_IF_ERROR(mlp->Prepare(max_n));
  }
  return combined_->Prepare(max_n);
}

std::string ModelRuntime::WarmupDebugString() const {
  std::string s =
      calibration_from_ != 0
          ? absl::StrCat("calibration reused from v", calibration_from_,
                         " (same architecture)")
          : absl::StrFormat("calibrated in %.2f s", calibration_seconds_);
  if (options_.prepare_kernels) {
    absl::StrAppendFormat(&s, "; kernels for N <= %d prepared in %.2f s",
                          options_.max_candidates, prepare_seconds_);
  }
  return s;
}

int ModelRuntime::z_width() const {
  return item_table_ != nullptr &&
                 item_table_->plan().form == ItemTableForm::kFirstLayer
             ? item_table_->plan().width
             : 0;
}

absl::Status ModelRuntime::PlanItemTable() {
  const Options& o = options_;
  if (o.item_table_budget_bytes <= 0) return absl::OkStatus();
  const int64_t num_items = model_->catalog().num_items();
  ItemTable::Plan plan = ItemTable::ChoosePlan(
      num_items, model_->dims().item_out, combined_->first_layer_out(),
      o.item_table_budget_bytes, o.item_table_precision);
  if (plan.rows == 0) return absl::OkStatus();
  std::vector<int64_t> order;
  if (!o.item_table_order.empty()) {
    plan.rows = std::min<int64_t>(
        plan.rows, static_cast<int64_t>(o.item_table_order.size()));
    order.assign(o.item_table_order.begin(),
                 o.item_table_order.begin() + plan.rows);
  }
  ASSIGN_OR_RETURN(item_table_, ItemTable::Create(plan, std::move(order)));
  return absl::OkStatus();
}

absl::Status ModelRuntime::ComputeTableRows(const int64_t* items, int n,
                                            float* rows, std::vector<float>* f,
                                            std::vector<float>* v) const {
  const common::ModelDims& d = model_->dims();
  const common::Fp32Mlp* top = model_->item_top();
  const bool first_layer =
      item_table_->plan().form == ItemTableForm::kFirstLayer;
  // v_j straight into the rows when they hold v_j.
  float* vj = first_layer
                  ? common::GrowTo(*v, static_cast<size_t>(n) * d.item_out)
                  : rows;
  if (top == nullptr) {
    engine_->GatherRows(items, n, vj);
  } else {
    float* fj = common::GrowTo(*f, static_cast<size_t>(n) * d.item_top_in);
    engine_->GatherRows(items, n, fj);
    RETURN_IF_ERROR(top->Run(fj, n, vj));
  }
  if (first_layer) return combined_->ItemContribution(vj, n, rows);
  return absl::OkStatus();
}

void ModelRuntime::BuildItemTable() {
  // Low priority (nice 19) on its own thread rather than tasks on the
  // worker pool, which has no priorities: a chunk queued there would delay
  // the queries behind it, while the kernel preempts this thread for them
  // and still gives it the cores queries leave idle.
  LowerThisThreadsPriority();
  const absl::Time t0 = absl::Now();
  std::vector<float> f, v;
  auto report = [&](bool done, const absl::Status& status) {
    build_ns_ = absl::ToInt64Nanoseconds(absl::Now() - t0);
    if (!options_.on_item_table_progress) return;
    ItemTableStatus s = item_table_status();
    s.done = done;
    s.status = status;
    options_.on_item_table_progress(s);
  };
  // 256 rows: big enough for an efficient GEMM, small enough to publish
  // often and to stop quickly.
  const absl::Status status = item_table_->Build(
      [&](const int64_t* items, int n, float* rows) {
        return ComputeTableRows(items, n, rows, &f, &v);
      },
      256, stop_build_, [&] { report(false, absl::OkStatus()); });
  // Reported before WaitForItemTable returns, so a reload publishes the
  // new table's metrics before the version is served.
  report(true, status);
  common::MutexLock lock(&build_mu_);
  build_status_ = status;
  build_done_ = true;
}

ModelRuntime::ItemTableStatus ModelRuntime::item_table_status() const {
  ItemTableStatus s;
  s.version = model_->config().version();
  if (item_table_ == nullptr) {
    s.done = true;
    return s;
  }
  s.plan = item_table_->plan();
  s.built_rows = item_table_->built_rows();
  s.bytes = item_table_->bytes();
  s.build_seconds = static_cast<double>(build_ns_.load()) * 1e-9;
  common::MutexLock lock(&build_mu_);
  s.done = build_done_;
  s.status = build_status_;
  return s;
}

std::string ModelRuntime::ItemTableDebugString() const {
  if (item_table_ == nullptr) {
    return options_.item_table_budget_bytes > 0
               ? "item table: off (not one row fits the budget)"
               : "item table: off";
  }
  return absl::StrCat("item table: building ",
                      item_table_->plan().DebugString(),
                      " in the background (budget ",
                      options_.item_table_budget_bytes >> 20, " MiB)");
}

void ModelRuntime::WaitForItemTable() const {
  common::MutexLock lock(&build_mu_);
  build_mu_.Await(absl::Condition(
      +[](const bool* done) { return *done; }, &build_done_));
}

absl::Status ModelRuntime::ComputeItemSide(const int64_t* candidates, int n,
                                           LookupStrategy strategy,
                                           bool use_cache, QueryBuffers* b,
                                           ItemSideCounts* counts) const {
  ItemSideCounts c;
  const int64_t built =
      item_table_ != nullptr ? item_table_->built_rows() : int64_t{0};
  b->has_z = false;
  if (built == 0) {
    c.computed = n;
    absl::Status s = item_model_->Compute(candidates, n, strategy, use_cache,
                                          b->v.data(), &c.cache_hits);
    if (counts != nullptr) *counts = c;
    return s;
  }
  const bool first_layer =
      item_table_->plan().form == ItemTableForm::kFirstLayer;
  const int width = item_table_->plan().width;
  float* out = first_layer ? b->z.data() : b->v.data();
  int64_t* miss_ids = b->miss_ids.data();
  int32_t* miss_rows = b->miss_rows.data();
  int misses = 0;
  // Every position read in one pass (int8: one kernel call); an uncovered
  // one reads row 0 and is overwritten by its computed row below.
  int64_t* slots = b->slots.data();
  for (int j = 0; j < n; ++j) {
    slots[j] = item_table_->Slot(candidates[j], built);
    if (slots[j] < 0) {
      slots[j] = 0;
      miss_ids[misses] = candidates[j];
      miss_rows[misses] = j;
      ++misses;
    }
  }
  item_table_->ReadRows(slots, n, out);
  b->has_z = first_layer;
  c.table_rows = n - misses;
  c.computed = misses;
  if (misses > 0) {
    // The uncovered rows, compacted: v_j into per-thread scratch when the
    // table holds v_j; else into b->v (unused then) and W_v v_j into the
    // scratch. Then scattered back.
    thread_local std::vector<float> scratch;
    float* rows = common::GrowTo(scratch, static_cast<size_t>(misses) * width);
    float* vm = first_layer ? b->v.data() : rows;
    RETURN_IF_ERROR(item_model_->Compute(miss_ids, misses, strategy, use_cache,
                                         vm, &c.cache_hits));
    if (first_layer) {
      RETURN_IF_ERROR(combined_->ItemContribution(vm, misses, rows));
    }
    for (int i = 0; i < misses; ++i) {
      std::memcpy(out + static_cast<size_t>(miss_rows[i]) * width,
                  rows + static_cast<size_t>(i) * width, width * sizeof(float));
    }
  }
  if (counts != nullptr) *counts = c;
  return absl::OkStatus();
}

void ModelRuntime::CopyItemSide(const QueryBuffers& from, int first, int n,
                                QueryBuffers* to) const {
  const int width = from.has_z ? z_width() : model_->dims().item_out;
  const float* src = (from.has_z ? from.z : from.v).data() +
                     static_cast<size_t>(first) * width;
  float* dst = (from.has_z ? to->z : to->v).data();
  std::memcpy(dst, src, static_cast<size_t>(n) * width * sizeof(float));
  to->has_z = from.has_z;
}

absl::Status ModelRuntime::Combine(int n, UserStrategy strategy,
                                   QueryBuffers* b) const {
  if (b->has_z) {
    return combined_->ScoreContributions(b->u.data(), b->z.data(), n,
                                         b->ctr.data());
  }
  return combined_->Score(b->u.data(), b->v.data(), n, strategy, b->ctr.data());
}

absl::Status ModelRuntime::CalibrateCache(common::ThreadPool* pool) {
  constexpr int kReps = 7;
  const int n = std::min(256, options_.max_candidates);
  const int width = model_->dims().item_out;
  const LookupStrategy strategy = selector_->LookupFor(n);
  const uint64_t num_items =
      static_cast<uint64_t>(model_->catalog().num_items());
  std::vector<int64_t> ids(n);
  std::vector<float> v(static_cast<size_t>(n) * width);
  auto median = [](std::vector<double>& x) {
    std::sort(x.begin(), x.end());
    return x[x.size() / 2];
  };
  // t_row: the uncached item side on the pool, as a query runs it, for
  // fresh pseudo-random candidates each run (their rows are not hot).
  std::vector<double> rows;
  absl::Status status;
  for (int rep = 0; rep <= kReps && status.ok(); ++rep) {
    for (int j = 0; j < n; ++j) {
      ids[j] = static_cast<int64_t>(
          common::Mix(0x5eed0000u + static_cast<uint64_t>(rep) * n + j) %
          num_items);
    }
    common::Notification done;
    pool->Schedule([&] {
      const absl::Time t0 = absl::Now();
      status = item_model_->ComputeUncached(ids.data(), n, strategy, v.data());
      if (rep > 0) rows.push_back(absl::ToDoubleSeconds(absl::Now() - t0) / n);
      done.Notify();
    });
    done.WaitForNotification();
  }
  RETURN_IF_ERROR(status);
  // c_miss and c_hit on a scratch cache as large as the real one (up to
  // 64 Ki entries and 64 MiB), full, so probes walk a working set of the
  // real size instead of a few hot cache lines: n new items (each insert
  // evicts the least recently used), then n resident items at random.
  const int64_t cap = std::max<int64_t>(
      n, std::min<int64_t>({options_.item_cache_entries, int64_t{1} << 16,
                            (int64_t{64} << 20) / (width * 4)}));
  ItemCache::Options co;
  co.capacity = cap;
  co.width = width;
  ItemCache scratch(co);
  const uint64_t fp = model_->fingerprint();
  int64_t next = 0;
  for (; next < cap; ++next) scratch.Insert(next, fp, v.data());
  std::vector<double> misses, hits;
  for (int rep = 0; rep <= kReps; ++rep) {
    const absl::Time t0 = absl::Now();
    for (int j = 0; j < n; ++j, ++next) {
      float* row = v.data() + static_cast<size_t>(j) * width;
      if (!scratch.Lookup(next, fp, row)) scratch.Insert(next, fp, row);
    }
    const absl::Time t1 = absl::Now();
    for (int j = 0; j < n; ++j) {
      const int64_t resident =
          next - 1 -
          static_cast<int64_t>(common::Mix(static_cast<uint64_t>(next) + j) %
                               static_cast<uint64_t>(cap));
      scratch.Lookup(resident, fp, v.data() + static_cast<size_t>(j) * width);
    }
    const absl::Time t2 = absl::Now();
    if (rep == 0) continue;  // warm-up
    misses.push_back(absl::ToDoubleSeconds(t1 - t0) / n);
    hits.push_back(absl::ToDoubleSeconds(t2 - t1) / n);
  }
  row_seconds_ = median(rows);
  miss_seconds_ = median(misses);
  hit_seconds_ = median(hits);
  SetCachePolicyFromCosts();
  return absl::OkStatus();
}

void ModelRuntime::SetCachePolicyFromCosts() {
  if (row_seconds_ == 0) {  // the prior's policy was "always"
    cache_policy_ = std::make_unique<CachePolicy>(CachePolicy::Always());
    return;
  }
  CachePolicy::Options po;
  const double denominator = row_seconds_ + miss_seconds_ - hit_seconds_;
  po.break_even = denominator > 0 ? miss_seconds_ / denominator : 2.0;
  // A cache that cannot pay even at a 100 % hit rate is sampled only to keep
  // its hit ratio reported.
  if (po.break_even >= 1) po.sample_every = 64;
  cache_policy_ = std::make_unique<CachePolicy>(po);
}

std::string ModelRuntime::CacheDebugString() const {
  if (cache_ == nullptr) return "item cache: off";
  if (row_seconds_ == 0) return "item cache: every query (policy always)";
  const double h = cache_policy_->break_even();
  return absl::StrFormat(
      "item cache: per row %.0f ns computed, %.0f ns hit, %.0f ns miss + "
      "insert -> %s",
      row_seconds_ * 1e9, hit_seconds_ * 1e9, miss_seconds_ * 1e9,
      h >= 1 ? "never pays: bypassed, 1 query in 64 sampled"
             : absl::StrFormat("pays above a %.0f%% hit rate", 100 * h));
}

std::unique_ptr<ModelRuntime::QueryBuffers> ModelRuntime::TakeBuffers() const {
  {
    common::MutexLock lock(&buffers_mu_);
    if (!free_buffers_.empty()) {
      auto b = std::move(free_buffers_.back());
      free_buffers_.pop_back();
      return b;
    }
  }
  // All sets are held by finished queries whose last task has not run yet.
  return std::make_unique<QueryBuffers>(options_.max_candidates, model_->dims(),
                                        z_width());
}

void ModelRuntime::ReturnBuffers(std::unique_ptr<QueryBuffers> b) const {
  if (b == nullptr) return;
  common::MutexLock lock(&buffers_mu_);
  if (static_cast<int>(free_buffers_.size()) < options_.buffer_sets) {
    free_buffers_.push_back(std::move(b));
  }
}

}  // namespace duet::cloud
