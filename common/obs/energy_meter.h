// Energy accounting per side (DESIGN.md §6, docs/ENERGY.md): RAPL powercap
// counters where readable, else a model (process CPU seconds x watts per busy
// core of a device profile), plus 5G uplink energy per byte. Exported as the
// counter duet_energy_joules_total{side,source} and the histogram
// duet_query_energy_joules{side}.
#ifndef DUET_COMMON_OBS_ENERGY_METER_H_
#define DUET_COMMON_OBS_ENERGY_METER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace duet::common {

// Sums the package zones of the Linux powercap "intel-rapl" control type
// (also used for AMD family 17h/19h/1Ah). Counts only top-level zones
// intel-rapl:N named package-N: subzones intel-rapl:N:M (core, uncore, dram)
// and psys overlap them. Thread-safe.
class PowercapReader {
 public:
  struct Options {
    std::string root = "/sys/class/powercap";  // a temp dir in tests
  };

  // Fails with NotFound when `root` has no package zone, PermissionDenied
  // when energy_uj is unreadable (root-only since Linux 5.10), and
  // InvalidArgument when a counter file does not hold an integer.
  static absl::StatusOr<std::unique_ptr<PowercapReader>> Create(
      const Options& options);

  // Joules consumed by all packages since Create; never decreases. Must be
  // called more often than the counter wraps (~20 min at 200 W for the usual
  // 262143 J range): a full wrap between two reads is invisible.
  absl::StatusOr<double> ReadJoules();

  // Zone directory names, e.g. {"intel-rapl:0", "intel-rapl:1"}.
  std::vector<std::string> zone_names() const;

 private:
  struct Zone {
    std::string name;         // "intel-rapl:0"
    std::string energy_path;  // <root>/intel-rapl:0/energy_uj
    uint64_t max_energy_range_uj = 0;
    uint64_t last_uj = 0;
  };

  explicit PowercapReader(std::vector<Zone> zones);

  mutable common::Mutex mu_;
  std::vector<Zone> zones_ ABSL_GUARDED_BY(mu_);
  uint64_t total_uj_ ABSL_GUARDED_BY(mu_) = 0;
};

// Energy delta of a counter that counts 0..max_range_uj and then restarts at
// 0 (see the .cc for the +1). Exposed for tests.
uint64_t PowercapDeltaMicrojoules(uint64_t previous_uj, uint64_t current_uj,
                                  uint64_t max_range_uj);

// CPU seconds (user + system, all threads) used by this process so far.
// Implementations must be thread-safe and never go backwards.
class CpuTimeSource {
 public:
  virtual ~CpuTimeSource() = default;
  virtual absl::StatusOr<double> CpuSeconds() = 0;

  // clock_gettime(CLOCK_PROCESS_CPUTIME_ID): nanosecond resolution.
  static std::unique_ptr<CpuTimeSource> ForThisProcess();
};

// Model constant: average power of one fully busy core of a device, package
// share included. Sources in docs/ENERGY.md.
struct DeviceProfile {
  std::string name;
  double watts_per_busy_core = 0;
};

// "server": the Duet paper's x86 server (18 cores @ 3.7 GHz, Table 3).
// 170 W / 18 = 9.44 W: the mean TDP of the two 18-core Skylake-SP Xeons with a
// 3.7 GHz turbo (Gold 6140: 140 W, Gold 6154: 200 W), spread over 18 cores.
DeviceProfile ServerProfile();
// "phone": Snapdragon 855 (Samsung S10e in the paper). 1.8 W, chosen within
// the ~1.5-2 W active power of the 2.84 GHz Cortex-A76 prime core (which runs
// the user model) under SPEC2006 in AnandTech's Snapdragon 855 preview (2019).
DeviceProfile PhoneProfile();
// "server" | "phone" -> the profile; InvalidArgument otherwise.
absl::StatusOr<DeviceProfile> DeviceProfileByName(const std::string& name);

// Linear fit of whole-phone power P(R) = base_watts + watts_per_mbps x R
// while uploading at R Mbps (Narayanan et al., SIGCOMM'21), at a configured
// uplink throughput.
struct NetworkProfile {
  enum class Attribution {
    // All of P(R) for as long as the transfer lasts: an upper bound, since the
    // intercept also pays for the screen and the idle SoC. The default.
    kWholePhone,
    // Only the throughput-dependent slope: a lower bound.
    kThroughputSlope,
  };
  std::string name;
  double base_watts = 0;
  double watts_per_mbps = 0;
  double uplink_mbps = 0;
  Attribution attribution = Attribution::kWholePhone;
};

// The Duet paper measured a 24 Mbps 5G uplink.
inline constexpr double kDuetUplinkMbps = 24.0;
NetworkProfile MmWave5gUplink(
    double uplink_mbps = kDuetUplinkMbps);  // 5.62 W + 9.4 mW/Mbps
NetworkProfile LowBand5gUplink(
    double uplink_mbps = kDuetUplinkMbps);  // 3.20 W + 29 mW/Mbps
NetworkProfile LteUplink(
    double uplink_mbps = kDuetUplinkMbps);  // 2.80 W + 80 mW/Mbps
