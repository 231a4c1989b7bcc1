// duet-loadgen: load generator for duet-edge and duet-cloud. Flags become a
// DriverOptions and a Target; the run's summary goes to stdout (and --json),
// progress and errors to stderr.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/cli/flags.h"
#include "common/model/model.h"
#include "common/model/model_config.h"
#include "common/obs/energy_meter.h"
#include "tools/loadgen/edge_energy_probe.h"
#include "tools/loadgen/fleet_target.h"
#include "tools/loadgen/grpc_targets.h"
#include "tools/loadgen/load_driver.h"
#include "tools/loadgen/sampler.h"
#include "tools/loadgen/summary.h"

ABSL_FLAG(std::string, target, "",
          "edge (Recommend on duet-edge), fleet (--devices simulated edges "
          "in-process streaming to duet-cloud), monolithic (MonolithicScore "
          "on duet-cloud) or score (unary Score on duet-cloud with a "
          "synthetic int8 user vector)");
ABSL_FLAG(std::string, addr, "127.0.0.1:50051",
          "gRPC target HOST:PORT: duet-edge for --target=edge, duet-cloud "
          "otherwise");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle: connect to --addr over TLS and verify its "
          "certificate (see docs/OPERATIONS.md, TLS). Empty: plaintext.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate for mutual TLS (needs --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name --addr's certificate must carry instead of its host.");
ABSL_FLAG(std::string, model, "",
          "Model directory: dims, catalog size, version and fingerprint (all "
          "targets); fleet also loads the edge weights");
ABSL_FLAG(int, concurrency, 8,
          "Closed loop: workers each with one query outstanding (used when "
          "--qps is 0)");
ABSL_FLAG(double, qps, 0,
          "Open loop: Poisson arrivals at this rate; latency counts from the "
          "intended send time");
ABSL_FLAG(int, max_outstanding, 256,
          "Open loop: bound on queued + in-flight queries (one worker thread "
          "each); arrivals beyond it are counted as dropped");
ABSL_FLAG(int, candidates, 64, "Candidates per query (fixed N)");
ABSL_FLAG(std::string, candidates_dist, "",
          "Candidates per query from a distribution instead: normal:MEAN:SD "
          "rounded and clamped to [1, 1024] (DeepRecSys: normal:165:80)");
ABSL_FLAG(double, zipf, 0,
          "Zipf exponent of candidate (and history) popularity; 0 = uniform");
ABSL_FLAG(int, top_k, 10, "Items returned per query (clamped to N)");
ABSL_FLAG(double, interaction_rate, 0,
          "Fraction of queries followed by an interaction with a returned "
          "item: RecordInteraction (edge), a scratchpad push (fleet) or a "
          "history append (monolithic); ignored by score");
ABSL_FLAG(bool, relay, true,
          "Fleet: request the embedding relay (user-table rows of the top_k "
          "returned items) and keep a relay cache, as duet-edge does; false: "
          "interactions fetch rows with GetItemEmbeddings");
ABSL_FLAG(double, warmup_s, 1, "Unmeasured warm-up seconds");
ABSL_FLAG(double, duration_s, 10,
          "Measured seconds (ignored when --queries is set)");
ABSL_FLAG(int64_t, queries, 0,
          "Measured queries to issue (0 = use --duration_s)");
ABSL_FLAG(int, deadline_ms, 1000, "Deadline of every RPC (and stream query)");
ABSL_FLAG(int, devices, 64,
          "Simulated users (fleet: UserStates; monolithic: histories; edge: "
          "ignored, one device per duet-edge)");
ABSL_FLAG(int, streams, 1, "Fleet: ScoringSession streams shared by devices");
ABSL_FLAG(int, channels, 1, "gRPC channels (HTTP/2 connections)");
ABSL_FLAG(std::string, network_profile, "5g-mmwave",
          "Uplink energy model for the request bytes: 5g-mmwave, 5g-lowband "
          "or lte (Narayanan et al., SIGCOMM'21 fits)");
