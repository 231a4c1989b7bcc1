#include "tools/loadgen/edge_energy_probe.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/base/status_matchers.h"
#include "common/obs/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"

namespace duet::loadgen {
namespace {

using ::duet::common::StatusIs;
using ::testing::DoubleEq;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// What a duet-edge serves, trimmed, plus a cloud's series in the same text.
constexpr char kEdgeMetrics[] = R"(# HELP duet_energy_joules_total Energy used
# TYPE duet_energy_joules_total counter
duet_energy_joules_total{side="edge",source="model"} 12.5
duet_energy_joules_total{side="network",source="model"} 3
duet_energy_joules_total{side="cloud",source="rapl"} 900
# TYPE duet_queries_total counter
duet_queries_total{code="OK",side="edge"} 100
duet_queries_total{code="DEADLINE_EXCEEDED",side="edge"} 4
duet_queries_total{code="OK",side="cloud"} 7000
duet_queries_total_created{side="edge"} 5
duet_query_energy_joules_bucket{side="edge",le="1e-06"} 0
duet_model_info{name="a \"quoted\" \\ name",side="edge"} 1
)";

TEST(ParseEdgeCountersTest, ReadsTheEdgeSideOnly) {
  auto counters = ParseEdgeCounters(kEdgeMetrics);
  ASSERT_TRUE(counters.ok()) << counters.status();
  EXPECT_THAT(counters->joules_by_source,
              ElementsAre(Pair("model", DoubleEq(12.5))));
  EXPECT_EQ(counters->queries, 104);
}

TEST(ParseEdgeCountersTest, RejectsTextWithoutTheEdgeCounter) {
  EXPECT_THAT(
      ParseEdgeCounters("duet_queries_total{side=\"edge\"} 3\n").status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("not a duet-edge")));
  EXPECT_THAT(
      ParseEdgeCounters("duet_energy_joules_total{side=\"edge\" 3\n").status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("malformed metrics line")));
  EXPECT_THAT(
      ParseEdgeCounters("duet_energy_joules_total{side=\"edge\"} x\n").status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(value)")));
}

TEST(EnergyPerQueryTest, DividesEachSourcesIncreaseByTheQueries) {
  const EdgeCounters before{{{"model", 10.0}}, 100};
  const EdgeCounters after{{{"model", 12.0}, {"rapl", 1.0}}, 150};
  auto e = EnergyPerQuery(before, after);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->queries, 50);
  EXPECT_THAT(e->joules_by_source, ElementsAre(Pair("model", DoubleEq(0.04)),
                                               Pair("rapl", DoubleEq(0.02))));
  EXPECT_DOUBLE_EQ(e->joules, 0.06);
}

TEST(EnergyPerQueryTest, NoQueriesOrARestartIsNotAMeasurement) {
  const EdgeCounters before{{{"model", 10.0}}, 100};
  EXPECT_THAT(EnergyPerQuery(before, before).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("served no queries")));
  EXPECT_THAT(EnergyPerQuery(before, {{{"model", 1.0}}, 120}).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("went backwards")));
  EXPECT_THAT(EnergyPerQuery(before, {{{"model", 11.0}}, 20}).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("went backwards")));
}

TEST(MetricsUrlTest, HostPortAndUrls) {
  EXPECT_EQ(MetricsUrl("127.0.0.1:9092"), "http://127.0.0.1:9092/metrics");
  EXPECT_EQ(MetricsUrl("http://edge:9092"), "http://edge:9092/metrics");
  EXPECT_EQ(MetricsUrl("http://edge:9092/other"), "http://edge:9092/other");
}

TEST(EdgeEnergyProbeTest, ScrapesAMetricsServerBeforeAndAfter) {
  auto server = common::MetricsServer::Create({"127.0.0.1:0", 1});
  ASSERT_TRUE(server.ok()) << server.status();
  prometheus::Counter& energy =
      prometheus::BuildCounter()
          .Name("duet_energy_joules_total")
          .Register(*(*server)->registry())
          .Add({{"side", "edge"}, {"source", "model"}});
  prometheus::Counter& queries = prometheus::BuildCounter()
                                     .Name("duet_queries_total")
                                     .Register(*(*server)->registry())
                                     .Add({{"side", "edge"}, {"code", "OK"}});
  energy.Increment(5);
  queries.Increment(3);

  EdgeEnergyProbe probe({absl::StrCat("127.0.0.1:", (*server)->bound_port()),
                         absl::ZeroDuration(), absl::Seconds(5)});
  ASSERT_TRUE(probe.Begin().ok());
  energy.Increment(2);
  queries.Increment(4);
  auto e = probe.End();
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->queries, 4);
  EXPECT_DOUBLE_EQ(e->joules, 0.5);
}

TEST(EdgeEnergyProbeTest, UnreachableEndpointSaysWhy) {
  auto server = common::MetricsServer::Create({"127.0.0.1:0", 1});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address =
      absl::StrCat("127.0.0.1:", (*server)->bound_port());
  server->reset();  // the port is closed now
  EdgeEnergyProbe probe({address, absl::ZeroDuration(), absl::Seconds(5)});
  EXPECT_THAT(probe.Begin(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("cannot scrape http://" + address)));
  EXPECT_THAT(probe.End().status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("before Begin")));
}

TEST(EdgeEnergyProbeTest, AnotherProcessesMetricsAreRejected) {
  auto server = common::MetricsServer::Create({"127.0.0.1:0", 1});
  ASSERT_TRUE(server.ok()) << server.status();
  EdgeEnergyProbe probe({absl::StrCat("127.0.0.1:", (*server)->bound_port()),
                         absl::ZeroDuration(), absl::Seconds(5)});
  EXPECT_THAT(probe.Begin(), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("not a duet-edge")));
}

}  // namespace
}  // namespace duet::loadgen
