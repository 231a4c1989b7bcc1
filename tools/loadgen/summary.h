// The result of a load run: its configuration and measured totals, rendered
// as the human summary (stdout) and as machine-readable JSON (--json).
// JSON schema "duet.loadgen.summary/v1" (keys always present):
//   schema, target, addr, model{name, version, signature},
//   config{mode, concurrency, qps, max_outstanding, candidates, zipf, top_k,
//          relay_top, interaction_rate, warmup_s, duration_s, queries,
//          deadline_ms, devices, streams, channels, seed},
//   duration_s, throughput_qps,
//   queries{total, ok, errors, dropped, by_code{<CODE_NAME>: n}},
//   latency_ms{mean, min, p50, p90, p99, p999, max}   (OK queries only),
//   bytes_per_query{up, down}, candidates_mean, interactions{ok, failed},
//   energy_j_per_query{edge, edge_by_source{<source>: J}, network, model}
//     edge and edge_by_source are null when the edge's energy was not
//     measured (score; edge without --edge_metrics); "model" says how each
//     figure was obtained, or why it is missing.
#ifndef DUET_TOOLS_LOADGEN_SUMMARY_H_
#define DUET_TOOLS_LOADGEN_SUMMARY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "tools/loadgen/stats.h"

namespace duet::loadgen {

struct RunConfig {
  std::string target;  // edge | fleet | monolithic | score
  std::string addr;
  std::string model_name;
  uint32_t model_version = 0;
  std::string model_signature;
  std::string mode;  // closed | open
  int concurrency = 0;
  double qps = 0;
  int max_outstanding = 0;
  std::string candidates;  // "64" or "normal:165:80"
  double zipf = 0;
  int top_k = 0;
  int relay_top = 0;
  double interaction_rate = 0;
  double warmup_s = 0;
  double duration_s = 0;  // 0 when bounded by --queries
  int64_t queries = 0;    // 0 when bounded by --duration_s
  int deadline_ms = 0;
  int devices = 0;
  int streams = 0;
  int channels = 0;
  uint64_t seed = 0;
  // How the energy figures were obtained, e.g. "thread CPU x phone 1.8 W"
  // and "request bytes x 5g-mmwave at 24 Mbps"; for an edge energy that was
  // not measured, why not.
  std::string edge_energy;
  std::string network_energy;
};

// The fleet's model switches during the run (model releases): devices that
// switched, by transition ("v1→v2"), and switches that failed.
struct ModelSwitches {
  std::map<std::string, int> switched;
  int failed = 0;
};

struct RunSummary {
  RunConfig config;
  // Fleet only: "model switches: N devices v1→v2, M failed".
  std::optional<ModelSwitches> model_switches;
  double duration_s = 0;  // measured phase: start to last completion
  RunTotals totals;
  // Edge (device) joules per query by source ("model", "rapl"); empty when
  // the device runs no model (monolithic); unset when not measured.
  std::optional<std::map<std::string, double>> edge_joules_per_query;
};

double ThroughputQps(const RunSummary& s);  // OK queries per second
std::string SummaryJson(const RunSummary& s);
std::string SummaryText(const RunSummary& s);

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_SUMMARY_H_
