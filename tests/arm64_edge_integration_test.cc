// The arm64 duet-edge, run under qemu-user, against the x86-64 duet-cloud
// on 127.0.0.1 (issue 17): Recommend through the emulated edge equals the
// split reference in fp32 (1e-5), and with the int8 user top MLP and int8
// wire it equals the reference in the int8 arithmetic the edge reports
// (2e-3, as edge_integration_test) and keeps the int8 bound (mean |dCTR|
// below 0.01 against fp32, docs/ACCURACY.md).
//
// tools/run-arm64-tests cross-builds duet-edge and runs this native binary
// with
//   DUET_ARM64_EDGE      path of the arm64 duet-edge
//   DUET_ARM64_EMULATOR  the command that runs it, space-separated, e.g.
//                        "/usr/bin/qemu-aarch64-static -L SYSROOT"
// Without them every test is skipped with that reason (the native ctest run
// of tools/run-tests). No timing is asserted: emulation is slow.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/kernels/int8_arithmetic.h"
#include "common/kernels/int8_test_util.h"
#include "common/model/reference_model.h"
#include "gmock/gmock.h"
#include "tests/edge_process_fixture.h"

namespace duet {
namespace {

// Recommend under emulation: the first query also JIT-compiles oneDNN's
// kernels, translated instruction by instruction.
constexpr absl::Duration kEmulatedDeadline = absl::Seconds(120);

class Arm64EdgeTest : public test::EdgeProcessTest {
 protected:
  static void SetUpTestSuite() { GenerateModel("rm2", 0.001); }

  void SetUp() override {
    const char* edge = std::getenv("DUET_ARM64_EDGE");
    const char* emulator = std::getenv("DUET_ARM64_EMULATOR");
    if (edge == nullptr || *edge == '\0') {
      GTEST_SKIP() << "DUET_ARM64_EDGE is not set (the arm64 duet-edge: "
                      "tools/run-arm64-tests cross-builds it and sets it)";
    }
    if (emulator == nullptr || *emulator == '\0') {
      GTEST_SKIP() << "DUET_ARM64_EMULATOR is not set (e.g. "
                      "\"qemu-aarch64-static -L SYSROOT\"; "
                      "tools/run-arm64-tests sets it)";
    }
    // Set but wrong is a broken set-up, not a skip.
    ASSERT_EQ(access(edge, X_OK), 0) << "DUET_ARM64_EDGE=" << edge;
    emulator_ = absl::StrSplit(emulator, ' ', absl::SkipWhitespace());
    ASSERT_EQ(access(emulator_[0].c_str(), X_OK), 0)
        << "DUET_ARM64_EMULATOR=" << emulator;
    arm64_edge_ = edge;
    EdgeProcessTest::SetUp();
  }

  // The arm64 edge with EdgeArgv(extra)'s flags under the emulator; checks
  // from its start-up log that it is the aarch64 build.
  void StartArm64Edge(const std::vector<std::string>& extra) {
    std::vector<std::string> argv = emulator_;
    std::vector<std::string> edge = EdgeArgv(extra);
    edge[0] = arm64_edge_;
    argv.insert(argv.end(), edge.begin(), edge.end());
    ASSERT_NO_FATAL_FAILURE(StartEdgeArgv(argv));
    // oneDNN names the ISA of an aarch64 CPU asimd or sve_<bits>.
    EXPECT_THAT(edge_->ReadLog(), testing::ContainsRegex("isa (asimd|sve_)"));
  }

  // A profile and a history of interactions, through the edge's RPCs.
  void Personalize() {
    std::mt19937 rng(17);
    std::uniform_real_distribution<float> dist(-1, 1);
    s_.resize(model_->dims().static_in);
    for (float& x : s_) x = dist(rng);
    ASSERT_NO_FATAL_FAILURE(UpdateProfileAndWait(s_));
    for (int i = 0; i < 40; ++i) {
      const int64_t item = rng() % model_->catalog().num_items();
      v1::RecordInteractionResponse response;
      const grpc::Status s = RecordInteraction(item, &response);
      ASSERT_TRUE(s.ok()) << s.error_message();
      history_.push_back(item);
    }
  }

