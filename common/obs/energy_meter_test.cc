#include "common/obs/energy_meter.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The usual max_energy_range_uj of a package zone (2^32 units of 61.04 µJ).
constexpr uint64_t kMaxRangeUj = 262143328850;

// A fresh directory under TEST_TMPDIR (or /tmp), removed at the end.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string pattern =
        absl::StrCat(base != nullptr ? base : "/tmp", "/duet_energy_XXXXXX");
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

  void Write(const std::string& relative, const std::string& contents) const {
    const std::filesystem::path p = std::filesystem::path(path_) / relative;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << contents << "\n";
  }

 private:
  std::string path_;
};

// A powercap tree as intel_rapl_common lays it out on a two-socket server,
// plus the zones that must not be counted.
class FakePowercap : public TempDir {
 public:
  FakePowercap() {
    Zone("intel-rapl:0", "package-0", 1000);
    Zone("intel-rapl:0:0", "core", 500);  // subzone of package 0
    Zone("intel-rapl:0:1", "dram", 700);  // subzone, not in package energy
    Zone("intel-rapl:1", "package-1", 2000);
    Zone("intel-rapl:2", "psys", 9000);  // platform: contains packages
    Zone("intel-rapl-mmio:0", "package-0", 1000);  // same counter via MMIO
    Write("intel-rapl/enabled", "1");              // the control type itself
  }
  void Zone(const std::string& dir, const std::string& name, uint64_t uj) {
    Write(dir + "/name", name);
    Write(dir + "/max_energy_range_uj", absl::StrCat(kMaxRangeUj));
    SetEnergy(dir, uj);
  }
  void SetEnergy(const std::string& dir, uint64_t uj) {
    Write(dir + "/energy_uj", absl::StrCat(uj));
  }
};

class FakeCpuTime : public CpuTimeSource {
 public:
  absl::StatusOr<double> CpuSeconds() override {
    common::MutexLock lock(&mu_);
    if (!error_.ok()) return error_;
    return seconds_;
  }
  void Set(double seconds) {
    common::MutexLock lock(&mu_);
    seconds_ = seconds;
  }
  void Fail(absl::Status error) {
    common::MutexLock lock(&mu_);
    error_ = std::move(error);
  }

 private:
  common::Mutex mu_;
  double seconds_ = 0;
  absl::Status error_;
};

const prometheus::ClientMetric* FindMetric(
    const std::vector<prometheus::MetricFamily>& families,
    const std::string& name, const std::map<std::string, std::string>& labels) {
  for (const auto& family : families) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      std::map<std::string, std::string> have;
      for (const auto& label : metric.label) have[label.name] = label.value;
      if (have == labels) return &metric;
    }
  }
  return nullptr;
}

double CounterValue(prometheus::Registry& registry, const std::string& side,
                    const std::string& source) {
  const auto families = registry.Collect();  // FindMetric points into it
  const auto* metric = FindMetric(families, "duet_energy_joules_total",
                                  {{"side", side}, {"source", source}});
  return metric == nullptr ? -1 : metric->counter.value;
}

// ------------------------------------------------------------ PowercapReader

TEST(PowercapDeltaTest, NoWrapIsTheDifference) {
  EXPECT_EQ(PowercapDeltaMicrojoules(100, 350, kMaxRangeUj), 250u);
  EXPECT_EQ(PowercapDeltaMicrojoules(100, 100, kMaxRangeUj), 0u);
}

TEST(PowercapDeltaTest, WrapCountsUpToTheRangeThenFromZero) {
  // max_range -> 0 is one step: the range is inclusive.
  EXPECT_EQ(PowercapDeltaMicrojoules(kMaxRangeUj, 0, kMaxRangeUj), 1u);
  EXPECT_EQ(PowercapDeltaMicrojoules(262143000000, 1000, kMaxRangeUj),
            kMaxRangeUj - 262143000000 + 1000 + 1);
}

TEST(PowercapDeltaTest, PreviousAboveRangeMeansReset) {
  EXPECT_EQ(PowercapDeltaMicrojoules(kMaxRangeUj + 5, 42, kMaxRangeUj), 42u);
}

