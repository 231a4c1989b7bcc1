#include "tools/loadgen/summary.h"

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace duet::loadgen {
namespace {

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string Num(double v) {
  if (!std::isfinite(v)) return "0";
  return absl::StrFormat("%.6g", v);
}

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

// Builds one JSON object: Add("key", raw_json_value).
class Object {
 public:
  Object& Add(const std::string& key, const std::string& raw) {
    fields_.push_back(absl::StrCat(Quote(key), ": ", raw));
    return *this;
  }
  Object& Str(const std::string& key, const std::string& v) {
    return Add(key, Quote(v));
  }
  Object& Int(const std::string& key, int64_t v) {
    return Add(key, absl::StrCat(v));
  }
  Object& Dbl(const std::string& key, double v) { return Add(key, Num(v)); }
  std::string Render() const {
    return absl::StrCat("{", absl::StrJoin(fields_, ", "), "}");
  }

 private:
  std::vector<std::string> fields_;
};

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
  const RunConfig& c = s.config;
  const RunTotals& t = s.totals;
  const int64_t total = t.codes.total();
  const double per_query = total > 0 ? 1.0 / total : 0.0;

  Object model;
  model.Str("name", c.model_name)
      .Int("version", c.model_version)
      .Str("signature", c.model_signature);
  Object config;
  config.Str("mode", c.mode)
      .Int("concurrency", c.concurrency)
      .Dbl("qps", c.qps)
      .Int("max_outstanding", c.max_outstanding)
      .Str("candidates", c.candidates)
      .Dbl("zipf", c.zipf)
      .Int("top_k", c.top_k)
      .Int("relay_top", c.relay_top)
      .Dbl("interaction_rate", c.interaction_rate)
      .Dbl("warmup_s", c.warmup_s)
      .Dbl("duration_s", c.duration_s)
      .Int("queries", c.queries)
      .Int("deadline_ms", c.deadline_ms)
      .Int("devices", c.devices)
      .Int("streams", c.streams)
      .Int("channels", c.channels)
      .Add("seed", absl::StrCat(c.seed));
  Object by_code;
  for (const auto& [name, n] : t.codes.ByName()) by_code.Int(name, n);
  Object queries;
  queries.Int("total", total)
      .Int("ok", t.codes.ok())
      .Int("errors", t.codes.errors())
      .Int("dropped", t.dropped)
      .Add("by_code", by_code.Render());
  Object latency;
  latency.Dbl("mean", t.latency.mean() / 1e6)
      .Dbl("min", Ms(t.latency.min()))
      .Dbl("p50", Ms(t.latency.Percentile(0.50)))
      .Dbl("p90", Ms(t.latency.Percentile(0.90)))
      .Dbl("p99", Ms(t.latency.Percentile(0.99)))
      .Dbl("p999", Ms(t.latency.Percentile(0.999)))
      .Dbl("max", Ms(t.latency.max()));
  Object bytes;
  bytes.Dbl("up", t.bytes_up * per_query).Dbl("down", t.bytes_down * per_query);
  Object energy;
  if (s.edge_joules_per_query.has_value()) {
    Object by_source;
    for (const auto& [source, joules] : *s.edge_joules_per_query) {
      by_source.Dbl(source, joules);
    }
    energy.Dbl("edge", SumOverSources(*s.edge_joules_per_query))
        .Add("edge_by_source", by_source.Render());
  } else {
    energy.Add("edge", "null").Add("edge_by_source", "null");
  }
  energy.Dbl("network", t.network_joules * per_query)
      .Str("model", absl::StrCat("edge: ", c.edge_energy,
                                 "; network: ", c.network_energy));
  Object interactions;
  interactions.Int("ok", t.interactions_ok)
      .Int("failed", t.interactions_failed);

  Object root;
  root.Str("schema", "duet.loadgen.summary/v1")
      .Str("target", c.target)
      .Str("addr", c.addr)
      .Add("model", model.Render())
      .Add("config", config.Render())
      .Dbl("duration_s", s.duration_s)
      .Dbl("throughput_qps", ThroughputQps(s))
      .Add("queries", queries.Render())
      .Add("latency_ms", latency.Render())
      .Add("bytes_per_query", bytes.Render())
      .Dbl("candidates_mean", t.candidates * per_query)
      .Add("interactions", interactions.Render())
      .Add("energy_j_per_query", energy.Render());
  return root.Render() + "\n";
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
  return out;
}

}  // namespace duet::loadgen
