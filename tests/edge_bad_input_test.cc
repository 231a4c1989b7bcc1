// Every malformed EdgeService request against a real duet-edge (with a real
// duet-cloud behind it), table-driven: each gets its exact status code and
// a message naming what was wrong (bytes that do not parse included);
// afterwards the edge is still SERVING,
// nothing was recorded, and a valid Recommend still works.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/edge_process_fixture.h"

namespace duet {
namespace {

using testing::HasSubstr;

constexpr int kMaxCandidates = 64;

class EdgeBadInputTest : public test::EdgeProcessTest {};

struct BadInput {
  std::string name;
  std::function<grpc::Status(v1::EdgeService::Stub*)> call;
  grpc::StatusCode code;
  std::string message;
};

template <typename Request, typename Response>
grpc::Status Call(grpc::Status (v1::EdgeService::Stub::*method)(
                      grpc::ClientContext*, const Request&, Response*),
                  v1::EdgeService::Stub* stub, const Request& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  Response response;
  return (stub->*method)(&ctx, request, &response);
}

TEST_F(EdgeBadInputTest, EveryMalformedRequestGetsItsExactError) {
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  ASSERT_NO_FATAL_FAILURE(
      StartEdge({"--max_candidates", absl::StrCat(kMaxCandidates)}));
  const int context = model_->dims().dynamic_in;
  const int profile = model_->dims().static_in;
  const int64_t items = model_->catalog().num_items();
  const std::string valid_ids =
      absl::StrCat("valid item ids are [0, ", items, ")");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();

  // Recommend: a valid request (32 candidates, top_k 5) with one change.
  auto recommend = [](std::function<void(v1::RecommendRequest*)> change) {
    return [change](v1::EdgeService::Stub* stub) {
      v1::RecommendRequest r = ValidRequest(32, 5);
      change(&r);
      return Call(&v1::EdgeService::Stub::Recommend, stub, r);
    };
  };
  auto interaction = [](int64_t item, std::string id = "") {
    return [item, id](v1::EdgeService::Stub* stub) {
      v1::RecordInteractionRequest r;
      r.set_item_id(item);
      r.set_interaction_id(id);
      return Call(&v1::EdgeService::Stub::RecordInteraction, stub, r);
    };
  };
  auto update_profile = [](std::vector<float> s) {
    return [s](v1::EdgeService::Stub* stub) {
      v1::UpdateProfileRequest r;
      r.mutable_static_features()->Assign(s.begin(), s.end());
      return Call(&v1::EdgeService::Stub::UpdateProfile, stub, r);
    };
  };
  std::vector<float> good_profile(profile, 0.5f);
  auto profile_with = [&](int i, float v) {
    std::vector<float> s = good_profile;
    s[i] = v;
    return s;
  };
  using C = grpc::StatusCode;
  const std::vector<BadInput> table = {
      // Recommend: context features.
      {"recommend: one context feature short",
       recommend([](auto* r) { r->mutable_context_features()->RemoveLast(); }),
       C::INVALID_ARGUMENT,
       absl::StrCat("context_features has ", context - 1, " values")},
      {"recommend: one context feature too many",
       recommend([](auto* r) { r->add_context_features(0.f); }),
       C::INVALID_ARGUMENT,
       absl::StrCat("context_features has ", context + 1, " values")},
      {"recommend: no context features",
       recommend([](auto* r) { r->clear_context_features(); }),
       C::INVALID_ARGUMENT, "context_features has 0 values"},
      {"recommend: NaN context feature",
       recommend([=](auto* r) { r->set_context_features(1, nan); }),
       C::INVALID_ARGUMENT,
       "context_features[1] is nan; values must be finite"},
      {"recommend: +Inf context feature",
       recommend([=](auto* r) { r->set_context_features(0, inf); }),
       C::INVALID_ARGUMENT, "context_features[0] is inf"},
      {"recommend: -Inf context feature",
       recommend([=](auto* r) { r->set_context_features(1, -inf); }),
       C::INVALID_ARGUMENT, "context_features[1] is -inf"},
      // Recommend: candidates.
      {"recommend: empty candidate list",
       recommend([](auto* r) { r->clear_candidate_ids(); }),
       C::INVALID_ARGUMENT,
       absl::StrCat("candidate_ids is empty; a query needs 1 to ",
                    kMaxCandidates, " candidates")},
      {"recommend: candidates > --max_candidates", recommend([](auto* r) {
         while (r->candidate_ids_size() <= kMaxCandidates) {
           r->add_candidate_ids(1);
         }
       }),
       C::INVALID_ARGUMENT,
       absl::StrCat("candidate_ids has ", kMaxCandidates + 1,
                    " ids, this server accepts at most ", kMaxCandidates,
                    " (--max_candidates)")},
      {"recommend: negative candidate id",
       recommend([](auto* r) { r->set_candidate_ids(2, -1); }),
       C::INVALID_ARGUMENT,
       absl::StrCat("candidate_ids[2] is -1, ", valid_ids)},
      {"recommend: candidate id = num_items",
       recommend([=](auto* r) { r->set_candidate_ids(0, items); }),
       C::INVALID_ARGUMENT,
       absl::StrCat("candidate_ids[0] is ", items, ", ", valid_ids)},
      {"recommend: candidate id INT64_MAX", recommend([](auto* r) {
         r->set_candidate_ids(31, std::numeric_limits<int64_t>::max());
       }),
       C::INVALID_ARGUMENT,
       absl::StrCat("candidate_ids[31] is ",
                    std::numeric_limits<int64_t>::max(), ", ", valid_ids)},
      {"recommend: candidate id INT64_MIN", recommend([](auto* r) {
         r->set_candidate_ids(5, std::numeric_limits<int64_t>::min());
       }),
       C::INVALID_ARGUMENT,
       absl::StrCat("candidate_ids[5] is ", std::numeric_limits<int64_t>::min(),
                    ", ", valid_ids)},
      // Recommend: top_k.
      {"recommend: top_k 0", recommend([](auto* r) { r->set_top_k(0); }),
       C::INVALID_ARGUMENT, "top_k is 0, must be in [1, 32]"},
      {"recommend: top_k negative",
       recommend([](auto* r) { r->set_top_k(-3); }), C::INVALID_ARGUMENT,
       "top_k is -3, must be in [1, 32]"},
      {"recommend: top_k > candidates",
       recommend([](auto* r) { r->set_top_k(33); }), C::INVALID_ARGUMENT,
       "top_k is 33, must be in [1, 32] (the number of candidates)"},
      // Oversized: above gRPC's default 4 MiB receive limit.
      {"recommend: oversized message (5 MB of features)",
       recommend([](auto* r) {
         r->mutable_context_features()->Resize(5 << 18, 0.f);
       }),
       C::RESOURCE_EXHAUSTED, "Received message larger than max"},
      // RecordInteraction.
      {"record_interaction: negative item id", interaction(-1),
       C::INVALID_ARGUMENT, absl::StrCat("item_id is -1, ", valid_ids)},
      {"record_interaction: unknown item id (= num_items)", interaction(items),
       C::INVALID_ARGUMENT,
       absl::StrCat("item_id is ", items, ", ", valid_ids)},
      {"record_interaction: item id INT64_MAX",
       interaction(std::numeric_limits<int64_t>::max()), C::INVALID_ARGUMENT,
       absl::StrCat("item_id is ", std::numeric_limits<int64_t>::max())},
      {"record_interaction: interaction_id of 129 bytes",
       interaction(1, std::string(129, 'a')), C::INVALID_ARGUMENT,
       "interaction_id has 129 bytes, at most 128 are allowed"},
      // UpdateProfile.
      {"update_profile: one value short",
       update_profile(std::vector<float>(profile - 1, 0.f)),
       C::INVALID_ARGUMENT,
       absl::StrCat("static_features has ", profile - 1, " values")},
      {"update_profile: one value too many",
       update_profile(std::vector<float>(profile + 1, 0.f)),
       C::INVALID_ARGUMENT,
       absl::StrCat("static_features has ", profile + 1, " values")},
      {"update_profile: empty", update_profile({}), C::INVALID_ARGUMENT,
       "static_features has 0 values"},
      {"update_profile: NaN", update_profile(profile_with(0, nan)),
       C::INVALID_ARGUMENT, "static_features[0] is nan; values must be finite"},
      {"update_profile: Inf", update_profile(profile_with(profile - 1, inf)),
       C::INVALID_ARGUMENT,
       absl::StrCat("static_features[", profile - 1, "] is inf")},
      {"update_profile: oversized message (5 MB)",
       update_profile(std::vector<float>(5 << 18, 0.f)), C::RESOURCE_EXHAUSTED,
       "Received message larger than max"},
  };

  for (const BadInput& c : table) {
    SCOPED_TRACE(c.name);
    const grpc::Status s = c.call(stub_.get());
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message));
  }