TEST(PowercapReaderTest, CountsOnlyTopLevelPackageZones) {
  FakePowercap tree;
  auto reader = PowercapReader::Create({tree.path()});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_THAT((*reader)->zone_names(),
              ElementsAre("intel-rapl:0", "intel-rapl:1"));

  auto joules = (*reader)->ReadJoules();
  ASSERT_TRUE(joules.ok()) << joules.status();
  EXPECT_EQ(*joules, 0.0);  // counts from Create

  tree.SetEnergy("intel-rapl:0", 1000 + 1'000'000);
  tree.SetEnergy("intel-rapl:1", 2000 + 500'000);
  tree.SetEnergy("intel-rapl:0:0", 99'000'000);  // subzone: ignored
  tree.SetEnergy("intel-rapl:2", 99'000'000);    // psys: ignored
  tree.SetEnergy("intel-rapl-mmio:0", 99'000'000);
  joules = (*reader)->ReadJoules();
  ASSERT_TRUE(joules.ok()) << joules.status();
  EXPECT_DOUBLE_EQ(*joules, 1.5);
}

TEST(PowercapReaderTest, WrapAroundAddsTheRightDelta) {
  FakePowercap tree;
  tree.SetEnergy("intel-rapl:0", 262143000000);
  auto reader = PowercapReader::Create({tree.path()});
  ASSERT_TRUE(reader.ok()) << reader.status();

  tree.SetEnergy("intel-rapl:0", 1000);  // wrapped
  auto joules = (*reader)->ReadJoules();
  ASSERT_TRUE(joules.ok()) << joules.status();
  // (262143328850 - 262143000000) + 1000 + 1 = 329851 µJ.
  EXPECT_DOUBLE_EQ(*joules, 0.329851);

  tree.SetEnergy("intel-rapl:0", 2000);
  joules = (*reader)->ReadJoules();
  ASSERT_TRUE(joules.ok()) << joules.status();
  EXPECT_DOUBLE_EQ(*joules, 0.330851);  // monotonic after the wrap
}

TEST(PowercapReaderTest, MissingRootIsNotFound) {
  TempDir dir;
  const std::string root = dir.path() + "/no-such-powercap";
  auto reader = PowercapReader::Create({root});
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(reader.status().message(),
              AllOf(HasSubstr(root), HasSubstr("does not exist")));
}

TEST(PowercapReaderTest, RootWithoutPackageZonesIsNotFound) {
  TempDir dir;
  dir.Write("intel-rapl:0:0/energy_uj", "5");  // a subzone only
  dir.Write("intel-rapl-mmio:0/energy_uj", "5");
  auto reader = PowercapReader::Create({dir.path()});
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(
      reader.status().message(),
      AllOf(HasSubstr("no package zone intel-rapl:N"), HasSubstr(dir.path())));
}

TEST(PowercapReaderTest, GarbageCounterIsInvalidArgumentNamingTheFile) {
  FakePowercap tree;
  tree.Write("intel-rapl:1/energy_uj", "12ab");
  auto reader = PowercapReader::Create({tree.path()});
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(reader.status().message(),
              AllOf(HasSubstr("intel-rapl:1/energy_uj"), HasSubstr("12ab")));
}

// Root reads any file, so as root the check runs in a child that drops to
// nobody; the verdict comes back as the exit code.
TEST(PowercapReaderTest, UnreadableCounterIsPermissionDeniedAndSaysRootOnly) {
  FakePowercap tree;
  const std::string energy = tree.path() + "/intel-rapl:1/energy_uj";
  ASSERT_EQ(chmod(energy.c_str(), 0400), 0);  // as the kernel since 5.10

  auto check = [&tree]() -> bool {
    auto reader = PowercapReader::Create({tree.path()});
    return !reader.ok() &&
           reader.status().code() == absl::StatusCode::kPermissionDenied &&
           absl::StrContains(reader.status().message(),
                             "intel-rapl:1/energy_uj") &&
           absl::StrContains(reader.status().message(),
                             "readable only by root since Linux 5.10");
  };
  if (geteuid() != 0) {
    ASSERT_EQ(chmod(energy.c_str(), 0), 0);
    auto reader = PowercapReader::Create({tree.path()});
    ASSERT_FALSE(reader.ok());
    EXPECT_EQ(reader.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(reader.status().message(),
                AllOf(HasSubstr("intel-rapl:1/energy_uj"),
                      HasSubstr("readable only by root since Linux 5.10")));
    return;
  }
  // mkdtemp made the root 0700: let nobody traverse it.
  ASSERT_EQ(chmod(tree.path().c_str(), 0755), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    _exit(check() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "1: wrong status from Create as nobody; 2: could not drop to nobody";
}

// ------------------------------------------------------------ profiles

TEST(NetworkProfileTest, WholePhoneJoulesPerByteIsPowerOverByteRate) {
  const NetworkProfile mmwave = MmWave5gUplink();
  EXPECT_EQ(mmwave.uplink_mbps, 24.0);
  // P = 5.62 W + 9.4 mW/Mbps x 24 Mbps = 5.8456 W over 3e6 bytes/s.
  EXPECT_DOUBLE_EQ(JoulesPerByte(mmwave), 5.8456 / 3e6);
  EXPECT_DOUBLE_EQ(JoulesPerByte(LowBand5gUplink()), (3.20 + 0.029 * 24) / 3e6);
  EXPECT_DOUBLE_EQ(JoulesPerByte(LteUplink(10)), (2.80 + 0.080 * 10) / 1.25e6);
}

TEST(NetworkProfileTest, SlopeAttributionIsIndependentOfThroughput) {
  NetworkProfile slope = MmWave5gUplink(100);
  slope.attribution = NetworkProfile::Attribution::kThroughputSlope;
  EXPECT_DOUBLE_EQ(JoulesPerByte(slope), 9.4e-3 * 8e-6);
}

TEST(NetworkProfileTest, ByNameRejectsUnknownNamesAndThroughputs) {
  auto lte = NetworkProfileByName("lte", 24);
  ASSERT_TRUE(lte.ok()) << lte.status();
  EXPECT_EQ(lte->base_watts, 2.80);
  auto unknown = NetworkProfileByName("wifi", 24);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("wifi"));
  auto zero = NetworkProfileByName("lte", 0);
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero.status().message(), HasSubstr("> 0 Mbps"));
}

TEST(DeviceProfileTest, ConstantsAndLookup) {
  EXPECT_DOUBLE_EQ(ServerProfile().watts_per_busy_core, 170.0 / 18.0);
  EXPECT_DOUBLE_EQ(PhoneProfile().watts_per_busy_core, 1.8);
  auto phone = DeviceProfileByName("phone");
  ASSERT_TRUE(phone.ok());
  EXPECT_EQ(phone->name, "phone");
  auto bad = DeviceProfileByName("tablet");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("tablet"));
}

TEST(QueryEnergyBucketsTest, MicrojouleToTenJoules) {
  const std::vector<double> buckets = QueryEnergyBucketsJoules();
  EXPECT_EQ(buckets.front(), 1e-6);
  EXPECT_EQ(buckets.back(), 10.0);
  for (size_t i = 1; i < buckets.size(); ++i)
    EXPECT_LT(buckets[i - 1], buckets[i]);
}

// ------------------------------------------------------------ EnergyMeter

struct MeterUnderTest {
  std::shared_ptr<prometheus::Registry> registry =
      std::make_shared<prometheus::Registry>();
  FakeCpuTime* cpu = nullptr;  // owned by the meter
  std::unique_ptr<EnergyMeter> meter;
};

EnergyMeter::Options ModelOptions(const std::string& side, MeterUnderTest& t) {
  EnergyMeter::Options options;
  options.side = side;
  options.registry = t.registry;
  options.rapl = EnergyMeter::RaplMode::kDisabled;
  options.device = side == "edge" ? PhoneProfile() : ServerProfile();
  auto cpu = std::make_unique<FakeCpuTime>();
  t.cpu = cpu.get();
  options.cpu_time = std::move(cpu);
  options.poll_interval = absl::ZeroDuration();
  return options;
}

TEST(EnergyMeterTest, ModelIsCpuSecondsTimesWattsPerCore) {
  MeterUnderTest t;
  auto meter = EnergyMeter::Create(ModelOptions("edge", t));
  ASSERT_TRUE(meter.ok()) << meter.status();
  EXPECT_EQ((*meter)->source(), "model");
  EXPECT_THAT((*meter)->rapl_unavailable_reason(), HasSubstr("kDisabled"));
  EXPECT_EQ(CounterValue(*t.registry, "edge", "model"), 0);

  t.cpu->Set(2.5);
  ASSERT_TRUE((*meter)->Poll().ok());
  EXPECT_DOUBLE_EQ(CounterValue(*t.registry, "edge", "model"), 2.5 * 1.8);
  t.cpu->Set(4.0);
  ASSERT_TRUE((*meter)->Poll().ok());
  EXPECT_DOUBLE_EQ(CounterValue(*t.registry, "edge", "model"), 4.0 * 1.8);
  // No uplink profile, no network series.
  EXPECT_EQ(CounterValue(*t.registry, "network", "model"), -1);
}

TEST(EnergyMeterTest, UplinkBytesAtTwentyFourMbpsMmWave) {
  MeterUnderTest t;
  auto options = ModelOptions("edge", t);
  options.uplink = MmWave5gUplink(24);
  auto meter = EnergyMeter::Create(std::move(options));
  ASSERT_TRUE(meter.ok()) << meter.status();
  EXPECT_EQ(CounterValue(*t.registry, "network", "model"), 0);

  // 3e6 bytes take 1 s at 24 Mbps, at 5.62 + 0.0094 x 24 W.
  (*meter)->AddUplinkBytes(3'000'000);
  EXPECT_DOUBLE_EQ(CounterValue(*t.registry, "network", "model"), 5.8456);
}

TEST(EnergyMeterTest, ObserveQueryFillsHistogramsAndNetworkCounter) {
  MeterUnderTest t;
  auto options = ModelOptions("edge", t);
  options.uplink = MmWave5gUplink(24);
  auto meter = EnergyMeter::Create(std::move(options));
  ASSERT_TRUE(meter.ok()) << meter.status();

  EXPECT_DOUBLE_EQ((*meter)->QueryJoules(0.01), 0.018);
  const double total = (*meter)->ObserveQuery(0.01, 300);
  EXPECT_DOUBLE_EQ(total, 0.018 + 300 * 5.8456 / 3e6);

  const auto families = t.registry->Collect();
  const auto* edge =
      FindMetric(families, "duet_query_energy_joules", {{"side", "edge"}});
  const auto* network =
      FindMetric(families, "duet_query_energy_joules", {{"side", "network"}});
  ASSERT_NE(edge, nullptr);
  ASSERT_NE(network, nullptr);
  EXPECT_EQ(edge->histogram.sample_count, 1u);
  EXPECT_DOUBLE_EQ(edge->histogram.sample_sum, 0.018);
  EXPECT_EQ(edge->histogram.bucket.front().upper_bound, 1e-6);
  EXPECT_DOUBLE_EQ(network->histogram.sample_sum, 300 * 5.8456 / 3e6);
  EXPECT_DOUBLE_EQ(CounterValue(*t.registry, "network", "model"),
                   300 * 5.8456 / 3e6);
}

TEST(EnergyMeterTest, RaplSourceWhenTheTreeIsReadable) {
  FakePowercap tree;
  MeterUnderTest t;
  auto options = ModelOptions("cloud", t);
  options.rapl = EnergyMeter::RaplMode::kAuto;
  options.powercap.root = tree.path();
  auto meter = EnergyMeter::Create(std::move(options));
  ASSERT_TRUE(meter.ok()) << meter.status();
  EXPECT_EQ((*meter)->source(), "rapl");
  EXPECT_EQ((*meter)->rapl_unavailable_reason(), "");

  t.cpu->Set(100);  // ignored: RAPL is the source
  tree.SetEnergy("intel-rapl:0", 1000 + 2'000'000);
  tree.SetEnergy("intel-rapl:1", 2000 + 3'000'000);
  ASSERT_TRUE((*meter)->Poll().ok());
  EXPECT_DOUBLE_EQ(CounterValue(*t.registry, "cloud", "rapl"), 5.0);
  EXPECT_EQ(CounterValue(*t.registry, "cloud", "model"), -1);
}

TEST(EnergyMeterTest, AutoFallsBackToTheModelAndSaysWhy) {
  TempDir dir;
  MeterUnderTest t;
  auto options = ModelOptions("cloud", t);
  options.rapl = EnergyMeter::RaplMode::kAuto;
  options.powercap.root = dir.path() + "/absent";
  auto meter = EnergyMeter::Create(std::move(options));
  ASSERT_TRUE(meter.ok()) << meter.status();
  EXPECT_EQ((*meter)->source(), "model");
  EXPECT_THAT(
      (*meter)->rapl_unavailable_reason(),
      AllOf(HasSubstr(dir.path() + "/absent"), HasSubstr("does not exist")));
}

TEST(EnergyMeterTest, RequiredRaplFailsWithTheReaderError) {
  TempDir dir;
  MeterUnderTest t;
  auto options = ModelOptions("cloud", t);
  options.rapl = EnergyMeter::RaplMode::kRequired;
  options.powercap.root = dir.path() + "/absent";
  auto meter = EnergyMeter::Create(std::move(options));
  ASSERT_FALSE(meter.ok());
  EXPECT_EQ(meter.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(meter.status().message(), HasSubstr("absent"));
}

TEST(EnergyMeterTest, ReadErrorsAreCountedAndLeaveTheCounter) {
  MeterUnderTest t;
  auto meter = EnergyMeter::Create(ModelOptions("cloud", t));
  ASSERT_TRUE(meter.ok()) << meter.status();
  t.cpu->Set(1);
  ASSERT_TRUE((*meter)->Poll().ok());
  t.cpu->Fail(absl::InternalError("clock broke"));
  const absl::Status poll = (*meter)->Poll();
  EXPECT_EQ(poll.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(poll.message(), HasSubstr("clock broke"));
  EXPECT_DOUBLE_EQ(CounterValue(*t.registry, "cloud", "model"), 170.0 / 18.0);
  const auto families = t.registry->Collect();
  const auto* errors = FindMetric(families, "duet_energy_read_errors_total",
                                  {{"side", "cloud"}});
  ASSERT_NE(errors, nullptr);
  EXPECT_EQ(errors->counter.value, 1);
}

TEST(EnergyMeterTest, BadOptionsAreInvalidArgument) {
  {
    MeterUnderTest t;
    auto meter = EnergyMeter::Create(ModelOptions("network", t));
    EXPECT_EQ(meter.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(meter.status().message(), HasSubstr("\"network\""));
  }
  {
    MeterUnderTest t;
    auto options = ModelOptions("edge", t);
    options.registry = nullptr;
    auto meter = EnergyMeter::Create(std::move(options));
    EXPECT_EQ(meter.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(meter.status().message(), HasSubstr("registry"));
  }
  {
    MeterUnderTest t;
    auto options = ModelOptions("edge", t);
    options.device.watts_per_busy_core = 0;
    auto meter = EnergyMeter::Create(std::move(options));
    EXPECT_EQ(meter.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(meter.status().message(), HasSubstr("watts_per_busy_core"));
  }
}

TEST(EnergyMeterTest, PollerThreadUpdatesAndStopsOnDestruction) {
  MeterUnderTest t;
  auto options = ModelOptions("cloud", t);
  options.poll_interval = absl::Milliseconds(5);
  t.cpu = nullptr;
  auto cpu = std::make_unique<FakeCpuTime>();
  cpu->Set(3);
  options.cpu_time = std::move(cpu);
  auto meter = EnergyMeter::Create(std::move(options));
  ASSERT_TRUE(meter.ok()) << meter.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (CounterValue(*t.registry, "cloud", "model") <= 0 &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_DOUBLE_EQ(CounterValue(*t.registry, "cloud", "model"),
                   3 * 170.0 / 18.0);
  const absl::Time before_stop = absl::Now();
  meter->reset();
  EXPECT_LT(absl::Now() - before_stop, absl::Seconds(1));
}

TEST(EnergyMeterTest, RealProcessCpuClockAdvances) {
  auto clock = CpuTimeSource::ForThisProcess();
  auto first = clock->CpuSeconds();
  ASSERT_TRUE(first.ok());
  volatile double sink = 0;
  for (int i = 0; i < 10'000'000; ++i) sink = sink + i;
  auto second = clock->CpuSeconds();
  ASSERT_TRUE(second.ok());
  EXPECT_GT(*second, *first);
}

}  // namespace
}  // namespace duet::common
