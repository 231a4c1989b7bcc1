#include "tools/loadgen/summary.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/loadgen/mini_json.h"

namespace duet::loadgen {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

RunSummary Example() {
  RunSummary s;
  s.config.target = "fleet";
  s.config.addr = "127.0.0.1:1234";
  s.config.model_name = "rm2 \"quoted\"";
  s.config.model_version = 3;
  s.config.mode = "closed";
  s.config.concurrency = 4;
  s.config.candidates = "normal:165:80";
  s.config.seed = 18446744073709551615ULL;
  s.duration_s = 2.0;
  for (int i = 1; i <= 100; ++i) {
    s.totals.latency.Record(i * 1'000'000LL);
    s.totals.codes.Add(absl::StatusCode::kOk);
  }
  s.totals.codes.Add(absl::StatusCode::kInvalidArgument, 5);
  s.totals.bytes_up = 105 * 100;
  s.totals.bytes_down = 105 * 40;
  s.totals.dropped = 2;
  s.totals.network_joules = 105 * 0.5;
  s.config.edge_energy = "thread CPU x phone 1.8 W";
  s.config.network_energy = "request bytes x 5g-mmwave at 24 Mbps";
  s.edge_joules_per_query = {{"model", 0.25}};
  return s;
}

// Every key the schema in summary.h promises.
const char* const kKeys[] = {"schema",
                             "target",
                             "addr",
                             "model.name",
                             "model.version",
                             "model.signature",
                             "config.mode",
                             "config.concurrency",
                             "config.qps",
                             "config.max_outstanding",
                             "config.candidates",
                             "config.zipf",
                             "config.top_k",
                             "config.relay_top",
                             "config.interaction_rate",
                             "config.warmup_s",
                             "config.duration_s",
                             "config.queries",
                             "config.deadline_ms",
                             "config.devices",
                             "config.streams",
                             "config.channels",
                             "config.seed",
                             "duration_s",
                             "throughput_qps",
                             "queries.total",
                             "queries.ok",
                             "queries.errors",
                             "queries.dropped",
                             "queries.by_code",
                             "latency_ms.mean",
                             "latency_ms.min",
                             "latency_ms.p50",
                             "latency_ms.p90",
                             "latency_ms.p99",
                             "latency_ms.p999",
                             "latency_ms.max",
                             "bytes_per_query.up",
                             "bytes_per_query.down",
                             "candidates_mean",
                             "interactions.ok",
                             "interactions.failed",
                             "energy_j_per_query.edge",
                             "energy_j_per_query.edge_by_source",
                             "energy_j_per_query.network",
                             "energy_j_per_query.model"};

TEST(SummaryJsonTest, ParsesBackWithEveryKeyAndValue) {
  const std::string json = SummaryJson(Example());
  auto parsed = MiniJsonParser::Parse(json);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << json;
  for (const char* key : kKeys) {
    EXPECT_NE(parsed->Find(key), nullptr) << key << " missing in " << json;
  }
  EXPECT_EQ(parsed->Find("schema")->string, "duet.loadgen.summary/v1");
  EXPECT_EQ(parsed->Find("model.name")->string, "rm2 \"quoted\"");
  EXPECT_EQ(parsed->Find("queries.total")->number, 105);
  EXPECT_EQ(parsed->Find("queries.ok")->number, 100);
  EXPECT_EQ(parsed->Find("queries.errors")->number, 5);
  EXPECT_EQ(parsed->Find("queries.dropped")->number, 2);
  EXPECT_EQ(parsed->Find("queries.by_code.OK")->number, 100);
  EXPECT_EQ(parsed->Find("queries.by_code.INVALID_ARGUMENT")->number, 5);
  EXPECT_EQ(parsed->Find("throughput_qps")->number, 50);
  EXPECT_NEAR(parsed->Find("latency_ms.p50")->number, 50, 50.0 / 128);
  EXPECT_EQ(parsed->Find("latency_ms.max")->number, 100);
  EXPECT_EQ(parsed->Find("bytes_per_query.up")->number, 100);
  EXPECT_EQ(parsed->Find("bytes_per_query.down")->number, 40);
  EXPECT_EQ(parsed->Find("config.candidates")->string, "normal:165:80");
  EXPECT_EQ(parsed->Find("config.seed")->number, 18446744073709551615.0);
  EXPECT_EQ(parsed->Find("energy_j_per_query.edge")->number, 0.25);
  EXPECT_EQ(parsed->Find("energy_j_per_query.edge_by_source.model")->number,
            0.25);
  EXPECT_EQ(parsed->Find("energy_j_per_query.network")->number, 0.5);
  EXPECT_EQ(parsed->Find("energy_j_per_query.model")->string,
            "edge: thread CPU x phone 1.8 W; network: request bytes x "
            "5g-mmwave at 24 Mbps");
}

TEST(SummaryJsonTest, UnmeasuredEdgeEnergyIsNullNotZero) {
  RunSummary s = Example();
  s.edge_joules_per_query.reset();
  s.config.edge_energy = "no --edge_metrics";
  auto parsed = MiniJsonParser::Parse(SummaryJson(s));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->Find("energy_j_per_query.edge")->kind, JsonValue::kNull);
  EXPECT_EQ(parsed->Find("energy_j_per_query.edge_by_source")->kind,
            JsonValue::kNull);
  EXPECT_THAT(parsed->Find("energy_j_per_query.model")->string,
              HasSubstr("edge: no --edge_metrics;"));
}

