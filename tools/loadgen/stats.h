// Latency and outcome accounting of a load run.
//
// LatencyHistogram: log-linear buckets in the style of HdrHistogram — values
// below 256 ns are exact, larger ones fall in buckets 1/128 of a power of two
// wide (at most 0.4 % relative error), from 1 ns to ~292 years, in a fixed
// 58 KiB array. Percentiles use the nearest-rank definition and report the
// middle of the bucket holding that rank; max and min are exact. Not
// thread-safe: RunRecorder guards its histograms.
#ifndef DUET_TOOLS_LOADGEN_STATS_H_
#define DUET_TOOLS_LOADGEN_STATS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "common/base/mutex.h"

namespace duet::loadgen {

class LatencyHistogram {
 public:
  LatencyHistogram();

  void Record(int64_t nanos);  // negative values count as 0
  void Merge(const LatencyHistogram& other);
  void Reset();

  int64_t count() const { return count_; }
  int64_t min() const { return count_ == 0 ? 0 : min_; }
  int64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : sum_ / count_; }
  // q in [0, 1]: the value at nearest rank ceil(q * count) (q = 0: min,
  // q = 1: max). 0 for an empty histogram.
  int64_t Percentile(double q) const;

  // Bucket index of a value and the value range [lower, upper] it covers.
  static int BucketOf(int64_t nanos);
  static int64_t BucketLower(int index);
  static int64_t BucketUpper(int index);

 private:
  std::vector<int64_t> buckets_;
  int64_t count_ = 0;
  int64_t min_ = 0;
  int64_t max_ = 0;
  double sum_ = 0;
};

// Outcomes by gRPC status code name ("OK", "INVALID_ARGUMENT", ...).
class StatusCounts {
 public:
  void Add(absl::StatusCode code, int64_t n = 1);
  int64_t ok() const;
  int64_t errors() const;  // every code but OK
  int64_t total() const;
  // Code name -> count, sorted by name; only codes that occurred.
  std::map<std::string, int64_t> ByName() const;
  void Merge(const StatusCounts& other);

 private:
  std::map<int, int64_t> counts_;
};

// gRPC's canonical name of a status code, e.g. "DEADLINE_EXCEEDED".
std::string StatusCodeName(absl::StatusCode code);

// One query's outcome as the driver reports it.
struct QueryOutcome {
  absl::StatusCode code = absl::StatusCode::kOk;
  int64_t latency_ns = 0;  // from the intended send time
  int64_t bytes_up = 0;    // serialized request payloads
  int64_t bytes_down = 0;  // serialized response payloads
  int candidates = 0;
  double edge_joules = 0;     // device CPU (fleet)
  double network_joules = 0;  // uplink radio for bytes_up
};

// Totals of the measured phase.
struct RunTotals {
  LatencyHistogram latency;  // OK queries only
  StatusCounts codes;
  int64_t dropped = 0;  // open loop: arrivals beyond --max_outstanding
  int64_t bytes_up = 0, bytes_down = 0;
  int64_t candidates = 0;
  int64_t interactions_ok = 0, interactions_failed = 0;
  double edge_joules = 0, network_joules = 0;
};

// Collects outcomes from many threads: the measured totals and an interval
// window for the live progress line. Thread-safe.
class RunRecorder {
 public:
  void Record(const QueryOutcome& outcome, bool measured);
  void RecordDropped(bool measured);
  void RecordInteraction(bool ok);

  struct Interval {
    int64_t completed = 0;  // OK + errors, warm-up included
    int64_t errors = 0;
    int64_t dropped = 0;
    int64_t p99_ns = 0;
  };
  // The window since the previous call, then starts a new one.
  Interval TakeInterval();
  RunTotals Totals() const;

 private:
  mutable common::Mutex mu_;
  RunTotals totals_ ABSL_GUARDED_BY(mu_);
  LatencyHistogram window_ ABSL_GUARDED_BY(mu_);
  Interval window_counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_STATS_H_
