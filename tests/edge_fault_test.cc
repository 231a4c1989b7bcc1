// Faults injected into real duet-edge / duet-cloud processes on 127.0.0.1:
//   - kill -9 of the edge under concurrent RecordInteraction load: after a
//     restart on the same --state_dir every acknowledged interaction is
//     there, at its acknowledged sequence number, and the scores equal the
//     split reference on the acknowledged history;
//   - kill -9 of the edge while RecordInteraction calls with client ids are
//     in flight, then the apps retry: each id is applied exactly once (the
//     retry answers `duplicate` with the first sequence when the first call
//     was durable), and every acknowledged id answers `duplicate`;
//   - kill -9 of the cloud under Recommend load: every call ends OK or
//     UNAVAILABLE (none waits out its deadline); a cloud restarted on the
//     same port is used again without restarting the edge;
//   - SIGTERM drains the edge: an in-flight Recommend completes, exit 0;
//   - a truncated or corrupted weight file stops duet-edge and duet-cloud at
//     start with exit code 1, naming the file and the size / SHA-256
//     mismatch.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/kernels/top_k.h"
#include "common/model/reference_model.h"
#include "gmock/gmock.h"
#include "tests/edge_process_fixture.h"

namespace duet {
namespace {

using testing::HasSubstr;

class EdgeFaultTest : public test::EdgeProcessTest {
 protected:
  grpc::Status Interact(v1::EdgeService::Stub* stub, int64_t item,
                        uint64_t* sequence) {
    v1::RecordInteractionResponse res;
    const grpc::Status s = RecordInteraction(item, &res, stub);
    *sequence = res.sequence();
    return s;
  }

  // All candidates ranked by the split reference (fp32) on `history` with
  // the all-zero profile.
  static std::vector<common::Scored> Reference(
      const v1::RecommendRequest& request,
      const std::vector<int64_t>& history) {
    std::vector<float> pooled(model_->dims().pooled);
    std::vector<float> u(model_->dims().user_out);
    std::vector<float> s(model_->dims().static_in, 0.0f);
    common::PoolHistory(*model_, history, pooled.data());
    common::SplitModel split(model_);
    EXPECT_TRUE(split
                    .UserVector(s.data(), request.context_features().data(),
                                pooled.data(), /*int8=*/false, u.data())
                    .ok());
    const std::vector<int64_t> ids(request.candidate_ids().begin(),
                                   request.candidate_ids().end());
    std::vector<float> ctr(ids.size());
    EXPECT_TRUE(split.ScoreItems(u.data(), ids, ctr.data()).ok());
    return common::TopK(ids.data(), ctr.data(), ids.size(), request.top_k());
  }

