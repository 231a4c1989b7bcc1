// The energy of a duet-edge over a load run, from the edge's own /metrics:
// duet_energy_joules_total{side="edge",source} and duet_queries_total
// {side="edge"}, scraped before and after the run (--edge_metrics). The edge
// must serve only this run meanwhile: the counters are the whole process's.
#ifndef DUET_TOOLS_LOADGEN_EDGE_ENERGY_PROBE_H_
#define DUET_TOOLS_LOADGEN_EDGE_ENERGY_PROBE_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace duet::loadgen {

// The edge's counters at one scrape.
struct EdgeCounters {
  std::map<std::string, double> joules_by_source;  // "model", "rapl"
  double queries = 0;                              // every status code
};

// Reads EdgeCounters from Prometheus text format. InvalidArgument when there
// is no duet_energy_joules_total{side="edge"} series (not a duet-edge) or a
// sample line of those metrics is malformed.
absl::StatusOr<EdgeCounters> ParseEdgeCounters(absl::string_view text);

// Joules per query the edge served between two scrapes, by source.
struct EdgeEnergyPerQuery {
  std::map<std::string, double> joules_by_source;
  double joules = 0;  // sum over sources
  int64_t queries = 0;
};

// FailedPrecondition when the edge served no query in between, or a counter
// went backwards (the edge restarted).
absl::StatusOr<EdgeEnergyPerQuery> EnergyPerQuery(const EdgeCounters& before,
                                                  const EdgeCounters& after);

// "HOST:PORT" -> "http://HOST:PORT/metrics"; a URL without a path gets
// "/metrics"; any other URL is kept.
std::string MetricsUrl(absl::string_view address);

// Scrapes a duet-edge before (Begin) and after (End) a run. Not thread-safe.
class EdgeEnergyProbe {
 public:
  struct Options {
    std::string address;  // --edge_metrics: URL or HOST:PORT
    // duet-edge's EnergyMeter adds the CPU energy to its counter once a
    // second (EnergyMeter::Options::poll_interval): waiting a little longer
    // before each scrape lets the counter cover all work done before it.
    absl::Duration publish_delay = absl::Milliseconds(1250);
    absl::Duration timeout = absl::Seconds(5);  // per scrape
  };

  explicit EdgeEnergyProbe(Options options);

  const std::string& url() const { return url_; }
  // Unavailable when the endpoint cannot be scraped; ParseEdgeCounters'
  // errors.
  absl::Status Begin();
  // Begin's errors; EnergyPerQuery's. FailedPrecondition without Begin.
  absl::StatusOr<EdgeEnergyPerQuery> End();

 private:
  absl::StatusOr<EdgeCounters> Scrape() const;

  const Options options_;
  const std::string url_;
  bool begun_ = false;
  EdgeCounters before_;
};

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_EDGE_ENERGY_PROBE_H_
