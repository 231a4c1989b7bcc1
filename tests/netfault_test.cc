// Real network faults between duet-edge and duet-cloud (issue 16). Each test
// makes two network namespaces, "duetnf<pid>e" (duet-edge, and this test's
// own gRPC client: the main thread joins it with setns before any gRPC
// thread exists) and "duetnf<pid>c" (duet-cloud, started through `ip netns
// exec`), joined only by duet-link-emulator's TUN devices: 198.18.0.1 (edge)
// <-> 198.18.0.2 (cloud), the RFC 2544 benchmarking range, which exists
// nowhere but inside these namespaces. The emulator (tests/netem/) delays,
// jitters, drops, rate-limits and partitions what crosses; `tc netem` would
// do that, but this kernel has no sch_netem (docs/NETWORK_FAULTS.md).
// Namespaces are removed in TearDownTestSuite and stale ones of a crashed run
// at the next start. Skipped, with the reason, where namespaces or TUN
// devices cannot be made (not root, no /dev/net/tun, no iproute2).
//
// Timing assertions are only the explicit bounds: every Recommend
// returns within its deadline + kSlack, and keepalive notices a silent cloud
// within keepalive time + timeout + kDetectSlack. Everything else measured
// (p50/p99 per fault, recovery times) is printed on lines starting
// "NETFAULT".
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/edge_process_fixture.h"

namespace duet::test {
namespace {

constexpr char kEdgeAddress[] = "198.18.0.1";
constexpr char kCloudAddress[] = "198.18.0.2";
constexpr char kCloudTarget[] = "198.18.0.2:50051";
constexpr char kTunName[] = "nf0";
// The namespaces are new and empty: fixed ports cannot be taken.
constexpr int kCloudPort = 50051;
constexpr int kEdgePort = 50061;
constexpr int kEdgeMetricsPort = 9092;

// Recommend deadline of the load, and how late a call may return: the
// client's own deadline timer plus scheduling on 2 cores shared by the
// edge, the cloud, the emulator and this test (ctest may run another test
// beside this one).
constexpr absl::Duration kDeadline = absl::Milliseconds(500);
constexpr absl::Duration kSlack = absl::Milliseconds(300);
// Over keepalive time + timeout: gRPC's timers fire on its event engine's
// threads (tens of ms late at worst here), the 50 ms GetState poll, and the
// lanes noticing the failed stream.
constexpr absl::Duration kDetectSlack = absl::Seconds(2);
// A link back after a fault must carry queries again within this: the
// channel's reconnect backoff is capped at 5 s, TCP's retransmission timer
// after a 10 s silence at about 6.4 s, plus a keepalive period.
constexpr absl::Duration kRecoveryBound = absl::Seconds(30);

std::string IpBinary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

// Runs `ip args...` to completion; its output, or an error with it.
absl::StatusOr<std::string> Ip(const std::string& log_dir,
                               std::vector<std::string> args) {
  args.insert(args.begin(), IpBinary());
  const std::string log = log_dir + "/ip.log";
  auto p = Subprocess::Start(args, log);
  if (!p.ok()) return p.status();
  auto code = (*p)->Wait(absl::Seconds(20));
  if (!code.ok()) return code.status();
  const std::string out = (*p)->ReadLog();
  if (*code != 0) {
    return absl::InternalError(
        absl::StrCat(absl::StrJoin(args, " "), " exited ", *code, ": ", out));
  }
  return out;
}

// One line to duet-link-emulator's control socket; its "ok ..." answer.
absl::StatusOr<std::string> LinkCommand(const std::string& socket_path,
                                        const std::string& line) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s",
                socket_path.c_str());
  if (fd < 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat("link control ", socket_path, ": ", std::strerror(errno)));
  }
  const std::string request = line + "\n";
  std::string answer;
  if (write(fd, request.data(), request.size()) ==
      static_cast<ssize_t>(request.size())) {
    char buf[512];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) answer.append(buf, n);
  }
  close(fd);
  if (!absl::StartsWith(answer, "ok")) {
    return absl::InternalError(
        absl::StrCat("link control '", line, "' answered '", answer, "'"));
  }
  return std::string(absl::StripSuffix(answer, "\n"));
}

// A completed Recommend as the client saw it.
struct Call {
  absl::Time start;
  absl::Duration latency;
  grpc::StatusCode code;
};

