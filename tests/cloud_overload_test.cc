// Overload of duet-cloud (issue 7), bounded to about 30 s: capacity is
// measured first (closed loop of unary Score calls, as many clients as
// --max_inflight so none is refused), then an open loop (Poisson arrivals)
// at twice that rate runs against the small --max_inflight. Asserted: the
// excess is refused with RESOURCE_EXHAUSTED, accepted queries all complete
// OK (no DEADLINE_EXCEEDED, no other code), the cloud's RSS stays under its
// start-up RSS + 64 MiB, and afterwards a closed loop at normal load
// completes with no error. The client is written here (gRPC callback API)
// rather than duet-loadgen so it can report the latency of each status code:
// the rejection latency p99 is printed with the throughputs and RSS figures.
// No timing is asserted.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/mutex.h"
#include "common/model/model.h"
#include "common/model/test_util.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_process.h"

namespace duet {
namespace {

constexpr int kMaxInflight = 4;
constexpr int kCandidates = 256;
constexpr int kDeadlineMs = 2000;
constexpr int64_t kRssHeadroomKib = 64 * 1024;  // 64 MiB

// VmRSS of `pid` in KiB (-1 if unreadable).
int64_t RssKib(int pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) != 0) continue;
    int64_t kib = -1;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits += c;
    }
    return absl::SimpleAtoi(digits, &kib) ? kib : -1;
  }
  return -1;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i =
      std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

// Outcomes of a run: count and latencies (ms, send to completion) per code.
struct RunResult {
  double seconds = 0;
  int64_t dropped = 0;  // open loop: arrivals beyond the outstanding bound
  std::map<grpc::StatusCode, std::vector<double>> latency_ms;
  int64_t count(grpc::StatusCode c) const {
    auto it = latency_ms.find(c);
    return it == latency_ms.end() ? 0 : static_cast<int64_t>(it->second.size());
  }
  std::vector<double> of(grpc::StatusCode c) const {
    auto it = latency_ms.find(c);
    return it == latency_ms.end() ? std::vector<double>() : it->second;
  }
  int64_t total() const {
    int64_t n = 0;
    for (const auto& [code, v] : latency_ms) n += v.size();
    return n;
  }
  std::string Codes() const {
    std::string s;
    for (const auto& [code, v] : latency_ms) {
      absl::StrAppend(&s, s.empty() ? "" : ", ", "code ", code, ": ", v.size());
    }
    return s;
  }
};

class OverloadClient {
 public:
  OverloadClient(const std::string& target, v1::ScoreRequest request)
      : channel_(
            grpc::CreateChannel(target, grpc::InsecureChannelCredentials())),
        stub_(v1::ScoringService::NewStub(channel_)),
        request_(std::move(request)) {}

  // `clients` threads, each with one call outstanding, for `duration`.
  RunResult Closed(int clients, absl::Duration duration) {
    RunResult result;
    common::Mutex mu;
    const absl::Time end = absl::Now() + duration;
    const absl::Time start = absl::Now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        while (absl::Now() < end) {
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::milliseconds(kDeadlineMs));
          v1::ScoreResponse response;
          const absl::Time t0 = absl::Now();
          const grpc::Status s = stub_->Score(&context, request_, &response);
          const double ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
          common::MutexLock lock(&mu);
          result.latency_ms[s.error_code()].push_back(ms);
        }
      });
    }
    for (auto& t : threads) t.join();
    result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return result;
  }

  // Poisson arrivals at `qps` for `duration` (at most `max_outstanding`
  // calls outstanding); `sample` runs every 100 ms meanwhile.
  RunResult Open(double qps, absl::Duration duration, int max_outstanding,
                 const std::function<void()>& sample) {
    struct Call {
      grpc::ClientContext context;
      v1::ScoreResponse response;
      absl::Time sent;
    };
    RunResult result;
    common::Mutex mu;
    int outstanding = 0;
    std::mt19937_64 rng(7);
    std::exponential_distribution<double> gap(qps);
    const absl::Time start = absl::Now();
    const absl::Time end = start + duration;
    absl::Time next = start, next_sample = start;
    while (next < end) {
      next += absl::Seconds(gap(rng));
      const absl::Time now = absl::Now();
      if (now >= next_sample) {
        sample();
        next_sample = now + absl::Milliseconds(100);
      }
      if (next > now) absl::SleepFor(next - now);
      {
        common::MutexLock lock(&mu);
        if (outstanding >= max_outstanding) {
          ++result.dropped;
          continue;
        }
        ++outstanding;
      }
      auto* call = new Call;
      call->context.set_deadline(std::chrono::system_clock::now() +
                                 std::chrono::milliseconds(kDeadlineMs));
      call->sent = absl::Now();
      stub_->async()->Score(&call->context, &request_, &call->response,
                            [&, call](grpc::Status s) {
                              const double ms = absl::ToDoubleMilliseconds(
                                  absl::Now() - call->sent);
                              delete call;
                              common::MutexLock lock(&mu);
                              result.latency_ms[s.error_code()].push_back(ms);
                              --outstanding;
                            });
    }
    // Wait for every call (each has a deadline, so this is bounded).
    common::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &outstanding));
    result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return result;
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ScoringService::Stub> stub_;
  const v1::ScoreRequest request_;
};

