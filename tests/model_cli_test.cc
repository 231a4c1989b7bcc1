// duet-model's commands for models people trained (issue 13), run as the
// real binary: preset --json, score, quantize and verify.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/format/safetensors.h"
#include "common/model/model.h"
#include "common/model/model_config.h"
#include "common/model/model_quantizer.h"
#include "common/model/reference_model.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_process.h"

namespace duet::test {
namespace {

using ::testing::HasSubstr;

class ModelCliTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(common::GenerateTestModel("tiny", 1.0, Model()).ok());
  }
  std::string Model() const { return dir_.path(); }

  // Runs duet-model with `args`: exit code, output in *log.
  int DuetModel(const std::vector<std::string>& args, std::string* log) {
    std::vector<std::string> argv = {BinaryPath("tools/duet-model")};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = Subprocess::Start(argv, dir_.File(absl::StrCat("run", ++runs_)));
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return -1;
    auto code = (*p)->Wait(absl::Seconds(60));
    EXPECT_TRUE(code.ok()) << code.status();
    *log = (*p)->ReadLog();
    return code.ok() ? *code : -1;
  }

  // Writes `tensors` of F32 or I64 values into a safetensors file.
  struct Tensor {
    std::string name;
    common::DType dtype;
    std::vector<int64_t> shape;
    std::vector<float> f32;
    std::vector<int64_t> i64;
  };
  std::string Write(const std::string& name, const std::vector<Tensor>& ts) {
    std::vector<common::TensorSpec> specs;
    for (const Tensor& t : ts) specs.push_back({t.name, t.dtype, t.shape});
    auto w = common::SafetensorsWriter::Create(dir_.File(name), specs);
    EXPECT_TRUE(w.ok()) << w.status();
    for (const Tensor& t : ts) {
      const absl::Status s =
          t.dtype == common::DType::kF32
              ? (*w)->Append(t.f32.data(), t.f32.size() * sizeof(float))
              : (*w)->Append(t.i64.data(), t.i64.size() * sizeof(int64_t));
      EXPECT_TRUE(s.ok()) << s;
    }
    EXPECT_TRUE((*w)->Finish().ok());
    return dir_.File(name);
  }

  common::TempDir dir_;
  int runs_ = 0;
};

