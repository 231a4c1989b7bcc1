// duet-loadgen against real duet-cloud and duet-edge processes on loopback
// with a generated tiny model: every target in both loop modes, error
// accounting by status code, and the --json schema. Short bounded runs; no
// timing assertions.
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/model/test_util.h"
#include "duet/v1/scoring.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/json_path.h"
#include "tests/test_process.h"

namespace duet::loadgen {
namespace {

using test::BinaryPath;
using test::FindPath;
using test::NumberAt;
using test::PickFreePort;
using test::Subprocess;
using test::WaitForHealthy;

std::unique_ptr<Subprocess> StartOrDie(const std::vector<std::string>& argv,
                                       const std::string& log) {
  auto p = Subprocess::Start(argv, log);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

// Graceful stop (SIGTERM), so servers exit as in production.
void Stop(std::unique_ptr<Subprocess>& p) {
  if (p == nullptr) return;
  if (p->Signal(SIGTERM).ok()) (void)p->Wait(absl::Seconds(10));
  p.reset();
}

class LoadgenIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new common::TempDir();
    auto config = common::GenerateTestModel("tiny", 1.0, Model());
    ASSERT_TRUE(config.ok()) << config.status();
    cloud_ = StartCloud(1024, "cloud");
    small_cloud_ = StartCloud(8, "cloud_small");
    edge_addr_ = absl::StrCat("127.0.0.1:", PickFreePort());
    edge_metrics_addr_ = absl::StrCat("127.0.0.1:", PickFreePort());
    edge_ = StartOrDie(
        {BinaryPath("edge/duet-edge"), "--model", Model(), "--cloud",
         cloud_addr_, "--listen", edge_addr_, "--metrics_listen",
         edge_metrics_addr_, "--state_dir", dir_->File("edge_state")},
        dir_->File("edge.log"));
    ASSERT_NE(edge_, nullptr);
    const absl::Status healthy =
        WaitForHealthy(edge_addr_, absl::Seconds(30), edge_.get());
    ASSERT_TRUE(healthy.ok()) << healthy;
  }
  static void TearDownTestSuite() {
    Stop(edge_);
    Stop(small_cloud_);
    Stop(cloud_);
    delete dir_;
  }

  static std::string Model() { return dir_->File("model"); }

  static std::unique_ptr<Subprocess> StartCloud(int max_candidates,
                                                const std::string& name) {
    const std::string addr = absl::StrCat("127.0.0.1:", PickFreePort());
    auto p = StartOrDie(
        {BinaryPath("cloud/duet-cloud"), "--model", Model(), "--listen", addr,
         "--metrics_listen", absl::StrCat("127.0.0.1:", PickFreePort()),
         "--workers", "1", "--calibration_ms", "50", "--shutdown_grace_s", "1",
         "--max_candidates", absl::StrCat(max_candidates)},
        dir_->File(name + ".log"));
    if (p != nullptr) {
      const absl::Status healthy =
          WaitForHealthy(addr, absl::Seconds(30), p.get());
      EXPECT_TRUE(healthy.ok()) << healthy;
    }
    (max_candidates == 1024 ? cloud_addr_ : small_cloud_addr_) = addr;
    return p;
  }

