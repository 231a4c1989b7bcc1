#include "common/obs/energy_meter.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/base/status_macros.h"
#include "common/obs/metrics.h"

namespace duet::common {
namespace {

constexpr char kRootOnlyHint[] =
    "RAPL energy counters are readable only by root since Linux 5.10 "
    "(CVE-2020-8694, the PLATYPUS power side channel); run as root, grant "
    "read access to energy_uj (e.g. a udev rule), or use the model "
    "(RaplMode::kDisabled)";

// Reads a small sysfs file, keeping errno's meaning in the status code.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == EACCES || err == EPERM) {
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot read ", path, ": ", std::strerror(err), ". ", kRootOnlyHint));
    }
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    }
    return absl::UnavailableError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(err)));
  }
  char buffer[64];
  const ssize_t n = read(fd, buffer, sizeof(buffer));
  const int err = errno;
  close(fd);
  if (n < 0) {
    // Virtual machines may expose the zone but fail the MSR read with EIO.
    return absl::UnavailableError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(err)));
  }
  return std::string(absl::StripAsciiWhitespace(absl::string_view(buffer, n)));
}

absl::StatusOr<uint64_t> ReadCounterFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path));
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " holds \"", text, "\", expected an unsigned integer"));
  }
  return value;
}

// "intel-rapl:<digits>" exactly: a package zone, not a subzone
// "intel-rapl:N:M", not "intel-rapl-mmio:N" (the MMIO interface to the same
// package counter on client parts) and not the control type "intel-rapl".
bool IsTopLevelRaplZone(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, "intel-rapl:") || name.empty()) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return absl::ascii_isdigit(c); });
}

class ProcessCpuClock : public CpuTimeSource {
 public:
  absl::StatusOr<double> CpuSeconds() override {
    timespec ts{};
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) {
      return absl::InternalError(absl::StrCat(
          "clock_gettime(CLOCK_PROCESS_CPUTIME_ID): ", std::strerror(errno)));
    }
    return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
  }
};

bool PositiveFinite(double x) { return std::isfinite(x) && x > 0; }

}  // namespace

// ------------------------------------------------------------ powercap

// The powercap ABI (Documentation/ABI/testing/sysfs-class-powercap) gives
// energy_uj the range 0..max_energy_range_uj, so after max_range_uj the next
// value is 0: modulus max_range + 1. In intel_rapl_common the true modulus is
// max_range + one hardware energy unit (15-61 µJ) because the 32-bit MSR is
// scaled to µJ, so this under-counts by < 61 µJ per wrap (one wrap per
// ~20 min): negligible. A previous value above the range means the zone was
// reset (a driver reload); count from zero then.
uint64_t PowercapDeltaMicrojoules(uint64_t previous_uj, uint64_t current_uj,
                                  uint64_t max_range_uj) {
  if (current_uj >= previous_uj) return current_uj - previous_uj;
  if (previous_uj > max_range_uj) return current_uj;
  return (max_range_uj - previous_uj) + current_uj + 1;
}

