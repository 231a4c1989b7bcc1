// Model releases on a real duet-cloud (issues 7 and 14). The server starts
// on rm2 v1 (--keep_versions=1, a short --version_grace_s) while a stream
// client and a unary client send queries without pause and a third thread
// checks health; v2 is written into the model directory (generated
// elsewhere, weight files renamed in, model.pbtxt last) and served BESIDE
// v1: health stays SERVING, no query fails, v1 vectors keep scoring as v1
// and v2 vectors as v2; GetModelStatus lists both and the target v2, and
// GetEdgeModel streams v2's edge part whose bytes match its checksums. Once
// the clients moved to v2 and v1 was idle for the grace period, v1 is
// retired (health of "duet.v1.ScoringService/v1" NOT_SERVING, a v1 vector
// FAILED_PRECONDITION naming the served version). Then a corrupted v3 (one
// byte flipped in cloud.safetensors) is refused and v2 keeps serving. A
// second test loads on SIGHUP with polling off. Every RPC has a deadline;
// every wait is bounded.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/mutex.h"
#include "common/format/sha256.h"
#include "common/model/model.h"
#include "common/model/model_config.h"
#include "common/model/reference_model.h"
#include "common/model/test_util.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_process.h"

namespace duet {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using v1::SessionRequest;
using v1::SessionResponse;

constexpr int kCandidates = 64;
constexpr int kTopK = 5;

std::chrono::system_clock::time_point In(int seconds) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

// A generated model version: its directory, loaded copy, and the reference
// CTRs of the fixed query every client sends.
struct Version {
  common::TempDir dir;
  std::unique_ptr<const common::Model> model;
  std::vector<int64_t> ids;
  std::vector<float> u;
  std::map<int64_t, float> want;
};

std::unique_ptr<Version> MakeVersion(const std::string& preset, double scale,
                                     uint32_t version) {
  auto v = std::make_unique<Version>();
  auto config = common::GenerateTestModel(preset, scale, v->dir.path(),
                                          /*seed=*/version, version);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return nullptr;
  common::LoadOptions lo;
  lo.parts.user_tables = true;
  auto model = common::Model::Load(v->dir.path(), lo);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  v->model = std::move(model).value();
  const int64_t items = v->model->catalog().num_items();
  for (int i = 0; i < kCandidates; ++i) {
    v->ids.push_back((3 + 7919 * int64_t{i}) % items);
  }
  for (int i = 0; i < v->model->dims().user_out; ++i) {
    v->u.push_back(0.02f * static_cast<float>(i % 37));
  }
  std::vector<float> ctr(v->ids.size());
  EXPECT_TRUE(common::SplitModel(v->model.get())
                  .ScoreItems(v->u.data(), v->ids, ctr.data())
                  .ok());
  for (size_t j = 0; j < v->ids.size(); ++j) v->want[v->ids[j]] = ctr[j];
  return v;
}

v1::UserVector VectorOf(const Version& v, uint64_t query_id = 0) {
  v1::UserVector uv;
  uv.set_query_id(query_id);
  uv.set_model_version(v.model->config().version());
  uv.set_model_fingerprint(v.model->fingerprint());
  for (float x : v.u) uv.add_fp32_data(x);
  return uv;
}

// Copies `from`'s files into `to` as a deployment should: each weight file
// to a temporary name then renamed over (the serving model keeps mapping
// the old inode), model.pbtxt last. `corrupt` flips one byte of
// cloud.safetensors in the copy.
void Install(const std::string& from, const std::string& to,
             bool corrupt = false) {
  for (const char* f :
       {"edge.safetensors", "edge_int8.safetensors", "cloud.safetensors",
        "user_tables.safetensors", "model.pbtxt"}) {
    const std::string tmp = absl::StrCat(to, "/.", f, ".tmp");
    fs::copy_file(absl::StrCat(from, "/", f), tmp,
                  fs::copy_options::overwrite_existing);
    if (corrupt && std::string(f) == "cloud.safetensors") {
      std::fstream file(tmp, std::ios::in | std::ios::out | std::ios::binary);
      const std::streamoff at =
          static_cast<std::streamoff>(fs::file_size(tmp)) / 2;
      file.seekg(at);
      char c = 0;
      file.get(c);
      file.seekp(at);
      file.put(static_cast<char>(c ^ 0x20));
    }
    fs::rename(tmp, absl::StrCat(to, "/", f));
  }
}

struct Server {
  common::TempDir dir;  // the served model directory
  std::string target;
  int metrics_port = 0;
  std::unique_ptr<test::Subprocess> process;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::ScoringService::Stub> stub;

