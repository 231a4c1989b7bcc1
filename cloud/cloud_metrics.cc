#include "cloud/cloud_metrics.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/obs/metrics.h"

namespace duet::cloud {
namespace {

const char* StageName(int s) {
  static const char* kNames[kNumStages] = {"queue", "item_model", "user_wait",
                                           "combine", "total"};
  return kNames[s];
}

}  // namespace

const char* RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kScoringSession:
      return "ScoringSession";
    case Rpc::kScore:
      return "Score";
    case Rpc::kMonolithicScore:
      return "MonolithicScore";
    case Rpc::kGetItemEmbeddings:
      return "GetItemEmbeddings";
    case Rpc::kGetEdgeModel:
      return "GetEdgeModel";
    case Rpc::kGetModelStatus:
      return "GetModelStatus";
  }
  return "unknown";
}

CloudMetrics::CloudMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  prometheus::Registry& r = *registry_;
  auto& duration =
      prometheus::BuildHistogram()
          .Name("duet_query_duration_seconds")
          .Help(
              "Time per query stage: queue (admission to worker pick-up), "
              "item_model, user_wait (item side done to user vector), "
              "combine, total")
          .Register(r);
  const auto buckets = common::LatencyBucketsSeconds();
  for (int rpc = 0; rpc < kNumRpcs; ++rpc) {
    for (int s = 0; s < kNumStages; ++s) {
      stage_[rpc][s] = &duration.Add({{"side", "cloud"},
                                      {"stage", StageName(s)},
                                      {"rpc", RpcName(static_cast<Rpc>(rpc))}},
                                     buckets);
    }
  }
  queries_ = &prometheus::BuildCounter()
                  .Name("duet_queries_total")
                  .Help("Finished queries by RPC and status code")
                  .Register(r);
  rejected_ = &prometheus::BuildCounter()
                   .Name("duet_rejected_queries_total")
                   .Help("Queries refused at admission, by reason")
                   .Register(r);
  candidates_ = &prometheus::BuildCounter()
                     .Name("duet_candidates_scored_total")
                     .Help("Candidates scored by successful queries")
                     .Register(r)
                     .Add({{"side", "cloud"}});
  inflight_ = &prometheus::BuildGauge()
                   .Name("duet_inflight_queries")
                   .Help("Admitted queries not yet finished")
                   .Register(r)
                   .Add({{"side", "cloud"}});
  auto& strategy = prometheus::BuildCounter()
                       .Name("duet_strategy_total")
                       .Help("Strategy choices of the selector, per query")
                       .Register(r);
  lookup_[static_cast<int>(LookupStrategy::kBatch)] =
      &strategy.Add({{"kind", "lookup"}, {"choice", "batch"}});
  lookup_[static_cast<int>(LookupStrategy::kTable)] =
      &strategy.Add({{"kind", "lookup"}, {"choice", "table"}});
  user_[static_cast<int>(UserStrategy::kLoad)] =
      &strategy.Add({{"kind", "user"}, {"choice", "load"}});
  user_[static_cast<int>(UserStrategy::kRecompute)] =
      &strategy.Add({{"kind", "user"}, {"choice", "recompute"}});
  auto& cache = prometheus::BuildCounter()
                    .Name("duet_item_cache_lookups_total")
                    .Help("Item-tower output cache lookups by result")
                    .Register(r);
  cache_hits_ = &cache.Add({{"result", "hit"}});
  cache_misses_ = &cache.Add({{"result", "miss"}});
  auto& cache_queries =
      prometheus::BuildCounter()
          .Name("duet_item_cache_queries_total")
          .Help(
              "Queries whose item side used the item cache or bypassed it "
              "(the auto policy bypasses below the break-even hit ratio)")
          .Register(r);
  cache_used_ = &cache_queries.Add({{"decision", "used"}});
  cache_bypassed_ = &cache_queries.Add({{"decision", "bypassed"}});
  cache_break_even_ =
      &prometheus::BuildGauge()
           .Name("duet_item_cache_break_even_hit_ratio")
           .Help(
               "Hit ratio above which the item cache saves time for the "
               "serving model (calibrated at load; 0 with policy always)")
           .Register(r)
           .Add({});
  cache_entries_ = &prometheus::BuildGauge()
                        .Name("duet_item_cache_entries")
                        .Help("Entries held by the item-tower output cache")
                        .Register(r)
                        .Add({});
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(r);
  };
  table_coverage_ = gauge(
      "duet_item_table_coverage_ratio",
      "Catalog items whose precomputed item side is built, over the catalog");
  table_progress_ =
      gauge("duet_item_table_build_progress_ratio",
            "Rows of the precomputed item table built, over the rows planned");
  table_seconds_ = gauge("duet_item_table_build_seconds",
                         "Time spent building the precomputed item table");
  table_bytes_ =
      gauge("duet_item_table_bytes", "Memory of the precomputed item table");
  auto& table_rows =
      prometheus::BuildCounter()
          .Name("duet_item_table_candidates_total")
          .Help(
              "Candidates whose item side came from the precomputed item "
              "table or was computed")
          .Register(r);
  table_rows_ = &table_rows.Add({{"source", "table"}});
  computed_rows_ = &table_rows.Add({{"source", "computed"}});
  batch_queries_ = &prometheus::BuildHistogram()
                        .Name("duet_item_batch_queries")
                        .Help(
                            "Queries per pass of the item-side batcher "
                            "(--item_batch_max_candidates)")
                        .Register(r)
                        .Add({}, prometheus::Histogram::BucketBoundaries{
                                     1, 2, 3, 4, 6, 8, 12, 16, 32, 64});
  batch_candidates_ = &prometheus::BuildHistogram()
                           .Name("duet_item_batch_candidates")
                           .Help("Candidates per pass of the item-side batcher")
                           .Register(r)
                           .Add({}, prometheus::Histogram::BucketBoundaries{
                                        8, 16, 32, 64, 128, 256, 512, 1024});
  placement_tables_ = &prometheus::BuildGauge()
                           .Name("duet_placement_tables")
                           .Help("Item tables per placement mode")
                           .Register(r);
  placement_info_ =
      &prometheus::BuildGauge()
           .Name("duet_placement_table_info")
           .Help(
               "Placement of each item table (value 1; hot_rows: rows of a "
               "sharded table replicated on every worker)")
           .Register(r);
  auto& reloads = prometheus::BuildCounter()
                      .Name("duet_model_reloads_total")
                      .Help(
                          "Hot model reloads by result (failed: the old "
                          "model kept serving)")
                      .Register(r);
  reloads_ok_ = &reloads.Add({{"result", "ok"}});
  reloads_failed_ = &reloads.Add({{"result", "failed"}});
  version_queries_ = &prometheus::BuildCounter()
                          .Name("duet_model_version_queries_total")
                          .Help(
                              "Queries routed to each model version (the "
                              "version their user vector is of)")
                          .Register(r);
  versions_ = &prometheus::BuildGauge()
                   .Name("duet_model_versions")
                   .Help(
                       "1 per model version served: AVAILABLE, or RETIRING "
                       "(outside the version policy, served until idle "
                       "for the grace period)")
                   .Register(r);
  retired_ = &prometheus::BuildCounter()
                  .Name("duet_model_versions_retired_total")
                  .Help("Model versions retired after their grace period")
                  .Register(r)
                  .Add({});
  edge_model_bytes_ = &prometheus::BuildCounter()
                           .Name("duet_edge_model_bytes_sent_total")
                           .Help(
                               "Bytes of edge model parts streamed to "
                               "devices by GetEdgeModel")
                           .Register(r)
                           .Add({});
}