  static bool SameRanking(const v1::RecommendResponse& got,
                          const std::vector<common::Scored>& want) {
    if (got.items_size() != static_cast<int>(want.size())) return false;
    for (size_t i = 0; i < want.size(); ++i) {
      if (got.items(i).item_id() != want[i].item_id ||
          std::abs(got.items(i).ctr() - want[i].ctr) > 1e-5f) {
        return false;
      }
    }
    return true;
  }
};

TEST_F(EdgeFaultTest, KillNineUnderInteractionLoadLosesNoAcknowledgedOne) {
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  const std::vector<std::string> flags = {
      "--user_precision", "fp32", "--wire", "fp32", "--snapshot_every", "16"};
  ASSERT_NO_FATAL_FAILURE(StartEdge(flags));

  // Each client thread records the interactions acknowledged to it with
  // their sequence numbers, and the one it had in flight when the edge died.
  constexpr int kThreads = 4;
  constexpr int kAckedBeforeKill = 150;
  std::atomic<int> acked_total{0};
  std::mutex mu;
  std::map<uint64_t, int64_t> acked;  // sequence -> item
  std::vector<int64_t> in_flight;     // items whose call failed
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::EdgeService::NewStub(grpc::CreateChannel(
          EdgeTarget(), grpc::InsecureChannelCredentials()));
      for (int i = 0;; ++i) {
        const int64_t item = (t * 241 + i * 7) % model_->catalog().num_items();
        uint64_t sequence = 0;
        const grpc::Status s = Interact(stub.get(), item, &sequence);
        std::lock_guard<std::mutex> lock(mu);
        if (!s.ok()) {
          in_flight.push_back(item);
          failures.push_back(s.error_message());
          return;
        }
        EXPECT_TRUE(acked.emplace(sequence, item).second)
            << "sequence " << sequence << " acknowledged twice";
        ++acked_total;
      }
    });
  }
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (acked_total < kAckedBeforeKill && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  ASSERT_TRUE(edge_->Signal(SIGKILL).ok());
  ASSERT_TRUE(edge_->Wait(absl::Seconds(10)).ok());
  for (std::thread& t : threads) t.join();
  ASSERT_GE(acked_total.load(), kAckedBeforeKill)
      << "load did not reach the kill point";
  ASSERT_EQ(static_cast<int>(in_flight.size()), kThreads);

  ASSERT_NO_FATAL_FAILURE(StartEdge(flags));
  const v1::EdgeState state = GetState();
  const uint64_t total = state.interactions_total();
  // Durable before acknowledged: every ack is there; at most the calls in
  // flight at the kill were logged without being acknowledged.
  EXPECT_GE(total, acked.size());
  EXPECT_LE(total, acked.size() + kThreads);
  ASSERT_FALSE(acked.empty());
  EXPECT_LE(acked.rbegin()->first, total);

  // The history in sequence order; gaps are calls logged but not acked.
  std::vector<int64_t> history(total, -1);
  std::vector<size_t> gaps;
  for (const auto& [sequence, item] : acked) history[sequence - 1] = item;
  for (size_t i = 0; i < history.size(); ++i) {
    if (history[i] < 0) gaps.push_back(i);
  }
  ASSERT_LE(gaps.size(), in_flight.size());

  v1::RecommendRequest request = ValidRequest(64, 64);
  v1::RecommendResponse got;
  const grpc::Status s = Recommend(request, &got);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // Some assignment of in-flight items to the gaps reproduces the scores
  // (no gaps: the acknowledged history alone must).
  std::vector<bool> used(in_flight.size(), false);
  std::function<bool(size_t)> match = [&](size_t g) {
    if (g == gaps.size()) return SameRanking(got, Reference(request, history));
    for (size_t k = 0; k < in_flight.size(); ++k) {
      if (used[k]) continue;
      used[k] = true;
      history[gaps[g]] = in_flight[k];
      const bool ok = match(g + 1);
      used[k] = false;
      if (ok) return true;
    }
    return false;
  };
  RecordProperty("acknowledged", static_cast<int>(acked.size()));
  RecordProperty("interactions_after_restart", static_cast<int>(total));
  RecordProperty("unacknowledged_but_logged", static_cast<int>(gaps.size()));
  EXPECT_TRUE(match(0)) << "scores after the restart match no history made "
                           "of the "
                        << acked.size() << " acknowledged interactions and "
                        << gaps.size() << " unacknowledged ones";
  // The scratchpad fill follows from the count.
  for (int t = 0; t < state.tables_size(); ++t) {
    EXPECT_EQ(state.tables(t).filled(),
              std::min<int>(total, state.tables(t).history_length()));
    EXPECT_EQ(state.tables(t).tracker(),
              static_cast<int>(total % state.tables(t).history_length()));
  }
}

