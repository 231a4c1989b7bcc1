// Drives a Target with a closed loop (`concurrency` workers, each sending its
// next query when the previous one returns) or an open loop (Poisson arrivals
// at `qps`; latency counts from the intended send time, so a slow server
// cannot hide queueing by slowing the client — no coordinated omission).
// The open loop bounds outstanding queries (queued + in flight) at
// `max_outstanding`: arrivals beyond it are counted as dropped, not queued.
// A warm-up phase is run first and not measured. Run() blocks until done and
// may be called once.
#ifndef DUET_TOOLS_LOADGEN_LOAD_DRIVER_H_
#define DUET_TOOLS_LOADGEN_LOAD_DRIVER_H_

#include <cstdint>
#include <iosfwd>

#include "absl/time/time.h"
#include "common/base/mutex.h"
#include "tools/loadgen/sampler.h"
#include "tools/loadgen/stats.h"
#include "tools/loadgen/target.h"

namespace duet::loadgen {

struct DriverOptions {
  int concurrency = 1;  // closed loop when qps == 0
  double qps = 0;       // open loop when > 0
  int max_outstanding = 256;
  absl::Duration warmup = absl::ZeroDuration();
  // The measured phase ends after `duration`, or after `queries` measured
  // queries have been issued when queries > 0.
  absl::Duration duration = absl::Seconds(10);
  int64_t queries = 0;
  int devices = 1;
  int top_k = 10;
  absl::Duration deadline = absl::Seconds(1);
  double interaction_rate = 0;
  uint64_t seed = 1;
  // Uplink energy model: joules per request payload byte (0: not metered).
  double uplink_joules_per_byte = 0;
  std::ostream* progress = nullptr;  // one line per second when set
};

struct DriverResult {
  absl::Duration measured;  // measured phase start -> last completion
  RunTotals totals;
};

class LoadDriver {
 public:
  // Borrows everything; all must outlive Run().
  LoadDriver(const DriverOptions& options, Target* target,
             const CandidateSampler* candidates,
             const CandidateCountDistribution* counts)
      : options_(options),
        target_(target),
        candidates_(candidates),
        counts_(counts) {}

  DriverResult Run();

 private:
  QuerySpec NextQuery(Rng& rng, int64_t seq) const;
  // Runs one query and records it; `intended` is when it should have been
  // sent.
  void Execute(const QuerySpec& spec, absl::Time intended, bool measured,
               Rng& rng);
  void RunClosed();
  void RunOpen();
  void ProgressLoop();

  const DriverOptions options_;
  Target* const target_;
  const CandidateSampler* const candidates_;
  const CandidateCountDistribution* const counts_;
  RunRecorder recorder_;
  absl::Time start_, measure_start_;
  common::Mutex mu_;
  absl::Time last_completion_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  int64_t inflight_ ABSL_GUARDED_BY(mu_) = 0;
  int errors_logged_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_LOAD_DRIVER_H_