ABSL_FLAG(double, uplink_mbps, 24,
          "Uplink throughput of the energy model (the Duet paper: 24 Mbps)");
ABSL_FLAG(
    std::string, edge_metrics, "",
    "--target=edge: duet-edge's /metrics (its --metrics_listen "
    "HOST:PORT, or a URL), scraped before and after the run for the "
    "edge's own energy per query: duet_energy_joules_total{side=\"edge\"} "
    "by source over duet_queries_total{side=\"edge\"}, warm-up included "
    "(the edge must serve only this run). Adds about 2.5 s: the edge "
    "publishes its energy once a second. Empty: the summary says the "
    "edge's energy is not measured");
ABSL_FLAG(std::string, json, "", "Write the summary as JSON to this file");
ABSL_FLAG(uint64_t, seed, 1, "Random seed");
ABSL_FLAG(bool, progress, true, "Progress line on stderr once per second");
ABSL_FLAG(std::string, write_score_request, "",
          "Write one gRPC-framed ScoreRequest (--candidates ids, synthetic "
          "user vector) to this file for h2load -d, and exit");

namespace duet::loadgen {
namespace {

// The run cannot start (a model, target or file it cannot use): exit 1.
int Fail(const std::string& message) {
  std::cerr << "duet-loadgen: " << message << "\n";
  return 1;
}

using common::ExitWithUsageError;

// The device's energy per query by source and how it was obtained, or why it
// is not known.
struct EdgeEnergy {
  std::optional<std::map<std::string, double>> joules_per_query;
  std::string how;
};

// Without --edge_metrics: the fleet meters its in-process devices.
EdgeEnergy EdgeEnergyOf(const std::string& target, const RunTotals& totals) {
  if (target == "fleet") {
    const int64_t queries = totals.codes.total();
    if (queries == 0) return {std::nullopt, "no query was sent"};
    return {
        std::map<std::string, double>{{"model", totals.edge_joules / queries}},
        absl::StrCat("thread CPU x ", common::PhoneProfile().name, " ",
                     common::PhoneProfile().watts_per_busy_core, " W")};
  }
  if (target == "monolithic") {
    return {std::map<std::string, double>(),
            "none: the monolithic baseline runs no model on the device"};
  }
  if (target == "score") {
    return {std::nullopt,
            "the score target sends a synthetic user vector: no device runs "
            "the user model"};
  }
  return {std::nullopt,
          "no --edge_metrics: pass duet-edge's --metrics_listen address to "
          "read its own energy counter"};
}

// --target=edge with --edge_metrics: the edge's own counters over the run.
EdgeEnergy EdgeEnergyFromMetrics(EdgeEnergyProbe& probe,
                                 const absl::Status& begun) {
  if (!begun.ok()) return {std::nullopt, std::string(begun.message())};
  absl::StatusOr<EdgeEnergyPerQuery> measured = probe.End();
  if (!measured.ok()) {
    return {std::nullopt, std::string(measured.status().message())};
  }
  return {measured->joules_by_source,
          absl::StrCat("duet-edge's duet_energy_joules_total{side=\"edge\"} "
                       "at ",
                       probe.url(), " over the ", measured->queries,
                       " queries it served, warm-up included")};
}

int Main() {
  const std::string target_name = absl::GetFlag(FLAGS_target);
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) ExitWithUsageError("--model DIR is required");
  const std::string edge_metrics = absl::GetFlag(FLAGS_edge_metrics);
  if (!edge_metrics.empty() && target_name != "edge") {
    ExitWithUsageError("--edge_metrics is for --target=edge only");
  }
  auto config = common::ReadConfig(model_dir + "/" + common::kConfigFile);
  if (!config.ok()) return Fail(std::string(config.status().message()));

  CandidateCountDistribution counts =
      CandidateCountDistribution::Fixed(absl::GetFlag(FLAGS_candidates));
  if (!absl::GetFlag(FLAGS_candidates_dist).empty()) {
    auto parsed =
        CandidateCountDistribution::Parse(absl::GetFlag(FLAGS_candidates_dist));
    if (!parsed.ok()) ExitWithUsageError(parsed.status().message());
    counts = *parsed;
  } else if (absl::GetFlag(FLAGS_candidates) < 1) {
    ExitWithUsageError("--candidates must be >= 1");
  }
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const CandidateSampler sampler(config->catalog().num_items(),
                                 absl::GetFlag(FLAGS_zipf), seed);

