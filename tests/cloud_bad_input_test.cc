// The bad-input matrix of duet-cloud (issue 7): one table of every malformed
// request to every RPC with its exact status code and a message substring,
// run against one real duet-cloud process on loopback. Stream cases each use
// a fresh ScoringSession stream that must still end OK (a query's error is a
// QueryError), except bytes that do not parse, which end the stream
// INVALID_ARGUMENT; after the whole
// table the server is SERVING, has nothing in flight and scores a valid
// query. Every RPC has a deadline.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model/model.h"
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
using v1::SessionRequest;
using v1::SessionResponse;

constexpr int kMaxCandidates = 128;
constexpr int kMaxMessageBytes = 8 << 20;  // duet-cloud's receive limit

void SetDeadline(grpc::ClientContext* context, int seconds = 20) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(seconds));
}

// The outcome of one case: a gRPC status, or a stream's QueryError turned
// into one.
struct Outcome {
  grpc::StatusCode code = grpc::OK;
  std::string message;
};

class CloudBadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new common::TempDir();
    auto config = common::GenerateTestModel("tiny", 1.0, dir_->path());
    ASSERT_TRUE(config.ok()) << config.status();
    common::LoadOptions lo;
    lo.parts.user_tables = true;
    auto model = common::Model::Load(dir_->path(), lo);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
    target_ = absl::StrCat("127.0.0.1:", test::PickFreePort());
    metrics_port_ = test::PickFreePort();
    auto process = test::Subprocess::Start(
        {test::BinaryPath("cloud/duet-cloud"), "--model=" + dir_->path(),
         "--listen=" + target_,
         absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_),
         "--workers=2", absl::StrCat("--max_candidates=", kMaxCandidates),
         "--calibration_ms=200", "--item_cache_entries=1000"},
        dir_->File("duet-cloud.log"));
    ASSERT_TRUE(process.ok()) << process.status();
    process_ = process->release();
    const absl::Status healthy =
        test::WaitForHealthy(target_, absl::Seconds(60), process_);
    ASSERT_TRUE(healthy.ok()) << healthy;
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel(target_, grpc::InsecureChannelCredentials()));
    stub_ = v1::ScoringService::NewStub(*channel_).release();
  }
  static void TearDownTestSuite() {
    delete stub_;
    delete channel_;
    delete process_;
    delete model_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_NE(stub_, nullptr);
    ASSERT_NE(process_, nullptr);
  }

  static const common::Model& model() { return *model_; }
  static int num_items() {
    return static_cast<int>(model_->catalog().num_items());
  }

  static std::vector<int64_t> Ids(int n) {
    std::vector<int64_t> ids;
    for (int i = 0; i < n; ++i) ids.push_back((17 + 7919 * i) % num_items());
    return ids;
  }
  static v1::UserVector Vector(uint64_t id = 0) {
    v1::UserVector uv;
    uv.set_query_id(id);
    uv.set_model_version(model_->config().version());
    uv.set_model_fingerprint(model_->fingerprint());
    for (int i = 0; i < model_->dims().user_out; ++i) {
      uv.add_fp32_data(0.05f * static_cast<float>(i % 11));
    }
    return uv;
  }
  static v1::UserVector Int8Vector(uint64_t id = 0) {
    v1::UserVector uv = Vector(id);
    uv.clear_fp32_data();
    uv.set_int8_data(std::string(model_->dims().user_out, '\x05'));
    uv.set_scale(0.01f);
    uv.set_zero_point(0);
    return uv;
  }
  static SessionRequest Begin(uint64_t id, std::vector<int64_t> ids,
                              int top_k) {
    SessionRequest r;
    v1::BeginQuery* b = r.mutable_begin();
    b->set_query_id(id);
    for (int64_t i : ids) b->add_candidate_ids(i);
    b->set_top_k(top_k);
    return r;
  }
  static SessionRequest User(const v1::UserVector& uv) {
    SessionRequest r;
    *r.mutable_user_vector() = uv;
    return r;
  }
  static SessionRequest Edited(SessionRequest r,
                               const std::function<void(v1::BeginQuery*)>& f) {
    f(r.mutable_begin());
    return r;
  }
  static v1::UserVector EditedVector(
      uint64_t id, const std::function<void(v1::UserVector*)>& f) {
    v1::UserVector uv = Vector(id);
    f(&uv);
    return uv;
  }

  // Writes `requests` on a fresh stream, half-closes, and reads every
  // response: exactly one QueryError (returned) and `scores` Scores are
  // expected; the stream itself must end OK.
  static Outcome Stream(const std::vector<SessionRequest>& requests,
                        int scores = 0) {
    grpc::ClientContext context;
    SetDeadline(&context);
    auto stream = stub_->ScoringSession(&context);
    for (const auto& r : requests) EXPECT_TRUE(stream->Write(r));
    stream->WritesDone();
    Outcome outcome{grpc::OK, "no QueryError"};
    int errors = 0, got_scores = 0;
    SessionResponse response;
    while (stream->Read(&response)) {
      if (response.has_error()) {
        ++errors;
        outcome = {static_cast<grpc::StatusCode>(response.error().code()),
                   response.error().message()};
      } else {
        ++got_scores;
        for (const auto& item : response.scores().items()) {
          EXPECT_GE(item.ctr(), 0.0f);
          EXPECT_LE(item.ctr(), 1.0f);
        }
      }
    }
    const grpc::Status end = stream->Finish();
    EXPECT_TRUE(end.ok()) << end.error_code() << " " << end.error_message();
    EXPECT_EQ(errors, 1);
    EXPECT_EQ(got_scores, scores);
    return outcome;
  }
  static Outcome Of(const grpc::Status& s) {
    return {s.error_code(), s.error_message()};
  }
  // `messages` as raw bytes to ScoringService's `method`.
  static Outcome Raw(const std::string& method,
                     const std::vector<std::string>& messages) {
    const test::RawOutcome o = test::RawCall(
        target_, absl::StrCat("/duet.v1.ScoringService/", method), messages);
    return {static_cast<grpc::StatusCode>(o.code), o.message};
  }
  static Outcome Score(const v1::ScoreRequest& request) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ScoreResponse response;
    return Of(stub_->Score(&context, request, &response));
  }
  static v1::ScoreRequest ScoreReq(std::vector<int64_t> ids, int top_k,
                                   const v1::UserVector& uv) {
    v1::ScoreRequest r;
    for (int64_t i : ids) r.add_candidate_ids(i);
    r.set_top_k(top_k);
    *r.mutable_user_vector() = uv;
    return r;
  }
  static Outcome Monolithic(
      const std::function<void(v1::MonolithicScoreRequest*)>& edit) {
    const common::ModelDims& d = model_->dims();
    v1::MonolithicScoreRequest r;
    for (int i = 0; i < d.static_in; ++i) r.add_static_features(0.1f);
    for (int i = 0; i < d.dynamic_in; ++i) r.add_dynamic_features(-0.2f);
    for (int i = 0; i < 5; ++i) r.add_history_item_ids(i * 31);
    for (int64_t i : Ids(8)) r.add_candidate_ids(i);
    r.set_top_k(3);
    edit(&r);
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ScoreResponse response;
    return Of(stub_->MonolithicScore(&context, r, &response));
  }
  static Outcome Embeddings(const std::vector<int64_t>& ids,
                            uint32_t version = 0) {
    v1::GetItemEmbeddingsRequest r;
    for (int64_t i : ids) r.add_item_ids(i);
    r.set_model_version(version);
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::GetItemEmbeddingsResponse response;
    return Of(stub_->GetItemEmbeddings(&context, r, &response));
  }
  static std::string Metrics() {
    return test::HttpGet(metrics_port_, "/metrics");
  }
  // Polls until duet_inflight_queries is 0 (bounded); its last value.
  static double WaitInflightZero() {
    double v = -1;
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    do {
      v = test::MetricValue(Metrics(), "duet_inflight_queries");
      if (v == 0) break;
      absl::SleepFor(absl::Milliseconds(20));
    } while (absl::Now() < give_up);
    return v;
  }

  static common::TempDir* dir_;
  static const common::Model* model_;
  static std::string target_;
  static int metrics_port_;
  static test::Subprocess* process_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static v1::ScoringService::Stub* stub_;
};
common::TempDir* CloudBadInputTest::dir_ = nullptr;
const common::Model* CloudBadInputTest::model_ = nullptr;
std::string CloudBadInputTest::target_;
int CloudBadInputTest::metrics_port_ = 0;
test::Subprocess* CloudBadInputTest::process_ = nullptr;
std::shared_ptr<grpc::Channel>* CloudBadInputTest::channel_ = nullptr;
v1::ScoringService::Stub* CloudBadInputTest::stub_ = nullptr;

