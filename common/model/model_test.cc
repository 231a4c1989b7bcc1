#include "common/model/model.h"

#include <sys/stat.h>

#include <fstream>

#include "common/model/model_config.h"
#include "common/model/model_generator.h"
#include "common/model/presets.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::common {
namespace {

using ::testing::HasSubstr;

TEST(PresetTest, ScratchpadBytesMatchTheDuetPaper) {
  // DESIGN.md §2 table (Duet Table 4: 60 KB, 720 KB, 17.5 KB).
  const std::pair<const char*, int64_t> expected[] = {
      {"rm1", 61440}, {"rm2", 737280}, {"rm3", 17920}, {"rm4", 17920}};
  for (const auto& [preset, bytes] : expected) {
    auto config = PresetConfig(preset, 1.0);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(ScratchpadBytes(*config), bytes) << preset;
    EXPECT_TRUE(ValidateConfig(*config).ok()) << preset;
  }
}

TEST(PresetTest, DimensionsFollowThePaperSplit) {
  auto rm4 = PresetConfig("rm4", 1.0, PresetSplit::kPaper);
  ASSERT_TRUE(rm4.ok());
  const ModelDims d4 = ComputeDims(*rm4);
  // The heavy user top MLP 256 -> 1920 -> 768.
  EXPECT_EQ(d4.user_top_in, 256);
  EXPECT_THAT(rm4->user_top_layers(), ::testing::ElementsAre(1920, 768));
  // Bottom MLP outputs concatenate to the embedding dim, as in DLRM.
  EXPECT_EQ(d4.static_out + d4.dynamic_out, rm4->embedding_dim());

  auto rm2 = PresetConfig("rm2", 1.0, PresetSplit::kPaper);
  ASSERT_TRUE(rm2.ok());
  const ModelDims d2 = ComputeDims(*rm2);
  EXPECT_EQ(d2.user_out, 48);  // 48 int8 values upstream per query
  EXPECT_EQ(rm2->split_depth(), 2);
  EXPECT_THAT(rm2->combined_top_layers(), ::testing::ElementsAre(1));
  EXPECT_EQ(rm2->user_tables_size(), 24);
  EXPECT_EQ(rm2->item_tables_size(), 8);
  EXPECT_EQ(d2.combined_in, 64);

  auto rm5 = PresetConfig("rm5", 1.0);
  ASSERT_TRUE(rm5.ok());
  const ModelDims d5 = ComputeDims(*rm5);
  EXPECT_EQ(d5.static_in + d5.dynamic_in, 0);
  EXPECT_EQ(d5.combined_in, 200);  // DIN top MLP 200-80-(1)
}

// The default split keeps the whole top MLP of Table 2 and splits only its
// first layer (75 / 25, RM5 60 / 40): the combined top keeps a hidden layer.
TEST(PresetTest, DefaultSplitPersonalizesEveryPreset) {
  const struct {
    const char* preset;
    int user, item;
    std::vector<int> combined;
  } expected[] = {{"tiny", 24, 8, {16, 1}},      {"rm1", 192, 64, {64, 1}},
                  {"rm2", 96, 32, {64, 1}},      {"rm3", 384, 128, {256, 1}},
                  {"rm4", 1920, 640, {1024, 1}}, {"rm5", 120, 80, {80, 1}}};
  for (const auto& e : expected) {
    auto c = PresetConfig(e.preset, 1.0);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->split_depth(), 1) << e.preset;
    EXPECT_THAT(c->user_top_layers(), ::testing::ElementsAre(e.user));
    EXPECT_THAT(c->item_top_layers(), ::testing::ElementsAre(e.item));
    EXPECT_THAT(c->combined_top_layers(),
                ::testing::ElementsAreArray(e.combined))
        << e.preset;
    EXPECT_TRUE(RankingCanDependOnUser(*c)) << e.preset;
    EXPECT_THAT(c->description(), HasSubstr("rankings depend on the user"));
    EXPECT_TRUE(ValidateConfig(*c).ok()) << e.preset;
    auto paper = PresetConfig(e.preset, 1.0, PresetSplit::kPaper);
    ASSERT_TRUE(paper.ok());
    EXPECT_EQ(RankingCanDependOnUser(*paper), std::string(e.preset) == "rm5")
        << e.preset;
  }
  EXPECT_EQ(ParsePresetSplit("paper").value(), PresetSplit::kPaper);
  EXPECT_THAT(
      ParsePresetSplit("deep").status().message(),
      HasSubstr("unknown split 'deep', expected personalized or paper"));
}

