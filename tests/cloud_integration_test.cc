// duet-cloud as a real process on loopback: scores equal the in-process
// reference, overlap really happens, bad input gets its code on a stream
// that stays usable, health and SIGTERM draining. Every RPC has a deadline.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/kernels/quantize.h"
#include "common/model/model.h"
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

using ::testing::HasSubstr;
using v1::ScoringService;
using v1::SessionRequest;
using v1::SessionResponse;

constexpr int kMaxCandidates = 128;

void SetDeadline(grpc::ClientContext* context, int seconds = 20) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(seconds));
}

// A duet-cloud process serving a generated model, plus the same model
// loaded in-process as the reference.
class CloudProcess {
 public:
  static std::unique_ptr<CloudProcess> Start(
      const std::string& preset, double rows_scale,
      std::vector<std::string> extra_flags = {}) {
    auto p = std::unique_ptr<CloudProcess>(new CloudProcess());
    auto config = common::GenerateTestModel(preset, rows_scale, p->dir_.path());
    EXPECT_TRUE(config.ok()) << config.status();
    common::LoadOptions lo;
    lo.parts.user_tables = true;
    auto model = common::Model::Load(p->dir_.path(), lo);
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return nullptr;
    p->model_ = std::move(model).value();
    const int port = test::PickFreePort();
    p->target_ = absl::StrCat("127.0.0.1:", port);
    std::vector<std::string> argv = {
        test::BinaryPath("cloud/duet-cloud"),
        "--model=" + p->dir_.path(),
        "--listen=" + p->target_,
        absl::StrCat("--metrics_listen=127.0.0.1:", test::PickFreePort()),
        "--workers=2",
        absl::StrCat("--max_candidates=", kMaxCandidates),
        "--calibration_ms=200",
        "--item_cache_entries=1000",
        "--item_cache_policy=always"};
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    auto process =
        test::Subprocess::Start(argv, p->dir_.File("duet-cloud.log"));
    EXPECT_TRUE(process.ok()) << process.status();
    if (!process.ok()) return nullptr;
    p->process_ = std::move(process).value();
    const absl::Status healthy =
        test::WaitForHealthy(p->target_, absl::Seconds(60), p->process_.get());
    EXPECT_TRUE(healthy.ok()) << healthy;
    if (!healthy.ok()) return nullptr;
    p->channel_ =
        grpc::CreateChannel(p->target_, grpc::InsecureChannelCredentials());
    p->stub_ = ScoringService::NewStub(p->channel_);
    return p;
  }

  const common::Model& model() const { return *model_; }
  ScoringService::Stub& stub() { return *stub_; }
  test::Subprocess& process() { return *process_; }
  const std::string& target() const { return target_; }