  if (const std::string path = absl::GetFlag(FLAGS_write_score_request);
      !path.empty()) {
    Rng rng(seed);
    duet::v1::ScoreRequest request;
    std::vector<int64_t> ids;
    sampler.Sample(absl::GetFlag(FLAGS_candidates), rng, &ids);
    request.mutable_candidate_ids()->Add(ids.begin(), ids.end());
    request.set_top_k(std::min<int>(absl::GetFlag(FLAGS_top_k), ids.size()));
    *request.mutable_user_vector() = SyntheticUserVector(*config, rng);
    std::ofstream out(path, std::ios::binary);
    out << GrpcFrame(request);
    if (!out.good()) return Fail("cannot write " + path);
    std::cerr << "duet-loadgen: wrote " << request.ByteSizeLong() + 5
              << " bytes (gRPC frame of a ScoreRequest, N=" << ids.size()
              << ") to " << path << "\n";
    return 0;
  }

  const double interaction_rate = absl::GetFlag(FLAGS_interaction_rate);
  TargetOptions to;
  to.addr = absl::GetFlag(FLAGS_addr);
  to.tls.flag_prefix = "tls";
  to.tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
  to.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  to.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  to.tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  to.channels = std::max(1, absl::GetFlag(FLAGS_channels));
  to.devices = std::max(1, absl::GetFlag(FLAGS_devices));
  to.streams = std::max(1, absl::GetFlag(FLAGS_streams));
  to.relay_top = absl::GetFlag(FLAGS_relay) ? absl::GetFlag(FLAGS_top_k) : 0;
  to.seed = seed;
  to.zipf = absl::GetFlag(FLAGS_zipf);
  to.config = *config;

  std::unique_ptr<common::Model> model;
  absl::StatusOr<std::unique_ptr<Target>> target;
  if (target_name == "edge") {
    to.devices = 1;
    target = CreateEdgeTarget(to);
  } else if (target_name == "monolithic") {
    target = CreateMonolithicTarget(to);
  } else if (target_name == "score") {
    target = CreateScoreTarget(to);
  } else if (target_name == "fleet") {
    common::LoadOptions lo;
    lo.parts.edge = true;
    lo.parts.cloud = false;
    lo.parts.user_tables = false;
    auto loaded = common::Model::Load(model_dir, lo);
    if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
    model = std::move(*loaded);
    std::cerr << "duet-loadgen: fleet of " << to.devices << " devices on "
              << to.streams << " stream(s), filling scratchpads from "
              << to.addr << "\n";
    target = CreateFleetTarget(to, model.get());
  } else {
    ExitWithUsageError(
        "--target must be edge, fleet, monolithic or score, got '" +
        target_name + "'");
  }
  if (!target.ok()) return Fail(std::string(target.status().message()));

  DriverOptions d;
  d.concurrency = std::max(1, absl::GetFlag(FLAGS_concurrency));
  d.qps = absl::GetFlag(FLAGS_qps);
  d.max_outstanding = std::max(1, absl::GetFlag(FLAGS_max_outstanding));
  d.warmup = absl::Seconds(absl::GetFlag(FLAGS_warmup_s));
  d.queries = absl::GetFlag(FLAGS_queries);
  d.duration = absl::Seconds(absl::GetFlag(FLAGS_duration_s));
  d.devices = to.devices;
  d.top_k = std::max(1, absl::GetFlag(FLAGS_top_k));
  d.deadline = absl::Milliseconds(absl::GetFlag(FLAGS_deadline_ms));
  d.interaction_rate = interaction_rate;
  d.seed = seed;
  d.progress = absl::GetFlag(FLAGS_progress) ? &std::cerr : nullptr;
  if (d.qps < 0) ExitWithUsageError("--qps must be >= 0");
  if (d.queries <= 0 && d.duration <= absl::ZeroDuration()) {
    ExitWithUsageError("set --queries or a positive --duration_s");
  }

