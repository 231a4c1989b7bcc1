#include "cloud/strategy_selector.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"

namespace duet::cloud {
namespace {

// Relative speed-up the alternative with enum value 1 (table, recompute)
// needs over the default (batch, load) to be chosen.
constexpr double kMinGain = 0.03;

double Median(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::string Crossovers(const std::vector<StrategySelector::Measurement>& m,
                       const char* names[2]) {
  std::string out;
  for (size_t i = 0; i < m.size(); ++i) {
    if (i == 0 || m[i].choice != m[i - 1].choice) {
      absl::StrAppend(&out, out.empty() ? "" : ", ", names[m[i].choice],
                      " from N=", m[i].n);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::optional<LookupStrategy>> ParseLookupFlag(
    const std::string& s) {
  if (s == "auto") return std::optional<LookupStrategy>();
  if (s == "batch")
    return std::optional<LookupStrategy>(LookupStrategy::kBatch);
  if (s == "table")
    return std::optional<LookupStrategy>(LookupStrategy::kTable);
  return absl::InvalidArgumentError(absl::StrCat(
      "lookup strategy '", s, "' is not one of auto, batch, table"));
}

absl::StatusOr<std::optional<UserStrategy>> ParseUserFlag(
    const std::string& s) {
  if (s == "auto") return std::optional<UserStrategy>();
  if (s == "load") return std::optional<UserStrategy>(UserStrategy::kLoad);
  if (s == "recompute") {
    return std::optional<UserStrategy>(UserStrategy::kRecompute);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "user strategy '", s, "' is not one of auto, load, recompute"));
}

absl::StatusOr<std::vector<StrategySelector::Measurement>>
StrategySelector::Calibrate(const std::vector<int>& grid, const Probe& probe,
                            absl::Duration cell_budget, int max_reps) {
  std::vector<Measurement> out;
  for (int n : grid) {
    Measurement m;
    m.n = n;
    // Warm up both (page faults, oneDNN primitive creation), then alternate
    // so drift in machine load hits both alike.
    for (int c = 0; c < 2; ++c) RETURN_IF_ERROR(probe(c, n).status());
    std::vector<double> times[2];
    absl::Duration spent;
    for (int rep = 0; rep < std::max(max_reps, 1); ++rep) {
      for (int c = 0; c < 2; ++c) {
        ASSIGN_OR_RETURN(const absl::Duration t, probe(c, n));
        times[c].push_back(absl::ToDoubleSeconds(t));
        spent += t;
      }
      if (spent >= cell_budget) break;
    }
    for (int c = 0; c < 2; ++c) m.seconds[c] = Median(times[c]);
    // The second alternative must win clearly: on near-ties, measurement
    // noise would otherwise make the choice flip back and forth over N.
    m.choice = m.seconds[1] < m.seconds[0] * (1 - kMinGain) ? 1 : 0;
    out.push_back(m);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<StrategySelector>> StrategySelector::Create(
    const Options& options, const Probe& lookup_probe,
    const Probe& user_probe) {
  if (options.max_n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_n is ", options.max_n, ", must be >= 1"));
  }
  auto s = std::unique_ptr<StrategySelector>(new StrategySelector());
  s->options_ = options;
  for (int n = 8; n < options.max_n; n *= 2) s->grid_.push_back(n);
  s->grid_.push_back(options.max_n);
  const int kinds =
      (options.force_lookup ? 0 : 1) + (options.force_user ? 0 : 1);
  const absl::Duration cell_budget =
      kinds == 0 ? absl::ZeroDuration()
                 : options.budget / (kinds * static_cast<int>(s->grid_.size()));
  if (!options.force_lookup) {
    ASSIGN_OR_RETURN(s->lookup_, Calibrate(s->grid_, lookup_probe, cell_budget,
                                           options.max_reps));
  }
  if (!options.force_user) {
    ASSIGN_OR_RETURN(s->user_, Calibrate(s->grid_, user_probe, cell_budget,
                                         options.max_reps));
  }
  for (size_t g = 0; g < s->grid_.size(); ++g) {
    s->lookup_choice_.push_back(static_cast<uint8_t>(
        options.force_lookup ? static_cast<int>(*options.force_lookup)
                             : s->lookup_[g].choice));
    s->user_choice_.push_back(static_cast<uint8_t>(
        options.force_user ? static_cast<int>(*options.force_user)
                           : s->user_[g].choice));
  }
  return s;
}

std::unique_ptr<StrategySelector> StrategySelector::Inherit(
    const StrategySelector& prior) {
  auto s = std::unique_ptr<StrategySelector>(new StrategySelector());
  s->options_ = prior.options_;
  s->grid_ = prior.grid_;
  s->lookup_ = prior.lookup_;
  s->user_ = prior.user_;
  s->lookup_choice_ = prior.lookup_choice_;
  s->user_choice_ = prior.user_choice_;
  return s;
}

int StrategySelector::GridIndex(int n) const {
  const auto it = std::lower_bound(grid_.begin(), grid_.end(), n);
  return it == grid_.end() ? static_cast<int>(grid_.size()) - 1
                           : static_cast<int>(it - grid_.begin());
}

LookupStrategy StrategySelector::ChooseLookup(int n) {
  const LookupStrategy s = LookupFor(n);
  lookup_counts_[static_cast<int>(s)].fetch_add(1, std::memory_order_relaxed);
  return s;
}

UserStrategy StrategySelector::ChooseUser(int n) {
  const int c = user_choice_[GridIndex(n)];
  user_counts_[c].fetch_add(1, std::memory_order_relaxed);
  return static_cast<UserStrategy>(c);
}

std::string StrategySelector::DebugString() const {
  const char* lookup_names[2] = {"batch", "table"};
  const char* user_names[2] = {"load", "recompute"};
  std::string out;
  auto kind = [&](const char* title, const std::vector<Measurement>& m,
                  const char* names[2], const auto& forced) {
    if (forced) {
      absl::StrAppend(&out, title, ": forced ",
                      names[static_cast<int>(*forced)], "\n");
      return;
    }
    absl::StrAppend(&out, title, ": ", Crossovers(m, names), "\n");
    for (const Measurement& x : m) {
      absl::StrAppendFormat(&out, "  N=%-5d %s %9.1f us  %s %9.1f us  -> %s\n",
                            x.n, names[0], 1e6 * x.seconds[0], names[1],
                            1e6 * x.seconds[1], names[x.choice]);
    }
  };
  kind("lookup strategy", lookup_, lookup_names, options_.force_lookup);
  kind("user strategy", user_, user_names, options_.force_user);
  return out;
}

}  // namespace duet::cloud