  std::vector<float> RandomU(uint32_t seed) const {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(0, 1);
    std::vector<float> u(model_->dims().user_out);
    for (float& x : u) x = dist(rng);
    return u;
  }
  v1::UserVector Fp32(const std::vector<float>& u, uint64_t id = 0) const {
    v1::UserVector uv;
    uv.set_query_id(id);
    uv.set_model_version(model_->config().version());
    uv.set_model_fingerprint(model_->fingerprint());
    for (float x : u) uv.add_fp32_data(x);
    return uv;
  }
  std::vector<int64_t> Candidates(int n, int64_t salt) const {
    std::vector<int64_t> ids;
    for (int i = 0; i < n; ++i) {
      ids.push_back((salt + 7919 * i) % model_->catalog().num_items());
    }
    return ids;
  }
  // Unary Score of every one of `ids` with the fp32 user vector u.
  void ScoreAll(const std::vector<int64_t>& ids, const std::vector<float>& u,
                v1::ScoreResponse* response) {
    v1::ScoreRequest request;
    for (int64_t i : ids) request.add_candidate_ids(i);
    request.set_top_k(static_cast<int>(ids.size()));
    *request.mutable_user_vector() = Fp32(u);
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status s = stub_->Score(&context, request, response);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  // Reference CTR per candidate id (fp32 split model; over `item_tables`
  // instead of the model's when given).
  std::map<int64_t, float> Reference(
      const std::vector<float>& u, const std::vector<int64_t>& ids,
      const std::vector<common::EmbeddingTable>* item_tables = nullptr) const {
    std::vector<float> ctr(ids.size());
    EXPECT_TRUE(common::SplitModel(model_.get(), item_tables)
                    .ScoreItems(u.data(), ids, ctr.data())
                    .ok());
    std::map<int64_t, float> out;
    for (size_t j = 0; j < ids.size(); ++j) out[ids[j]] = ctr[j];
    return out;
  }
  void ExpectMatches(
      const google::protobuf::RepeatedPtrField<v1::ScoredItem>& items,
      const std::map<int64_t, float>& want, int top_k,
      double tolerance = 1e-5) const {
    ASSERT_EQ(items.size(), top_k);
    // The reference's top-k: the k highest CTRs.
    std::vector<float> sorted;
    for (const auto& [id, ctr] : want) sorted.push_back(ctr);
    std::sort(sorted.rbegin(), sorted.rend());
    for (int i = 0; i < items.size(); ++i) {
      ASSERT_TRUE(want.count(items[i].item_id())) << items[i].item_id();
      EXPECT_NEAR(items[i].ctr(), want.at(items[i].item_id()), tolerance);
      EXPECT_NEAR(items[i].ctr(), sorted[i], tolerance) << "rank " << i;
    }
  }

 private:
  CloudProcess() = default;
  common::TempDir dir_;
  std::unique_ptr<const common::Model> model_;
  std::string target_;
  std::unique_ptr<test::Subprocess> process_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ScoringService::Stub> stub_;
};

SessionRequest BeginReq(uint64_t id, const std::vector<int64_t>& ids, int top_k,
                        int relay_top = 0) {
  SessionRequest r;
  v1::BeginQuery* b = r.mutable_begin();
  b->set_query_id(id);
  for (int64_t i : ids) b->add_candidate_ids(i);
  b->set_top_k(top_k);
  b->set_relay_top(relay_top);
  return r;
}

SessionRequest UserReq(const v1::UserVector& uv) {
  SessionRequest r;
  *r.mutable_user_vector() = uv;
  return r;
}

using Stream = grpc::ClientReaderWriter<SessionRequest, SessionResponse>;

class CloudIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cloud_ = CloudProcess::Start("tiny", 1.0).release();
  }
  static void TearDownTestSuite() {
    delete cloud_;
    cloud_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(cloud_, nullptr); }

  static CloudProcess* cloud_;
};
CloudProcess* CloudIntegrationTest::cloud_ = nullptr;

