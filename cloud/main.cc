// duet-cloud: the cloud item-model server of Duet (DESIGN.md §3, §5).
#include <cstdio>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "cloud/cloud_server.h"

ABSL_FLAG(std::string, model, "", "Model directory (model.pbtxt + weights).");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listen address HOST:PORT (port 0 picks a free port).");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9091",
          "Prometheus /metrics address HOST:PORT; empty disables it.");
ABSL_FLAG(int, workers, 0,
          "Worker threads for model compute (0: number of hardware cores).");
ABSL_FLAG(int, max_inflight, 64,
          "Admitted queries at most; beyond it RESOURCE_EXHAUSTED at once.");
ABSL_FLAG(int, max_candidates, 1024, "Candidates per query at most.");
ABSL_FLAG(int, default_timeout_ms, 2000,
          "Deadline of a query whose request sets none (BeginQuery.timeout_us "
          "= 0 and no gRPC deadline).");
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
ABSL_FLAG(int, calibration_ms, 3000,
          "Start-up time budget of the strategy selector's calibration.");
ABSL_FLAG(int, max_connection_age_s, 300,
          "Close client connections after this many seconds (graceful GOAWAY) "
          "so clients rediscover replicas; 0 disables.");
ABSL_FLAG(int, shutdown_grace_s, 10,
          "On SIGTERM/SIGINT: seconds in-flight queries get to finish.");
ABSL_FLAG(bool, verify_checksums, true,
          "Check the SHA-256 of every weight file at load.");

namespace {

absl::StatusOr<duet::cloud::CloudServerOptions> OptionsFromFlags() {
  using namespace duet::cloud;  // NOLINT: flag glue only
  CloudServerOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model);
  if (o.model_dir.empty()) {
    return absl::InvalidArgumentError("--model is required");
  }
  o.listen = absl::GetFlag(FLAGS_listen);
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  o.verify_checksums = absl::GetFlag(FLAGS_verify_checksums);
  o.max_connection_age_s = absl::GetFlag(FLAGS_max_connection_age_s);
  o.shutdown_grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s));
  ScoringCoreOptions& c = o.core;
  c.workers = absl::GetFlag(FLAGS_workers);
  c.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  c.max_candidates = absl::GetFlag(FLAGS_max_candidates);
  c.default_timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_default_timeout_ms));
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
  c.calibration_budget =
      absl::Milliseconds(absl::GetFlag(FLAGS_calibration_ms));
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  // --help lists this file's flags (absl's default looks for duet-cloud.cc).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "cloud/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "Duet cloud item-model server.\n"
      "Usage: duet-cloud --model DIR [--listen HOST:PORT] "
      "[--metrics_listen HOST:PORT] [--workers K] ...");
  absl::ParseCommandLine(argc, argv);
  auto options = OptionsFromFlags();
  if (!options.ok()) {
    std::fprintf(stderr, "duet-cloud: %s\n",
                 std::string(options.status().message()).c_str());
    return 2;
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