absl::StatusOr<std::unique_ptr<PowercapReader>> PowercapReader::Create(
    const Options& options) {
  const std::string& root = options.root;
  DIR* dir = opendir(root.c_str());
  if (dir == nullptr) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(
          "no RAPL: powercap root ", root,
          " does not exist (no powercap driver, e.g. a VM or container)"));
    }
    return absl::UnavailableError(absl::StrCat(
        "no RAPL: cannot list powercap root ", root, ": ", std::strerror(err)));
  }
  std::vector<std::string> names;
  while (const dirent* entry = readdir(dir)) {
    if (IsTopLevelRaplZone(entry->d_name)) names.push_back(entry->d_name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());

  std::vector<Zone> zones;
  for (const std::string& name : names) {
    const std::string zone_dir = absl::StrCat(root, "/", name);
    // Some client parts add a top-level "psys" zone (whole platform), which
    // contains the packages: keep only zones named package-N. A zone without
    // a name file is taken to be a package.
    const absl::StatusOr<std::string> label = ReadSmallFile(zone_dir + "/name");
    if (label.ok() && !absl::StartsWith(*label, "package")) continue;
    Zone zone;
    zone.name = name;
    zone.energy_path = zone_dir + "/energy_uj";
    ASSIGN_OR_RETURN(zone.max_energy_range_uj,
                     ReadCounterFile(zone_dir + "/max_energy_range_uj"));
    if (zone.max_energy_range_uj == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(zone_dir, "/max_energy_range_uj is 0"));
    }
    ASSIGN_OR_RETURN(zone.last_uj, ReadCounterFile(zone.energy_path));
    zones.push_back(std::move(zone));
  }
  if (zones.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no RAPL: no package zone intel-rapl:N under ", root,
                     " (intel_rapl_common not loaded, or a CPU without RAPL)"));
  }
  return std::unique_ptr<PowercapReader>(new PowercapReader(std::move(zones)));
}

PowercapReader::PowercapReader(std::vector<Zone> zones)
    : zones_(std::move(zones)) {}

absl::StatusOr<double> PowercapReader::ReadJoules() {
  common::MutexLock lock(&mu_);
  // Zones that read fine keep their progress even if a later one fails; the
  // failed one catches up on the next read.
  for (Zone& zone : zones_) {
    ASSIGN_OR_RETURN(const uint64_t now, ReadCounterFile(zone.energy_path));
    total_uj_ +=
        PowercapDeltaMicrojoules(zone.last_uj, now, zone.max_energy_range_uj);
    zone.last_uj = now;
  }
  // Summing integer µJ keeps the total exact; one conversion per read.
  return static_cast<double>(total_uj_) * 1e-6;
}

std::vector<std::string> PowercapReader::zone_names() const {
  common::MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const Zone& zone : zones_) names.push_back(zone.name);
  return names;
}

std::unique_ptr<CpuTimeSource> CpuTimeSource::ForThisProcess() {
  return std::make_unique<ProcessCpuClock>();
}

// ------------------------------------------------------------ profiles

DeviceProfile ServerProfile() { return {"server", 170.0 / 18.0}; }

DeviceProfile PhoneProfile() { return {"phone", 1.8}; }

absl::StatusOr<DeviceProfile> DeviceProfileByName(const std::string& name) {
  if (name == "server") return ServerProfile();
  if (name == "phone") return PhoneProfile();
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown device profile \"", name, "\", expected server or phone"));
}

NetworkProfile MmWave5gUplink(double uplink_mbps) {
  return {"5g-mmwave", 5.62, 9.4e-3, uplink_mbps,
          NetworkProfile::Attribution::kWholePhone};
}

NetworkProfile LowBand5gUplink(double uplink_mbps) {
  return {"5g-lowband", 3.20, 29e-3, uplink_mbps,
          NetworkProfile::Attribution::kWholePhone};
}

NetworkProfile LteUplink(double uplink_mbps) {
  return {"lte", 2.80, 80e-3, uplink_mbps,
          NetworkProfile::Attribution::kWholePhone};
}

absl::StatusOr<NetworkProfile> NetworkProfileByName(const std::string& name,
                                                    double uplink_mbps) {
  if (!PositiveFinite(uplink_mbps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("uplink throughput must be > 0 Mbps, got ", uplink_mbps));
  }
  if (name == "5g-mmwave") return MmWave5gUplink(uplink_mbps);
  if (name == "5g-lowband") return LowBand5gUplink(uplink_mbps);
  if (name == "lte") return LteUplink(uplink_mbps);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown network profile \"", name,
                   "\", expected 5g-mmwave, 5g-lowband or lte"));
}