  // Recommend of every candidate of a fixed request: CTR by item id.
  std::map<int64_t, float> RecommendAll() {
    request_ = ValidRequest(64, 64, /*seed=*/23);
    v1::RecommendResponse response;
    const grpc::Status s = Recommend(request_, &response, kEmulatedDeadline);
    EXPECT_TRUE(s.ok()) << s.error_message() << "\n" << edge_->ReadLog();
    std::map<int64_t, float> ctr;
    for (const auto& item : response.items()) ctr[item.item_id()] = item.ctr();
    return ctr;
  }

  // The split reference of the last request for s_ and history_, with the
  // fp32 or the int8 user top MLP of `model`: CTR by item id.
  std::map<int64_t, float> Reference(const common::Model& model, bool int8) {
    std::vector<float> pooled(model.dims().pooled), u(model.dims().user_out);
    common::PoolHistory(model, history_, pooled.data());
    const common::SplitModel split(&model);
    EXPECT_TRUE(split
                    .UserVector(s_.data(), request_.context_features().data(),
                                pooled.data(), int8, u.data())
                    .ok());
    const std::vector<int64_t> ids(request_.candidate_ids().begin(),
                                   request_.candidate_ids().end());
    std::vector<float> ctr(ids.size());
    EXPECT_TRUE(split.ScoreItems(u.data(), ids, ctr.data()).ok());
    std::map<int64_t, float> by_id;
    for (size_t j = 0; j < ids.size(); ++j) by_id[ids[j]] = ctr[j];
    return by_id;
  }

  std::vector<std::string> emulator_;
  std::string arm64_edge_;
  std::vector<float> s_;
  std::vector<int64_t> history_;
  v1::RecommendRequest request_;
};

// Every candidate's CTR within `tolerance` of the reference's (1 checks
// only that each is there); the mean |dCTR|.
double ExpectClose(const std::map<int64_t, float>& got,
                   const std::map<int64_t, float>& want, float tolerance) {
  EXPECT_EQ(got.size(), want.size());
  double sum = 0;
  for (const auto& [id, ctr] : want) {
    const auto it = got.find(id);
    if (it == got.end()) {
      ADD_FAILURE() << "item " << id << " missing";
      continue;
    }
    EXPECT_NEAR(it->second, ctr, tolerance) << "item " << id;
    sum += std::abs(it->second - ctr);
  }
  return want.empty() ? 0 : sum / want.size();
}

TEST_F(Arm64EdgeTest, Fp32RecommendEqualsTheSplitReference) {
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  ASSERT_NO_FATAL_FAILURE(
      StartArm64Edge({"--wire", "fp32", "--user_precision", "fp32"}));
  ASSERT_NO_FATAL_FAILURE(Personalize());
  const auto got = RecommendAll();
  const double mean = ExpectClose(got, Reference(*model_, false), 1e-5f);
  RecordProperty("mean_abs_dctr", std::to_string(mean));
}

TEST_F(Arm64EdgeTest, Int8RecommendKeepsTheInt8Bound) {
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  ASSERT_NO_FATAL_FAILURE(StartArm64Edge({}));  // int8 user MLP, int8 wire
  ASSERT_NO_FATAL_FAILURE(Personalize());
  const auto got = RecommendAll();
  const double mean = ExpectClose(got, Reference(*model_, false), 1.0f);
  EXPECT_LT(mean, 0.01) << "mean |dCTR| of the arm64 int8 edge vs fp32";
  RecordProperty("mean_abs_dctr_vs_fp32", std::to_string(mean));

  // The same codes as the reference in the arithmetic the edge runs, when
  // this CPU computes that arithmetic exactly too.
  const std::string name = GetState().int8_arithmetic();
  const auto arithmetic = common::ParseInt8Arithmetic(name);
  ASSERT_TRUE(arithmetic.ok()) << arithmetic.status();
  if (const std::string why = common::InexactInt8Reason(*arithmetic);
      !why.empty()) {
    GTEST_SKIP() << "int8 bound checked; no exact int8 reference: " << why;
  }
  common::LoadOptions lo;
  lo.parts.user_tables = true;
  lo.int8_arithmetic = *arithmetic;
  auto model = common::Model::Load(ModelDir(), lo);
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectClose(got, Reference(**model, /*int8=*/true), 2e-3f);
}

}  // namespace
}  // namespace duet
