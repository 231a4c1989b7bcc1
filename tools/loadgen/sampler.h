// Random workload distributions of the load generator: Zipf popularity of
// candidate items, Poisson arrivals for the open loop, and the number of
// candidates per query (fixed, or a clamped normal like DeepRecSys' query
// sizes). All samplers are immutable after construction and thread-safe;
// each thread passes its own random engine.
#ifndef DUET_TOOLS_LOADGEN_SAMPLER_H_
#define DUET_TOOLS_LOADGEN_SAMPLER_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace duet::loadgen {

// The random engine every sampler draws from (one per thread).
using Rng = std::mt19937_64;

// Ranks 1..n with P(k) proportional to 1 / k^s (s >= 0; s = 0 is uniform).
// O(1) per draw and no table, so n may be a full catalog: rejection-inversion
// sampling (Hormann & Derflinger 1996, as in Apache Commons RNG).
class ZipfSampler {
 public:
  ZipfSampler(int64_t n, double s);
  int64_t Sample(Rng& rng) const;  // in [1, n]
  int64_t n() const { return n_; }
  double exponent() const { return s_; }

 private:
  double H(double x) const;  // integral of the hat function
  double HInverse(double x) const;
  double h(double x) const { return std::exp(-s_ * std::log(x)); }

  int64_t n_;
  double s_;
  double h_integral_x1_, h_integral_n_, threshold_;
};

// Exponential inter-arrival gaps of a Poisson process of `rate` per second.
class PoissonArrivals {
 public:
  explicit PoissonArrivals(double rate) : rate_(rate) {}
  double NextGapSeconds(Rng& rng) const;
  double rate() const { return rate_; }

 private:
  double rate_;
};

// The number of candidates per query: "N" / "fixed:N", or "normal:MEAN:SD"
// rounded and clamped to [1, max] (DeepRecSys: normal around 165, at most
// 1024). Parse fails with INVALID_ARGUMENT naming the bad part.
class CandidateCountDistribution {
 public:
  static absl::StatusOr<CandidateCountDistribution> Parse(
      absl::string_view spec, int max_candidates = 1024);
  static CandidateCountDistribution Fixed(int n);

  int Sample(Rng& rng) const;
  std::string ToString() const;
  bool fixed() const { return sd_ == 0.0; }
  double mean() const { return mean_; }

 private:
  CandidateCountDistribution(double mean, double sd, int max)
      : mean_(mean), sd_(sd), max_(max) {}
  double mean_;
  double sd_;
  int max_;
};

// Candidate item ids for one query: popularity rank from a ZipfSampler,
// mapped to an item id by a fixed bijection of [0, num_items) (so popular
// items are spread over the catalog, not ids 0, 1, 2, ...). Ids within one
// query are distinct while the catalog allows it.
class CandidateSampler {
 public:
  CandidateSampler(int64_t num_items, double zipf_s, uint64_t seed);
  void Sample(int n, Rng& rng, std::vector<int64_t>* out) const;
  int64_t SampleOne(Rng& rng) const;
  // The item id of popularity rank r (1-based).
  int64_t ItemOfRank(int64_t rank) const;

 private:
  int64_t num_items_;
  ZipfSampler zipf_;
  uint64_t multiplier_;  // coprime with num_items_
  uint64_t offset_;
};

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_SAMPLER_H_
