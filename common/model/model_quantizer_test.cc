#include "common/model/model_quantizer.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status_matchers.h"
#include "common/format/safetensors.h"
#include "common/model/mlp_quantizer.h"
#include "common/model/model.h"
#include "common/model/model_config.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::HasSubstr;

// A generated tiny model turned into what an fp32 export looks like: no
// int8 tensors, no user_top_int8, re-signed.
class QuantizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto generated = GenerateTestModel("tiny", 1.0, dir_.path());
    ASSERT_TRUE(generated.ok()) << generated.status();
    duet::v1::ModelConfig c = *generated;
    c.clear_user_top_int8();
    auto* files = c.mutable_files();
    for (int i = 0; i < files->size(); ++i) {
      if (files->Get(i).name() == kEdgeInt8File) {
        files->DeleteSubrange(i, 1);
        break;
      }
    }
    c.set_signature(ComputeSignature(c));
    ASSERT_TRUE(WriteConfig(dir_.File(kConfigFile), c).ok());
    std::filesystem::remove(dir_.File(kEdgeInt8File));
    fp32_ = c;
  }

  // n rows of width `width` uniform in [0, 1) (`poison` >= 0 puts a NaN
  // there) as `tensor` in a calibration file.
  std::string WriteCalibration(int64_t n, int width,
                               const std::string& tensor = kCalibrationTensor,
                               int64_t poison = -1) {
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    rows_.resize(static_cast<size_t>(n) * width);
    for (float& x : rows_) x = unit(rng);
    if (poison >= 0) rows_[poison] = std::numeric_limits<float>::quiet_NaN();
    const std::string path =
        dir_.File(absl::StrCat("calibration", ++files_, ".safetensors"));
    auto w =
        SafetensorsWriter::Create(path, {{tensor, DType::kF32, {n, width}}});
    EXPECT_TRUE(w.ok()) << w.status();
    EXPECT_TRUE((*w)->Append(rows_.data(), rows_.size() * sizeof(float)).ok());
    EXPECT_TRUE((*w)->Finish().ok());
    return path;
  }

  int UserTopIn() const { return ComputeDims(fp32_).user_top_in; }

  TempDir dir_;
  duet::v1::ModelConfig fp32_;
  std::vector<float> rows_;
  int files_ = 0;
};

TEST_F(QuantizeTest, AnFp32ModelServesWhereInt8IsNotNeeded) {
  EXPECT_TRUE(VerifyModelDir(dir_.path()).ok());
  // An edge serving int8 is told what to do.
  EXPECT_THAT(Model::Load(dir_.path(), LoadOptions()).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("has no int8 user top MLP (an fp32 model): "
                                 "add it with `duet-model quantize")));
  // The cloud (and an fp32 edge) never asks for it.
  LoadOptions cloud;
  cloud.parts = {true, true, true};
  cloud.parts.user_top_int8 = false;
  auto model = Model::Load(dir_.path(), cloud);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE((*model)->has_user_top_int8());
}

TEST_F(QuantizeTest, WritesTheInt8FileFromTheCalibrationRowsAndResigns) {
  const std::string calib = WriteCalibration(300, UserTopIn());
  auto config = QuantizeModelDir(dir_.path(), calib, nullptr);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->user_top_int8().calibration_samples(), 300);
  EXPECT_EQ(Int8TensorFile(*config), kEdgeInt8File);
  EXPECT_EQ(config->signature(), ComputeSignature(*config));
  EXPECT_NE(config->signature(), fp32_.signature());
  EXPECT_TRUE(VerifyModelDir(dir_.path()).ok());

  LoadOptions options;
  options.parts = {true, true, true};
  options.int8_arithmetic = Int8Arithmetic::kFull;
  auto model = Model::Load(dir_.path(), options);
  ASSERT_TRUE(model.ok()) << model.status();
  const Model& m = **model;
  // Exactly the quantization of these rows: the codes and scales in the
  // file are QuantizeMlp's for the same fp32 layers and calibration.
  const Int8MlpParams expected = QuantizeMlp(m.user_top_layers(), rows_.data(),
                                             300, Int8Arithmetic::kFull);
  ASSERT_EQ(m.user_top_int8_layers().size(), expected.layers.size());
  for (size_t i = 0; i < expected.layers.size(); ++i) {
    const Int8LinearLayer& got = m.user_top_int8_layers()[i];
    const Int8MlpParams::Layer& want = expected.layers[i];
    EXPECT_EQ(got.input_scale, want.input_scale) << i;
    EXPECT_EQ(std::vector<int8_t>(got.weight, got.weight + want.weight.size()),
              want.weight)
        << i;
  }
  // And the int8 user top MLP tracks fp32 on the calibration rows: within
  // 3 % of each output's range (a few int8 LSBs through one layer).
  const int out = m.dims().user_out;
  std::vector<float> y32(static_cast<size_t>(300) * out), y8(y32.size());
  ASSERT_TRUE(m.user_top().Run(rows_.data(), 300, y32.data()).ok());
  ASSERT_TRUE(m.user_top_int8().Run(rows_.data(), 300, y8.data()).ok());
  float range = 0;
  for (float v : y32) range = std::max(range, std::fabs(v));
  ASSERT_GT(range, 0.0f);
  for (size_t i = 0; i < y32.size(); ++i) {
    ASSERT_NEAR(y8[i], y32[i], 0.03f * range) << "row " << i / out;
  }

  // Quantizing again (other rows) replaces the int8 file and the signature.
  const std::string again = WriteCalibration(50, UserTopIn());
  auto second = QuantizeModelDir(dir_.path(), again, nullptr);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->user_top_int8().calibration_samples(), 50);
  EXPECT_NE(second->signature(), config->signature());
  EXPECT_EQ(second->files_size(), config->files_size());
  EXPECT_TRUE(VerifyModelDir(dir_.path()).ok());
}

TEST_F(QuantizeTest, BadCalibrationIsInvalidArgumentAndChangesNothing) {
  const int in = UserTopIn();
  const struct {
    std::string path;
    std::string message;
  } cases[] = {
      {WriteCalibration(10, in + 1),
       absl::StrCat("tensor 'user_top_inputs' is F32 [10,", in + 1,
                    "], expected F32 [n >= 1, ", in, "]")},
      {WriteCalibration(10, in, "inputs"), "has no tensor 'user_top_inputs'"},
      {WriteCalibration(10, in, kCalibrationTensor, 3 * in + 2),
       "user_top_inputs[3][2] is nan; calibration inputs must be finite"},
  };
  for (const auto& c : cases) {
    EXPECT_THAT(
        QuantizeModelDir(dir_.path(), c.path, nullptr).status(),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)));
  }
  EXPECT_THAT(
      QuantizeModelDir(dir_.path(), dir_.File("missing"), nullptr).status(),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing")));
  auto config = ReadConfig(dir_.File(kConfigFile));
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->signature(), fp32_.signature());
  EXPECT_FALSE(config->has_user_top_int8());
  EXPECT_FALSE(std::filesystem::exists(dir_.File(kEdgeInt8File)));
}

}  // namespace
}  // namespace duet::common
