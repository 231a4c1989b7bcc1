#include "tools/loadgen/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/model/catalog.h"

namespace duet::loadgen {
namespace {

// log1p(x) / x and expm1(x) / x, accurate near 0.
double Helper1(double x) {
  return std::abs(x) > 1e-8 ? std::log1p(x) / x
                            : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}
double Helper2(double x) {
  return std::abs(x) > 1e-8
             ? std::expm1(x) / x
             : 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
}

double Uniform01(Rng& rng) {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

}  // namespace

ZipfSampler::ZipfSampler(int64_t n, double s)
    : n_(std::max<int64_t>(n, 1)), s_(s) {
  h_integral_x1_ = H(1.5) - 1.0;
  h_integral_n_ = H(static_cast<double>(n_) + 0.5);
  threshold_ = 2.0 - HInverse(H(2.5) - h(2.0));
}

double ZipfSampler::H(double x) const {
  const double log_x = std::log(x);
  return Helper2((1.0 - s_) * log_x) * log_x;
}

double ZipfSampler::HInverse(double x) const {
  double t = x * (1.0 - s_);
  if (t < -1.0) t = -1.0;  // rounding near the boundary
  return std::exp(Helper1(t) * x);
}

int64_t ZipfSampler::Sample(Rng& rng) const {
  if (s_ <= 0.0) {
    return std::uniform_int_distribution<int64_t>(1, n_)(rng);
  }
  while (true) {
    const double u =
        h_integral_n_ + Uniform01(rng) * (h_integral_x1_ - h_integral_n_);
    const double x = HInverse(u);
    int64_t k = static_cast<int64_t>(x + 0.5);
    k = std::clamp<int64_t>(k, 1, n_);
    // Accept at once inside the squeeze, else test under the true mass.
    if (static_cast<double>(k) - x <= threshold_ ||
        u >= H(static_cast<double>(k) + 0.5) - h(static_cast<double>(k))) {
      return k;
    }
  }
}

double PoissonArrivals::NextGapSeconds(Rng& rng) const {
  return std::exponential_distribution<double>(rate_)(rng);
}

absl::StatusOr<CandidateCountDistribution> CandidateCountDistribution::Parse(
    absl::string_view spec, int max_candidates) {
  std::vector<absl::string_view> parts = absl::StrSplit(spec, ':');
  auto number = [&](absl::string_view s, double* v) -> absl::Status {
    if (!absl::SimpleAtod(s, v) || !std::isfinite(*v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "candidate count '", spec, "': '", s, "' is not a number"));
    }
    return absl::OkStatus();
  };
  double mean = 0, sd = 0;
  if (parts.size() == 1 || (parts.size() == 2 && parts[0] == "fixed")) {
    if (absl::Status s = number(parts.back(), &mean); !s.ok()) return s;
  } else if (parts.size() == 3 && parts[0] == "normal") {
    if (absl::Status s = number(parts[1], &mean); !s.ok()) return s;
    if (absl::Status s = number(parts[2], &sd); !s.ok()) return s;
    if (sd < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "candidate count '", spec, "': standard deviation must be >= 0"));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "candidate count '", spec, "': expected N, fixed:N or normal:MEAN:SD"));
  }
  if (sd == 0 &&
      (mean < 1 || mean > max_candidates || mean != std::floor(mean))) {
    return absl::InvalidArgumentError(
        absl::StrFormat("candidate count '%s': N must be an integer in [1, %d]",
                        spec, max_candidates));
  }
  return CandidateCountDistribution(mean, sd, max_candidates);
}

CandidateCountDistribution CandidateCountDistribution::Fixed(int n) {
  return CandidateCountDistribution(n, 0.0, std::max(n, 1));
}

int CandidateCountDistribution::Sample(Rng& rng) const {
  if (sd_ == 0.0) return static_cast<int>(mean_);
  const double x = std::normal_distribution<double>(mean_, sd_)(rng);
  return static_cast<int>(std::clamp(std::round(x), 1.0, double(max_)));
}

std::string CandidateCountDistribution::ToString() const {
  if (sd_ == 0.0) return absl::StrCat(static_cast<int>(mean_));
  return absl::StrCat("normal:", mean_, ":", sd_);
}

CandidateSampler::CandidateSampler(int64_t num_items, double zipf_s,
                                   uint64_t seed)
    : num_items_(std::max<int64_t>(num_items, 1)), zipf_(num_items_, zipf_s) {
  const uint64_t n = static_cast<uint64_t>(num_items_);
  uint64_t a = (common::Mix(seed) % n) | 1;
  while (std::gcd(a, n) != 1) a = (a + 1) % n == 0 ? 1 : a + 1;
  multiplier_ = a % n == 0 ? 1 : a % n;
  offset_ = common::Mix(seed ^ 0x5EED) % n;
}

int64_t CandidateSampler::ItemOfRank(int64_t rank) const {
  const unsigned __int128 x =
      static_cast<unsigned __int128>(rank - 1) * multiplier_ + offset_;
  return static_cast<int64_t>(x % static_cast<uint64_t>(num_items_));
}

int64_t CandidateSampler::SampleOne(Rng& rng) const {
  return ItemOfRank(zipf_.Sample(rng));
}

void CandidateSampler::Sample(int n, Rng& rng,
                              std::vector<int64_t>* out) const {
  out->clear();
  out->reserve(n);
  if (n > num_items_) {
    // More candidates than items: distinctness is impossible.
    for (int i = 0; i < n; ++i) out->push_back(SampleOne(rng));
    return;
  }
  absl::flat_hash_set<int64_t> seen;
  seen.reserve(n);
  // Under heavy skew the head saturates; cap the redraws and then fall back
  // to a uniform walk over unseen items so a query never stalls.
  int64_t budget = 32LL * n + 64;
  while (static_cast<int>(out->size()) < n && budget-- > 0) {
    const int64_t item = SampleOne(rng);
    if (seen.insert(item).second) out->push_back(item);
  }
  int64_t item = std::uniform_int_distribution<int64_t>(0, num_items_ - 1)(rng);
  while (static_cast<int>(out->size()) < n) {
    if (seen.insert(item).second) out->push_back(item);
    item = (item + 1) % num_items_;
  }
}

}  // namespace duet::loadgen
