#include "common/obs/metrics.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"

namespace duet::common {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// A fresh directory under TEST_TMPDIR (or /tmp), removed at the end.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string pattern =
        absl::StrCat(base != nullptr ? base : "/tmp", "/duet_metrics_XXXXXX");
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

  void Write(const std::string& relative, const std::string& contents) const {
    const std::filesystem::path p = std::filesystem::path(path_) / relative;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << contents;
  }

 private:
  std::string path_;
};

MetricsServer::Options Listen(const std::string& address) {
  MetricsServer::Options options;
  options.listen_address = address;
  return options;
}

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

size_t CountSeries(const std::vector<prometheus::MetricFamily>& families,
                   const std::string& name) {
  for (const auto& family : families) {
    if (family.name == name) return family.metric.size();
  }
  return 0;
}

TEST(LatencyBucketsSecondsTest, OneTwoFiveFromTenMicrosecondsToTenSeconds) {
  const std::vector<double> buckets = LatencyBucketsSeconds();
  ASSERT_EQ(buckets.size(), 19u);
  EXPECT_EQ(buckets.front(), 1e-5);
  EXPECT_EQ(buckets.back(), 10.0);
  for (size_t i = 1; i < buckets.size(); ++i) {
    EXPECT_LT(buckets[i - 1], buckets[i]) << "at " << i;
  }
}

TEST(OneTwoFiveBucketsTest, BoundsAreTheNearestDoublesToTheDecimals) {
  // Exact equality with the literals: `le` labels then print as 2e-05, not
  // 2.0000000000000002e-05.
  EXPECT_EQ(OneTwoFiveBuckets(-5, -3),
            (std::vector<double>{1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3}));
  EXPECT_EQ(OneTwoFiveBuckets(0, 2),
            (std::vector<double>{1, 2, 5, 10, 20, 50, 100}));
  EXPECT_EQ(OneTwoFiveBuckets(3, 3), (std::vector<double>{1000}));
}

TEST(WithBoundPortTest, ReplacesThePortOnly) {
  EXPECT_EQ(WithBoundPort("127.0.0.1:0", 43117), "127.0.0.1:43117");
  EXPECT_EQ(WithBoundPort("[::1]:0", 9), "[::1]:9");
  EXPECT_EQ(WithBoundPort("0.0.0.0:9091", 9091), "0.0.0.0:9091");
  EXPECT_EQ(WithBoundPort("[::1]", 9), "[::1]");
  EXPECT_EQ(WithBoundPort("unix:/run/duet.sock", 1), "unix:/run/duet.sock");
}

TEST(MetricsServerTest, ServesRegistryAndProcessMetricsOnAnEphemeralPort) {
  auto server = MetricsServer::Create(Listen("127.0.0.1:0"));
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->bound_port(), 0);
  EXPECT_EQ((*server)->bound_address(),
            absl::StrCat("127.0.0.1:", (*server)->bound_port()));

  auto info = InfoMetrics::Create((*server)->registry(),
                                  InfoMetrics::Options{"edge", "0.1.0"});
  ASSERT_TRUE(info.ok()) << info.status();
  (*info)->SetModel("rm2", "3", "sha256:abc");

  const std::string response =
      HttpGetResponse((*server)->bound_port(), "/metrics");
  EXPECT_THAT(response, HasSubstr("200 OK"));
  EXPECT_THAT(response,
              HasSubstr("duet_build_info{side=\"edge\",version=\"0.1.0\"} 1"));
  // The text format sorts labels by name.
  EXPECT_THAT(response, HasSubstr("duet_model_info{name=\"rm2\",signature="
                                  "\"sha256:abc\",version=\"3\"} 1"));
  EXPECT_THAT(response, HasSubstr("# TYPE process_start_time_seconds gauge"));
  EXPECT_THAT(response, HasSubstr("# TYPE process_cpu_seconds_total counter"));
  EXPECT_THAT(response, HasSubstr("process_resident_memory_bytes "));
}

TEST(MetricsServerTest, PortInUseIsUnavailableAndNamesTheAddress) {
  auto first = MetricsServer::Create(Listen("127.0.0.1:0"));
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = absl::StrCat("127.0.0.1:", (*first)->bound_port());

  auto second = MetricsServer::Create(Listen(taken));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(),
              AllOf(HasSubstr(taken), HasSubstr("already in use")));
}

TEST(MetricsServerTest, MalformedAddressIsInvalidArgument) {
  for (const char* address : {"localhost", "127.0.0.1:70000", ":9464",
                              "127.0.0.1:http", "[::1:9464"}) {
    auto server = MetricsServer::Create(Listen(address));
    ASSERT_FALSE(server.ok()) << address;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument)
        << address;
    EXPECT_THAT(server.status().message(), HasSubstr(address));
  }
}

