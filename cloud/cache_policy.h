// CachePolicy: whether a query's item side goes through the ItemCache.
//
// The cache pays only above a break-even hit rate. Per candidate row, the
// uncached item side costs t_row (gather + item top MLP); through the cache
// it costs c_hit on a hit and c_miss + t_row on a miss (c_miss: the probe
// that misses plus the insert), so it wins iff
//   h > h* = c_miss / (t_row + c_miss - c_hit).
// ModelRuntime measures h* for its model at start-up (a cheap item tower,
// as in rm3 or rm5, has a high h*). Over the queries that used the cache the
// policy tracks the hit rate h (exponentially weighted by rows). While h is
// below h*, only one query in `sample_every` goes through the cache: that
// keeps hot items cached and h measured at a small cost. Once h exceeds
// h* * (1 + hysteresis), every query uses it again.
//
// Thread-safe; UseForQuery is lock-free, Observe takes a short lock.
#ifndef DUET_CLOUD_CACHE_POLICY_H_
#define DUET_CLOUD_CACHE_POLICY_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/base/mutex.h"

namespace duet::cloud {

// --item_cache_policy: kAuto measures h* and may bypass the cache; kAlways
// sends every query through it.
enum class CacheMode { kAuto, kAlways };
// "auto" | "always"; INVALID_ARGUMENT otherwise.
absl::StatusOr<CacheMode> ParseCacheMode(const std::string& s);

class CachePolicy {
 public:
  struct Options {
    // h*; >= 1 when even a hit costs more than computing the row.
    double break_even = 0;
    // While bypassing, one query in this many still uses the cache.
    int sample_every = 8;
    // Rows of history in the hit-rate estimate (EWMA weight 1 / this).
    double window_rows = 8192;
    // Rows observed before the first decision; until then every query
    // uses the cache.
    int64_t warmup_rows = 2048;
    double hysteresis = 0.1;
  };

  // Every query uses the cache (the policy is "always").
  static Options Always() {
    Options o;
    o.break_even = 0;
    return o;
  }

  explicit CachePolicy(const Options& options) : options_(options) {}

  // Whether the next query should use the cache.
  bool UseForQuery();
  // The result of a query that used the cache: hits of n rows.
  void Observe(int hits, int n);

  double break_even() const { return options_.break_even; }
  double hit_rate() const;  // the estimate; 0 before any observation
  bool bypassing() const { return bypassing_.load(std::memory_order_relaxed); }

 private:
  const Options options_;
  std::atomic<bool> bypassing_{false};
  std::atomic<uint64_t> queries_{0};
  mutable common::Mutex mu_;
  double hit_rate_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t rows_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_CACHE_POLICY_H_