// `threads` clients calling Recommend in a closed loop (kDeadline each, a
// short pause between calls so fast failures do not spin) until Stop().
class RecommendLoad {
 public:
  RecommendLoad(const std::string& target, int threads,
                std::vector<v1::RecommendRequest> requests,
                absl::Duration pause = absl::Milliseconds(10))
      : requests_(std::move(requests)), calls_(threads) {
    auto channel =
        grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
    for (int t = 0; t < threads; ++t) {
      workers_.emplace_back([this, channel, t, pause] {
        auto stub = v1::EdgeService::NewStub(channel);
        for (size_t i = t; !stop_.load(); ++i) {
          grpc::ClientContext ctx;
          const absl::Time start = absl::Now();
          ctx.set_deadline(absl::ToChronoTime(start + kDeadline));
          v1::RecommendResponse response;
          const grpc::Status s =
              stub->Recommend(&ctx, requests_[i % requests_.size()], &response);
          const absl::Time end = absl::Now();
          calls_[t].push_back({start, end - start, s.error_code()});
          if (s.ok()) last_ok_ns_.store(absl::ToUnixNanos(end));
          absl::SleepFor(pause);
        }
      });
    }
  }
  ~RecommendLoad() { Stop(); }

  // When the latest successful call returned (InfinitePast: none yet).
  absl::Time last_ok() const {
    const int64_t ns = last_ok_ns_.load();
    return ns == 0 ? absl::InfinitePast() : absl::FromUnixNanos(ns);
  }
  // Stops the clients; every call made, by start time.
  std::vector<Call> Stop() {
    stop_.store(true);
    for (std::thread& w : workers_) w.join();
    workers_.clear();
    std::vector<Call> all;
    for (auto& c : calls_) all.insert(all.end(), c.begin(), c.end());
    std::sort(all.begin(), all.end(),
              [](const Call& a, const Call& b) { return a.start < b.start; });
    return all;
  }

 private:
  const std::vector<v1::RecommendRequest> requests_;
  std::vector<std::vector<Call>> calls_;  // one per worker, its own
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> last_ok_ns_{0};
};

// The calls that started in [from, to).
std::vector<Call> Between(const std::vector<Call>& calls, absl::Time from,
                          absl::Time to) {
  std::vector<Call> out;
  for (const Call& c : calls) {
    if (c.start >= from && c.start < to) out.push_back(c);
  }
  return out;
}

// The calls in progress at some time in [from, to): they ended after `from`
// and started before `to`.
std::vector<Call> During(const std::vector<Call>& calls, absl::Time from,
                         absl::Time to) {
  std::vector<Call> out;
  for (const Call& c : calls) {
    if (c.start + c.latency > from && c.start < to) out.push_back(c);
  }
  return out;
}

