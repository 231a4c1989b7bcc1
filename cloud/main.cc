// duet-cloud: the cloud item-model server of Duet (DESIGN.md §3, §5).
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cloud/cloud_server.h"
#include "common/base/status_macros.h"
#include "common/cli/flags.h"
#include "common/rpc/server_flags.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listen address HOST:PORT (port 0 picks a free port).");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9091",
          "Prometheus /metrics address HOST:PORT; empty disables it.");
ABSL_FLAG(int, workers, 0,
          "Worker threads for model compute (0: number of hardware cores).");
ABSL_FLAG(int, max_inflight, 64,
          "Admitted queries at most; beyond it RESOURCE_EXHAUSTED at once.");
ABSL_FLAG(std::string, lookup_strategy, "auto",
          "Lookup parallelism: auto (calibrated per N), batch (candidates "
          "split across workers) or table (tables split across workers).");
ABSL_FLAG(std::string, user_strategy, "auto",
          "User contribution to the first combined layer: auto (calibrated per "
          "N), load (W_u u once per query) or recompute (inside the GEMM).");
ABSL_FLAG(std::string, placement, "auto",
          "Item-table placement: auto (small tables replicated per worker, "
          "large ones sharded, within --memory_budget_mb), replicate or "
          "shard.");
ABSL_FLAG(int64_t, memory_budget_mb, 8192,
          "Resident memory the item tables may use in all (replicas count "
          "once per worker).");
ABSL_FLAG(int64_t, item_cache_entries, 100000,
          "Entries of the item-tower output cache (v_j per item and model); "
          "0 disables it (the paper-faithful path).");
ABSL_FLAG(int64_t, item_table_budget_mb, 0,
          "Memory of the precomputed item side per model version: v_j or the "
          "first combined layer's W_v v_j (whichever covers more items) for "
          "the catalog, or for as many items as fit, built in the background "
          "at low priority (a reloaded version before it is served); "
          "uncovered candidates are computed. 0 (the default) disables it: "
          "see docs/OPERATIONS.md for what it costs in memory and reload "
          "time.");
ABSL_FLAG(std::string, item_table_precision, "auto",
          "Rows of the precomputed item table: fp32 (exact), int8 (row-wise "
          "codes with a scale and bias per row: 4x the items in the same "
          "budget, each value within (max - min) / 510 of its row's), or "
          "auto: fp32 when it covers the catalog within "
          "--item_table_budget_mb, else whichever covers more.");
ABSL_FLAG(std::string, item_embeddings, "fp32",
          "The item embedding tables the split path gathers: fp32 (as the "
          "model stores them) or int8 (quantized at load, row-wise codes "
          "with a scale and bias per row: dim + 8 bytes a row instead of "
          "4 dim; CTRs within ~1e-3 of fp32, see docs/OPERATIONS.md). The "
          "monolithic baseline stays fp32.");
ABSL_FLAG(std::string, item_cache_policy, "auto",
          "auto: measure at load the hit ratio above which the cache saves "
          "time for the model, track the live hit ratio and bypass the "
          "cache (sampling 1 query in 8) while it is below; always: every "
          "query uses the cache.");
ABSL_FLAG(int, calibration_ms, 3000,
          "Start-up time budget of the strategy selector's calibration.");
ABSL_FLAG(bool, warmup, true,
          "Prepare each model version before it takes traffic: build its "
          "oneDNN primitives for every candidate count it accepts on a "
          "low-priority thread and, for a released version of the serving "
          "version's architecture (new weights), reuse that version's "
          "calibration instead of calibrating beside live queries. false: "
          "calibrate beside them and build primitives on first use (the "
          "behaviour before; for comparison).");
ABSL_FLAG(int, inline_max_candidates, 32,
          "Queries of at most this many candidates run on gRPC's thread "
          "instead of being handed to a worker: no thread hand-off, measured "
          "faster and higher throughput up to N=32 (docs/BENCHMARKS.md, "
          "small queries); 0: every query runs on the workers.");
ABSL_FLAG(int, item_batch_max_candidates, 0,
          "Cross-query batching: the item sides of concurrent queries of at "
          "most this many candidates run as one pass of up to this many "
          "candidates (at most --max_candidates; takes precedence over "
          "--inline_max_candidates for the item side); 0: off, each query's "
          "item side runs alone (docs/BENCHMARKS.md, cross-query batching).");