// "5g-mmwave" | "5g-lowband" | "lte" -> the profile; InvalidArgument otherwise.
absl::StatusOr<NetworkProfile> NetworkProfileByName(const std::string& name,
                                                    double uplink_mbps);

// kWholePhone: P(R) / (R * 1e6 / 8); kThroughputSlope: watts_per_mbps * 8e-6
// (the slope term's time R-dependence cancels). Requires uplink_mbps > 0.
double JoulesPerByte(const NetworkProfile& profile);

// 1-2-5 buckets from 1 µJ to 10 J for duet_query_energy_joules.
std::vector<double> QueryEnergyBucketsJoules();

// The one definition of duet_query_energy_joules{side} (histogram), so edge
// and cloud register the same family. InvalidArgument if the name is taken by
// another metric type.
absl::StatusOr<prometheus::Family<prometheus::Histogram>*>
BuildQueryEnergyHistogramFamily(prometheus::Registry& registry);

// Meters the energy of one side (edge or cloud) of Duet: keeps
// duet_energy_joules_total{side,source} current and records per-query energy.
// Owns a poller thread (if poll_interval > 0) that stops in the destructor;
// all methods are thread-safe.
class EnergyMeter {
 public:
  enum class RaplMode {
    kAuto,      // RAPL when readable, else the model
    kDisabled,  // always the model (the edge: host RAPL is not a phone)
    kRequired,  // Create fails when RAPL is unreadable
  };

  struct Options {
    std::string side;                                // "edge" | "cloud"
    std::shared_ptr<prometheus::Registry> registry;  // required; kept alive
    RaplMode rapl = RaplMode::kAuto;
    PowercapReader::Options powercap;
    DeviceProfile device = ServerProfile();
    // Set where the radio sends (the edge); enables side="network".
    std::optional<NetworkProfile> uplink;
    // Null: CpuTimeSource::ForThisProcess().
    std::unique_ptr<CpuTimeSource> cpu_time;
    // How often the poller calls Poll(); zero: no thread, the caller polls.
    // Keeps the exported counter at most this stale and reads RAPL far more
    // often than it wraps.
    absl::Duration poll_interval = absl::Seconds(1);
  };

  // InvalidArgument for a bad side, profile or missing registry; with
  // kRequired, the PowercapReader's error.
  static absl::StatusOr<std::unique_ptr<EnergyMeter>> Create(Options options);

  ~EnergyMeter();
  EnergyMeter(const EnergyMeter&) = delete;
  EnergyMeter& operator=(const EnergyMeter&) = delete;

  // Reads RAPL or the CPU clock and adds the increase to the counter. Cheap
  // (one or two small file reads). On error the counter does not move and
  // duet_energy_read_errors_total{side} counts it.
  absl::Status Poll();

  // Adds bytes x JoulesPerByte(uplink) to {side="network",source="model"}.
  // No-op when no uplink profile is configured (the cloud).
  void AddUplinkBytes(uint64_t bytes);

  // Model energy of `cpu_seconds` of this side's CPU: cpu_seconds x
  // watts_per_busy_core. Also used when source is "rapl", which cannot
  // attribute package energy to one query.
  double QueryJoules(double cpu_seconds) const;

  // Per-query entry point: observes duet_query_energy_joules{side} with
  // QueryJoules(cpu_seconds) and, with an uplink profile, {side="network"}
  // with the uplink energy, which it also adds to the counter (so do not call
  // AddUplinkBytes for the same bytes). Returns the query's total joules.
  double ObserveQuery(double cpu_seconds, uint64_t uplink_bytes);

  const std::string& side() const { return side_; }
  // "rapl" or "model".
  const std::string& source() const { return source_; }
  // Why RAPL is not used (empty when it is): for the server's startup log.
  const std::string& rapl_unavailable_reason() const {
    return rapl_unavailable_reason_;
  }

 private:
  EnergyMeter(Options options, std::unique_ptr<PowercapReader> rapl,
              std::string rapl_unavailable_reason);
  absl::Status Init();
  void PollLoop();

  const std::string side_;
  const std::shared_ptr<prometheus::Registry> registry_;
  const DeviceProfile device_;
  const std::optional<NetworkProfile> uplink_;
  const double uplink_joules_per_byte_;
  const std::unique_ptr<PowercapReader> rapl_;
  const std::unique_ptr<CpuTimeSource> cpu_time_;
  const std::string source_;
  const std::string rapl_unavailable_reason_;
  const absl::Duration poll_interval_;

  // Registered in registry_, which owns them.
  prometheus::Counter* energy_ = nullptr;
  prometheus::Counter* network_energy_ = nullptr;  // null without uplink
  prometheus::Counter* read_errors_ = nullptr;
  prometheus::Histogram* query_energy_ = nullptr;
  prometheus::Histogram* query_network_energy_ = nullptr;

  common::Mutex mu_;
  double last_cpu_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  double last_rapl_joules_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread poller_;
};

}  // namespace duet::common

#endif  // DUET_COMMON_OBS_ENERGY_METER_H_
