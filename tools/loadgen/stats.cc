#include "tools/loadgen/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace duet::loadgen {
namespace {

constexpr int kSubBits = 7;  // 128 sub-buckets per octave
constexpr int64_t kSub = int64_t{1} << kSubBits;
constexpr int64_t kExact = 2 * kSub;          // [0, 256) recorded exactly
constexpr int kMaxShift = 63 - kSubBits - 1;  // msb 62 -> shift 55
constexpr int kNumBuckets = kExact + kMaxShift * kSub;

}  // namespace

LatencyHistogram::LatencyHistogram() : buckets_(kNumBuckets, 0) {}

int LatencyHistogram::BucketOf(int64_t v) {
  if (v < kExact) return static_cast<int>(std::max<int64_t>(v, 0));
  const int msb = 63 - __builtin_clzll(static_cast<uint64_t>(v));
  const int shift = msb - kSubBits;     // >= 1
  const int64_t mantissa = v >> shift;  // in [kSub, 2 kSub)
  return static_cast<int>(kExact + (shift - 1) * kSub + (mantissa - kSub));
}

int64_t LatencyHistogram::BucketLower(int index) {
  if (index < kExact) return index;
  const int shift = static_cast<int>((index - kExact) / kSub) + 1;
  const int64_t mantissa = (index - kExact) % kSub + kSub;
  return mantissa << shift;
}

int64_t LatencyHistogram::BucketUpper(int index) {
  if (index < kExact) return index;
  const int shift = static_cast<int>((index - kExact) / kSub) + 1;
  const int64_t lower = BucketLower(index);
  const int64_t width = (int64_t{1} << shift) - 1;
  // The top buckets reach INT64_MAX: saturate instead of overflowing.
  return lower > std::numeric_limits<int64_t>::max() - width
             ? std::numeric_limits<int64_t>::max()
             : lower + width;
}

void LatencyHistogram::Record(int64_t nanos) {
  nanos = std::max<int64_t>(nanos, 0);
  ++buckets_[BucketOf(nanos)];
  min_ = count_ == 0 ? nanos : std::min(min_, nanos);
  max_ = std::max(max_, nanos);
  sum_ += static_cast<double>(nanos);
  ++count_;
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (int i = 0; i < kNumBuckets; ++i) buckets_[i] += other.buckets_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  sum_ += other.sum_;
  count_ += other.count_;
}

void LatencyHistogram::Reset() {
  std::fill(buckets_.begin(), buckets_.end(), 0);
  count_ = 0;
  min_ = max_ = 0;
  sum_ = 0;
}

int64_t LatencyHistogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  if (q <= 0) return min_;
  if (q >= 1) return max_;
  const int64_t rank = std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(q * static_cast<double>(count_))));
  int64_t seen = 0;
  for (int i = 0; i < kNumBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) {
      const int64_t mid =
          BucketLower(i) + (BucketUpper(i) - BucketLower(i)) / 2;
      return std::clamp(mid, min_, max_);
    }
  }
  return max_;
}

std::string StatusCodeName(absl::StatusCode code) {
  // absl's names are gRPC's canonical names.
  return absl::StatusCodeToString(code);
}

void StatusCounts::Add(absl::StatusCode code, int64_t n) {
  counts_[static_cast<int>(code)] += n;
}

int64_t StatusCounts::ok() const {
  auto it = counts_.find(0);
  return it == counts_.end() ? 0 : it->second;
}

int64_t StatusCounts::total() const {
  int64_t t = 0;
  for (const auto& [code, n] : counts_) t += n;
  return t;
}

int64_t StatusCounts::errors() const { return total() - ok(); }

std::map<std::string, int64_t> StatusCounts::ByName() const {
  std::map<std::string, int64_t> out;
  for (const auto& [code, n] : counts_) {
    out[StatusCodeName(static_cast<absl::StatusCode>(code))] += n;
  }
  return out;
}

void StatusCounts::Merge(const StatusCounts& other) {
  for (const auto& [code, n] : other.counts_) counts_[code] += n;
}

void RunRecorder::Record(const QueryOutcome& o, bool measured) {
  common::MutexLock lock(&mu_);
  ++window_counts_.completed;
  if (o.code == absl::StatusCode::kOk) {
    window_.Record(o.latency_ns);
  } else {
    ++window_counts_.errors;
  }
  if (!measured) return;
  totals_.codes.Add(o.code);
  if (o.code == absl::StatusCode::kOk) totals_.latency.Record(o.latency_ns);
  totals_.bytes_up += o.bytes_up;
  totals_.bytes_down += o.bytes_down;
  totals_.candidates += o.candidates;
  totals_.edge_joules += o.edge_joules;
  totals_.network_joules += o.network_joules;
}

void RunRecorder::RecordDropped(bool measured) {
  common::MutexLock lock(&mu_);
  ++window_counts_.dropped;
  if (measured) ++totals_.dropped;
}

void RunRecorder::RecordInteraction(bool ok) {
  common::MutexLock lock(&mu_);
  ++(ok ? totals_.interactions_ok : totals_.interactions_failed);
}

RunRecorder::Interval RunRecorder::TakeInterval() {
  common::MutexLock lock(&mu_);
  Interval out = window_counts_;
  out.p99_ns = window_.Percentile(0.99);
  window_counts_ = Interval();
  window_.Reset();
  return out;
}

RunTotals RunRecorder::Totals() const {
  common::MutexLock lock(&mu_);
  return totals_;
}

}  // namespace duet::loadgen