TEST_F(EdgeFaultTest, KillNineThenRetryAppliesEachInteractionIdOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  const std::vector<std::string> flags = {"--snapshot_every", "16"};
  ASSERT_NO_FATAL_FAILURE(StartEdge(flags));
  constexpr int kThreads = 4;
  struct Call {
    int64_t item;
    std::string id;
    uint64_t sequence = 0;
  };
  std::mutex mu;
  std::vector<Call> acked, in_flight;
  std::atomic<int> acked_total{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::EdgeService::NewStub(grpc::CreateChannel(
          EdgeTarget(), grpc::InsecureChannelCredentials()));
      for (int i = 0;; ++i) {
        Call c{(t * 131 + i * 11) % model_->catalog().num_items(),
               absl::StrCat("app", t, "-tap", i)};
        v1::RecordInteractionResponse res;
        const grpc::Status s =
            RecordInteraction(c.item, &res, stub.get(), c.id);
        std::lock_guard<std::mutex> lock(mu);
        if (!s.ok()) {
          in_flight.push_back(c);
          return;
        }
        c.sequence = res.sequence();
        EXPECT_FALSE(res.duplicate()) << c.id;
        acked.push_back(c);
        ++acked_total;
      }
    });
  }
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (acked_total < 100 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  ASSERT_TRUE(edge_->Signal(SIGKILL).ok());
  ASSERT_TRUE(edge_->Wait(absl::Seconds(10)).ok());
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(static_cast<int>(in_flight.size()), kThreads);

  ASSERT_NO_FATAL_FAILURE(StartEdge(flags));
  const uint64_t before_retry = GetState().interactions_total();
  // The apps retry the calls that failed: applied now, or found durable.
  int durable_before_kill = 0;
  for (const Call& c : in_flight) {
    v1::RecordInteractionResponse res;
    const grpc::Status s = RecordInteraction(c.item, &res, stub_.get(), c.id);
    ASSERT_TRUE(s.ok()) << s.error_message();
    if (res.duplicate()) {
      ++durable_before_kill;
      EXPECT_LE(res.sequence(), before_retry) << c.id;
    }
  }
  // Each id exactly once: every acknowledged and every in-flight call.
  EXPECT_EQ(GetState().interactions_total(), acked.size() + kThreads);
  EXPECT_EQ(before_retry, acked.size() + durable_before_kill);
  // A late retry of an acknowledged call changes nothing.
  for (const Call& c : acked) {
    v1::RecordInteractionResponse res;
    ASSERT_TRUE(RecordInteraction(c.item, &res, stub_.get(), c.id).ok());
    EXPECT_TRUE(res.duplicate()) << c.id;
    EXPECT_EQ(res.sequence(), c.sequence) << c.id;
  }
  EXPECT_EQ(GetState().interactions_total(), acked.size() + kThreads);
  RecordProperty("in_flight_durable_before_kill", durable_before_kill);
  std::printf(
      "kill -9 with %d calls in flight: %d were durable (the retry "
      "answered duplicate), %d applied by the retry; %zu "
      "acknowledged ids all answered duplicate\n",
      kThreads, durable_before_kill, kThreads - durable_before_kill,
      acked.size());
}

TEST_F(EdgeFaultTest, KillNineOfTheCloudUnderLoadFailsFastAndRecovers) {
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  ASSERT_NO_FATAL_FAILURE(StartEdge());
  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<bool> cloud_restarted{false};
  std::atomic<int> ok_before{0}, ok_after{0}, unavailable{0};
  std::mutex mu;
  std::vector<std::string> unexpected;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::EdgeService::NewStub(grpc::CreateChannel(
          EdgeTarget(), grpc::InsecureChannelCredentials()));
      const v1::RecommendRequest request = ValidRequest(32, 5, 100 + t);
      while (!stop) {
        const bool after = cloud_restarted;
        grpc::ClientContext ctx;
        ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
        v1::RecommendResponse got;
        const grpc::Status s = stub->Recommend(&ctx, request, &got);
        if (s.ok()) {
          ++(after ? ok_after : ok_before);
        } else if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
          ++unavailable;
          absl::SleepFor(absl::Milliseconds(5));
        } else {
          std::lock_guard<std::mutex> lock(mu);
          unexpected.push_back(
              absl::StrCat(s.error_code(), ": ", s.error_message()));
        }
      }
    });
  }
  auto wait_for = [](const std::atomic<int>& n, int at_least) {
    const absl::Time until = absl::Now() + absl::Seconds(30);
    while (n < at_least && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return n >= at_least;
  };
  EXPECT_TRUE(wait_for(ok_before, 40));
  ASSERT_TRUE(cloud_->Signal(SIGKILL).ok());
  ASSERT_TRUE(cloud_->Wait(absl::Seconds(10)).ok());
  EXPECT_TRUE(wait_for(unavailable, 20)) << "no UNAVAILABLE during the outage";
  EXPECT_NE(GetState().cloud_connection(), "READY");

  cloud_restarted = true;
  // Same port. Not ASSERTed: the threads must be stopped first.
  EXPECT_NO_FATAL_FAILURE(StartCloud());
  EXPECT_TRUE(wait_for(ok_after, 40)) << "the edge did not recover";
  stop = true;
  for (std::thread& t : threads) t.join();
  RecordProperty("ok_before_kill", ok_before.load());
  RecordProperty("unavailable", unavailable.load());
  RecordProperty("ok_after_restart", ok_after.load());
  EXPECT_THAT(unexpected, testing::IsEmpty())
      << "calls that ended neither OK nor UNAVAILABLE (a DEADLINE_EXCEEDED "
         "waited out its 2 s deadline)";
  EXPECT_EQ(GetState().cloud_connection(), "READY");
}