  // Bytes that parse as no request (a client of any language can send
  // them): INVALID_ARGUMENT naming the type, not gRPC's INTERNAL.
  const struct {
    const char* method;
    const char* bytes;
    const char* type;
  } raw_cases[] = {
      {"Recommend", test::kGarbageBytes, "duet.v1.RecommendRequest"},
      {"Recommend", test::kTruncatedBytes, "duet.v1.RecommendRequest"},
      {"RecordInteraction", test::kGarbageBytes,
       "duet.v1.RecordInteractionRequest"},
      {"RecordInteraction", test::kTruncatedBytes,
       "duet.v1.RecordInteractionRequest"},
      {"UpdateProfile", test::kTruncatedBytes, "duet.v1.UpdateProfileRequest"},
      {"GetState", test::kGarbageBytes, "duet.v1.GetStateRequest"},
  };
  for (const auto& c : raw_cases) {
    SCOPED_TRACE(absl::StrCat(c.method, " with bytes that do not parse"));
    const test::RawOutcome got = test::RawCall(
        EdgeTarget(), absl::StrCat("/duet.v1.EdgeService/", c.method),
        {c.bytes}, absl::Seconds(10));
    EXPECT_EQ(got.code, grpc::StatusCode::INVALID_ARGUMENT) << got.message;
    EXPECT_THAT(got.message,
                HasSubstr(absl::StrCat("does not parse as ", c.type)));
    EXPECT_EQ(got.responses, 0);
  }

  // Still healthy; nothing was recorded; a valid query works.
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(EdgeTarget(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckResponse h;
  ASSERT_TRUE(health->Check(&ctx, {}, &h).ok());
  EXPECT_EQ(h.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  const v1::EdgeState state = GetState();
  EXPECT_EQ(state.interactions_total(), 0u);
  EXPECT_EQ(state.profile_version(), 0u);
  v1::RecommendResponse got;
  const grpc::Status ok = Recommend(ValidRequest(32, 5), &got);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(got.items_size(), 5);
  EXPECT_TRUE(edge_->Running());
}

}  // namespace
}  // namespace duet