// The calls that had returned by `t`.
std::vector<Call> EndedBy(const std::vector<Call>& calls, absl::Time t) {
  std::vector<Call> out;
  for (const Call& c : calls) {
    if (c.start + c.latency <= t) out.push_back(c);
  }
  return out;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t rank =
      static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// Prints a phase's figures and checks the deadline bound on every call.
void Report(const std::string& phase, const std::vector<Call>& calls) {
  std::vector<double> all_ms, ok_ms;
  std::map<std::string, int> codes;
  double max_ms = 0;
  for (const Call& c : calls) {
    const double ms = absl::ToDoubleMilliseconds(c.latency);
    all_ms.push_back(ms);
    if (c.code == grpc::StatusCode::OK) ok_ms.push_back(ms);
    ++codes[absl::StatusCodeToString(static_cast<absl::StatusCode>(c.code))];
    max_ms = std::max(max_ms, ms);
    EXPECT_LE(c.latency, kDeadline + kSlack)
        << phase << ": a Recommend outlived its deadline";
  }
  std::string code_list;
  for (const auto& [code, n] : codes) {
    absl::StrAppend(&code_list, code_list.empty() ? "" : ",", code, "=", n);
  }
  std::printf(
      "NETFAULT phase=%-14s calls=%4zu ok=%4zu p50_ok_ms=%7.2f "
      "p99_ok_ms=%7.2f p50_all_ms=%7.2f p99_all_ms=%7.2f max_ms=%7.2f "
      "codes={%s}\n",
      phase.c_str(), calls.size(), ok_ms.size(), Percentile(ok_ms, 0.5),
      Percentile(ok_ms, 0.99), Percentile(all_ms, 0.5),
      Percentile(all_ms, 0.99), max_ms, code_list.c_str());
  std::fflush(stdout);
}

// RecordInteraction every `period` with a fresh interaction id; remembers
// which were acknowledged and with what sequence.
class InteractionLoad {
 public:
  struct Sent {
    std::string id;
    int64_t item;
    bool acked;
    uint64_t sequence;
  };

  InteractionLoad(const std::string& target, int64_t num_items,
                  absl::Duration period = absl::Milliseconds(100)) {
    worker_ = std::thread([this, target, num_items, period] {
      auto stub = v1::EdgeService::NewStub(
          grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
      std::mt19937_64 rng(11);
      for (int i = 0; !stop_.load(); ++i) {
        v1::RecordInteractionRequest r;
        r.set_item_id(static_cast<int64_t>(rng() % num_items));
        r.set_interaction_id(absl::StrCat("netfault-", i));
        grpc::ClientContext ctx;
        ctx.set_deadline(
            absl::ToChronoTime(absl::Now() + absl::Milliseconds(1500)));
        v1::RecordInteractionResponse res;
        const grpc::Status s = stub->RecordInteraction(&ctx, r, &res);
        sent_.push_back({r.interaction_id(), r.item_id(), s.ok(),
                         s.ok() ? res.sequence() : 0});
        absl::SleepFor(period);
      }
    });
  }
  ~InteractionLoad() { Stop(); }
  const std::vector<Sent>& Stop() {
    stop_.store(true);
    if (worker_.joinable()) worker_.join();
    return sent_;
  }

 private:
  std::vector<Sent> sent_;  // the worker's until Stop() joins it
  std::thread worker_;
  std::atomic<bool> stop_{false};
};

class NetFaultTest : public EdgeProcessTest {
 protected:
  static void SetUpTestSuite() {
    EdgeProcessTest::SetUpTestSuite();
    if (HasFatalFailure()) return;
    skip_reason_ = new std::string(CreateNetwork());
    if (!skip_reason_->empty() && created_.size() == 2 && link_ != nullptr &&
        !absl::StrContains(link_->ReadLog(), "tun")) {
      // Namespaces were made and the emulator did not fail on its TUN
      // devices: a defect, not a machine that cannot run these tests.
      setup_error_ = new std::string(*skip_reason_);
    }
  }
  static void TearDownTestSuite() {
    DestroyNetwork();
    delete skip_reason_;
    skip_reason_ = nullptr;
    delete setup_error_;
    setup_error_ = nullptr;
    EdgeProcessTest::TearDownTestSuite();
  }

  void SetUp() override {
    if (skip_reason_ == nullptr) GTEST_FAIL() << "suite set-up failed";
    if (setup_error_ != nullptr) GTEST_FAIL() << *setup_error_;
    // Not root, no TUN device or `ip`, or namespaces not allowed: the link
    // emulator and its namespaces cannot be made here (CreateNetwork says
    // which).
    if (!skip_reason_->empty()) GTEST_SKIP() << *skip_reason_;
    EdgeProcessTest::SetUp();
    cloud_port_ = kCloudPort;
    edge_port_ = kEdgePort;
  }

  static std::string Ns(char side) {
    return absl::StrCat("duetnf", getpid(), std::string(1, side));
  }
  static std::string ControlPath() { return dir_->path() + "/link.sock"; }

  // "" once the namespaces, the link and setns are done; else why the tests
  // are skipped.
  static std::string CreateNetwork() {
    if (geteuid() != 0) return "network namespaces need root";
    const int tun = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (tun < 0) {
      return absl::StrCat("cannot open /dev/net/tun: ", std::strerror(errno));
    }
    close(tun);
    if (IpBinary().empty()) return "no `ip` (iproute2) found";
    RemoveStaleNamespaces();
    const std::string dir = dir_->path();
    for (char side : {'e', 'c'}) {
      auto added = Ip(dir, {"netns", "add", Ns(side)});
      if (!added.ok()) {
        return absl::StrCat("cannot create a network namespace: ",
                            added.status().message());
      }
      created_.push_back(Ns(side));
      auto lo = Ip(dir, {"-n", Ns(side), "link", "set", "lo", "up"});
      if (!lo.ok()) return std::string(lo.status().message());
    }
    auto link = Subprocess::Start(
        {BinaryPath("tests/duet-link-emulator"), "--a",
         absl::StrCat(Ns('e'), ":", kTunName), "--b",
         absl::StrCat(Ns('c'), ":", kTunName), "--control", ControlPath()},
        dir + "/link-emulator.log");
    if (!link.ok()) return std::string(link.status().message());
    link_ = link->release();
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (!LinkCommand(ControlPath(), "stats").ok()) {
      if (absl::Now() > until || !link_->Running()) {
        return absl::StrCat("duet-link-emulator did not start (TUN devices?): ",
                            link_->ReadLog());
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    for (const auto& [side, self, peer] :
         {std::tuple{'e', kEdgeAddress, kCloudAddress},
          std::tuple{'c', kCloudAddress, kEdgeAddress}}) {
      for (const std::vector<std::string>& args :
           {std::vector<std::string>{"-n", Ns(side), "addr", "add", self,
                                     "peer", peer, "dev", kTunName},
            std::vector<std::string>{"-n", Ns(side), "link", "set", kTunName,
                                     "up"}}) {
        auto done = Ip(dir, args);
        if (!done.ok()) return std::string(done.status().message());
      }
    }
    // This thread (and every thread and child it starts from now on: gRPC's,
    // duet-edge) lives in the edge's namespace.
    const int ns =
        open(("/run/netns/" + Ns('e')).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
      return absl::StrCat("setns ", Ns('e'), ": ", std::strerror(errno));
    }
    close(ns);
    return "";
  }

  static void DestroyNetwork() {
    delete link_;
    link_ = nullptr;
    for (const std::string& ns : created_) KillAndDelete(ns);
    created_.clear();
  }

  // Kills what still runs in `ns` (a crashed run's cloud) and deletes it.
  static void KillAndDelete(const std::string& ns) {
    const std::string dir = dir_ != nullptr ? dir_->path() : "/tmp";
    if (auto pids = Ip(dir, {"netns", "pids", ns}); pids.ok()) {
      for (absl::string_view p : absl::StrSplit(*pids, '\n')) {
        int pid = 0;
        // This test itself lives in the edge's namespace.
        if (absl::SimpleAtoi(p, &pid) && pid > 1 && pid != getpid()) {
          kill(pid, SIGKILL);
        }
      }
    }
    if (auto del = Ip(dir, {"netns", "del", ns}); !del.ok()) {
      std::fprintf(stderr, "netfault: %s\n",
                   std::string(del.status().message()).c_str());
    }
  }

  // Namespaces "duetnf<pid>{e,c}" whose test process is gone.
  static void RemoveStaleNamespaces() {
    auto list = Ip(dir_->path(), {"netns", "list"});
    if (!list.ok()) return;
    for (absl::string_view line : absl::StrSplit(*list, '\n')) {
      const std::string name(line.substr(0, line.find(' ')));
      if (!absl::StartsWith(name, "duetnf") || name.size() < 8) continue;
      int pid = 0;
      if (!absl::SimpleAtoi(name.substr(6, name.size() - 7), &pid)) continue;
      if (pid == getpid() || kill(pid, 0) == 0) continue;
      std::fprintf(stderr, "netfault: removing stale namespace %s\n",
                   name.c_str());
      KillAndDelete(name);
    }
  }

  void Link(const std::string& command) {
    auto answer = LinkCommand(ControlPath(), command);
    ASSERT_TRUE(answer.ok()) << answer.status();
  }
  // The 5G-like link of the issue: 20 ms RTT +-5 ms (half each way), a
  // 24 Mbit/s uplink; `loss_pct` in both directions.
  void Set5g(double loss_pct, bool rate_limited = true) {
    ASSERT_NO_FATAL_FAILURE(
        Link(absl::StrFormat("set up delay_ms=10 jitter_ms=2.5 loss_pct=%g%s",
                             loss_pct, rate_limited ? " rate_mbit=24" : "")));
    ASSERT_NO_FATAL_FAILURE(Link(absl::StrFormat(
        "set down delay_ms=10 jitter_ms=2.5 loss_pct=%g", loss_pct)));
  }

  void StartCloudInNamespace() {
    auto cloud = Subprocess::Start(
        {IpBinary(), "netns", "exec", Ns('c'), BinaryPath("cloud/duet-cloud"),
         "--model", ModelDir(), "--listen",
         absl::StrCat(kCloudAddress, ":", kCloudPort), "--metrics_listen", "",
         "--calibration_ms", "100", "--workers", "1"},
        dir_->path() + "/cloud-" + TestName() + ".log");
    ASSERT_TRUE(cloud.ok()) << cloud.status();
    cloud_ = *std::move(cloud);
    // Through the link: proves the namespaces are joined.
    const absl::Status healthy =
        WaitForHealthy(kCloudTarget, absl::Seconds(60), cloud_.get());
    ASSERT_TRUE(healthy.ok()) << healthy;
  }

  void StartEdgeInNamespace(const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {
        BinaryPath("edge/duet-edge"), "--model", ModelDir(), "--cloud",
        kCloudTarget, "--listen", EdgeTarget(), "--metrics_listen",
        absl::StrCat("127.0.0.1:", kEdgeMetricsPort), "--state_dir", state_dir_,
        // No rotation: every new stream in these tests is a reconnect.
        "--cloud_stream_max_age_s", "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ASSERT_NO_FATAL_FAILURE(StartEdgeArgv(argv, /*wait_cloud=*/false));
    ASSERT_TRUE(WaitForCloud("READY", absl::Seconds(20)).has_value())
        << edge_->ReadLog();
  }

  // Polls GetState every 50 ms until cloud_connection is (or, with a leading
  // '!', is not) `state`; when it was first seen, or nullopt at `timeout`.
  std::optional<absl::Time> WaitForCloud(const std::string& state,
                                         absl::Duration timeout) {
    const bool negate = absl::StartsWith(state, "!");
    const std::string want = negate ? state.substr(1) : state;
    const absl::Time until = absl::Now() + timeout;
    do {
      const absl::Time now = absl::Now();
      if ((GetState().cloud_connection() == want) != negate) return now;
      absl::SleepFor(absl::Milliseconds(50));
    } while (absl::Now() < until);
    return std::nullopt;
  }

  double EdgeMetric(const std::string& name,
                    const std::vector<std::string>& labels = {}) {
    return MetricValue(HttpGet(kEdgeMetricsPort, "/metrics"), name, labels);
  }

  // No query is left inside the edge once the clients stopped: each ended by
  // its deadline (the gauge counts Recommend calls in progress).
  void ExpectNoQueryInsideEdge() {
    const absl::Time until = absl::Now() + kDeadline + absl::Seconds(1);
    double inflight = -1;
    while (absl::Now() < until) {
      inflight = EdgeMetric("duet_inflight_queries");
      if (inflight == 0) return;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << inflight << " Recommend calls still inside the edge "
                  << kDeadline + absl::Seconds(1) << " after the load stopped";
  }

  // Retries every interaction by its id once the link is healthy: an
  // acknowledged one must come back as a duplicate with its sequence (it was
  // applied and kept), an unacknowledged one is applied now at most once; the
  // edge then counts exactly one interaction per id.
  void ExpectNoAcknowledgedInteractionLost(
      const std::vector<InteractionLoad::Sent>& sent, uint64_t total_before) {
    int acked = 0, found = 0;
    for (const InteractionLoad::Sent& s : sent) {
      v1::RecordInteractionResponse res;
      grpc::Status status;
      for (int attempt = 0; attempt < 5; ++attempt) {
        status = RecordInteraction(s.item, &res, nullptr, s.id);
        if (status.ok()) break;
        absl::SleepFor(absl::Milliseconds(200));
      }
      ASSERT_TRUE(status.ok()) << s.id << ": " << status.error_message();
      if (s.acked) {
        ++acked;
        if (res.duplicate() && res.sequence() == s.sequence) ++found;
        EXPECT_TRUE(res.duplicate()) << s.id << " acknowledged but not kept";
        EXPECT_EQ(res.sequence(), s.sequence) << s.id;
      }
    }
    const uint64_t total = GetState().interactions_total() - total_before;
    std::printf(
        "NETFAULT interactions sent=%zu acknowledged=%d "
        "acknowledged_found=%d edge_count=%llu (after retrying every id)\n",
        sent.size(), acked, found, static_cast<unsigned long long>(total));
    EXPECT_EQ(total, sent.size());
  }

  std::vector<v1::RecommendRequest> Requests() const {
    std::vector<v1::RecommendRequest> r;
    for (uint32_t seed = 1; seed <= 16; ++seed) {
      r.push_back(ValidRequest(64, 10, seed));
    }
    return r;
  }

  void PrintLinkStats() {
    auto stats = LinkCommand(ControlPath(), "stats");
    std::printf("NETFAULT link %s\n",
                stats.ok() ? stats->c_str()
                           : std::string(stats.status().message()).c_str());
  }

  void TearDown() override {
    if (cloud_ != nullptr) cloud_->Signal(SIGCONT).IgnoreError();
    EdgeProcessTest::TearDown();
  }

  static std::string* skip_reason_;
  static std::string* setup_error_;
  static Subprocess* link_;
  static std::vector<std::string> created_;
};

std::string* NetFaultTest::skip_reason_ = nullptr;
std::string* NetFaultTest::setup_error_ = nullptr;
Subprocess* NetFaultTest::link_ = nullptr;
std::vector<std::string> NetFaultTest::created_;

// The link faults of the issue, one after another on one edge under load:
// Recommend p50/p99 per fault, every call within its deadline, no
// acknowledged interaction lost. The edge pings every second (its fastest
// keepalive): the cloud must accept that for the whole test, i.e. never
// answer GOAWAY too_many_pings (no stream is ever reopened).
TEST_F(NetFaultTest, LinkFaultsKeepDeadlinesAndInteractions) {
  ASSERT_NO_FATAL_FAILURE(StartCloudInNamespace());
  ASSERT_NO_FATAL_FAILURE(StartEdgeInNamespace(
      {"--cloud_keepalive_time_s", "1", "--cloud_keepalive_timeout_s", "5"}));
  // Every lane's stream open (READY means one).
  const absl::Time all_open = absl::Now() + absl::Seconds(10);
  while (EdgeMetric("duet_cloud_streams_ready") != 4 &&
         absl::Now() < all_open) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(EdgeMetric("duet_cloud_streams_ready"), 4);
  const double opened = EdgeMetric("duet_cloud_streams_opened_total");
  const uint64_t total_before = GetState().interactions_total();

  struct Phase {
    std::string name;
    double loss_pct;
    bool shaped;  // 20 ms +-5 ms RTT
    bool rate;    // 24 Mbit/s uplink
  };
  const std::vector<Phase> phases = {
      {"clean", 0, false, false},        {"rtt20+-5", 0, true, false},
      {"rtt20+loss1%", 1, true, false},  {"rtt20+loss5%", 5, true, false},
      {"rtt20+up24mbit", 0, true, true}, {"5g:all+loss2%", 2, true, true},
  };
  InteractionLoad interactions(EdgeTarget(), model_->catalog().num_items());
  RecommendLoad load(EdgeTarget(), 2, Requests());
  std::vector<std::pair<absl::Time, absl::Time>> spans;
  for (const Phase& p : phases) {
    if (p.shaped) {
      ASSERT_NO_FATAL_FAILURE(Set5g(p.loss_pct, p.rate));
    } else {
      ASSERT_NO_FATAL_FAILURE(Link("set both"));
    }
    // The first second settles the link (queues of the previous phase).
    const absl::Time from = absl::Now() + absl::Seconds(1);
    absl::SleepFor(absl::Seconds(8));
    spans.push_back({from, absl::Now()});
  }
  const std::vector<Call> calls = load.Stop();
  const std::vector<InteractionLoad::Sent> sent = interactions.Stop();
  for (size_t i = 0; i < phases.size(); ++i) {
    Report(phases[i].name, Between(calls, spans[i].first, spans[i].second));
  }
  // Every call, including those while the link changed.
  Report("all", calls);
  PrintLinkStats();
  ExpectNoQueryInsideEdge();
  ASSERT_NO_FATAL_FAILURE(Link("set both"));
  ExpectNoAcknowledgedInteractionLost(sent, total_before);
  EXPECT_EQ(EdgeMetric("duet_cloud_streams_opened_total"), opened)
      << "a stream was reopened: " << edge_->ReadLog();
  EXPECT_FALSE(absl::StrContains(edge_->ReadLog(), "too_many_pings"));
}

// A 10 s partition under load: queries fail by their deadline (or fast once
// the edge knows), then succeed again without restarting anything.
TEST_F(NetFaultTest, StreamsRecoverAfterA10sPartition) {
  ASSERT_NO_FATAL_FAILURE(StartCloudInNamespace());
  ASSERT_NO_FATAL_FAILURE(StartEdgeInNamespace({}));  // keepalive 10 s / 5 s
  ASSERT_NO_FATAL_FAILURE(Set5g(0));
  const uint64_t total_before = GetState().interactions_total();
  const int edge_pid = edge_->pid();

  InteractionLoad interactions(EdgeTarget(), model_->catalog().num_items());
  RecommendLoad load(EdgeTarget(), 2, Requests());
  absl::SleepFor(absl::Seconds(4));
  const absl::Time cut = absl::Now();
  ASSERT_NO_FATAL_FAILURE(Link("partition"));
  const std::optional<absl::Time> noticed =
      WaitForCloud("!READY", absl::Seconds(10));
  absl::SleepFor(cut + absl::Seconds(10) - absl::Now());
  ASSERT_NO_FATAL_FAILURE(Link("heal"));
  const absl::Time healed = absl::Now();
  const absl::Time until = healed + kRecoveryBound;
  while (load.last_ok() < healed && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const absl::Time recovered = load.last_ok();
  const std::optional<absl::Time> ready =
      WaitForCloud("READY", until - absl::Now());
  absl::SleepFor(absl::Seconds(4));
  const std::vector<Call> calls = load.Stop();
  const std::vector<InteractionLoad::Sent> sent = interactions.Stop();

  Report("before", EndedBy(calls, cut));
  Report("partition10s", During(calls, cut, healed));
  Report("after-heal", Between(calls, healed, absl::InfiniteFuture()));
  Report("recovered+1s",
         Between(calls, std::max(recovered, healed) + absl::Seconds(1),
                 absl::InfiniteFuture()));
  PrintLinkStats();
  ASSERT_GE(recovered, healed)
      << "no Recommend succeeded within " << kRecoveryBound << " of healing";
  std::printf(
      "NETFAULT partition: edge saw the cloud not READY %.0f ms after the "
      "cut (-1: not within the 10 s); first successful Recommend %.0f ms "
      "after heal, cloud_connection READY after %.0f ms\n",
      noticed ? absl::ToDoubleMilliseconds(*noticed - cut) : -1.0,
      absl::ToDoubleMilliseconds(recovered - healed),
      ready ? absl::ToDoubleMilliseconds(*ready - healed) : -1.0);
  EXPECT_TRUE(edge_->Running());
  EXPECT_EQ(edge_->pid(), edge_pid);
  ExpectNoQueryInsideEdge();
  ExpectNoAcknowledgedInteractionLost(sent, total_before);
}

// A cloud that stops answering without closing anything (SIGSTOP: the kernel
// still ACKs TCP, gRPC never answers): the edge's keepalive must notice
// within time + timeout; queries meanwhile end by their deadline, then fail
// fast; after SIGCONT the edge serves again on its own.
TEST_F(NetFaultTest, KeepaliveFindsASilentCloud) {
  const absl::Duration time = absl::Seconds(10), timeout = absl::Seconds(5);
  ASSERT_NO_FATAL_FAILURE(StartCloudInNamespace());
  ASSERT_NO_FATAL_FAILURE(StartEdgeInNamespace(
      {"--cloud_keepalive_time_s", "10", "--cloud_keepalive_timeout_s", "5"}));
  ASSERT_NO_FATAL_FAILURE(Set5g(0));
  const uint64_t total_before = GetState().interactions_total();

  InteractionLoad interactions(EdgeTarget(), model_->catalog().num_items());
  RecommendLoad load(EdgeTarget(), 2, Requests());
  absl::SleepFor(absl::Seconds(3));
  const absl::Time stopped = absl::Now();
  ASSERT_TRUE(cloud_->Signal(SIGSTOP).ok());
  const std::optional<absl::Time> noticed =
      WaitForCloud("!READY", time + timeout + kDetectSlack + absl::Seconds(5));
  ASSERT_TRUE(noticed.has_value())
      << "the edge still says READY " << time + timeout + kDetectSlack
      << " after the cloud stopped";
  const absl::Duration detection = *noticed - stopped;
  std::printf(
      "NETFAULT keepalive: silent cloud noticed after %.0f ms (bound %s = "
      "keepalive %s + timeout %s + slack %s), state %s\n",
      absl::ToDoubleMilliseconds(detection),
      absl::FormatDuration(time + timeout + kDetectSlack).c_str(),
      absl::FormatDuration(time).c_str(), absl::FormatDuration(timeout).c_str(),
      absl::FormatDuration(kDetectSlack).c_str(),
      GetState().cloud_connection().c_str());
  EXPECT_LE(detection, time + timeout + kDetectSlack);
  absl::SleepFor(absl::Seconds(3));  // queries now fail fast
  const absl::Time resumed = absl::Now();
  ASSERT_TRUE(cloud_->Signal(SIGCONT).ok());
  const absl::Time until = resumed + kRecoveryBound;
  while (load.last_ok() < resumed && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const absl::Time recovered = load.last_ok();
  absl::SleepFor(absl::Seconds(2));
  const std::vector<Call> calls = load.Stop();
  const std::vector<InteractionLoad::Sent> sent = interactions.Stop();

  Report("before", EndedBy(calls, stopped));
  Report("sigstop:silent", During(calls, stopped, *noticed));
  Report("sigstop:known", Between(calls, *noticed, resumed));
  Report("after-sigcont", Between(calls, resumed, absl::InfiniteFuture()));
  Report("sigstop:all", During(calls, stopped, resumed));
  ASSERT_GE(recovered, resumed)
      << "no Recommend succeeded within " << kRecoveryBound << " of SIGCONT";
  std::printf(
      "NETFAULT sigstop recovery: first successful Recommend %.0f ms after "
      "SIGCONT\n",
      absl::ToDoubleMilliseconds(recovered - resumed));
  ExpectNoQueryInsideEdge();
  ExpectNoAcknowledgedInteractionLost(sent, total_before);
}

// Why keepalive: without it nothing notices a silent cloud.
TEST_F(NetFaultTest, WithoutKeepaliveASilentCloudGoesUnnoticed) {
  ASSERT_NO_FATAL_FAILURE(StartCloudInNamespace());
  ASSERT_NO_FATAL_FAILURE(
      StartEdgeInNamespace({"--cloud_keepalive_time_s", "0"}));
  ASSERT_TRUE(cloud_->Signal(SIGSTOP).ok());
  const absl::Duration bound = absl::Seconds(17);
  EXPECT_FALSE(WaitForCloud("!READY", bound).has_value())
      << "something besides keepalive noticed the silent cloud";
  std::printf(
      "NETFAULT no keepalive: cloud_connection still %s %s after "
      "SIGSTOP\n",
      GetState().cloud_connection().c_str(),
      absl::FormatDuration(bound).c_str());
}

// duet-edge's in-process uplink emulation (--uplink_mbps/--uplink_rtt_ms)
// against the same parameters on the namespace link: 20 ms RTT (10 ms each
// way, no jitter), a 24 Mbit/s uplink. One client, sequential calls.
TEST_F(NetFaultTest, EmulatedUplinkAgainstNamespaceLink) {
  ASSERT_NO_FATAL_FAILURE(StartCloudInNamespace());
  const auto measure = [&](const std::string& name) {
    RecommendLoad load(EdgeTarget(), 1, Requests(), absl::Milliseconds(5));
    absl::SleepFor(absl::Seconds(1));
    const absl::Time from = absl::Now();
    absl::SleepFor(absl::Seconds(5));
    Report(name, Between(load.Stop(), from, absl::InfiniteFuture()));
  };
  ASSERT_NO_FATAL_FAILURE(Link("set both"));
  ASSERT_NO_FATAL_FAILURE(
      StartEdgeInNamespace({"--uplink_mbps", "24", "--uplink_rtt_ms", "20"}));
  const double q0 = EdgeMetric("duet_queries_total", {"code=\"OK\""});
  const double up0 = EdgeMetric("duet_uplink_bytes_total");
  measure("EmulatedUplink");
  const double per_query =
      (EdgeMetric("duet_uplink_bytes_total") - up0) /
      (EdgeMetric("duet_queries_total", {"code=\"OK\""}) - q0);
  edge_.reset();
  state_dir_ += "-plain";
  ASSERT_NO_FATAL_FAILURE(StartEdgeInNamespace({}));
  measure("clean-link");
  ASSERT_NO_FATAL_FAILURE(Link("set up delay_ms=10 rate_mbit=24"));
  ASSERT_NO_FATAL_FAILURE(Link("set down delay_ms=10"));
  measure("namespace-link");
  std::printf(
      "NETFAULT uplink: %.0f serialized bytes upstream per query "
      "(%.3f ms at 24 Mbit/s)\n",
      per_query, per_query * 8 / 24e6 * 1e3);
  PrintLinkStats();
}

}  // namespace
}  // namespace duet::test