double JoulesPerByte(const NetworkProfile& profile) {
  const double bytes_per_second = profile.uplink_mbps * 1e6 / 8;
  switch (profile.attribution) {
    case NetworkProfile::Attribution::kThroughputSlope:
      return profile.watts_per_mbps * profile.uplink_mbps / bytes_per_second;
    case NetworkProfile::Attribution::kWholePhone:
      break;
  }
  return (profile.base_watts + profile.watts_per_mbps * profile.uplink_mbps) /
         bytes_per_second;
}

std::vector<double> QueryEnergyBucketsJoules() {
  return OneTwoFiveBuckets(-6, 1);
}

absl::StatusOr<prometheus::Family<prometheus::Histogram>*>
BuildQueryEnergyHistogramFamily(prometheus::Registry& registry) {
  try {
    return &prometheus::BuildHistogram()
                .Name("duet_query_energy_joules")
                .Help(
                    "Energy of one query by side (edge|cloud|network), in "
                    "joules; CPU share from the device profile, see "
                    "docs/ENERGY.md.")
                .Register(registry);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot register duet_query_energy_joules: ", e.what()));
  }
}

// ------------------------------------------------------------ meter

absl::StatusOr<std::unique_ptr<EnergyMeter>> EnergyMeter::Create(
    Options options) {
  if (options.side != "edge" && options.side != "cloud") {
    return absl::InvalidArgumentError(absl::StrCat(
        "energy meter side is \"", options.side, "\", expected edge or cloud"));
  }
  if (options.registry == nullptr) {
    return absl::InvalidArgumentError("energy meter needs a registry");
  }
  if (!PositiveFinite(options.device.watts_per_busy_core)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device profile \"", options.device.name, "\" has watts_per_busy_core ",
        options.device.watts_per_busy_core, ", expected > 0"));
  }
  if (options.uplink.has_value() &&
      (!PositiveFinite(options.uplink->uplink_mbps) ||
       !(options.uplink->base_watts >= 0) ||
       !(options.uplink->watts_per_mbps >= 0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "network profile \"", options.uplink->name,
        "\" needs uplink_mbps > 0 and non-negative watts, got ",
        options.uplink->uplink_mbps, " Mbps, ", options.uplink->base_watts,
        " W + ", options.uplink->watts_per_mbps, " W/Mbps"));
  }
  if (options.poll_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("poll_interval must be >= 0, got ",
                     absl::FormatDuration(options.poll_interval)));
  }
  std::unique_ptr<PowercapReader> rapl;
  std::string reason = "disabled by option (RaplMode::kDisabled)";
  if (options.rapl != RaplMode::kDisabled) {
    auto reader = PowercapReader::Create(options.powercap);
    if (reader.ok()) {
      rapl = std::move(reader).value();
      reason.clear();
    } else if (options.rapl == RaplMode::kRequired) {
      return reader.status();
    } else {
      reason = std::string(reader.status().message());
    }
  }
  if (options.cpu_time == nullptr) {
    options.cpu_time = CpuTimeSource::ForThisProcess();
  }
  std::unique_ptr<EnergyMeter> meter(
      new EnergyMeter(std::move(options), std::move(rapl), std::move(reason)));
  RETURN_IF_ERROR(meter->Init());
  if (meter->poll_interval_ > absl::ZeroDuration()) {
    meter->poller_ = std::thread([m = meter.get()] { m->PollLoop(); });
  }
  return meter;
}

EnergyMeter::EnergyMeter(Options options, std::unique_ptr<PowercapReader> rapl,
                         std::string rapl_unavailable_reason)
    : side_(std::move(options.side)),
      registry_(std::move(options.registry)),
      device_(std::move(options.device)),
      uplink_(std::move(options.uplink)),
      uplink_joules_per_byte_(uplink_ ? JoulesPerByte(*uplink_) : 0.0),
      rapl_(std::move(rapl)),
      cpu_time_(std::move(options.cpu_time)),
      source_(rapl_ ? "rapl" : "model"),
      rapl_unavailable_reason_(std::move(rapl_unavailable_reason)),
      poll_interval_(options.poll_interval) {}

