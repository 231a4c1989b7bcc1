// Helpers shared by the ScoringCore tests (scoring_core_test.cc,
// scoring_side_rpcs_test.cc, scoring_core_reload_test.cc): preset models
// generated once per binary, a core with fast options, queries run to the end.
#ifndef DUET_CLOUD_INTERNAL_SCORING_TEST_UTIL_H_
#define DUET_CLOUD_INTERNAL_SCORING_TEST_UTIL_H_

#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cloud/internal/test_models.h"
#include "cloud/scoring_core.h"
#include "common/base/mutex.h"
#include "common/model/reference_model.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

// In duet::cloud (test-only header), so the tests use them unqualified.
namespace duet::cloud {

inline std::unique_ptr<const common::Model> LoadModel(
    const std::string& preset) {
  common::LoadOptions lo;
  lo.parts.user_tables = true;
  lo.verify_checksums = false;
  auto model = common::Model::Load(ModelDir(preset), lo);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(model).value();
}

inline ScoringCoreOptions FastOptions() {
  ScoringCoreOptions o;
  o.workers = 2;
  o.max_candidates = 256;
  o.force_lookup = LookupStrategy::kBatch;
  o.force_user = UserStrategy::kLoad;
  o.placement_sample_items = 500;
  return o;
}

inline std::unique_ptr<ScoringCore> MakeCore(const std::string& preset,
                                             ScoringCoreOptions options) {
  auto core = ScoringCore::Create(LoadModel(preset), std::move(options));
  EXPECT_TRUE(core.ok()) << core.status();
  return core.ok() ? std::move(core).value() : nullptr;
}

inline std::vector<float> RandomU(const common::Model& m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(0, 1);
  std::vector<float> u(m.dims().user_out);
  for (float& x : u) x = dist(rng);
  return u;
}

inline duet::v1::UserVector Fp32Vector(const common::Model& m,
                                       const std::vector<float>& u,
                                       uint64_t id = 0) {
  duet::v1::UserVector uv;
  uv.set_query_id(id);
  uv.set_model_version(m.config().version());
  uv.set_model_fingerprint(m.fingerprint());
  for (float x : u) uv.add_fp32_data(x);
  return uv;
}

inline duet::v1::BeginQuery Begin(const std::vector<int64_t>& ids, int top_k,
                                  uint64_t id = 0) {
  duet::v1::BeginQuery b;
  b.set_query_id(id);
  for (int64_t i : ids) b.add_candidate_ids(i);
  b.set_top_k(top_k);
  return b;
}

inline std::vector<int64_t> Candidates(const common::Model& m, int n,
                                       int64_t salt) {
  std::vector<int64_t> ids;
  const int64_t items = m.catalog().num_items();
  for (int i = 0; i < n; ++i) ids.push_back((salt + 104729 * i) % items);
  return ids;
}

// Begin + user vector, waiting for the result.
inline absl::StatusOr<duet::v1::Scores> RunQuery(
    ScoringCore& core, const duet::v1::BeginQuery& begin,
    const duet::v1::UserVector& uv) {
  common::Notification done;
  absl::StatusOr<duet::v1::Scores> result;
  auto q = core.Begin(begin, absl::InfiniteFuture(), Rpc::kScore,
                      [&](absl::StatusOr<duet::v1::Scores> r) {
                        result = std::move(r);
                        done.Notify();
                      });
  if (!q.ok()) return q.status();
  core.ProvideUserVector(*q, uv);
  done.WaitForNotification();
  return result;
}

inline absl::StatusOr<duet::v1::ScoreResponse> RunMonolithic(
    ScoringCore& core, const duet::v1::MonolithicScoreRequest& request) {
  common::Notification done;
  absl::StatusOr<duet::v1::ScoreResponse> result;
  core.MonolithicScore(request, absl::InfiniteFuture(),
                       [&](absl::StatusOr<duet::v1::ScoreResponse> r) {
                         result = std::move(r);
                         done.Notify();
                       });
  done.WaitForNotification();
  return result;
}

inline void ExpectMatchesSplitModel(const common::Model& m,
                                    const std::vector<float>& u,
                                    const std::vector<int64_t>& ids,
                                    const duet::v1::Scores& scores) {
  std::vector<float> want(ids.size());
  ASSERT_TRUE(
      common::SplitModel(&m).ScoreItems(u.data(), ids, want.data()).ok());
  ASSERT_EQ(scores.items_size(), static_cast<int>(ids.size()));
  std::map<int64_t, float> got;
  for (const auto& item : scores.items()) got[item.item_id()] = item.ctr();
  for (size_t j = 0; j < ids.size(); ++j) {
    ASSERT_TRUE(got.count(ids[j])) << ids[j];
    EXPECT_NEAR(got[ids[j]], want[j], 1e-5) << "candidate " << j;
  }
  for (int i = 1; i < scores.items_size(); ++i) {
    EXPECT_GE(scores.items(i - 1).ctr(), scores.items(i).ctr());
  }
}

}  // namespace duet::cloud

#endif  // DUET_CLOUD_INTERNAL_SCORING_TEST_UTIL_H_