TEST(CloudOverloadTest, ExcessIsRefusedFastMemoryBoundedAndThroughputRecovers) {
  common::TempDir dir;
  auto config = common::GenerateTestModel("rm2", 0.0005, dir.path());
  ASSERT_TRUE(config.ok()) << config.status();
  common::LoadOptions lo;
  lo.parts.edge = false;
  auto model = common::Model::Load(dir.path(), lo);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string target = absl::StrCat("127.0.0.1:", test::PickFreePort());
  auto process = test::Subprocess::Start(
      {test::BinaryPath("cloud/duet-cloud"), "--model=" + dir.path(),
       "--listen=" + target,
       absl::StrCat("--metrics_listen=127.0.0.1:", test::PickFreePort()),
       "--workers=1", absl::StrCat("--max_inflight=", kMaxInflight),
       "--max_candidates=1024", "--calibration_ms=300",
       // Every query computes its item side (the heavy, cache-less path).
       "--item_cache_entries=0"},
      dir.File("duet-cloud.log"));
  ASSERT_TRUE(process.ok()) << process.status();
  test::Subprocess& cloud = **process;
  const absl::Status healthy =
      test::WaitForHealthy(target, absl::Seconds(60), &cloud);
  ASSERT_TRUE(healthy.ok()) << healthy;

  v1::ScoreRequest request;
  const int64_t items = (*model)->catalog().num_items();
  for (int i = 0; i < kCandidates; ++i) {
    request.add_candidate_ids((11 + 104729 * int64_t{i}) % items);
  }
  request.set_top_k(10);
  v1::UserVector* uv = request.mutable_user_vector();
  uv->set_model_version((*model)->config().version());
  uv->set_model_fingerprint((*model)->fingerprint());
  for (int i = 0; i < (*model)->dims().user_out; ++i) {
    uv->add_fp32_data(0.01f * static_cast<float>(i % 50));
  }
  OverloadClient client(target, request);

  // Warm-up (connections, pools, page cache), then the start-up RSS.
  const RunResult warmup = client.Closed(kMaxInflight, absl::Seconds(1));
  ASSERT_EQ(warmup.count(grpc::OK), warmup.total()) << warmup.Codes();
  const int64_t rss_start = RssKib(cloud.pid());
  ASSERT_GT(rss_start, 0);

  // Capacity: closed loop, max_inflight clients, none refused.
  const RunResult before = client.Closed(kMaxInflight, absl::Seconds(3));
  ASSERT_EQ(before.count(grpc::OK), before.total()) << before.Codes();
  const double capacity = before.count(grpc::OK) / before.seconds;
  ASSERT_GT(capacity, 0);

  // Twice the capacity, open loop.
  int64_t rss_max = rss_start;
  const RunResult over =
      client.Open(2 * capacity, absl::Seconds(8), /*max_outstanding=*/512,
                  [&] { rss_max = std::max(rss_max, RssKib(cloud.pid())); });
  rss_max = std::max(rss_max, RssKib(cloud.pid()));
  const int64_t ok = over.count(grpc::OK);
  const int64_t refused = over.count(grpc::RESOURCE_EXHAUSTED);
  EXPECT_GT(refused, 0) << over.Codes();
  EXPECT_GT(ok, 0) << over.Codes();
  // Accepted queries completed within their deadlines; nothing else came
  // back.
  EXPECT_EQ(over.count(grpc::DEADLINE_EXCEEDED), 0) << over.Codes();
  EXPECT_EQ(ok + refused, over.total()) << over.Codes();
  EXPECT_EQ(over.dropped, 0);
  EXPECT_LE(rss_max, rss_start + kRssHeadroomKib)
      << "RSS grew from " << rss_start << " KiB to " << rss_max << " KiB";

  // Back to normal load: everything succeeds again.
  const RunResult after = client.Closed(kMaxInflight, absl::Seconds(3));
  EXPECT_EQ(after.count(grpc::OK), after.total()) << after.Codes();
  EXPECT_GT(after.count(grpc::OK), 0);
  const int64_t rss_end = RssKib(cloud.pid());
  EXPECT_TRUE(cloud.Running());

  const std::vector<double> rej = over.of(grpc::RESOURCE_EXHAUSTED);
  const std::vector<double> acc = over.of(grpc::OK);
  std::printf(
      "overload figures (rm2 x0.0005, N=%d, --workers=1 --max_inflight=%d, "
      "no item cache):\n"
      "  capacity (closed loop, %d clients, %.1f s): %.0f qps, p50 %.2f ms, "
      "p99 %.2f ms\n"
      "  open loop at %.0f qps for %.1f s: %lld OK (%.0f qps), %lld "
      "RESOURCE_EXHAUSTED (%.1f %%), %lld dropped by the client\n"
      "  rejection latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms\n"
      "  accepted latency: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n"
      "  after (closed loop, 3 s): %.0f qps, %lld errors\n"
      "  RSS: start %lld KiB, max under overload %lld KiB (ceiling %lld), "
      "end %lld KiB\n",
      kCandidates, kMaxInflight, kMaxInflight, before.seconds, capacity,
      Percentile(before.of(grpc::OK), 0.5),
      Percentile(before.of(grpc::OK), 0.99), 2 * capacity, over.seconds,
      static_cast<long long>(ok), ok / over.seconds,
      static_cast<long long>(refused), 100.0 * refused / over.total(),
      static_cast<long long>(over.dropped), Percentile(rej, 0.5),
      Percentile(rej, 0.99), Percentile(rej, 1.0), Percentile(acc, 0.5),
      Percentile(acc, 0.99), Percentile(acc, 1.0),
      after.count(grpc::OK) / after.seconds,
      static_cast<long long>(after.total() - after.count(grpc::OK)),
      static_cast<long long>(rss_start), static_cast<long long>(rss_max),
      static_cast<long long>(rss_start + kRssHeadroomKib),
      static_cast<long long>(rss_end));
  ::testing::Test::RecordProperty("rejection_latency_p99_ms",
                                  absl::StrCat(Percentile(rej, 0.99)));
}

}  // namespace
}  // namespace duet