TEST_F(CloudIntegrationTest, HealthIsServing) {
  auto channel =
      grpc::CreateChannel(cloud_->target(), grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  for (const char* service : {"", "duet.v1.ScoringService"}) {
    grpc::ClientContext context;
    SetDeadline(&context, 5);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(stub->Check(&context, request, &response).ok());
    EXPECT_EQ(response.status(),
              grpc::health::v1::HealthCheckResponse::SERVING);
  }
}

TEST_F(CloudIntegrationTest, StreamScoresEqualReference) {
  grpc::ClientContext context;
  SetDeadline(&context);
  std::unique_ptr<Stream> stream = cloud_->stub().ScoringSession(&context);
  std::map<uint64_t, std::pair<std::vector<float>, std::vector<int64_t>>> sent;
  for (uint64_t id = 1; id <= 3; ++id) {
    auto ids = cloud_->Candidates(10 * static_cast<int>(id), id);
    auto u = cloud_->RandomU(static_cast<uint32_t>(id));
    ASSERT_TRUE(stream->Write(BeginReq(id, ids, 5, /*relay_top=*/2)));
    sent[id] = {u, ids};
  }
  for (uint64_t id = 3; id >= 1; --id) {
    ASSERT_TRUE(stream->Write(UserReq(cloud_->Fp32(sent[id].first, id))));
  }
  for (int i = 0; i < 3; ++i) {
    SessionResponse r;
    ASSERT_TRUE(stream->Read(&r));
    ASSERT_TRUE(r.has_scores()) << r.DebugString();
    const auto& [u, ids] = sent[r.scores().query_id()];
    cloud_->ExpectMatches(r.scores().items(), cloud_->Reference(u, ids), 5);
    ASSERT_EQ(r.scores().relay_size(), 2);
    EXPECT_EQ(r.scores().relay(0).item_id(), r.scores().items(0).item_id());
    EXPECT_EQ(r.scores().relay(0).rows_size(),
              cloud_->model().config().user_tables_size() *
                  cloud_->model().config().embedding_dim());
    EXPECT_GT(r.scores().timings().total_us(), 0);
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(CloudIntegrationTest, UnaryScoreEqualsReferenceFp32AndInt8) {
  const auto ids = cloud_->Candidates(kMaxCandidates, 5);
  const auto u = cloud_->RandomU(9);
  v1::ScoreRequest request;
  for (int64_t i : ids) request.add_candidate_ids(i);
  request.set_top_k(20);
  *request.mutable_user_vector() = cloud_->Fp32(u);
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ScoreResponse response;
    const grpc::Status s = cloud_->stub().Score(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    cloud_->ExpectMatches(response.items(), cloud_->Reference(u, ids), 20);
  }
  // int8 on the wire: exact against the dequantized vector, close to fp32.
  std::vector<int8_t> q(u.size());
  const common::AffineParams p = common::QuantizeAffineInt8(
      u.data(), static_cast<int>(u.size()), q.data());
  std::vector<float> deq(u.size());
  common::DequantizeAffineInt8(q.data(), static_cast<int>(q.size()), p,
                               deq.data());
  v1::UserVector* uv = request.mutable_user_vector();
  uv->clear_fp32_data();
  uv->set_int8_data(std::string(q.begin(), q.end()));
  uv->set_scale(p.scale);
  uv->set_zero_point(p.zero_point);
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ScoreResponse response;
  ASSERT_TRUE(cloud_->stub().Score(&context, request, &response).ok());
  cloud_->ExpectMatches(response.items(), cloud_->Reference(deq, ids), 20);
  const auto fp32 = cloud_->Reference(u, ids);
  for (const auto& item : response.items()) {
    EXPECT_NEAR(item.ctr(), fp32.at(item.item_id()), 0.02);
  }
}

TEST_F(CloudIntegrationTest, MonolithicEqualsSplitFp32Path) {
  const common::Model& m = cloud_->model();
  const common::ModelDims& d = m.dims();
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> dist(-1, 1);
  v1::MonolithicScoreRequest request;
  for (int i = 0; i < d.static_in; ++i) request.add_static_features(dist(rng));
  for (int i = 0; i < d.dynamic_in; ++i)
    request.add_dynamic_features(dist(rng));
  for (int i = 0; i < 12; ++i) request.add_history_item_ids(i * 37 % 500);
  const auto ids = cloud_->Candidates(50, 3);
  for (int64_t i : ids) request.add_candidate_ids(i);
  request.set_top_k(50);
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ScoreResponse response;
  const grpc::Status s =
      cloud_->stub().MonolithicScore(&context, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<float> pooled(d.pooled), u(d.user_out);
  const std::vector<int64_t> history(request.history_item_ids().begin(),
                                     request.history_item_ids().end());
  common::PoolHistory(m, history, pooled.data());
  ASSERT_TRUE(common::SplitModel(&m)
                  .UserVector(request.static_features().data(),
                              request.dynamic_features().data(), pooled.data(),
                              /*int8=*/false, u.data())
                  .ok());
  cloud_->ExpectMatches(response.items(), cloud_->Reference(u, ids), 50);
}

TEST_F(CloudIntegrationTest, ItemSideFinishesBeforeDelayedUserVector) {
  grpc::ClientContext context;
  SetDeadline(&context);
  std::unique_ptr<Stream> stream = cloud_->stub().ScoringSession(&context);
  const auto ids = cloud_->Candidates(64, 77);
  ASSERT_TRUE(stream->Write(BeginReq(42, ids, 3)));
  absl::SleepFor(absl::Milliseconds(200));
  const auto u = cloud_->RandomU(1);
  ASSERT_TRUE(stream->Write(UserReq(cloud_->Fp32(u, 42))));
  SessionResponse r;
  ASSERT_TRUE(stream->Read(&r));
  ASSERT_TRUE(r.has_scores()) << r.DebugString();
  EXPECT_TRUE(r.scores().timings().item_side_ready_first());
  EXPECT_GT(r.scores().timings().user_wait_us(), 0);
  cloud_->ExpectMatches(r.scores().items(), cloud_->Reference(u, ids), 3);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(CloudIntegrationTest, BadInputsOnStreamGetTheirCodes) {
  const common::Model& m = cloud_->model();
  grpc::ClientContext context;
  SetDeadline(&context, 30);
  std::unique_ptr<Stream> stream = cloud_->stub().ScoringSession(&context);
  const auto ids = cloud_->Candidates(8, 1);
  const auto u = cloud_->RandomU(2);
  uint64_t next_id = 100;
  // Sends `requests` and expects one QueryError with `code` and `text`.
  auto expect_error = [&](std::vector<SessionRequest> requests,
                          grpc::StatusCode code, const std::string& text) {
    for (const auto& r : requests) ASSERT_TRUE(stream->Write(r));
    SessionResponse response;
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_TRUE(response.has_error()) << text << ": " << response.DebugString();
    EXPECT_EQ(response.error().code(), code) << response.error().message();
    EXPECT_THAT(response.error().message(), HasSubstr(text));
  };
  auto begin_then = [&](v1::UserVector uv) {
    const uint64_t id = ++next_id;
    uv.set_query_id(id);
    return std::vector<SessionRequest>{BeginReq(id, ids, 2), UserReq(uv)};
  };
  expect_error(begin_then(cloud_->Fp32(std::vector<float>(3, 0.f))),
               grpc::INVALID_ARGUMENT, "fp32_data has 3 values");
  v1::UserVector version = cloud_->Fp32(u);
  version.set_model_version(m.config().version() + 1);
  expect_error(begin_then(version), grpc::FAILED_PRECONDITION,
               "user vector is for model tiny v2");
  v1::UserVector fingerprint = cloud_->Fp32(u);
  fingerprint.set_model_fingerprint(12345);
  expect_error(begin_then(fingerprint), grpc::FAILED_PRECONDITION,
               "this server runs tiny v1");
  v1::UserVector nan = cloud_->Fp32(u);
  nan.set_fp32_data(0, std::nanf(""));
  expect_error(begin_then(nan), grpc::INVALID_ARGUMENT, "fp32_data[0] is nan");
  expect_error({BeginReq(++next_id, {1, 2, 999999}, 1)}, grpc::INVALID_ARGUMENT,
               "candidate_ids[2] is 999999");
  expect_error({BeginReq(++next_id, {}, 1)}, grpc::INVALID_ARGUMENT,
               "candidate_ids is empty");
  expect_error(
      {BeginReq(++next_id, cloud_->Candidates(kMaxCandidates + 1, 1), 1)},
      grpc::INVALID_ARGUMENT, "at most 128");
  expect_error({BeginReq(++next_id, ids, 0)}, grpc::INVALID_ARGUMENT,
               "top_k is 0");
  expect_error({BeginReq(++next_id, ids, 9)}, grpc::INVALID_ARGUMENT,
               "top_k is 9, must be in [1, 8]");
  expect_error({UserReq(cloud_->Fp32(u, 5555))}, grpc::NOT_FOUND,
               "query_id 5555, which is not open");
  // Duplicate id among open queries: the second BeginQuery is refused, the
  // first one still completes.
  const uint64_t dup = ++next_id;
  expect_error({BeginReq(dup, ids, 2), BeginReq(dup, ids, 2)},
               grpc::INVALID_ARGUMENT, "already open on this stream");
  ASSERT_TRUE(stream->Write(UserReq(cloud_->Fp32(u, dup))));
  SessionResponse r;
  ASSERT_TRUE(stream->Read(&r));
  ASSERT_TRUE(r.has_scores()) << r.DebugString();
  EXPECT_EQ(r.scores().query_id(), dup);
  cloud_->ExpectMatches(r.scores().items(), cloud_->Reference(u, ids), 2);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(CloudIntegrationTest, BadUnaryRequestsGetTheirCodes) {
  v1::ScoreRequest request;
  for (int64_t i : cloud_->Candidates(4, 1)) request.add_candidate_ids(i);
  request.set_top_k(2);
  *request.mutable_user_vector() = cloud_->Fp32(cloud_->RandomU(1));
  request.mutable_user_vector()->set_model_version(7);
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ScoreResponse response;
    const grpc::Status s = cloud_->stub().Score(&context, request, &response);
    EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("tiny v7"));
  }
  request.mutable_user_vector()->set_model_version(1);
  request.set_top_k(5);
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ScoreResponse response;
    const grpc::Status s = cloud_->stub().Score(&context, request, &response);
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("top_k is 5"));
  }
  v1::GetItemEmbeddingsRequest get;
  get.add_item_ids(1);
  get.add_item_ids(-4);
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetItemEmbeddingsResponse got;
  const grpc::Status s = cloud_->stub().GetItemEmbeddings(&context, get, &got);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("item_ids[1] is -4"));
}

TEST_F(CloudIntegrationTest, GetItemEmbeddingsReturnsUserTableRows) {
  const common::Model& m = cloud_->model();
  v1::GetItemEmbeddingsRequest request;
  request.add_item_ids(17);
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetItemEmbeddingsResponse response;
  ASSERT_TRUE(
      cloud_->stub().GetItemEmbeddings(&context, request, &response).ok());
  ASSERT_EQ(response.items_size(), 1);
  const int dim = m.config().embedding_dim();
  ASSERT_EQ(response.items(0).rows_size(), m.config().user_tables_size() * dim);
  for (int t = 0; t < m.config().user_tables_size(); ++t) {
    const float* row = static_cast<const float*>(m.user_table(t).data) +
                       m.catalog().HistoryKey(17, t) * dim;
    for (int k = 0; k < dim; ++k) {
      ASSERT_EQ(response.items(0).rows(t * dim + k), row[k]);
    }
  }
}

TEST(CloudIntegrationRm2Test, ScaledPresetStreamAndUnaryEqualReference) {
  auto cloud = CloudProcess::Start("rm2", 0.0005);
  ASSERT_NE(cloud, nullptr);
  const auto ids = cloud->Candidates(kMaxCandidates, 11);
  const auto u = cloud->RandomU(3);
  const auto want = cloud->Reference(u, ids);
  for (int round = 0; round < 2; ++round) {  // second round: cache hits
    v1::ScoreResponse response;
    ASSERT_NO_FATAL_FAILURE(cloud->ScoreAll(ids, u, &response));
    cloud->ExpectMatches(response.items(), want, kMaxCandidates);
    if (round == 1) {
      EXPECT_EQ(response.timings().cache_hits(), kMaxCandidates);
    }
  }
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = cloud->stub().ScoringSession(&context);
  ASSERT_TRUE(stream->Write(BeginReq(1, ids, 10)));
  ASSERT_TRUE(stream->Write(UserReq(cloud->Fp32(u, 1))));
  SessionResponse r;
  ASSERT_TRUE(stream->Read(&r));
  ASSERT_TRUE(r.has_scores()) << r.DebugString();
  cloud->ExpectMatches(r.scores().items(), want, 10);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

// --item_embeddings int8: the served CTRs are the split model's over the
// item tables quantized row-wise (not the fp32 ones), computed and from the
// precomputed item table alike (its rows in fp32: no rounding of its own);
// the start-up log says so.
TEST(CloudIntegrationRm2Test, Int8ItemEmbeddingsServeTheQuantizedTables) {
  auto cloud = CloudProcess::Start(
      "rm2", 0.0005,
      {"--item_embeddings=int8", "--item_cache_entries=0",
       "--item_table_budget_mb=64", "--item_table_precision=fp32"});
  ASSERT_NE(cloud, nullptr);
  const common::Int8ItemTables int8(cloud->model());
  const auto ids = cloud->Candidates(kMaxCandidates, 5);
  const auto u = cloud->RandomU(4);
  const auto want = cloud->Reference(u, ids, &int8.tables());
  const auto fp32 = cloud->Reference(u, ids);
  double moved = 0;
  for (const auto& [id, ctr] : want) {
    moved = std::max<double>(moved, std::fabs(ctr - fp32.at(id)));
  }
  ASSERT_GT(moved, 1e-5) << "int8 tables that score like fp32 prove nothing";
  // Before and after the item table is built (it covers the catalog).
  for (int round = 0; round < 2; ++round) {
    v1::ScoreResponse response;
    ASSERT_NO_FATAL_FAILURE(cloud->ScoreAll(ids, u, &response));
    cloud->ExpectMatches(response.items(), want, kMaxCandidates);
    for (const absl::Time give_up = absl::Now() + absl::Seconds(60);
         round == 0 && !absl::StrContains(cloud->process().ReadLog(),
                                          "item table of v1: built");) {
      ASSERT_LT(absl::Now(), give_up) << cloud->process().ReadLog();
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  EXPECT_THAT(cloud->process().ReadLog(),
              HasSubstr("item embeddings int8 (quantized at load in"));
}

// Cross-query batching: four concurrent unary queries of 16 candidates fill
// one batch of 64 on the only worker (its queue delay is long enough for
// all four to arrive; a full batch does not wait) and each gets its own
// scores.
TEST(CloudIntegrationRm2Test, ConcurrentQueriesShareOneItemSidePass) {
  auto cloud = CloudProcess::Start(
      "rm2", 0.0005,
      {"--workers=1", "--item_batch_max_candidates=64",
       "--item_batch_max_queue_delay_us=5000000", "--inline_max_candidates=0"});
  ASSERT_NE(cloud, nullptr);
  constexpr int kQueries = 4, kN = 16;
  std::vector<v1::ScoreResponse> responses(kQueries);
  std::vector<std::thread> clients;
  for (int i = 0; i < kQueries; ++i) {
    clients.emplace_back([&, i] {
      cloud->ScoreAll(cloud->Candidates(kN, 10 + i), cloud->RandomU(20 + i),
                      &responses[i]);
    });
  }
  for (std::thread& t : clients) t.join();
  for (int i = 0; i < kQueries; ++i) {
    SCOPED_TRACE(absl::StrCat("query ", i));
    cloud->ExpectMatches(
        responses[i].items(),
        cloud->Reference(cloud->RandomU(20 + i), cloud->Candidates(kN, 10 + i)),
        kN);
    EXPECT_EQ(responses[i].timings().item_batch_queries(), kQueries);
  }
}

TEST(CloudIntegrationShutdownTest, SigtermDrainsInFlightQueryAndExitsZero) {
  auto cloud = CloudProcess::Start("tiny", 1.0, {"--shutdown_grace_s=10"});
  ASSERT_NE(cloud, nullptr);
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = cloud->stub().ScoringSession(&context);
  const auto ids = cloud->Candidates(16, 5);
  ASSERT_TRUE(stream->Write(BeginReq(1, ids, 4)));
  // Make sure the query is admitted before the signal.
  absl::SleepFor(absl::Milliseconds(200));
  ASSERT_TRUE(cloud->process().Signal(SIGTERM).ok());
  // While draining, health says NOT_SERVING.
  auto channel =
      grpc::CreateChannel(cloud->target(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  bool not_serving = false;
  for (int i = 0; i < 40 && !not_serving; ++i) {
    grpc::ClientContext hc;
    SetDeadline(&hc, 2);
    grpc::health::v1::HealthCheckResponse hr;
    const grpc::Status s =
        health->Check(&hc, grpc::health::v1::HealthCheckRequest(), &hr);
    not_serving =
        s.ok() &&
        hr.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING;
    if (!not_serving) absl::SleepFor(absl::Milliseconds(25));
  }
  EXPECT_TRUE(not_serving);
  EXPECT_TRUE(cloud->process().Running());
  // The in-flight query still completes.
  const auto u = cloud->RandomU(8);
  ASSERT_TRUE(stream->Write(UserReq(cloud->Fp32(u, 1))));
  SessionResponse r;
  ASSERT_TRUE(stream->Read(&r));
  ASSERT_TRUE(r.has_scores()) << r.DebugString();
  cloud->ExpectMatches(r.scores().items(), cloud->Reference(u, ids), 4);
  stream->WritesDone();
  stream->Finish();  // OK or cancelled by the stopping server: either is fine
  auto code = cloud->process().Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << cloud->process().ReadLog();
  EXPECT_THAT(cloud->process().ReadLog(), HasSubstr("received SIGTERM"));
}

}  // namespace
}  // namespace duet
