#include "cloud/cache_policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace duet::cloud {

absl::StatusOr<CacheMode> ParseCacheMode(const std::string& s) {
  if (s == "auto") return CacheMode::kAuto;
  if (s == "always") return CacheMode::kAlways;
  return absl::InvalidArgumentError(
      absl::StrCat("item cache policy '", s, "' is not one of auto, always"));
}

bool CachePolicy::UseForQuery() {
  if (!bypassing_.load(std::memory_order_relaxed)) return true;
  const uint64_t q = queries_.fetch_add(1, std::memory_order_relaxed);
  return q % static_cast<uint64_t>(std::max(options_.sample_every, 1)) == 0;
}

void CachePolicy::Observe(int hits, int n) {
  if (n <= 0) return;
  common::MutexLock lock(&mu_);
  // A batch of n rows moves the estimate as n single-row updates would
  // (1 - (1 - 1/W)^n, approximated for n << W and capped at 1).
  const double ratio = static_cast<double>(hits) / n;
  if (rows_ == 0) {
    hit_rate_ = ratio;
  } else {
    const double w = std::min(1.0, n / std::max(options_.window_rows, 1.0));
    hit_rate_ += w * (ratio - hit_rate_);
  }
  rows_ += n;
  if (rows_ < options_.warmup_rows) return;
  const bool bypass = bypassing_.load(std::memory_order_relaxed);
  if (!bypass && hit_rate_ < options_.break_even) {
    bypassing_.store(true, std::memory_order_relaxed);
  } else if (bypass &&
             hit_rate_ > options_.break_even * (1 + options_.hysteresis)) {
    bypassing_.store(false, std::memory_order_relaxed);
  }
}

double CachePolicy::hit_rate() const {
  common::MutexLock lock(&mu_);
  return hit_rate_;
}

}  // namespace duet::cloud
