#include "tools/loadgen/summary.h"

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace duet::loadgen {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

// The summary parsed back; a null value with parse errors reported.
Json Parse(const std::string& text) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(json.is_discarded()) << text;
  return json;
}

// The value at a dotted path of object keys ("queries.by_code.OK"), or
// nullptr when a key is missing.
const Json* Find(const Json& json, const std::string& path) {
  const Json* v = &json;
  for (const auto& key : absl::StrSplit(path, '.')) {
    if (!v->is_object()) return nullptr;
    auto it = v->find(std::string(key));
    if (it == v->end()) return nullptr;
    v = &*it;
  }
  return v;
}

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
  const Json parsed = Parse(json);
  for (const char* key : kKeys) {
    EXPECT_NE(Find(parsed, key), nullptr) << key << " missing in " << json;
  }
  EXPECT_EQ(Find(parsed, "schema")->get<std::string>(),
            "duet.loadgen.summary/v1");
  EXPECT_EQ(Find(parsed, "model.name")->get<std::string>(), "rm2 \"quoted\"");
  EXPECT_EQ(Find(parsed, "queries.total")->get<double>(), 105);
  EXPECT_EQ(Find(parsed, "queries.ok")->get<double>(), 100);
  EXPECT_EQ(Find(parsed, "queries.errors")->get<double>(), 5);
  EXPECT_EQ(Find(parsed, "queries.dropped")->get<double>(), 2);
  EXPECT_EQ(Find(parsed, "queries.by_code.OK")->get<double>(), 100);
  EXPECT_EQ(Find(parsed, "queries.by_code.INVALID_ARGUMENT")->get<double>(), 5);
  EXPECT_EQ(Find(parsed, "throughput_qps")->get<double>(), 50);
  EXPECT_NEAR(Find(parsed, "latency_ms.p50")->get<double>(), 50, 50.0 / 128);
  EXPECT_EQ(Find(parsed, "latency_ms.max")->get<double>(), 100);
  EXPECT_EQ(Find(parsed, "bytes_per_query.up")->get<double>(), 100);
  EXPECT_EQ(Find(parsed, "bytes_per_query.down")->get<double>(), 40);
  EXPECT_EQ(Find(parsed, "config.candidates")->get<std::string>(),
            "normal:165:80");
  EXPECT_EQ(Find(parsed, "config.seed")->get<uint64_t>(),
            18446744073709551615ULL);
  EXPECT_EQ(Find(parsed, "energy_j_per_query.edge")->get<double>(), 0.25);
  EXPECT_EQ(
      Find(parsed, "energy_j_per_query.edge_by_source.model")->get<double>(),
      0.25);
  EXPECT_EQ(Find(parsed, "energy_j_per_query.network")->get<double>(), 0.5);
  EXPECT_EQ(Find(parsed, "energy_j_per_query.model")->get<std::string>(),
            "edge: thread CPU x phone 1.8 W; network: request bytes x "
            "5g-mmwave at 24 Mbps");
}

TEST(SummaryJsonTest, UnmeasuredEdgeEnergyIsNullNotZero) {
  RunSummary s = Example();
  s.edge_joules_per_query.reset();
  s.config.edge_energy = "no --edge_metrics";
  const Json parsed = Parse(SummaryJson(s));
  EXPECT_TRUE(Find(parsed, "energy_j_per_query.edge")->is_null());
  EXPECT_TRUE(Find(parsed, "energy_j_per_query.edge_by_source")->is_null());
  EXPECT_THAT(Find(parsed, "energy_j_per_query.model")->get<std::string>(),
              HasSubstr("edge: no --edge_metrics;"));
}

TEST(SummaryJsonTest, NoDeviceModelIsZeroWithoutSources) {
  RunSummary s = Example();
  s.edge_joules_per_query.emplace();
  const Json parsed = Parse(SummaryJson(s));
  EXPECT_EQ(Find(parsed, "energy_j_per_query.edge")->get<double>(), 0);
  EXPECT_TRUE(Find(parsed, "energy_j_per_query.edge_by_source")->empty());
}

TEST(SummaryJsonTest, EmptyRunIsStillValid) {
  RunSummary s;
  const Json parsed = Parse(SummaryJson(s));
  EXPECT_EQ(Find(parsed, "throughput_qps")->get<double>(), 0);
  EXPECT_EQ(Find(parsed, "queries.by_code")->size(), 0u);
}

TEST(SummaryJsonTest, IsOneLineAndSurvivesNamesThatAreNotUtf8) {
  RunSummary s = Example();
  s.config.model_name = "rm2\xff";
  const std::string json = SummaryJson(s);
  EXPECT_EQ(json.find('\n'), json.size() - 1);
  const Json parsed = Parse(json);
  EXPECT_EQ(Find(parsed, "model.name")->get<std::string>(), "rm2\xef\xbf\xbd");
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