ABSL_FLAG(int, item_batch_max_queue_delay_us, 0,
          "With --item_batch_max_candidates: how long a worker waits for more "
          "queries to fill a batch (never past half of a query's time to its "
          "deadline); 0: greedy, a batch is what queued while the workers "
          "were busy.");
ABSL_FLAG(int, max_connection_age_s, 300,
          "Send GOAWAY on a client connection after this many seconds, so "
          "clients re-resolve (dns:///) and open new calls elsewhere; 0 "
          "disables. Streams already open on the connection keep running for "
          "--max_connection_age_grace_s.");
ABSL_FLAG(int, max_connection_age_grace_s, 120,
          "After --max_connection_age_s's GOAWAY, seconds the connection's "
          "open streams get before it is closed (cutting their queries). "
          "duet-edge replaces its ScoringSession streams every "
          "--cloud_stream_max_age_s (default 60, +-20 %) itself, draining "
          "them first; keep this grace above 1.2 x that age plus a query "
          "deadline (a stream may open just before the GOAWAY), so GOAWAY "
          "never cuts a live stream.");
ABSL_FLAG(int, reload_poll_ms, 1000,
          "Model releases: check --model this often (ms; 0: only on SIGHUP). "
          "--model is either one model (DIR/model.pbtxt) or versions in "
          "DIR/<version>/. A new version is loaded and verified in the "
          "background and served BESIDE the old ones: each query runs on the "
          "version its user vector is of; a failed load changes nothing. "
          "Write model.pbtxt last and replace weight files by rename.");
ABSL_FLAG(int, keep_versions, 2,
          "Model releases: serve the latest K versions (by number) loaded; "
          "older ones are retired once idle for --version_grace_s.");
ABSL_FLAG(std::string, model_versions, "",
          "Model releases: serve exactly these versions (comma-separated, "
          "e.g. 3,4) of a versioned --model (DIR/<version>/) instead of the "
          "latest --keep_versions.");
ABSL_FLAG(int, version_grace_s, 60,
          "Model releases: a version outside the policy is retired only after "
          "no query used it for this long (s).");
ABSL_FLAG(std::string, release_policy, "",
          "Model releases: the release policy file (duet.v1.ReleasePolicy, "
          "text format: target_version, canary_version, canary_percent, "
          "canary_devices), re-read when it changes. Default: "
          "--model/release.pbtxt. Absent: every device's target is the "
          "newest served version.");
ABSL_FLAG(bool, verify_checksums, true,
          "Check the SHA-256 of every weight file at load.");