  std::string Metrics() const {
    return test::HttpGet(metrics_port, "/metrics");
  }
  // Polls until the metric matches `labels` with value `want` (bounded).
  bool WaitMetric(const std::string& name,
                  const std::vector<std::string>& labels, double want,
                  absl::Duration timeout = absl::Seconds(60)) const {
    const absl::Time give_up = absl::Now() + timeout;
    while (absl::Now() < give_up) {
      if (test::MetricValue(Metrics(), name, labels) == want) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  grpc::Status Score(const Version& v, v1::ScoreResponse* response) {
    v1::ScoreRequest request;
    for (int64_t i : v.ids) request.add_candidate_ids(i);
    request.set_top_k(kTopK);
    *request.mutable_user_vector() = VectorOf(v);
    grpc::ClientContext context;
    context.set_deadline(In(20));
    return stub->Score(&context, request, response);
  }
};

std::unique_ptr<Server> StartServer(const Version& v1,
                                    std::vector<std::string> flags) {
  auto s = std::make_unique<Server>();
  Install(v1.dir.path(), s->dir.path());
  s->target = absl::StrCat("127.0.0.1:", test::PickFreePort());
  s->metrics_port = test::PickFreePort();
  std::vector<std::string> argv = {
      test::BinaryPath("cloud/duet-cloud"),
      "--model=" + s->dir.path(),
      "--listen=" + s->target,
      absl::StrCat("--metrics_listen=127.0.0.1:", s->metrics_port),
      "--workers=2",
      "--max_candidates=128",
      "--calibration_ms=200",
      "--item_cache_entries=10000"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto process = test::Subprocess::Start(argv, s->dir.File("duet-cloud.log"));
  EXPECT_TRUE(process.ok()) << process.status();
  if (!process.ok()) return nullptr;
  s->process = std::move(process).value();
  const absl::Status healthy =
      test::WaitForHealthy(s->target, absl::Seconds(60), s->process.get());
  EXPECT_TRUE(healthy.ok()) << healthy;
  if (!healthy.ok()) return nullptr;
  s->channel =
      grpc::CreateChannel(s->target, grpc::InsecureChannelCredentials());
  s->stub = v1::ScoringService::NewStub(s->channel);
  return s;
}

// What the clients saw, per vector version.
struct Tally {
  common::Mutex mu;
  std::map<uint32_t, int> ok ABSL_GUARDED_BY(mu);
  std::vector<std::string> unexpected ABSL_GUARDED_BY(mu);

  int Ok(uint32_t version) {
    common::MutexLock lock(&mu);
    return ok[version];
  }
};

// Checks one outcome of a query sent with version `sent`'s vector.
void Record(Tally& tally, const Version& sent, int code,
            const std::string& message,
            const google::protobuf::RepeatedPtrField<v1::ScoredItem>* items) {
  const uint32_t version = sent.model->config().version();
  common::MutexLock lock(&tally.mu);
  if (code == grpc::OK) {
    // Scored by the model the vector is for: equal to its reference.
    bool equal = items->size() == kTopK;
    for (const auto& item : *items) {
      auto it = sent.want.find(item.item_id());
      equal = equal && it != sent.want.end() &&
              std::abs(it->second - item.ctr()) <= 1e-5;
    }
    if (equal) {
      ++tally.ok[version];
    } else {
      tally.unexpected.push_back(
          absl::StrCat("v", version, " scores differ from its reference"));
    }
    return;
  }
  tally.unexpected.push_back(
      absl::StrCat("v", version, " vector: code ", code, ": ", message));
}

TEST(CloudReloadTest, SwapUnderLoadThenCorruptVersionKeepsServing) {
  auto v1 = MakeVersion("rm2", 0.0005, 1);
  auto v2 = MakeVersion("rm2", 0.0005, 2);
  auto v3 = MakeVersion("rm2", 0.0005, 3);
  ASSERT_TRUE(v1 && v2 && v3);
  ASSERT_NE(v1->model->config().signature(), v2->model->config().signature());
  auto server = StartServer(*v1, {"--reload_poll_ms=100", "--keep_versions=1",
                                  "--version_grace_s=2"});
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(test::MetricValue(server->Metrics(), "duet_model_info",
                              {"version=\"1\""}),
            1);

  std::atomic<bool> stop{false};
  std::atomic<const Version*> current{v1.get()};  // what clients send
  Tally tally;
  std::atomic<int> not_serving{0}, health_checks{0};
  std::vector<std::thread> threads;
  // A ScoringSession stream: Begin, then the user vector, one at a time.
  threads.emplace_back([&] {
    grpc::ClientContext context;
    context.set_deadline(In(120));
    auto stream = server->stub->ScoringSession(&context);
    for (uint64_t id = 1; !stop.load(); ++id) {
      const Version* sent = current.load();
      SessionRequest begin;
      begin.mutable_begin()->set_query_id(id);
      for (int64_t i : sent->ids) begin.mutable_begin()->add_candidate_ids(i);
      begin.mutable_begin()->set_top_k(kTopK);
      begin.mutable_begin()->set_model_version(sent->model->config().version());
      begin.mutable_begin()->set_model_fingerprint(sent->model->fingerprint());
      begin.mutable_begin()->set_device_id("stream-client");
      SessionRequest user;
      *user.mutable_user_vector() = VectorOf(*sent, id);
      SessionResponse r;
      if (!stream->Write(begin) || !stream->Write(user) || !stream->Read(&r)) {
        common::MutexLock lock(&tally.mu);
        tally.unexpected.push_back("stream broke");
        return;
      }
      if (r.has_scores()) {
        Record(tally, *sent, grpc::OK, "", &r.scores().items());
        const uint32_t target = r.scores().target().version();
        if (target != 1 && target != 2) {
          common::MutexLock lock(&tally.mu);
          tally.unexpected.push_back(absl::StrCat("target v", target));
        }
      } else {
        Record(tally, *sent, r.error().code(), r.error().message(), nullptr);
      }
    }
    stream->WritesDone();
    const grpc::Status end = stream->Finish();
    if (!end.ok()) {
      common::MutexLock lock(&tally.mu);
      tally.unexpected.push_back("stream ended " + end.error_message());
    }
  });
  // Unary Score.
  threads.emplace_back([&] {
    while (!stop.load()) {
      const Version* sent = current.load();
      v1::ScoreResponse response;
      const grpc::Status s = server->Score(*sent, &response);
      Record(tally, *sent, s.error_code(), s.error_message(),
             &response.items());
    }
  });
  // Health, all along.
  threads.emplace_back([&] {
    auto health = grpc::health::v1::Health::NewStub(server->channel);
    while (!stop.load()) {
      grpc::ClientContext context;
      context.set_deadline(In(5));
      grpc::health::v1::HealthCheckResponse response;
      const grpc::Status s = health->Check(
          &context, grpc::health::v1::HealthCheckRequest(), &response);
      ++health_checks;
      if (!s.ok() ||
          response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
        ++not_serving;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  auto wait_ok = [&](uint32_t version, int more) {
    const int target = tally.Ok(version) + more;
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (tally.Ok(version) < target && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return tally.Ok(version) >= target;
  };

  // v1 serves; then v2 lands in the directory while queries stream.
  ASSERT_TRUE(wait_ok(1, 20));
  Install(v2->dir.path(), server->dir.path());
  ASSERT_TRUE(
      server->WaitMetric("duet_model_reloads_total", {"result=\"ok\""}, 1))
      << server->process->ReadLog();
  EXPECT_EQ(
      test::MetricValue(server->Metrics(), "duet_model_info",
                        {"version=\"2\"",
                         absl::StrCat("signature=\"",
                                      v2->model->config().signature(), "\"")}),
      1);
  EXPECT_EQ(test::MetricValue(server->Metrics(), "duet_model_info",
                              {"version=\"1\""}),
            -1);
  // Both versions are served: v1 clients keep going.
  ASSERT_TRUE(wait_ok(1, 20));
  {
    grpc::ClientContext context;
    context.set_deadline(In(10));
    v1::GetModelStatusRequest request;
    request.set_device_id("dev-1");
    v1::ModelStatus status;
    ASSERT_TRUE(server->stub->GetModelStatus(&context, request, &status).ok());
    ASSERT_EQ(status.versions_size(), 2);
    EXPECT_EQ(status.versions(0).version(), 2u);
    EXPECT_EQ(status.versions(0).state(), "AVAILABLE");
    EXPECT_EQ(status.versions(1).version(), 1u);
    EXPECT_EQ(status.versions(1).state(), "RETIRING");
    EXPECT_GT(status.versions(1).queries_total(), 20);
    EXPECT_EQ(status.target().version(), 2u);
    EXPECT_EQ(status.target().fingerprint(), v2->model->fingerprint());
    EXPECT_EQ(status.release(), "every device: the newest served version");
  }
  {
    // The edge part of the device's target, in chunks, checksums intact.
    grpc::ClientContext context;
    context.set_deadline(In(20));
    v1::GetEdgeModelRequest request;
    request.set_device_id("dev-1");
    auto reader = server->stub->GetEdgeModel(&context, request);
    v1::EdgeModelChunk chunk;
    ASSERT_TRUE(reader->Read(&chunk));
    const v1::ModelConfig config = chunk.config();
    EXPECT_EQ(config.signature(), v2->model->config().signature());
    EXPECT_THAT(chunk.files(), ::testing::ElementsAre("edge.safetensors",
                                                      "edge_int8.safetensors"));
    std::map<std::string, std::string> files;
    while (reader->Read(&chunk)) {
      std::string& bytes = files[chunk.file()];
      EXPECT_EQ(chunk.offset(), static_cast<int64_t>(bytes.size()));
      bytes += chunk.data();
    }
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_EQ(files.size(), 2u);
    for (const auto& f : config.files()) {
      if (!files.count(f.name())) continue;
      EXPECT_EQ(static_cast<int64_t>(files[f.name()].size()), f.size_bytes());
      EXPECT_EQ(
          common::Sha256Hex(files[f.name()].data(), files[f.name()].size()),
          f.sha256())
          << f.name();
    }
  }
  // Clients move to v2 (as edges do once they load the new edge model).
  current = v2.get();
  ASSERT_TRUE(wait_ok(2, 20));
  // v1, idle for the grace period, is retired.
  ASSERT_TRUE(server->WaitMetric("duet_model_versions_retired_total", {}, 1))
      << server->process->ReadLog();
  {
    v1::ScoreResponse response;
    const grpc::Status s = server->Score(*v1, &response);
    EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(),
                HasSubstr(absl::StrCat("model rm2 v1 (signature ",
                                       v1->model->config().signature(),
                                       ") is not served; this server serves "
                                       "rm2 v2")));
    auto health = grpc::health::v1::Health::NewStub(server->channel);
    for (const auto& [service, want] :
         {std::pair{"duet.v1.ScoringService/v1",
                    grpc::health::v1::HealthCheckResponse::NOT_SERVING},
          std::pair{"duet.v1.ScoringService/v2",
                    grpc::health::v1::HealthCheckResponse::SERVING}}) {
      grpc::ClientContext context;
      context.set_deadline(In(5));
      grpc::health::v1::HealthCheckRequest request;
      request.set_service(service);
      grpc::health::v1::HealthCheckResponse response;
      ASSERT_TRUE(health->Check(&context, request, &response).ok()) << service;
      EXPECT_EQ(response.status(), want) << service;
    }
  }

  // A corrupted v3: refused, v2 keeps serving.
  Install(v3->dir.path(), server->dir.path(), /*corrupt=*/true);
  ASSERT_TRUE(
      server->WaitMetric("duet_model_reloads_total", {"result=\"failed\""}, 1))
      << server->process->ReadLog();
  ASSERT_TRUE(wait_ok(2, 20));
  stop = true;
  for (auto& t : threads) t.join();

  const std::string log = server->process->ReadLog();
  EXPECT_THAT(log, HasSubstr("model loaded: rm2 v2"));
  EXPECT_THAT(log, HasSubstr("model retired: v1"));
  EXPECT_THAT(log, HasSubstr("FAILED, still serving rm2 v2"));
  EXPECT_THAT(log, HasSubstr("cloud.safetensors has SHA-256"));
  EXPECT_EQ(test::MetricValue(server->Metrics(), "duet_model_reloads_total",
                              {"result=\"ok\""}),
            1);
  EXPECT_EQ(test::MetricValue(server->Metrics(), "duet_model_info",
                              {"version=\"2\""}),
            1);
  v1::ScoreResponse response;
  EXPECT_TRUE(server->Score(*v2, &response).ok());
  EXPECT_EQ(not_serving.load(), 0) << "of " << health_checks.load();
  EXPECT_GT(health_checks.load(), 0);
  common::MutexLock lock(&tally.mu);
  EXPECT_THAT(tally.unexpected, ::testing::IsEmpty());
  EXPECT_EQ(
      test::MetricValue(server->Metrics(), "duet_model_version_queries_total",
                        {"version=\"1\""}),
      tally.ok[1]);  // every routed v1 query succeeded
  std::printf(
      "release: %d v1 OK, %d v2 OK, 0 failed, %d health checks all "
      "SERVING\n",
      tally.ok[1], tally.ok[2], health_checks.load());
}

TEST(CloudReloadTest, SighupReloadsWithPollingOff) {
  auto v1 = MakeVersion("rm2", 0.0005, 1);
  auto v2 = MakeVersion("rm2", 0.0005, 2);
  ASSERT_TRUE(v1 && v2);
  auto server = StartServer(*v1, {"--reload_poll_ms=0"});
  ASSERT_NE(server, nullptr);
  Install(v2->dir.path(), server->dir.path());
  // Nothing polls: v1 still serves.
  absl::SleepFor(absl::Milliseconds(300));
  v1::ScoreResponse response;
  EXPECT_TRUE(server->Score(*v1, &response).ok());
  ASSERT_TRUE(server->process->Signal(SIGHUP).ok());
  ASSERT_TRUE(
      server->WaitMetric("duet_model_reloads_total", {"result=\"ok\""}, 1))
      << server->process->ReadLog();
  EXPECT_TRUE(server->Score(*v2, &response).ok());
  EXPECT_TRUE(server->Score(*v1, &response).ok());  // served beside v2
  EXPECT_TRUE(server->process->Running());
  EXPECT_THAT(server->process->ReadLog(), HasSubstr("received SIGHUP"));
}

}  // namespace
}  // namespace duet