void CloudMetrics::SetItemTable(uint32_t version, int64_t num_items,
                                int64_t built, int64_t planned, int64_t bytes,
                                double seconds) {
  const prometheus::Labels labels{{"version", absl::StrCat(version)}};
  table_coverage_->Add(labels).Set(
      num_items > 0 ? static_cast<double>(built) / num_items : 0.0);
  table_progress_->Add(labels).Set(
      planned > 0 ? static_cast<double>(built) / planned : 1.0);
  table_seconds_->Add(labels).Set(seconds);
  table_bytes_->Add(labels).Set(static_cast<double>(bytes));
}

void CloudMetrics::RemoveItemTable(uint32_t version) {
  const prometheus::Labels labels{{"version", absl::StrCat(version)}};
  for (prometheus::Family<prometheus::Gauge>* family :
       {table_coverage_, table_progress_, table_seconds_, table_bytes_}) {
    if (family->Has(labels)) family->Remove(&family->Add(labels));
  }
}

prometheus::Counter* CloudMetrics::VersionQueries(uint32_t version) {
  return &version_queries_->Add({{"version", absl::StrCat(version)}});
}

void CloudMetrics::SetServedVersions(
    const std::vector<ServedVersion>& versions) {
  common::MutexLock lock(&versions_mu_);
  for (prometheus::Gauge* g : version_series_) versions_->Remove(g);
  version_series_.clear();
  for (const ServedVersion& v : versions) {
    prometheus::Gauge& g = versions_->Add({{"version", absl::StrCat(v.version)},
                                           {"signature", v.signature},
                                           {"state", v.state}});
    g.Set(1);
    version_series_.push_back(&g);
  }
}

void CloudMetrics::ObserveStage(Rpc rpc, Stage stage, double seconds) {
  stage_[static_cast<int>(rpc)][static_cast<int>(stage)]->Observe(seconds);
}

void CloudMetrics::CountQuery(Rpc rpc, absl::StatusCode code) {
  queries_
      ->Add({{"side", "cloud"},
             {"rpc", RpcName(rpc)},
             {"code", absl::StatusCodeToString(code)}})
      .Increment();
}

void CloudMetrics::CountRejected(const char* reason) {
  rejected_->Add({{"side", "cloud"}, {"reason", reason}}).Increment();
}

void CloudMetrics::CountCache(int64_t hits, int64_t misses) {
  if (hits > 0) cache_hits_->Increment(static_cast<double>(hits));
  if (misses > 0) cache_misses_->Increment(static_cast<double>(misses));
}

void CloudMetrics::SetPlacement(const PlacementPlan& plan) {
  common::MutexLock lock(&placement_mu_);
  placement_tables_->Add({{"mode", "replicate"}}).Set(plan.num_replicated());
  placement_tables_->Add({{"mode", "shard"}}).Set(plan.num_sharded());
  for (prometheus::Gauge* g : placement_series_) placement_info_->Remove(g);
  placement_series_.clear();
  for (const TablePlan& t : plan.tables) {
    prometheus::Gauge& g = placement_info_->Add(
        {{"table", t.name},
         {"mode", t.mode == PlacementMode::kReplicate ? "replicate" : "shard"},
         {"hot_rows", absl::StrCat(t.hot_rows.size())}});
    g.Set(1);
    placement_series_.push_back(&g);
  }
}

}  // namespace duet::cloud
