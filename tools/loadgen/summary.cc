#include "tools/loadgen/summary.h"

#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace duet::loadgen {
namespace {

// Six significant digits, as the summary has always printed: the figures are
// measurements, and their noise digits would only clutter the file.
double Num(double v) {
  if (!std::isfinite(v)) return 0;
  return std::strtod(absl::StrFormat("%.6g", v).c_str(), nullptr);
}

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

double SumOverSources(const std::map<std::string, double>& joules) {
  double sum = 0;
  for (const auto& [source, j] : joules) sum += j;
  return sum;
}

}  // namespace

double ThroughputQps(const RunSummary& s) {
  return s.duration_s > 0 ? s.totals.codes.ok() / s.duration_s : 0.0;
}

std::string SummaryJson(const RunSummary& s) {
  using Json = nlohmann::ordered_json;  // keys in the order of the schema
  const RunConfig& c = s.config;
  const RunTotals& t = s.totals;
  const int64_t total = t.codes.total();
  const double per_query = total > 0 ? 1.0 / total : 0.0;

  Json by_code = Json::object();
  for (const auto& [name, n] : t.codes.ByName()) by_code[name] = n;
  Json energy;
  if (s.edge_joules_per_query.has_value()) {
    Json by_source = Json::object();
    for (const auto& [source, joules] : *s.edge_joules_per_query) {
      by_source[source] = Num(joules);
    }
    energy["edge"] = Num(SumOverSources(*s.edge_joules_per_query));
    energy["edge_by_source"] = std::move(by_source);
  } else {
    energy["edge"] = nullptr;
    energy["edge_by_source"] = nullptr;
  }
  energy["network"] = Num(t.network_joules * per_query);
  energy["model"] =
      absl::StrCat("edge: ", c.edge_energy, "; network: ", c.network_energy);

  Json root = {{"schema", "duet.loadgen.summary/v1"},
               {"target", c.target},
               {"addr", c.addr},
               {"model",
                {{"name", c.model_name},
                 {"version", c.model_version},
                 {"signature", c.model_signature}}},
               {"config",
                {{"mode", c.mode},
                 {"concurrency", c.concurrency},
                 {"qps", Num(c.qps)},
                 {"max_outstanding", c.max_outstanding},
                 {"candidates", c.candidates},
                 {"zipf", Num(c.zipf)},
                 {"top_k", c.top_k},
                 {"relay_top", c.relay_top},
                 {"interaction_rate", Num(c.interaction_rate)},
                 {"warmup_s", Num(c.warmup_s)},
                 {"duration_s", Num(c.duration_s)},
                 {"queries", c.queries},
                 {"deadline_ms", c.deadline_ms},
                 {"devices", c.devices},
                 {"streams", c.streams},
                 {"channels", c.channels},
                 {"seed", c.seed}}},
               {"duration_s", Num(s.duration_s)},
               {"throughput_qps", Num(ThroughputQps(s))},
               {"queries",
                {{"total", total},
                 {"ok", t.codes.ok()},
                 {"errors", t.codes.errors()},
                 {"dropped", t.dropped},
                 {"by_code", std::move(by_code)}}},
               {"latency_ms",
                {{"mean", Num(t.latency.mean() / 1e6)},
                 {"min", Num(Ms(t.latency.min()))},
                 {"p50", Num(Ms(t.latency.Percentile(0.50)))},
                 {"p90", Num(Ms(t.latency.Percentile(0.90)))},
                 {"p99", Num(Ms(t.latency.Percentile(0.99)))},
                 {"p999", Num(Ms(t.latency.Percentile(0.999)))},
                 {"max", Num(Ms(t.latency.max()))}}},
               {"bytes_per_query",
                {{"up", Num(t.bytes_up * per_query)},
                 {"down", Num(t.bytes_down * per_query)}}},
               {"candidates_mean", Num(t.candidates * per_query)},
               {"interactions",
                {{"ok", t.interactions_ok}, {"failed", t.interactions_failed}}},
               {"energy_j_per_query", std::move(energy)}};
  if (s.model_switches.has_value()) {
    Json switched = Json::object();
    for (const auto& [transition, n] : s.model_switches->switched) {
      switched[transition] = n;
    }
    root["model_switches"] = {{"switched", std::move(switched)},
                              {"failed", s.model_switches->failed}};
  }
  // Names and addresses come from flags: replace bytes that are not UTF-8
  // (U+FFFD) rather than fail the run's report.
  return root.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string SummaryText(const RunSummary& s) {
  const RunConfig& c = s.config;
  const RunTotals& t = s.totals;
  const int64_t total = t.codes.total();
  const double per_query = total > 0 ? 1.0 / total : 0.0;
  std::string out;
  absl::StrAppendFormat(&out, "target      %s %s (model %s v%d)\n", c.target,
                        c.addr, c.model_name, c.model_version);
  absl::StrAppendFormat(
      &out, "load        %s loop, %s, candidates %s, zipf %g, top_k %d\n",
      c.mode,
      c.mode == "closed" ? absl::StrCat("concurrency ", c.concurrency)
                         : absl::StrCat(c.qps, " qps offered"),
      c.candidates, c.zipf, c.top_k);
  absl::StrAppendFormat(&out,
                        "duration    %.3f s measured (after %.1f s warm-up)\n",
                        s.duration_s, c.warmup_s);
  absl::StrAppendFormat(&out,
                        "queries     %d total, %d ok, %d errors, %d dropped\n",
                        total, t.codes.ok(), t.codes.errors(), t.dropped);
  for (const auto& [name, n] : t.codes.ByName()) {
    absl::StrAppendFormat(&out, "  %-22s %d\n", name, n);
  }
  absl::StrAppendFormat(&out, "throughput  %.1f qps\n", ThroughputQps(s));
  absl::StrAppendFormat(
      &out,
      "latency ms  mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  "
      "max %.3f\n",
      t.latency.mean() / 1e6, Ms(t.latency.Percentile(0.5)),
      Ms(t.latency.Percentile(0.9)), Ms(t.latency.Percentile(0.99)),
      Ms(t.latency.Percentile(0.999)), Ms(t.latency.max()));
  absl::StrAppendFormat(&out, "bytes/query up %.1f  down %.1f\n",
                        t.bytes_up * per_query, t.bytes_down * per_query);
  if (s.edge_joules_per_query.has_value()) {
    std::vector<std::string> sources;
    for (const auto& [source, joules] : *s.edge_joules_per_query) {
      sources.push_back(absl::StrFormat("%s %.3g J", source, joules));
    }
    absl::StrAppendFormat(
        &out, "energy/query edge    %.3g J (%s%s)\n",
        SumOverSources(*s.edge_joules_per_query),
        sources.empty()
            ? ""
            : absl::StrCat("by source: ", absl::StrJoin(sources, ", "), "; "),
        c.edge_energy);
  } else {
    absl::StrAppendFormat(&out, "energy/query edge    not measured (%s)\n",
                          c.edge_energy);
  }
  absl::StrAppendFormat(&out, "             network %.3g J (%s)\n",
                        t.network_joules * per_query, c.network_energy);
  if (t.interactions_ok + t.interactions_failed > 0) {
    absl::StrAppendFormat(&out, "interactions %d ok, %d failed\n",
                          t.interactions_ok, t.interactions_failed);
  }
  if (s.model_switches.has_value()) {
    std::vector<std::string> parts;
    for (const auto& [transition, n] : s.model_switches->switched) {
      parts.push_back(absl::StrCat(n, " devices ", transition));
    }
    if (parts.empty()) parts.push_back("0 devices");
    absl::StrAppendFormat(&out, "model switches: %s, %d failed\n",
                          absl::StrJoin(parts, ", "), s.model_switches->failed);
  }
  return out;
}

}  // namespace duet::loadgen