namespace {

absl::StatusOr<duet::cloud::CloudServerOptions> OptionsFromFlags() {
  using namespace duet::cloud;  // NOLINT: flag glue only
  ASSIGN_OR_RETURN(const duet::common::ServerFlags shared,
                   duet::common::ReadServerFlags());
  CloudServerOptions o;
  o.model_dir = shared.model_dir;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.tls = shared.tls;
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  o.verify_checksums = absl::GetFlag(FLAGS_verify_checksums);
  o.max_connection_age_s = absl::GetFlag(FLAGS_max_connection_age_s);
  o.max_connection_age_grace_s =
      absl::GetFlag(FLAGS_max_connection_age_grace_s);
  if (o.max_connection_age_s < 0 || o.max_connection_age_grace_s < 0) {
    return absl::InvalidArgumentError(
        "--max_connection_age_s and --max_connection_age_grace_s must be >= "
        "0");
  }
  o.shutdown_grace = shared.shutdown_grace;
  o.reload_poll_ms = absl::GetFlag(FLAGS_reload_poll_ms);
  if (o.reload_poll_ms < 0) {
    return absl::InvalidArgumentError("--reload_poll_ms must be >= 0");
  }
  o.release_policy = absl::GetFlag(FLAGS_release_policy);
  ScoringCoreOptions& c = o.core;
  c.versions.keep_latest = absl::GetFlag(FLAGS_keep_versions);
  if (c.versions.keep_latest < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--keep_versions is ", c.versions.keep_latest, ", must be >= 1"));
  }
  for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_model_versions),
                                            ',', absl::SkipWhitespace())) {
    uint32_t version = 0;
    if (!absl::SimpleAtoi(v, &version) || version == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--model_versions: '", v, "' is not a version number (> 0)"));
    }
    c.versions.versions.push_back(version);
  }
  const int grace = absl::GetFlag(FLAGS_version_grace_s);
  if (grace < 0) {
    return absl::InvalidArgumentError("--version_grace_s must be >= 0");
  }
  c.versions.grace = absl::Seconds(grace);
  c.workers = absl::GetFlag(FLAGS_workers);
  c.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  c.max_candidates = shared.max_candidates;
  c.default_timeout = shared.default_timeout;
  auto lookup = ParseLookupFlag(absl::GetFlag(FLAGS_lookup_strategy));
  if (!lookup.ok()) return lookup.status();
  c.force_lookup = *lookup;
  auto user = ParseUserFlag(absl::GetFlag(FLAGS_user_strategy));
  if (!user.ok()) return user.status();
  c.force_user = *user;
  auto placement = ParsePlacementMode(absl::GetFlag(FLAGS_placement));
  if (!placement.ok()) return placement.status();
  c.placement.mode = *placement;
  c.placement.memory_budget_bytes =
      absl::GetFlag(FLAGS_memory_budget_mb) * (int64_t{1} << 20);
  c.item_cache_entries = absl::GetFlag(FLAGS_item_cache_entries);
  const int64_t table_mb = absl::GetFlag(FLAGS_item_table_budget_mb);
  if (table_mb < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--item_table_budget_mb is ", table_mb, ", must be >= 0"));
  }
  c.item_table_budget_bytes = table_mb * (int64_t{1} << 20);
  auto precision =
      ParseItemTablePrecision(absl::GetFlag(FLAGS_item_table_precision));
  if (!precision.ok()) return precision.status();
  c.item_table_precision = *precision;
  auto embeddings =
      ParseItemEmbeddingPrecision(absl::GetFlag(FLAGS_item_embeddings));
  if (!embeddings.ok()) return embeddings.status();
  c.item_embeddings = *embeddings;
  auto cache_mode = ParseCacheMode(absl::GetFlag(FLAGS_item_cache_policy));
  if (!cache_mode.ok()) return cache_mode.status();
  c.item_cache_mode = *cache_mode;
  c.calibration_budget =
      absl::Milliseconds(absl::GetFlag(FLAGS_calibration_ms));
  c.warmup = absl::GetFlag(FLAGS_warmup);
  c.inline_max_candidates = absl::GetFlag(FLAGS_inline_max_candidates);
  if (c.inline_max_candidates < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--inline_max_candidates is ", c.inline_max_candidates,
                     ", must be >= 0"));
  }
  c.item_batch_max_candidates = absl::GetFlag(FLAGS_item_batch_max_candidates);
  if (c.item_batch_max_candidates < 0 ||
      c.item_batch_max_candidates > c.max_candidates) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--item_batch_max_candidates is ", c.item_batch_max_candidates,
        ", must be in [0, --max_candidates = ", c.max_candidates, "]"));
  }
  const int delay_us = absl::GetFlag(FLAGS_item_batch_max_queue_delay_us);
  if (delay_us < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--item_batch_max_queue_delay_us is ", delay_us, ", must be >= 0"));
  }
  c.item_batch_max_queue_delay = absl::Microseconds(delay_us);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  duet::common::ParseFlagsOrExit(
      argc, argv,
      "Duet cloud item-model server: ScoringService, grpc.health.v1 and "
      "reflection on --listen, Prometheus /metrics on --metrics_listen.\n"
      "Usage: duet-cloud --model DIR [--listen HOST:PORT] "
      "[--metrics_listen HOST:PORT] [--workers K] ...\n"
      "Logs the ports it bound on stderr. SIGTERM/SIGINT drain and stop; "
      "SIGHUP checks --model for a new version.\n"
      "Exit status: 0 after a clean stop, 1 when the server cannot start, 2 "
      "on bad usage.",
      {__FILE__, duet::common::kServerFlagsFile});
  auto options = OptionsFromFlags();
  if (!options.ok()) {
    duet::common::ExitWithUsageError(options.status().message());
  }
  auto server = duet::cloud::CloudServer::Create(*std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "duet-cloud: %s\n",
                 server.status().ToString().c_str());
    return 1;
  }
  (*server)->Run();
  return 0;
}