  auto network = common::NetworkProfileByName(
      absl::GetFlag(FLAGS_network_profile), absl::GetFlag(FLAGS_uplink_mbps));
  if (!network.ok()) ExitWithUsageError(network.status().message());
  if (network->uplink_mbps <= 0) {
    ExitWithUsageError("--uplink_mbps must be > 0");
  }
  d.uplink_joules_per_byte = common::JoulesPerByte(*network);

  std::optional<EdgeEnergyProbe> edge_probe;
  absl::Status edge_probe_begun;
  if (!edge_metrics.empty()) {
    edge_probe.emplace(EdgeEnergyProbe::Options{edge_metrics});
    std::cerr << "duet-loadgen: reading duet-edge's energy from "
              << edge_probe->url() << " before and after the run\n";
    edge_probe_begun = edge_probe->Begin();
    if (!edge_probe_begun.ok()) {
      std::cerr << "duet-loadgen: edge energy will not be measured: "
                << edge_probe_begun.message() << "\n";
    }
  }

  LoadDriver driver(d, target->get(), &sampler, &counts);
  const DriverResult result = driver.Run();
  const EdgeEnergy edge_energy =
      edge_probe.has_value()
          ? EdgeEnergyFromMetrics(*edge_probe, edge_probe_begun)
          : EdgeEnergyOf(target_name, result.totals);

  RunSummary summary;
  RunConfig& c = summary.config;
  c.target = target_name;
  c.addr = to.addr;
  c.model_name = config->name();
  c.model_version = config->version();
  c.model_signature = config->signature();
  c.mode = d.qps > 0 ? "open" : "closed";
  c.concurrency = d.qps > 0 ? 0 : d.concurrency;
  c.qps = d.qps;
  c.max_outstanding = d.max_outstanding;
  c.candidates = counts.ToString();
  c.zipf = to.zipf;
  c.top_k = d.top_k;
  c.relay_top = target_name == "fleet" ? to.relay_top : 0;
  c.interaction_rate = interaction_rate;
  c.warmup_s = absl::GetFlag(FLAGS_warmup_s);
  c.duration_s = d.queries > 0 ? 0 : absl::GetFlag(FLAGS_duration_s);
  c.queries = d.queries;
  c.deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  c.devices = to.devices;
  c.streams = target_name == "fleet" ? to.streams : 0;
  c.channels = to.channels;
  c.seed = seed;
  c.edge_energy = edge_energy.how;
  c.network_energy = absl::StrCat("request bytes x ", network->name, " at ",
                                  network->uplink_mbps, " Mbps");
  summary.duration_s = absl::ToDoubleSeconds(result.measured);
  summary.totals = result.totals;
  summary.edge_joules_per_query = edge_energy.joules_per_query;
  summary.model_switches = (*target)->model_switches();

  target->reset();  // closes streams before the summary is printed
  std::cout << SummaryText(summary);
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream out(path);
    out << SummaryJson(summary);
    if (!out.good()) return Fail("cannot write " + path);
  }
  return 0;
}

}  // namespace
}  // namespace duet::loadgen

int main(int argc, char** argv) {
  duet::common::ParseFlagsOrExit(
      argc, argv,
      "Load generator for duet-edge and duet-cloud.\n"
      "  duet-loadgen --target=fleet|monolithic|score --addr=CLOUD "
      "--model=DIR [--concurrency=C | --qps=R] ...\n"
      "  duet-loadgen --target=edge --addr=EDGE --model=DIR "
      "[--edge_metrics=EDGE_METRICS] ...\n"
      "Summary on stdout (and --json FILE), progress on stderr.\n"
      "Exit status: 0 after a run (failed queries are counted, not fatal), 1 "
      "when the run cannot start, 2 on bad usage.",
      __FILE__);
  return duet::loadgen::Main();
}
