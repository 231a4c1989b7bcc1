#include "edge/user_model.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/base/status_matchers.h"
#include "common/kernels/quantize.h"
#include "common/model/reference_model.h"
#include "edge/internal/fake_cloud.h"
#include "edge/internal/test_model.h"
#include "edge/user_state.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::edge {
namespace {

using common::StatusIs;
using internal::SharedTestModel;
using testing::AllOf;
using testing::HasSubstr;

std::vector<float> Random(int n, int seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

class UserModelTest : public testing::Test {
 protected:
  void SetUp() override {
    model_ = &SharedTestModel();
    state_ = internal::NewInlineUserState(*model_);
    s_ = Random(model_->dims().static_in, 1);
    c_ = Random(model_->dims().dynamic_in, 2);
    ASSERT_TRUE(state_->ReplayProfile(s_, 1).ok());
    // A history longer than every ring (rm2: 120), so rings wrap.
    std::mt19937 rng(3);
    for (int i = 0; i < 150; ++i) {
      history_.push_back(rng() % model_->catalog().num_items());
      state_->PushInteraction(internal::ItemRows(*model_, history_.back()));
    }
    pooled_ref_.resize(model_->dims().pooled);
    common::PoolHistory(*model_, history_, pooled_ref_.data());
  }

  std::unique_ptr<UserModel> Make(Precision precision, Precision wire) {
    auto m = UserModel::Create(model_, {precision, wire});
    EXPECT_TRUE(m.ok()) << m.status();
    return *std::move(m);
  }

  const common::Model* model_;
  std::unique_ptr<UserState> state_;
  std::vector<float> s_, c_, pooled_ref_;
  std::vector<int64_t> history_;
};

TEST_F(UserModelTest, Fp32EqualsSplitReferenceWithin1e5) {
  auto um = Make(Precision::kFp32, Precision::kFp32);
  UserModel::Output out;
  ASSERT_TRUE(state_->ComputeUserVector(*um, c_.data(), &out).ok());
  std::vector<float> ref(model_->dims().user_out);
  common::SplitModel split(model_);
  ASSERT_TRUE(split
                  .UserVector(s_.data(), c_.data(), pooled_ref_.data(),
                              /*int8=*/false, ref.data())
                  .ok());
  ASSERT_EQ(out.u.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_NEAR(out.u[i], ref[i], 1e-5) << "u[" << i << "]";
  }
  duet::v1::UserVector proto;
  um->ToProto(out, 7, &proto);
  EXPECT_EQ(proto.fp32_data_size(), model_->dims().user_out);
  EXPECT_TRUE(proto.int8_data().empty());
}

// The int8 user top MLP gives exactly SplitModel's int8 output on the same
// inputs; the wire vector dequantizes to it within scale / 2 per element.
TEST_F(UserModelTest, Int8EqualsSplitReferenceAndQuantizationBound) {
  auto um = Make(Precision::kInt8, Precision::kInt8);
  UserModel::Output out;
  ASSERT_TRUE(state_->ComputeUserVector(*um, c_.data(), &out).ok());
  const int n = model_->dims().user_out;
  common::SplitModel split(model_);
  std::vector<float> ref8(n), ref32(n);
  ASSERT_TRUE(split
                  .UserVector(s_.data(), c_.data(), pooled_ref_.data(),
                              /*int8=*/true, ref8.data())
                  .ok());
  ASSERT_TRUE(split
                  .UserVector(s_.data(), c_.data(), pooled_ref_.data(),
                              /*int8=*/false, ref32.data())
                  .ok());
  // On identical inputs (z_s, c, pooled) the int8 MLP output is exactly
  // SplitModel's.
  std::vector<float> z_s(model_->dims().static_out);
  ASSERT_TRUE(common::RunOrIdentity(model_->static_bottom(), s_.data(), 1,
                                    model_->dims().static_in, z_s.data())
                  .ok());
  UserModel::Output same;
  ASSERT_TRUE(um->Run(z_s.data(), c_.data(), pooled_ref_.data(), &same).ok());
  for (int i = 0; i < n; ++i) ASSERT_EQ(same.u[i], ref8[i]) << "u[" << i << "]";

  float max_abs = 0, max_int8_err = 0;
  for (int i = 0; i < n; ++i) {
    max_abs = std::max(max_abs, std::abs(ref32[i]));
    max_int8_err = std::max(max_int8_err, std::abs(ref8[i] - ref32[i]));
  }
  // Through the state (memo + scratchpad pooled in double precision): the
  // pooled input differs from PoolHistory's only by fp32 rounding, which
  // can move a quantized input by one step.
  for (int i = 0; i < n; ++i) {
    EXPECT_NEAR(out.u[i], ref8[i], 0.01f * max_abs + 1e-6f) << i;
  }

  std::vector<float> deq(n);
  common::DequantizeAffineInt8(out.q.data(), n, out.params, deq.data());
  for (int i = 0; i < n; ++i) {
    EXPECT_LE(std::abs(deq[i] - out.u[i]), out.params.scale / 2 * 1.0001f)
        << "element " << i;
    // Against fp32 u: scale / 2 plus the int8 MLP's own error.
    EXPECT_LE(std::abs(deq[i] - ref32[i]),
              out.params.scale / 2 * 1.0001f + max_int8_err + 1e-5f)
        << "element " << i;
  }
  // The int8 MLP itself stays close to fp32 (post-training quantization).
  EXPECT_LE(max_int8_err, 0.05f * max_abs) << "max |u| " << max_abs;
}

// rm2's wire vector (personalizing split): 96 int8 values plus a small
// header, <= 160 bytes.
// Inputs so large that u (about 3.3x the inputs for this model) leaves
// float32: the run fails with a precise error instead of sending inf
// upstream. One decade lower still runs.
TEST_F(UserModelTest, UserVectorThatOverflowsFailsPrecisely) {
  auto um = Make(Precision::kFp32, Precision::kInt8);
  const common::ModelDims& d = model_->dims();
  const std::vector<float> c(d.dynamic_in, 0.f);
  UserModel::Output out;
  struct Case {
    float magnitude;
    std::string message;  // empty: must succeed
  };
  for (const Case& k : {Case{1e37f, ""}, Case{1.1e38f, "] is inf"}}) {
    const std::vector<float> z(d.static_out, k.magnitude);
    const std::vector<float> p(d.pooled, k.magnitude);
    const absl::Status s = um->Run(z.data(), c.data(), p.data(), &out);
    if (k.message.empty()) {
      EXPECT_TRUE(s.ok()) << s;
      EXPECT_LE(out.params.scale, common::kMaxAffineScale);
    } else {
      EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                              AllOf(HasSubstr("the user vector overflows "
                                              "float32"),
                                    HasSubstr(k.message))))
          << k.magnitude;
    }
  }
}