TEST(SummaryJsonTest, NoDeviceModelIsZeroWithoutSources) {
  RunSummary s = Example();
  s.edge_joules_per_query.emplace();
  auto parsed = MiniJsonParser::Parse(SummaryJson(s));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->Find("energy_j_per_query.edge")->number, 0);
  EXPECT_TRUE(
      parsed->Find("energy_j_per_query.edge_by_source")->object.empty());
}

TEST(SummaryJsonTest, EmptyRunIsStillValid) {
  RunSummary s;
  auto parsed = MiniJsonParser::Parse(SummaryJson(s));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->Find("throughput_qps")->number, 0);
  EXPECT_EQ(parsed->Find("queries.by_code")->object.size(), 0u);
}

TEST(MiniJsonTest, RejectsBrokenJson) {
  for (const char* bad :
       {"{", "{\"a\" 1}", "[1,]", "{\"a\":1}x", "\"abc", "{\"a\":1,\"a\":2}"}) {
    EXPECT_FALSE(MiniJsonParser::Parse(bad).ok()) << bad;
  }
  EXPECT_TRUE(MiniJsonParser::Parse("{\"a\": [1, 2.5e3, true, null]}").ok());
}

TEST(SummaryTextTest, NamesCodesAndPercentiles) {
  const std::string text = SummaryText(Example());
  EXPECT_THAT(text, HasSubstr("105 total, 100 ok, 5 errors, 2 dropped"));
  EXPECT_THAT(text, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(text, HasSubstr("p99.9"));
  EXPECT_THAT(text, HasSubstr("throughput  50.0 qps"));
  EXPECT_THAT(text, HasSubstr("energy/query edge    0.25 J (by source: model "
                              "0.25 J; thread CPU x phone 1.8 W)\n"
                              "             network 0.5 J (request bytes x "
                              "5g-mmwave at 24 Mbps)\n"));
}

TEST(SummaryTextTest, SaysWhyEdgeEnergyIsNotMeasured) {
  RunSummary s = Example();
  s.edge_joules_per_query.reset();
  s.config.edge_energy = "no --edge_metrics";
  const std::string text = SummaryText(s);
  EXPECT_THAT(text, HasSubstr("energy/query edge    not measured (no "
                              "--edge_metrics)\n"));
  EXPECT_THAT(text, Not(HasSubstr(" 0 J")));
}

}  // namespace
}  // namespace duet::loadgen
