// StrategySelector: picks, per query by its candidate count N, the lookup
// parallelism (batch | table) and the user-contribution strategy (load |
// recompute). At start-up it calibrates both alternatives of each kind on
// this machine and model over a grid of N (8, 16, ..., max) within a time
// budget (the non-default alternative — table, recompute — must be at least
// 3 % faster to be picked); a forced choice skips calibration. Every choice
// is counted.
// Thread-safe after Create (the choice tables are immutable).
#ifndef DUET_CLOUD_STRATEGY_SELECTOR_H_
#define DUET_CLOUD_STRATEGY_SELECTOR_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/combined_top.h"
#include "cloud/lookup_engine.h"

namespace duet::cloud {

// "auto" | "batch" | "table" -> nullopt (auto) or the forced strategy.
absl::StatusOr<std::optional<LookupStrategy>> ParseLookupFlag(
    const std::string& s);
// "auto" | "load" | "recompute".
absl::StatusOr<std::optional<UserStrategy>> ParseUserFlag(const std::string& s);

class StrategySelector {
 public:
  // Runs one alternative once for n candidates and returns how long it took
  // (measured by the probe, so tests can fake time). `choice` is 0/1: the
  // enum value of LookupStrategy or UserStrategy.
  using Probe =
      std::function<absl::StatusOr<absl::Duration>(int choice, int n)>;

  struct Options {
    std::optional<LookupStrategy> force_lookup;
    std::optional<UserStrategy> force_user;
    int max_n = 1024;  // grid: 8, 16, ... up to and including max_n
    // Total calibration time; each grid cell gets an equal share, at least
    // one run per alternative.
    absl::Duration budget = absl::Seconds(3);
    int max_reps = 64;
  };

  struct Measurement {
    int n = 0;
    double seconds[2] = {0, 0};  // median per alternative
    int choice = 0;
  };

  // Probe errors are returned (calibration runs real compute).
  static absl::StatusOr<std::unique_ptr<StrategySelector>> Create(
      const Options& options, const Probe& lookup_probe,
      const Probe& user_probe);

  // A selector with `prior`'s options, measurements and choices and fresh
  // counters: for a model version whose shapes and placement equal those of
  // the version `prior` was calibrated for, on this machine (the choices
  // depend on nothing else).
  static std::unique_ptr<StrategySelector> Inherit(
      const StrategySelector& prior);

  // Choice for a query of n candidates; counted.
  LookupStrategy ChooseLookup(int n);
  // The same choice, not counted.
  LookupStrategy LookupFor(int n) const {
    return static_cast<LookupStrategy>(lookup_choice_[GridIndex(n)]);
  }
  UserStrategy ChooseUser(int n);

  uint64_t lookup_count(LookupStrategy s) const {
    return lookup_counts_[static_cast<int>(s)].load();
  }
  uint64_t user_count(UserStrategy s) const {
    return user_counts_[static_cast<int>(s)].load();
  }
  const std::vector<int>& grid() const { return grid_; }
  // Empty for a forced kind.
  const std::vector<Measurement>& lookup_measurements() const {
    return lookup_;
  }
  const std::vector<Measurement>& user_measurements() const { return user_; }
  // The calibration table and the crossovers ("table from N=64"), for the
  // start-up log.
  std::string DebugString() const;

 private:
  StrategySelector() = default;
  int GridIndex(int n) const;
  static absl::StatusOr<std::vector<Measurement>> Calibrate(
      const std::vector<int>& grid, const Probe& probe,
      absl::Duration cell_budget, int max_reps);

  Options options_;
  std::vector<int> grid_;
  std::vector<Measurement> lookup_, user_;
  std::vector<uint8_t> lookup_choice_, user_choice_;  // per grid point
  std::array<std::atomic<uint64_t>, 2> lookup_counts_{};
  std::array<std::atomic<uint64_t>, 2> user_counts_{};
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_STRATEGY_SELECTOR_H_