TEST_F(UserModelTest, WireVectorIsSmall) {
  auto um = Make(Precision::kInt8, Precision::kInt8);
  UserModel::Output out;
  ASSERT_TRUE(state_->ComputeUserVector(*um, c_.data(), &out).ok());
  duet::v1::UserVector proto;
  um->ToProto(out, ~uint64_t{0}, &proto);
  EXPECT_EQ(proto.int8_data().size(), 96u);
  EXPECT_EQ(proto.fp32_data_size(), 0);
  EXPECT_EQ(proto.model_version(), model_->config().version());
  EXPECT_EQ(proto.model_fingerprint(), model_->fingerprint());
  EXPECT_NE(proto.model_fingerprint(), 0u);
  EXPECT_LE(proto.ByteSizeLong(), 160u);
  EXPECT_GE(proto.ByteSizeLong(), 96u);
}

TEST(UserModelCreateTest, ParsesPrecision) {
  EXPECT_EQ(*ParsePrecision("int8"), Precision::kInt8);
  EXPECT_EQ(*ParsePrecision("fp32"), Precision::kFp32);
  EXPECT_THAT(ParsePrecision("fp16"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'fp16' is not one of int8, fp32")));
  EXPECT_THAT(
      UserModel::Create(nullptr, {}),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("edge part")));
}

}  // namespace
}  // namespace duet::edge