absl::Status EnergyMeter::Init() {
  try {
    auto& energy = prometheus::BuildCounter()
                       .Name("duet_energy_joules_total")
                       .Help(
                           "Energy used, in joules, by side "
                           "(edge|cloud|network) and source (rapl: powercap "
                           "counters; model: docs/ENERGY.md).")
                       .Register(*registry_);
    energy_ = &energy.Add({{"side", side_}, {"source", source_}});
    if (uplink_) {
      network_energy_ = &energy.Add({{"side", "network"}, {"source", "model"}});
    }
    read_errors_ =
        &prometheus::BuildCounter()
             .Name("duet_energy_read_errors_total")
             .Help("Failed reads of the energy source (RAPL or CPU clock).")
             .Register(*registry_)
             .Add({{"side", side_}});
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot register duet_energy_joules_total: ", e.what()));
  }
  ASSIGN_OR_RETURN(auto* histograms,
                   BuildQueryEnergyHistogramFamily(*registry_));
  query_energy_ =
      &histograms->Add({{"side", side_}}, QueryEnergyBucketsJoules());
  if (uplink_) {
    query_network_energy_ =
        &histograms->Add({{"side", "network"}}, QueryEnergyBucketsJoules());
  }
  return absl::OkStatus();
}

EnergyMeter::~EnergyMeter() {
  {
    common::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (poller_.joinable()) poller_.join();
}

void EnergyMeter::PollLoop() {
  mu_.Lock();
  while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), poll_interval_)) {
    mu_.Unlock();
    // Failures are counted in duet_energy_read_errors_total by Poll.
    Poll().IgnoreError();
    mu_.Lock();
  }
  mu_.Unlock();
}

absl::Status EnergyMeter::Poll() {
  if (rapl_ != nullptr) {
    absl::StatusOr<double> joules = rapl_->ReadJoules();
    if (!joules.ok()) {
      read_errors_->Increment();
      return joules.status();
    }
    common::MutexLock lock(&mu_);
    if (*joules > last_rapl_joules_) {
      energy_->Increment(*joules - last_rapl_joules_);
      last_rapl_joules_ = *joules;
    }
    return absl::OkStatus();
  }
  // The model counts from process start (CPU time is 0 then), so the energy
  // of loading the model before the meter existed is included.
  absl::StatusOr<double> cpu_seconds = cpu_time_->CpuSeconds();
  if (!cpu_seconds.ok()) {
    read_errors_->Increment();
    return cpu_seconds.status();
  }
  common::MutexLock lock(&mu_);
  if (*cpu_seconds > last_cpu_seconds_) {
    energy_->Increment((*cpu_seconds - last_cpu_seconds_) *
                       device_.watts_per_busy_core);
    last_cpu_seconds_ = *cpu_seconds;
  }
  return absl::OkStatus();
}

void EnergyMeter::AddUplinkBytes(uint64_t bytes) {
  if (network_energy_ == nullptr) return;
  network_energy_->Increment(static_cast<double>(bytes) *
                             uplink_joules_per_byte_);
}

double EnergyMeter::QueryJoules(double cpu_seconds) const {
  return cpu_seconds * device_.watts_per_busy_core;
}

double EnergyMeter::ObserveQuery(double cpu_seconds, uint64_t uplink_bytes) {
  const double cpu_joules = QueryJoules(cpu_seconds);
  query_energy_->Observe(cpu_joules);
  if (query_network_energy_ == nullptr) return cpu_joules;
  const double network_joules =
      static_cast<double>(uplink_bytes) * uplink_joules_per_byte_;
  query_network_energy_->Observe(network_joules);
  network_energy_->Increment(network_joules);
  return cpu_joules + network_joules;
}

}  // namespace duet::common