TEST(MetricsServerTest, NonLocalAddressIsInvalidArgument) {
  // 192.0.2.0/24 is TEST-NET-1: never assigned to this machine.
  auto server = MetricsServer::Create(Listen("192.0.2.1:0"));
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(),
              AllOf(HasSubstr("192.0.2.1:0"), HasSubstr("not an address")));
}

TEST(ProcessCollectorTest, ParsesAFakeProcTree) {
  TempDir proc;
  // comm holds spaces and ')' like a hostile process name; utime=250,
  // stime=150 (fields 14, 15), starttime=500 (field 22), all in ticks.
  proc.Write("self/stat",
             "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 "
             "3 0 500 1000000 200 18446744073709551615\n");
  proc.Write("self/statm", "1000 200 50 10 0 300 0\n");
  proc.Write("stat", "cpu  1 2 3 4\nbtime 1700000000\nprocesses 9\n");

  ProcessCollector collector(proc.path());
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  EXPECT_DOUBLE_EQ(collector.start_time_seconds(), 1700000000 + 500 / ticks);

  const auto families = collector.Collect();
  const auto* cpu = FindMetric(families, "process_cpu_seconds_total", {});
  const auto* rss = FindMetric(families, "process_resident_memory_bytes", {});
  const auto* vms = FindMetric(families, "process_virtual_memory_bytes", {});
  const auto* start = FindMetric(families, "process_start_time_seconds", {});
  ASSERT_NE(cpu, nullptr);
  ASSERT_NE(rss, nullptr);
  ASSERT_NE(vms, nullptr);
  ASSERT_NE(start, nullptr);
  EXPECT_DOUBLE_EQ(cpu->counter.value, 400 / ticks);
  EXPECT_DOUBLE_EQ(rss->gauge.value, 200 * page);
  EXPECT_DOUBLE_EQ(vms->gauge.value, 1000 * page);
  EXPECT_DOUBLE_EQ(start->gauge.value, 1700000000 + 500 / ticks);
}

TEST(ProcessCollectorTest, MissingProcFilesDropOnlyTheirFamilies) {
  TempDir empty;
  const double before = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  ProcessCollector collector(empty.path());
  EXPECT_GE(collector.start_time_seconds(), before);  // falls back to now
  const auto families = collector.Collect();
  ASSERT_EQ(families.size(), 1u);
  EXPECT_EQ(families[0].name, "process_start_time_seconds");
}

TEST(ProcessCollectorTest, RealProcReportsThisProcess) {
  ProcessCollector collector;
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  EXPECT_LE(collector.start_time_seconds(), now + 1);
  EXPECT_GT(collector.start_time_seconds(), now - 3600);
  const auto families = collector.Collect();
  const auto* rss = FindMetric(families, "process_resident_memory_bytes", {});
  ASSERT_NE(rss, nullptr);
  EXPECT_GT(rss->gauge.value, 0);
  EXPECT_NE(FindMetric(families, "process_cpu_seconds_total", {}), nullptr);
}

TEST(InfoMetricsTest, SetModelReplacesTheSeries) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto info = InfoMetrics::Create(registry, InfoMetrics::Options{"cloud", "1"});
  ASSERT_TRUE(info.ok()) << info.status();
  (*info)->SetModel("rm1", "1", "s1");
  (*info)->SetModel("rm1", "2", "s2");

  const auto families = registry->Collect();
  EXPECT_EQ(CountSeries(families, "duet_model_info"), 1u);
  const auto* model =
      FindMetric(families, "duet_model_info",
                 {{"name", "rm1"}, {"version", "2"}, {"signature", "s2"}});
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->gauge.value, 1);
  const auto* build = FindMetric(families, "duet_build_info",
                                 {{"version", "1"}, {"side", "cloud"}});
  ASSERT_NE(build, nullptr);
  EXPECT_EQ(build->gauge.value, 1);
}

TEST(InfoMetricsTest, EmptySideIsInvalidArgument) {
  auto info = InfoMetrics::Create(std::make_shared<prometheus::Registry>(),
                                  InfoMetrics::Options{"", "1"});
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(info.status().message(), HasSubstr("side"));
}

TEST(InfoMetricsTest, NameTakenByAnotherTypeIsInvalidArgument) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("duet_build_info").Register(*registry);
  auto info = InfoMetrics::Create(registry, InfoMetrics::Options{"edge", "1"});
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(info.status().message(), HasSubstr("duet_build_info"));
}

}  // namespace
}  // namespace duet::common