struct Case {
  std::string name;
  grpc::StatusCode code;
  std::string message;  // substring of the status message
  std::function<Outcome()> run;
};

TEST_F(CloudBadInputTest, EveryMalformedRequestGetsItsExactCode) {
  const int n_items = num_items();
  const auto ids = Ids(8);
  const std::string sig = model().config().signature();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  using C = grpc::StatusCode;
  const std::vector<Case> cases = {
      // --- ScoringSession: BeginQuery --------------------------------------
      {"begin: empty candidates", C::INVALID_ARGUMENT,
       "candidate_ids is empty; a query needs 1 to 128 candidates",
       [&] { return Stream({Begin(1, {}, 1)}); }},
      {"begin: N > max_candidates", C::INVALID_ARGUMENT,
       "candidate_ids has 129 ids, this server accepts at most 128",
       [&] { return Stream({Begin(1, Ids(kMaxCandidates + 1), 1)}); }},
      {"begin: negative item id", C::INVALID_ARGUMENT,
       absl::StrCat("candidate_ids[1] is -5, valid item ids are [0, ", n_items,
                    ")"),
       [&] {
         return Stream({Begin(1, {3, -5, 4}, 1)});
       }},
      {"begin: item id == num_items", C::INVALID_ARGUMENT,
       absl::StrCat("candidate_ids[2] is ", n_items),
       [&] {
         return Stream({Begin(1, {3, 4, n_items}, 1)});
       }},
      {"begin: item id near INT64_MAX", C::INVALID_ARGUMENT,
       "candidate_ids[0] is 9223372036854775807",
       [&] {
         return Stream({Begin(1, {std::numeric_limits<int64_t>::max(), 1}, 1)});
       }},
      {"begin: top_k 0", C::INVALID_ARGUMENT, "top_k is 0, must be in [1, 8]",
       [&] { return Stream({Begin(1, ids, 0)}); }},
      {"begin: top_k negative", C::INVALID_ARGUMENT,
       "top_k is -3, must be in [1, 8]",
       [&] { return Stream({Begin(1, ids, -3)}); }},
      {"begin: top_k > N", C::INVALID_ARGUMENT, "top_k is 9, must be in [1, 8]",
       [&] { return Stream({Begin(1, ids, 9)}); }},
      {"begin: model_version not served", C::FAILED_PRECONDITION,
       "model tiny v5 is not served; this server serves tiny v1",
       [&] {
         return Stream({Edited(Begin(1, ids, 2), [](v1::BeginQuery* b) {
           b->set_model_version(5);
         })});
       }},
      {"begin: fingerprint not the served one's", C::FAILED_PRECONDITION,
       "model tiny v1 (signature 0000000000000063) is not served",
       [&] {
         return Stream({Edited(Begin(1, ids, 2), [](v1::BeginQuery* b) {
           b->set_model_version(1);
           b->set_model_fingerprint(99);
         })});
       }},
      {"begin: negative relay_top", C::INVALID_ARGUMENT,
       "relay_top is -1, must be >= 0",
       [&] {
         return Stream({Edited(Begin(1, ids, 2), [](v1::BeginQuery* b) {
           b->set_relay_top(-1);
         })});
       }},
      {"begin: negative timeout_us", C::INVALID_ARGUMENT,
       "timeout_us is -1, must be >= 0",
       [&] {
         return Stream({Edited(Begin(1, ids, 2), [](v1::BeginQuery* b) {
           b->set_timeout_us(-1);
         })});
       }},
      {"begin: duplicate open query_id (first still completes)",
       C::INVALID_ARGUMENT, "query_id 7 is already open on this stream",
       [&] {
         return Stream({Begin(7, ids, 2), Begin(7, ids, 2), User(Vector(7))},
                       /*scores=*/1);
       }},
      // --- ScoringSession: UserVector --------------------------------------
      {"user vector: unknown query id", C::NOT_FOUND,
       "user vector for query_id 5555, which is not open on this stream",
       [&] { return Stream({User(Vector(5555))}); }},
      {"user vector: before its BeginQuery (then the query completes)",
       C::NOT_FOUND, "user vector for query_id 77, which is not open",
       [&] {
         return Stream({User(Vector(77)), Begin(77, ids, 2), User(Vector(77))},
                       /*scores=*/1);
       }},
      {"user vector: a second one after the query's Scores", C::NOT_FOUND,
       "user vector for query_id 8, which is not open",
       [&] {
         // Written one by one so the Scores come before the second vector.
         grpc::ClientContext context;
         SetDeadline(&context);
         auto stream = stub_->ScoringSession(&context);
         EXPECT_TRUE(stream->Write(Begin(8, ids, 2)));
         EXPECT_TRUE(stream->Write(User(Vector(8))));
         SessionResponse first;
         EXPECT_TRUE(stream->Read(&first));
         EXPECT_TRUE(first.has_scores()) << first.DebugString();
         EXPECT_TRUE(stream->Write(User(Vector(8))));
         SessionResponse second;
         EXPECT_TRUE(stream->Read(&second));
         stream->WritesDone();
         EXPECT_TRUE(stream->Finish().ok());
         return Outcome{static_cast<C>(second.error().code()),
                        second.error().message()};
       }},
      {"user vector: fp32 wrong length", C::INVALID_ARGUMENT,
       absl::StrCat("user_vector.fp32_data has 3 values, model tiny v1 "
                    "(signature ",
                    sig, ") expects ", model().dims().user_out),
       [&] {
         return Stream(
             {Begin(2, ids, 2), User(EditedVector(2, [](v1::UserVector* u) {
                u->mutable_fp32_data()->Truncate(3);
              }))});
       }},
      {"user vector: int8 wrong length", C::INVALID_ARGUMENT,
       "user_vector.int8_data has 5 values",
       [&] {
         v1::UserVector uv = Int8Vector(2);
         uv.set_int8_data("12345");
         return Stream({Begin(2, ids, 2), User(uv)});
       }},
      {"user vector: fp32 NaN", C::INVALID_ARGUMENT,
       "user_vector.fp32_data[0] is nan, values must be finite",
       [&] {
         return Stream(
             {Begin(2, ids, 2), User(EditedVector(2, [&](v1::UserVector* u) {
                u->set_fp32_data(0, nan);
              }))});
       }},
      {"user vector: fp32 +Inf", C::INVALID_ARGUMENT,
       "user_vector.fp32_data[1] is inf",
       [&] {
         return Stream(
             {Begin(2, ids, 2), User(EditedVector(2, [&](v1::UserVector* u) {
                u->set_fp32_data(1, inf);
              }))});
       }},
      {"user vector: fp32 -Inf", C::INVALID_ARGUMENT,
       "user_vector.fp32_data[2] is -inf",
       [&] {
         return Stream(
             {Begin(2, ids, 2), User(EditedVector(2, [&](v1::UserVector* u) {
                u->set_fp32_data(2, -inf);
              }))});
       }},
      {"user vector: both int8 and fp32", C::INVALID_ARGUMENT,
       "user_vector carries both of int8_data and fp32_data, set exactly one",
       [&] {
         v1::UserVector uv = Int8Vector(2);
         uv.add_fp32_data(1.0f);
         return Stream({Begin(2, ids, 2), User(uv)});
       }},
      {"user vector: neither int8 nor fp32", C::INVALID_ARGUMENT,
       "user_vector carries neither of int8_data and fp32_data",
       [&] {
         return Stream(
             {Begin(2, ids, 2), User(EditedVector(2, [](v1::UserVector* u) {
                u->clear_fp32_data();
              }))});
       }},
      {"user vector: int8 scale 0", C::INVALID_ARGUMENT,
       "user_vector.scale is 0, must be positive and at most 1.32923e+36 (so "
       "every dequantized value is finite)",
       [&] {
         v1::UserVector uv = Int8Vector(2);
         uv.set_scale(0);
         return Stream({Begin(2, ids, 2), User(uv)});
       }},
      {"user vector: int8 scale negative", C::INVALID_ARGUMENT,
       "user_vector.scale is -1, must be positive",
       [&] {
         v1::UserVector uv = Int8Vector(2);
         uv.set_scale(-1);
         return Stream({Begin(2, ids, 2), User(uv)});
       }},
      {"user vector: int8 scale NaN", C::INVALID_ARGUMENT,
       "user_vector.scale is nan",
       [&] {
         v1::UserVector uv = Int8Vector(2);
         uv.set_scale(nan);
         return Stream({Begin(2, ids, 2), User(uv)});
       }},
      {"user vector: int8 scale overflows float32", C::INVALID_ARGUMENT,
       "user_vector.scale is 1.70141e+38, must be positive and at most "
       "1.32923e+36",
       [&] {
         v1::UserVector uv = Int8Vector(2);
         uv.set_scale(1.70141183e+38f);
         return Stream({Begin(2, ids, 2), User(uv)});
       }},
      {"user vector: int8 zero_point out of range", C::INVALID_ARGUMENT,
       "user_vector.zero_point is 300, must be in [-128, 127]",
       [&] {
         v1::UserVector uv = Int8Vector(2);
         uv.set_zero_point(300);
         return Stream({Begin(2, ids, 2), User(uv)});
       }},
      {"user vector: wrong model_version", C::FAILED_PRECONDITION,
       absl::StrFormat("user vector is for model tiny v2 (signature %s), this "
                       "server runs tiny v1 (signature %s)",
                       sig, sig),
       [&] {
         return Stream(
             {Begin(2, ids, 2), User(EditedVector(2, [](v1::UserVector* u) {
                u->set_model_version(2);
              }))});
       }},
      {"user vector: wrong fingerprint", C::FAILED_PRECONDITION,
       absl::StrCat("user vector is for model tiny v1 (signature "
                    "0000000000003039), this server runs tiny v1 (signature ",
                    sig, ")"),
       [&] {
         return Stream(
             {Begin(2, ids, 2), User(EditedVector(2, [](v1::UserVector* u) {
                u->set_model_fingerprint(12345);
              }))});
       }},
      // --- ScoringSession: framing -----------------------------------------
      {"session: empty SessionRequest (no oneof)", C::INVALID_ARGUMENT,
       "SessionRequest has none of begin, user_vector, cancel",
       [&] { return Stream({SessionRequest()}); }},
      {"session: CancelQuery of an open query", C::CANCELLED,
       "query_id 9 was cancelled",
       [&] {
         SessionRequest cancel;
         cancel.mutable_cancel()->set_query_id(9);
         SessionRequest unknown;  // ignored: no response at all
         unknown.mutable_cancel()->set_query_id(12345);
         return Stream({Begin(9, ids, 2), unknown, cancel});
       }},
      {"session: half-close with a query open (it expires)",
       C::DEADLINE_EXCEEDED, "query_id 3 exceeded its deadline of 300 ms",
       [&] {
         return Stream({Edited(Begin(3, ids, 2), [](v1::BeginQuery* b) {
           b->set_timeout_us(300000);
         })});
       }},
      {"session: client cancels the call with a query open", C::CANCELLED, "",
       [&] {
         const double cancelled_before = test::MetricValue(
             Metrics(), "duet_queries_total",
             {"rpc=\"ScoringSession\"", "code=\"CANCELLED\""});
         grpc::ClientContext context;
         SetDeadline(&context);
         auto stream = stub_->ScoringSession(&context);
         EXPECT_TRUE(stream->Write(Begin(4, ids, 2)));
         // The query is admitted once the server counts it in flight.
         const absl::Time give_up = absl::Now() + absl::Seconds(10);
         while (test::MetricValue(Metrics(), "duet_inflight_queries") < 1 &&
                absl::Now() < give_up) {
           absl::SleepFor(absl::Milliseconds(10));
         }
         context.TryCancel();
         const Outcome outcome = Of(stream->Finish());
         EXPECT_EQ(WaitInflightZero(), 0);
         // The server ended the open query itself (CANCELLED), not by its
         // deadline.
         const double cancelled_after = test::MetricValue(
             Metrics(), "duet_queries_total",
             {"rpc=\"ScoringSession\"", "code=\"CANCELLED\""});
         EXPECT_EQ(cancelled_after - std::max(cancelled_before, 0.0), 1);
         return outcome;
       }},
      // --- Score (unary) ---------------------------------------------------
      {"score: empty candidates", C::INVALID_ARGUMENT, "candidate_ids is empty",
       [&] { return Score(ScoreReq({}, 1, Vector())); }},
      {"score: N > max_candidates", C::INVALID_ARGUMENT,
       "candidate_ids has 129 ids, this server accepts at most 128",
       [&] { return Score(ScoreReq(Ids(kMaxCandidates + 1), 1, Vector())); }},
      {"score: unknown item id", C::INVALID_ARGUMENT,
       absl::StrCat("candidate_ids[0] is ", n_items + 5),
       [&] { return Score(ScoreReq({n_items + 5}, 1, Vector())); }},
      {"score: top_k > N", C::INVALID_ARGUMENT, "top_k is 9, must be in [1, 8]",
       [&] { return Score(ScoreReq(ids, 9, Vector())); }},
      {"score: no user vector", C::INVALID_ARGUMENT,
       "user_vector carries neither",
       [&] {
         v1::ScoreRequest r = ScoreReq(ids, 2, Vector());
         r.clear_user_vector();
         r.mutable_user_vector()->set_model_version(1);
         r.mutable_user_vector()->set_model_fingerprint(model().fingerprint());
         return Score(r);
       }},
      {"score: missing user vector message (version 0)", C::FAILED_PRECONDITION,
       "user vector is for model tiny v0",
       [&] {
         v1::ScoreRequest r = ScoreReq(ids, 2, Vector());
         r.clear_user_vector();
         return Score(r);
       }},
      {"score: fp32 NaN", C::INVALID_ARGUMENT,
       "user_vector.fp32_data[4] is nan",
       [&] {
         return Score(ScoreReq(ids, 2, EditedVector(0, [&](v1::UserVector* u) {
                                 u->set_fp32_data(4, nan);
                               })));
       }},
      {"score: wrong model_version", C::FAILED_PRECONDITION,
       absl::StrFormat("model tiny v7 (signature %s) is not served; this "
                       "server serves tiny v1 (signature %s)",
                       sig, sig),
       [&] {
         return Score(ScoreReq(ids, 2, EditedVector(0, [](v1::UserVector* u) {
                                 u->set_model_version(7);
                               })));
       }},
      {"score: relay_top negative", C::INVALID_ARGUMENT,
       "relay_top is -2, must be >= 0",
       [&] {
         v1::ScoreRequest r = ScoreReq(ids, 2, Vector());
         r.set_relay_top(-2);
         return Score(r);
       }},
      // --- MonolithicScore -------------------------------------------------
      {"monolithic: too few static features", C::INVALID_ARGUMENT,
       absl::StrCat("static_features has ", model().dims().static_in - 1,
                    " values, model tiny v1"),
       [&] {
         return Monolithic([](v1::MonolithicScoreRequest* r) {
           r->mutable_static_features()->RemoveLast();
         });
       }},
      {"monolithic: too many dynamic features", C::INVALID_ARGUMENT,
       absl::StrCat("dynamic_features has ", model().dims().dynamic_in + 1,
                    " values, model tiny v1"),
       [&] {
         return Monolithic([](v1::MonolithicScoreRequest* r) {
           r->add_dynamic_features(0.5f);
         });
       }},
      {"monolithic: NaN static feature", C::INVALID_ARGUMENT,
       "static_features[0] is nan, features must be finite",
       [&] {
         return Monolithic([&](v1::MonolithicScoreRequest* r) {
           r->set_static_features(0, nan);
         });
       }},
      {"monolithic: Inf dynamic feature", C::INVALID_ARGUMENT,
       "dynamic_features[0] is inf, features must be finite",
       [&] {
         return Monolithic([&](v1::MonolithicScoreRequest* r) {
           r->set_dynamic_features(0, inf);
         });
       }},
      {"monolithic: unknown history id", C::INVALID_ARGUMENT,
       absl::StrCat("history_item_ids[2] is ", n_items,
                    ", valid item ids are [0, ", n_items, ")"),
       [&] {
         return Monolithic([&](v1::MonolithicScoreRequest* r) {
           r->set_history_item_ids(2, n_items);
         });
       }},
      {"monolithic: negative history id", C::INVALID_ARGUMENT,
       "history_item_ids[0] is -1",
       [&] {
         return Monolithic([](v1::MonolithicScoreRequest* r) {
           r->set_history_item_ids(0, -1);
         });
       }},
      {"monolithic: empty candidates", C::INVALID_ARGUMENT,
       "candidate_ids is empty",
       [&] {
         return Monolithic(
             [](v1::MonolithicScoreRequest* r) { r->clear_candidate_ids(); });
       }},
      {"monolithic: top_k 0", C::INVALID_ARGUMENT,
       "top_k is 0, must be in [1, 8]",
       [&] {
         return Monolithic(
             [](v1::MonolithicScoreRequest* r) { r->set_top_k(0); });
       }},
      // --- GetItemEmbeddings -----------------------------------------------
      {"embeddings: empty", C::INVALID_ARGUMENT, "item_ids is empty",
       [&] { return Embeddings({}); }},
      {"embeddings: negative id", C::INVALID_ARGUMENT,
       absl::StrCat("item_ids[1] is -4, valid item ids are [0, ", n_items, ")"),
       [&] {
         return Embeddings({1, -4});
       }},
      {"embeddings: id == num_items", C::INVALID_ARGUMENT,
       absl::StrCat("item_ids[0] is ", n_items),
       [&] { return Embeddings({n_items}); }},
      {"embeddings: too many ids", C::INVALID_ARGUMENT,
       "item_ids has 129 ids, this server accepts at most 128",
       [&] { return Embeddings(Ids(kMaxCandidates + 1)); }},
      {"embeddings: model_version not served", C::FAILED_PRECONDITION,
       "model tiny v4 is not served; this server serves tiny v1",
       [&] { return Embeddings({1}, 4); }},
      // --- Model releases --------------------------------------------------
      {"edge model: model_version not served", C::FAILED_PRECONDITION,
       "model tiny v3 is not served; this server serves tiny v1",
       [&] {
         v1::GetEdgeModelRequest r;
         r.set_model_version(3);
         grpc::ClientContext context;
         SetDeadline(&context);
         auto reader = stub_->GetEdgeModel(&context, r);
         v1::EdgeModelChunk chunk;
         while (reader->Read(&chunk)) {
         }
         return Of(reader->Finish());
       }},
      // --- Bytes that do not parse (a client of any language can send
      // them): INVALID_ARGUMENT naming the type, never UNIMPLEMENTED, and a
      // stream never ends OK after one.
      {"session: garbage bytes first", C::INVALID_ARGUMENT,
       "does not parse as duet.v1.SessionRequest",
       [&] { return Raw("ScoringSession", {test::kGarbageBytes}); }},
      {"session: a valid begin, then truncated bytes", C::INVALID_ARGUMENT,
       "a message of 4 bytes does not parse as duet.v1.SessionRequest",
       [&] {
         return Raw("ScoringSession", {Begin(1, ids, 2).SerializeAsString(),
                                       test::kTruncatedBytes});
       }},
      {"score: garbage bytes", C::INVALID_ARGUMENT,
       "does not parse as duet.v1.ScoreRequest",
       [&] { return Raw("Score", {test::kGarbageBytes}); }},
      {"score: truncated bytes", C::INVALID_ARGUMENT,
       "does not parse as duet.v1.ScoreRequest",
       [&] { return Raw("Score", {test::kTruncatedBytes}); }},
      {"monolithic: garbage bytes", C::INVALID_ARGUMENT,
       "does not parse as duet.v1.MonolithicScoreRequest",
       [&] { return Raw("MonolithicScore", {test::kGarbageBytes}); }},
      {"embeddings: truncated bytes", C::INVALID_ARGUMENT,
       "does not parse as duet.v1.GetItemEmbeddingsRequest",
       [&] { return Raw("GetItemEmbeddings", {test::kTruncatedBytes}); }},
      {"edge model: garbage bytes", C::INVALID_ARGUMENT,
       "does not parse as duet.v1.GetEdgeModelRequest",
       [&] { return Raw("GetEdgeModel", {test::kGarbageBytes}); }},
      {"model status: truncated bytes", C::INVALID_ARGUMENT,
       "does not parse as duet.v1.GetModelStatusRequest",
       [&] { return Raw("GetModelStatus", {test::kTruncatedBytes}); }},
      // --- Transport -------------------------------------------------------
      {"oversized message (> max receive size)", C::RESOURCE_EXHAUSTED,
       "larger than max",
       [&] {
         v1::ScoreRequest r = ScoreReq(ids, 2, Int8Vector());
         r.mutable_user_vector()->set_int8_data(
             std::string(kMaxMessageBytes + 1024, '\x01'));
         return Score(r);
       }},
  };

  std::vector<std::string> table;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Outcome got = c.run();
    EXPECT_EQ(got.code, c.code) << got.message;
    EXPECT_THAT(got.message, HasSubstr(c.message));
    table.push_back(absl::StrFormat("%-62s %d %s", c.name,
                                    static_cast<int>(got.code),
                                    got.message.substr(0, 110)));
  }
  std::printf("bad-input matrix (%zu cases):\n", table.size());
  for (const auto& line : table) std::printf("  %s\n", line.c_str());

  // The server is healthy, has nothing in flight and still scores.
  auto health = grpc::health::v1::Health::NewStub(*channel_);
  for (const char* service : {"", "duet.v1.ScoringService"}) {
    grpc::ClientContext context;
    SetDeadline(&context, 5);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, request, &response).ok());
    EXPECT_EQ(response.status(),
              grpc::health::v1::HealthCheckResponse::SERVING);
  }
  EXPECT_EQ(WaitInflightZero(), 0);
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ScoreResponse response;
  const grpc::Status s =
      stub_->Score(&context, ScoreReq(ids, 3, Vector()), &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(response.items_size(), 3);
  EXPECT_EQ(Stream({Begin(1, {}, 1)}).code, grpc::INVALID_ARGUMENT);
  EXPECT_TRUE(process_->Running());
}

}  // namespace
}  // namespace duet