TEST(PresetTest, RejectsUnknownPresetAndBadScale) {
  auto unknown = PresetConfig("rm9", 1.0);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(),
              HasSubstr("unknown preset 'rm9', expected one of tiny, rm1"));
  auto scale = PresetConfig("rm1", 1.5);
  EXPECT_THAT(scale.status().message(),
              HasSubstr("rows_scale must be in (0, 1]"));
}

TEST(ValidateConfigTest, NamesTheOffendingField) {
  auto config = PresetConfig("tiny", 1.0);
  ASSERT_TRUE(config.ok());
  auto bad = *config;
  bad.set_combined_top_layers(bad.combined_top_layers_size() - 1, 2);
  EXPECT_THAT(ValidateConfig(bad).message(), HasSubstr("combined_top_layers"));
  bad = *config;
  bad.mutable_user_tables(1)->set_history_length(0);
  EXPECT_THAT(
      ValidateConfig(bad).message(),
      HasSubstr("user_tables[1] (user_1): rows 1000 and history_length 0"));
  bad = *config;
  bad.mutable_item_top_layers()->Set(0, -3);
  EXPECT_THAT(ValidateConfig(bad).message(),
              HasSubstr("item_top_layers[0] is -3"));
  bad = *config;
  bad.set_split_depth(2);
  EXPECT_THAT(ValidateConfig(bad).message(),
              HasSubstr("split_depth is 2 but user_top_layers has 1 layers"));
  bad = *config;
  bad.add_item_top_layers(4);
  EXPECT_THAT(ValidateConfig(bad).message(),
              HasSubstr("item_top_layers has 2 layers, user_top_layers 1"));
  // A config written before split_depth existed.
  bad = *config;
  bad.clear_split_depth();
  EXPECT_TRUE(ValidateConfig(bad).ok());
  EXPECT_EQ(SplitDepth(bad), 1);
}

// model.proto's formula, computed independently here.
TEST(SignatureTest, CoversNameVersionSplitCatalogTablesAndFiles) {
  duet::v1::ModelConfig c;
  c.set_name("m");
  c.set_version(3);
  c.set_split_depth(1);
  c.mutable_catalog()->set_seed(7);
  c.mutable_catalog()->set_num_items(50);
  auto* u = c.add_user_tables();
  u->set_rows(10);
  u->set_history_length(4);
  auto* i = c.add_item_tables();
  i->set_rows(20);
  i->set_lookups_per_item(2);
  auto* f = c.add_files();
  f->set_name("a.safetensors");
  f->set_sha256("ab");
  // sha256("duet.v1.ModelConfig/2:m:3:split=1:catalog=7/50:u=10/4:i=20/2:"
  //        "a.safetensors=ab")
  EXPECT_EQ(ComputeSignature(c), "9aabe9a810cf7f93");
  auto other = c;
  other.mutable_user_tables(0)->set_history_length(5);
  EXPECT_NE(ComputeSignature(other), ComputeSignature(c));
  other = c;
  other.mutable_catalog()->set_seed(8);
  EXPECT_NE(ComputeSignature(other), ComputeSignature(c));
  other = c;
  other.set_description("not signed");
  EXPECT_EQ(ComputeSignature(other), ComputeSignature(c));
}

class GeneratedModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto config = GenerateTestModel("tiny", 1.0, dir_.path());
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
  }
  TempDir dir_;
  duet::v1::ModelConfig config_;
};

TEST_F(GeneratedModelTest, LoadsAllPartsAndVerifies) {
  LoadOptions options;
  options.parts = {true, true, true};
  auto model = Model::Load(dir_.path(), options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().signature(), config_.signature());
  EXPECT_NE((*model)->fingerprint(), 0u);
  EXPECT_EQ((*model)->num_item_tables(), 1);
  EXPECT_EQ((*model)->user_top().out_dim(), 24);
  EXPECT_TRUE(VerifyModelDir(dir_.path()).ok());
  EXPECT_EQ(config_.files_size(), 4);  // edge, edge int8, cloud, user tables
  EXPECT_EQ(config_.signature(), ComputeSignature(config_));
}

TEST_F(GeneratedModelTest, VerifyRejectsASignatureReplacedByHand) {
  auto config = config_;
  config.set_signature("0123456789abcdef");
  ASSERT_TRUE(WriteConfig(dir_.File(kConfigFile), config).ok());
  const absl::Status s = VerifyModelDir(dir_.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              HasSubstr("signature 0123456789abcdef does not match " +
                        config_.signature()));
  // A signature in the format written before split_depth existed passes,
  // with a note.
  config.set_signature(LegacySignature(config));
  ASSERT_TRUE(WriteConfig(dir_.File(kConfigFile), config).ok());
  std::string note;
  EXPECT_TRUE(VerifyModelDir(dir_.path(), &note).ok());
  EXPECT_THAT(note, HasSubstr("legacy signature"));
}