  // Runs duet-loadgen to completion; returns its exit code and parsed JSON.
  struct Run {
    int exit_code = -1;
    nlohmann::json json;  // null when the file did not parse
    std::string log;
  };
  static Run RunLoadgen(const std::string& target, const std::string& addr,
                        std::vector<std::string> extra) {
    static int n = 0;
    const std::string json = dir_->File(absl::StrCat("run", ++n, ".json"));
    std::vector<std::string> argv = {BinaryPath("tools/duet-loadgen"),
                                     "--target",
                                     target,
                                     "--addr",
                                     addr,
                                     "--model",
                                     Model(),
                                     "--json",
                                     json,
                                     "--warmup_s",
                                     "0",
                                     "--devices",
                                     "4",
                                     "--progress=false"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Run r;
    auto p = StartOrDie(argv, dir_->File(absl::StrCat("run", n, ".log")));
    if (p == nullptr) return r;
    const absl::StatusOr<int> code = p->Wait(absl::Seconds(120));
    r.exit_code = code.ok() ? *code : -1;
    r.log = p->ReadLog();
    std::ifstream in(json);
    std::stringstream ss;
    ss << in.rdbuf();
    r.json =
        nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    return r;
  }

  static double Num(const Run& r, const std::string& path) {
    return NumberAt(r.json, path);
  }

  static common::TempDir* dir_;
  static std::unique_ptr<Subprocess> cloud_, small_cloud_, edge_;
  static std::string cloud_addr_, small_cloud_addr_, edge_addr_,
      edge_metrics_addr_;
};

common::TempDir* LoadgenIntegrationTest::dir_ = nullptr;
std::unique_ptr<Subprocess> LoadgenIntegrationTest::cloud_;
std::unique_ptr<Subprocess> LoadgenIntegrationTest::small_cloud_;
std::unique_ptr<Subprocess> LoadgenIntegrationTest::edge_;
std::string LoadgenIntegrationTest::cloud_addr_;
std::string LoadgenIntegrationTest::small_cloud_addr_;
std::string LoadgenIntegrationTest::edge_addr_;
std::string LoadgenIntegrationTest::edge_metrics_addr_;

const char* const kSchemaKeys[] = {"schema",
                                   "target",
                                   "addr",
                                   "model.name",
                                   "model.version",
                                   "config.mode",
                                   "config.candidates",
                                   "duration_s",
                                   "throughput_qps",
                                   "queries.total",
                                   "queries.ok",
                                   "queries.errors",
                                   "queries.dropped",
                                   "queries.by_code",
                                   "latency_ms.p50",
                                   "latency_ms.p90",
                                   "latency_ms.p99",
                                   "latency_ms.p999",
                                   "latency_ms.max",
                                   "bytes_per_query.up",
                                   "bytes_per_query.down",
                                   "interactions.ok"};

TEST_F(LoadgenIntegrationTest, EveryTargetInBothLoopModes) {
  for (const std::string target : {"score", "monolithic", "fleet", "edge"}) {
    for (const bool open : {false, true}) {
      SCOPED_TRACE(absl::StrCat(target, open ? " open loop" : " closed loop"));
      const std::string addr = target == "edge" ? edge_addr_ : cloud_addr_;
      std::vector<std::string> load =
          open ? std::vector<std::string>{"--qps", "200"}
               : std::vector<std::string>{"--concurrency", "3"};
      load.insert(load.end(),
                  {"--queries", "50", "--candidates", "16", "--top_k", "4",
                   "--zipf", "1.1", "--interaction_rate", "0.3"});
      const Run r = RunLoadgen(target, addr, load);
      ASSERT_EQ(r.exit_code, 0) << r.log;
      for (const char* key : kSchemaKeys) {
        EXPECT_NE(FindPath(r.json, key), nullptr) << key << "\n" << r.log;
      }
      EXPECT_EQ(FindPath(r.json, "target")->get<std::string>(), target);
      EXPECT_EQ(FindPath(r.json, "config.mode")->get<std::string>(),
                open ? "open" : "closed");
      EXPECT_EQ(FindPath(r.json, "model.name")->get<std::string>(), "tiny");
      EXPECT_EQ(Num(r, "queries.total"), 50) << r.log;
      EXPECT_EQ(Num(r, "queries.ok"), 50) << r.log;
      EXPECT_EQ(Num(r, "queries.by_code.OK"), 50);
      EXPECT_EQ(Num(r, "queries.errors"), 0);
      EXPECT_EQ(Num(r, "queries.dropped"), 0);
      EXPECT_EQ(Num(r, "candidates_mean"), 16);
      EXPECT_GT(Num(r, "bytes_per_query.up"), 0);
      EXPECT_GT(Num(r, "bytes_per_query.down"), 0);
      EXPECT_GT(Num(r, "latency_ms.p50"), 0);
      EXPECT_LE(Num(r, "latency_ms.p50"), Num(r, "latency_ms.max"));
      EXPECT_EQ(Num(r, "interactions.failed"), 0) << r.log;
      if (target != "score") {
        EXPECT_GT(Num(r, "interactions.ok"), 0);
      }
    }
  }
}

TEST_F(LoadgenIntegrationTest, EdgeEnergyComesFromTheEdgesOwnMetrics) {
  const std::vector<std::string> load = {
      "--concurrency", "2", "--queries", "40", "--candidates", "16"};
  const Run unmeasured = RunLoadgen("edge", edge_addr_, load);
  ASSERT_EQ(unmeasured.exit_code, 0) << unmeasured.log;
  const nlohmann::json* edge_energy =
      FindPath(unmeasured.json, "energy_j_per_query.edge");
  ASSERT_NE(edge_energy, nullptr) << unmeasured.log;
  EXPECT_TRUE(edge_energy->is_null()) << *edge_energy;
  EXPECT_THAT(unmeasured.log,
              ::testing::HasSubstr("energy/query edge    not measured (no "
                                   "--edge_metrics"));

  std::vector<std::string> with_metrics = load;
  with_metrics.insert(with_metrics.end(),
                      {"--edge_metrics", edge_metrics_addr_});
  const Run measured = RunLoadgen("edge", edge_addr_, with_metrics);
  ASSERT_EQ(measured.exit_code, 0) << measured.log;
  EXPECT_GT(Num(measured, "energy_j_per_query.edge"), 0) << measured.log;
  EXPECT_EQ(Num(measured, "energy_j_per_query.edge_by_source.model"),
            Num(measured, "energy_j_per_query.edge"));
  EXPECT_THAT(measured.log,
              ::testing::HasSubstr(absl::StrCat(
                  "duet_energy_joules_total{side=\"edge\"} at http://",
                  edge_metrics_addr_, "/metrics")));
}

TEST_F(LoadgenIntegrationTest, RejectedQueriesAreCountedByCode) {
  // The small cloud takes at most 8 candidates: every query with 16 is
  // INVALID_ARGUMENT, counted, and the run still succeeds.
  for (const std::string target : {"score", "monolithic", "fleet"}) {
    SCOPED_TRACE(target);
    const Run r = RunLoadgen(
        target, small_cloud_addr_,
        {"--concurrency", "2", "--queries", "20", "--candidates", "16"});
    ASSERT_EQ(r.exit_code, 0) << r.log;
    EXPECT_EQ(Num(r, "queries.total"), 20);
    EXPECT_EQ(Num(r, "queries.ok"), 0);
    EXPECT_EQ(Num(r, "queries.errors"), 20);
    EXPECT_EQ(Num(r, "queries.by_code.INVALID_ARGUMENT"), 20) << r.log;
    EXPECT_EQ(FindPath(r.json, "queries.by_code.OK"), nullptr);
    EXPECT_THAT(r.log, ::testing::HasSubstr("INVALID_ARGUMENT"));
  }
}

TEST_F(LoadgenIntegrationTest, DurationBoundedRunAndCandidateDistribution) {
  const Run r =
      RunLoadgen("monolithic", cloud_addr_,
                 {"--qps", "50", "--duration_s", "1", "--candidates_dist",
                  "normal:165:80", "--deadline_ms", "5000"});
  ASSERT_EQ(r.exit_code, 0) << r.log;
  EXPECT_GT(Num(r, "queries.total"), 0);
  EXPECT_EQ(Num(r, "queries.total"),
            Num(r, "queries.ok") + Num(r, "queries.errors"));
  EXPECT_EQ(FindPath(r.json, "config.candidates")->get<std::string>(),
            "normal:165:80");
  EXPECT_GE(Num(r, "candidates_mean"), 1);
  EXPECT_LE(Num(r, "candidates_mean"), 1024);
}

TEST_F(LoadgenIntegrationTest, UnreachableServerIsCountedNotFatal) {
  const std::string nowhere = absl::StrCat("127.0.0.1:", PickFreePort());
  const Run r = RunLoadgen(
      "score", nowhere,
      {"--concurrency", "2", "--queries", "6", "--deadline_ms", "300"});
  ASSERT_EQ(r.exit_code, 0) << r.log;
  EXPECT_EQ(Num(r, "queries.total"), 6);
  EXPECT_EQ(Num(r, "queries.ok"), 0);
  EXPECT_EQ(Num(r, "queries.errors"), 6);
  // The fleet cannot fill its scratchpads without the cloud: it fails fast.
  const Run fleet = RunLoadgen("fleet", nowhere, {"--queries", "6"});
  EXPECT_NE(fleet.exit_code, 0);
  EXPECT_THAT(fleet.log, ::testing::HasSubstr(nowhere));
}

TEST_F(LoadgenIntegrationTest, BadFlagsExitTwo) {
  EXPECT_EQ(RunLoadgen("nonsense", cloud_addr_, {}).exit_code, 2);
  EXPECT_EQ(RunLoadgen("score", cloud_addr_, {"--candidates_dist", "zipf:3"})
                .exit_code,
            2);
  EXPECT_EQ(
      RunLoadgen("score", cloud_addr_, {"--edge_metrics", edge_metrics_addr_})
          .exit_code,
      2);
}

TEST_F(LoadgenIntegrationTest, WritesAGrpcFramedScoreRequest) {
  const std::string file = dir_->File("score_request.bin");
  const Run r =
      RunLoadgen("score", cloud_addr_,
                 {"--write_score_request", file, "--candidates", "32"});
  ASSERT_EQ(r.exit_code, 0) << r.log;
  std::ifstream in(file, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 5u);
  EXPECT_EQ(bytes[0], 0);  // uncompressed
  const uint32_t len = (uint8_t(bytes[1]) << 24) | (uint8_t(bytes[2]) << 16) |
                       (uint8_t(bytes[3]) << 8) | uint8_t(bytes[4]);
  EXPECT_EQ(len, bytes.size() - 5);
  duet::v1::ScoreRequest request;
  ASSERT_TRUE(request.ParseFromString(bytes.substr(5)));
  EXPECT_EQ(request.candidate_ids_size(), 32);
}

}  // namespace
}  // namespace duet::loadgen