TEST_F(EdgeFaultTest, SigtermDrainsAnInFlightRecommend) {
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  const int metrics_port = test::PickFreePort();
  // Each upstream message waits half the emulated RTT: ~2 s per query.
  ASSERT_NO_FATAL_FAILURE(
      StartEdge({"--uplink_rtt_ms", "2000", "--metrics_listen",
                 absl::StrCat("127.0.0.1:", metrics_port)}));
  grpc::Status result;
  v1::RecommendResponse got;
  std::thread call(
      [&] { result = Recommend(ValidRequest(), &got, absl::Seconds(20)); });
  const absl::Time until = absl::Now() + absl::Seconds(10);
  bool in_flight = false;
  while (!in_flight && absl::Now() < until) {
    in_flight = absl::StrContains(test::HttpGet(metrics_port, "/metrics"),
                                  "duet_inflight_queries{side=\"edge\"} 1");
    if (!in_flight) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(in_flight) << "the Recommend never showed up in flight";
  ASSERT_TRUE(edge_->Signal(SIGTERM).ok());
  call.join();
  EXPECT_TRUE(result.ok()) << result.error_message();
  EXPECT_EQ(got.items_size(), 5);
  auto exit = edge_->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(*exit, 0) << edge_->ReadLog();
  EXPECT_THAT(edge_->ReadLog(), HasSubstr("received SIGTERM, draining"));
}

// Copies the model directory and damages one weight file.
enum class Damage { kTruncate, kFlipByte };

std::string DamagedModel(const std::string& from, const std::string& to,
                         const std::string& file, Damage damage) {
  std::filesystem::remove_all(to);
  std::filesystem::copy(from, to);
  const std::string path = to + "/" + file;
  const auto size = std::filesystem::file_size(path);
  if (damage == Damage::kTruncate) {
    std::filesystem::resize_file(path, size - size / 3);
  } else {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size - 5));
    const char c = static_cast<char>(f.get());
    f.seekp(static_cast<std::streamoff>(size - 5));
    f.put(static_cast<char>(c ^ 0x5a));
  }
  return path;
}

TEST_F(EdgeFaultTest, DamagedModelFilesAreRefusedAtStart) {
  struct Case {
    const char* binary;
    const char* file;
    Damage damage;
    const char* message;  // after the file's path
  };
  const std::vector<Case> cases = {
      {"edge/duet-edge", "edge.safetensors", Damage::kTruncate,
       "bytes, model.pbtxt records"},
      {"edge/duet-edge", "edge.safetensors", Damage::kFlipByte, "has SHA-256 "},
      {"cloud/duet-cloud", "edge.safetensors", Damage::kTruncate,
       "bytes, model.pbtxt records"},
      {"cloud/duet-cloud", "cloud.safetensors", Damage::kTruncate,
       "bytes, model.pbtxt records"},
      {"cloud/duet-cloud", "cloud.safetensors", Damage::kFlipByte,
       "has SHA-256 "},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    SCOPED_TRACE(absl::StrCat(
        c.binary, " with ", c.file,
        c.damage == Damage::kTruncate ? " truncated" : " corrupted"));
    const std::string dir = absl::StrCat(dir_->path(), "/damaged-", i);
    const std::string path = DamagedModel(ModelDir(), dir, c.file, c.damage);
    std::vector<std::string> argv = {
        test::BinaryPath(c.binary), "--model", dir, "--listen", "127.0.0.1:0",
        "--metrics_listen",         ""};
    if (absl::string_view(c.binary) == "edge/duet-edge") {
      argv.insert(argv.end(), {"--cloud", CloudTarget(), "--state_dir",
                               absl::StrCat(state_dir_, "-", i)});
    }
    int code = 0;
    std::string log;
    ASSERT_NO_FATAL_FAILURE(RunToExit(argv, &code, &log));
    EXPECT_EQ(code, 1) << log;
    EXPECT_THAT(log, HasSubstr(absl::StrCat("DATA_LOSS: ", path, " ")));
    EXPECT_THAT(log, HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace duet