TEST_F(GeneratedModelTest, VerifyNotesARankingThatCannotDependOnTheUser) {
  TempDir paper;
  ASSERT_TRUE(
      GenerateTestModel("tiny", 1.0, paper.path(), 1, 1, PresetSplit::kPaper)
          .ok());
  std::string note;
  ASSERT_TRUE(VerifyModelDir(paper.path(), &note).ok());
  EXPECT_THAT(note, HasSubstr("the same for every user"));
  ASSERT_TRUE(VerifyModelDir(dir_.path(), &note).ok());
  EXPECT_EQ(note, "");
}

TEST_F(GeneratedModelTest, TablesHoldTheDeterministicWeightStream) {
  LoadOptions options;
  options.parts = {false, true, true};
  auto model = Model::Load(dir_.path(), options);
  ASSERT_TRUE(model.ok()) << model.status();
  const EmbeddingTable& t = (*model)->user_table(2);
  const float* data = static_cast<const float*>(t.data);
  // user_tables.2: history 6 -> init scale 1/sqrt(6).
  const uint64_t i = 123 * t.dim + 5;
  EXPECT_FLOAT_EQ(data[i], SyntheticUniform(1, "user_tables.2.weight", i) /
                               std::sqrt(6.0f));
}

TEST_F(GeneratedModelTest, GenerationIsDeterministicPerSeed) {
  TempDir same, other;
  auto a = GenerateTestModel("tiny", 1.0, same.path());
  auto b = GenerateTestModel("tiny", 1.0, other.path(), /*seed=*/2);
  ASSERT_TRUE(a.ok() && b.ok());
  for (int f = 0; f < a->files_size(); ++f) {
    EXPECT_EQ(a->files(f).sha256(), config_.files(f).sha256());
    EXPECT_NE(b->files(f).sha256(), config_.files(f).sha256());
  }
  EXPECT_EQ(a->signature(), config_.signature());
  EXPECT_NE(b->signature(), config_.signature());
}

TEST_F(GeneratedModelTest, VerifyRejectsAFlippedByte) {
  const std::string path = dir_.File(kCloudFile);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-5, std::ios::end);
    char c;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(-5, std::ios::end);
    f.write(&c, 1);
  }
  const absl::Status s = VerifyModelDir(dir_.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("cloud.safetensors has SHA-256"));
  EXPECT_THAT(s.message(),
              HasSubstr("model.pbtxt records " + config_.files(1).sha256()));
  // Loading refuses it too.
  EXPECT_EQ(Model::Load(dir_.path(), LoadOptions()).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(GeneratedModelTest, VerifyRejectsATruncatedFile) {
  const std::string path = dir_.File(kEdgeFile);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  ASSERT_EQ(::truncate(path.c_str(), st.st_size - 100), 0);
  const absl::Status s = VerifyModelDir(dir_.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              HasSubstr(absl::StrCat("edge.safetensors is ", st.st_size - 100,
                                     " bytes, model.pbtxt records ", st.st_size,
                                     " (truncated or replaced?)")));
}

TEST_F(GeneratedModelTest, VerifyRejectsAWrongShape) {
  // The config claims a wider item top MLP than the weights hold.
  auto config = config_;
  config.set_item_top_layers(0, 9);
  ASSERT_TRUE(WriteConfig(dir_.File(kConfigFile), config).ok());
  const absl::Status s = VerifyModelDir(dir_.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("item_top.0.weight"));
  EXPECT_THAT(s.message(), HasSubstr("[9,8]"));
}

TEST(ModelLoadTest, MissingDirectoryIsNotFound) {
  const auto s = Model::Load("/nonexistent/model", LoadOptions()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("/nonexistent/model/model.pbtxt"));
}

TEST(ModelLoadTest, UnparsableConfigNamesTheLine) {
  TempDir dir;
  std::ofstream(dir.File(kConfigFile)) << "name: \"x\"\nbogus_field: 3\n";
  const auto s = ReadConfig(dir.File(kConfigFile)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("line 2"));
  EXPECT_THAT(s.message(), HasSubstr("bogus_field"));
}

}  // namespace
}  // namespace duet::common