TEST_F(ModelCliTest, PresetJsonIsTheArchitectureTrainersRead) {
  std::string log;
  ASSERT_EQ(DuetModel({"preset", "rm2", "--json"}, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("\"split_depth\": 1"));
  EXPECT_THAT(log, HasSubstr("\"user_top_layers\": [\n  96\n ]"));
  ASSERT_EQ(DuetModel({"preset", "rm2", "--split", "paper"}, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("split_depth: 2"));
  EXPECT_EQ(DuetModel({"preset", "rm2", "--split", "deep"}, &log), 2);
  EXPECT_THAT(log, HasSubstr("unknown split 'deep'"));
}

// score's CTRs are the reference evaluators' for the same inputs.
TEST_F(ModelCliTest, ScoreWritesTheReferenceCtrsOfRecordedQueries) {
  common::LoadOptions lo;
  lo.parts = {true, true, true};
  auto model = common::Model::Load(Model(), lo);
  ASSERT_TRUE(model.ok()) << model.status();
  const common::Model& m = **model;
  const int64_t q = 3, h = 6, n = 7;
  const common::ModelDims& d = m.dims();
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> unit(0, 1);
  std::uniform_int_distribution<int64_t> item(0, m.catalog().num_items() - 1);
  Tensor s{"static", common::DType::kF32, {q, d.static_in}, {}, {}};
  Tensor c{"context", common::DType::kF32, {q, d.dynamic_in}, {}, {}};
  Tensor hist{"history", common::DType::kI64, {q, h}, {}, {}};
  Tensor cand{"candidates", common::DType::kI64, {q, n}, {}, {}};
  for (int64_t i = 0; i < q * d.static_in; ++i) s.f32.push_back(unit(rng));
  for (int64_t i = 0; i < q * d.dynamic_in; ++i) c.f32.push_back(unit(rng));
  for (int64_t i = 0; i < q * h; ++i) hist.i64.push_back(item(rng));
  for (int64_t i = 0; i < q * n; ++i) cand.i64.push_back(item(rng));
  const std::string queries = Write("queries.safetensors", {s, c, hist, cand});
  std::string log;
  ASSERT_EQ(DuetModel({"score", Model(), "--queries", queries, "--out",
                       dir_.File("scores.safetensors")},
                      &log),
            0)
      << log;
  auto out = common::SafetensorsFile::Open(dir_.File("scores.safetensors"));
  ASSERT_TRUE(out.ok()) << out.status();
  auto get = [&](const char* name) {
    auto p = (*out)->Get(name, common::DType::kF32, {q, n});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? static_cast<const float*>(*p) : nullptr;
  };
  const float* mono = get("monolithic_fp32");
  const float* fp32 = get("split_fp32");
  const float* int8 = get("split_int8");
  const float* items8 = get("split_int8_items");
  ASSERT_TRUE(mono && fp32 && int8 && items8);
  const common::MonolithicModel reference(&m);
  const common::SplitModel split(&m);
  const common::Int8ItemTables int8_tables(m);
  const common::SplitModel split_items8(&m, &int8_tables.tables());
  double items8_moved = 0;
  for (int64_t i = 0; i < q; ++i) {
    common::UserInputs user;
    user.static_features.assign(s.f32.begin() + i * d.static_in,
                                s.f32.begin() + (i + 1) * d.static_in);
    user.dynamic_features.assign(c.f32.begin() + i * d.dynamic_in,
                                 c.f32.begin() + (i + 1) * d.dynamic_in);
    user.history.assign(hist.i64.begin() + i * h,
                        hist.i64.begin() + (i + 1) * h);
    const std::vector<int64_t> items(cand.i64.begin() + i * n,
                                     cand.i64.begin() + (i + 1) * n);
    std::vector<float> want(n), pooled(d.pooled), u(d.user_out), want8(n),
        want_items8(n);
    ASSERT_TRUE(reference.Score(user, items, want.data()).ok());
    common::PoolHistory(m, user.history, pooled.data());
    // int8 item tables: the fp32 user vector, int8 rows gathered.
    ASSERT_TRUE(split
                    .UserVector(user.static_features.data(),
                                user.dynamic_features.data(), pooled.data(),
                                /*int8=*/false, u.data())
                    .ok());
    ASSERT_TRUE(
        split_items8.ScoreItems(u.data(), items, want_items8.data()).ok());
    ASSERT_TRUE(split
                    .UserVector(user.static_features.data(),
                                user.dynamic_features.data(), pooled.data(),
                                /*int8=*/true, u.data())
                    .ok());
    ASSERT_TRUE(split.ScoreItems(u.data(), items, want8.data()).ok());
    for (int64_t j = 0; j < n; ++j) {
      EXPECT_FLOAT_EQ(mono[i * n + j], want[j]);
      EXPECT_NEAR(fp32[i * n + j], want[j], 1e-5);
      EXPECT_FLOAT_EQ(int8[i * n + j], want8[j]);
      EXPECT_FLOAT_EQ(items8[i * n + j], want_items8[j]);
      items8_moved = std::max<double>(items8_moved,
                                      std::fabs(items8[i * n + j] - want[j]));
    }
  }
  EXPECT_GT(items8_moved, 1e-6) << "split_int8_items holds fp32 CTRs";
  // An item outside the catalog is named.
  cand.i64[4] = m.catalog().num_items();
  const std::string bad = Write("bad.safetensors", {s, c, hist, cand});
  EXPECT_EQ(DuetModel({"score", Model(), "--queries", bad, "--out",
                       dir_.File("x.safetensors")},
                      &log),
            1);
  EXPECT_THAT(log, HasSubstr(absl::StrCat("candidates[0] holds item ",
                                          m.catalog().num_items())));
}

TEST_F(ModelCliTest, QuantizeReSignsAndVerifyChecksTheSignature) {
  const int in =
      common::ComputeDims(*common::ReadConfig(dir_.File(common::kConfigFile)))
          .user_top_in;
  Tensor rows{
      common::kCalibrationTensor, common::DType::kF32, {64, in}, {}, {}};
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<float> unit(0, 1);
  for (int64_t i = 0; i < 64 * in; ++i) rows.f32.push_back(unit(rng));
  const std::string calib = Write("calib.safetensors", {rows});
  std::string log;
  ASSERT_EQ(DuetModel({"quantize", Model(), "--calibration", calib}, &log), 0)
      << log;
  EXPECT_THAT(log, HasSubstr("on 64 calibration rows"));
  ASSERT_EQ(DuetModel({"verify", Model()}, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("signature match"));
  auto config = common::ReadConfig(dir_.File(common::kConfigFile));
  ASSERT_TRUE(config.ok());
  config->set_signature("00000000000000aa");
  ASSERT_TRUE(
      common::WriteConfig(dir_.File(common::kConfigFile), *config).ok());
  EXPECT_EQ(DuetModel({"verify", Model()}, &log), 1);
  EXPECT_THAT(log, HasSubstr("signature 00000000000000aa does not match"));
}

}  // namespace
}  // namespace duet::test
