#include "edge/edge_model_fetch.h"

#include <filesystem>
#include <string>
#include <vector>

#include "common/base/status_matchers.h"
#include "common/model/model_config.h"
#include "common/model/test_util.h"
#include "edge/internal/fake_cloud.h"
#include "edge/internal/test_model.h"
#include "edge/model_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::edge {
namespace {

using common::StatusIs;
using internal::FakeCloud;
using internal::SharedTestModel;
using testing::ElementsAre;
using testing::HasSubstr;

const common::Model& V1() { return SharedTestModel("rm2", 1, 1); }
const common::Model& V2() { return SharedTestModel("rm2", 2, 2); }

// Installs v2 from `cloud` under `state_dir`/models.
absl::StatusOr<std::string> InstallV2(FakeCloud& cloud,
                                      const std::string& state_dir) {
  ModelStore store(state_dir);
  duet::v1::GetEdgeModelRequest request;
  request.set_model_version(2);
  request.set_model_fingerprint(V2().fingerprint());
  return store.Install([&](const std::string& dir) {
    return EdgeModelFetch::Download(&cloud, request,
                                    absl::Now() + absl::Seconds(60), dir);
  });
}

// Entries of `state_dir`/models (hidden temporaries included).
std::vector<std::string> Entries(const std::string& state_dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator(state_dir + "/" + kModelsDir, ec)) {
    names.push_back(e.path().filename().string());
  }
  return names;
}

common::LoadOptions EdgeOnly() {
  common::LoadOptions o;
  o.parts.cloud = false;
  return o;
}

TEST(EdgeModelFetchTest, InstallsAVerifiedLoadableEdgePart) {
  common::TempDir state;
  FakeCloud cloud(&V1());
  cloud.Serve(&V2());
  cloud.chunk_bytes = 100 << 10;  // several chunks per file
  int64_t last_received = 0, total = 0;
  ModelStore store(state.path());
  duet::v1::GetEdgeModelRequest request;
  request.set_model_version(2);
  auto path = store.Install([&](const std::string& dir) {
    return EdgeModelFetch::Download(&cloud, request,
                                    absl::Now() + absl::Seconds(60), dir,
                                    [&](int64_t received, int64_t all) {
                                      last_received = received;
                                      total = all;
                                    });
  });
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, store.PathOf(ModelStore::DirName(V2().config())));
  EXPECT_GT(total, 200 << 10);
  EXPECT_EQ(last_received, total);
  auto model = common::Model::Load(*path, EdgeOnly());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().signature(), V2().config().signature());
  EXPECT_EQ((*model)->fingerprint(), V2().fingerprint());
  EXPECT_THAT(Entries(state.path()),
              ElementsAre(ModelStore::DirName(V2().config())));
}

TEST(EdgeModelFetchTest, ACorruptedChunkInstallsNothing) {
  common::TempDir state;
  FakeCloud cloud(&V2());
  cloud.chunk_bytes = 100 << 10;
  cloud.SetChunkHook([](duet::v1::EdgeModelChunk* chunk) {
    if (chunk->file() == common::kEdgeFile && chunk->offset() > 0) {
      (*chunk->mutable_data())[7] ^= 0x40;
    }
  });
  EXPECT_THAT(
      InstallV2(cloud, state.path()),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr(absl::StrCat(
                   "GetEdgeModel sent edge.safetensors with SHA-256 "))));
  EXPECT_THAT(Entries(state.path()), testing::IsEmpty());
}

TEST(EdgeModelFetchTest, ASizeOtherThanTheConfigsInstallsNothing) {
  common::TempDir state;
  FakeCloud cloud(&V2());
  int64_t size = 0;
  cloud.SetChunkHook([&size](duet::v1::EdgeModelChunk* chunk) {
    if (!chunk->has_config()) return;
    for (auto& f : *chunk->mutable_config()->mutable_files()) {
      // The signature covers names and checksums, not sizes: only the
      // size check can catch this.
      if (f.name() == common::kEdgeFile) {
        f.set_size_bytes(f.size_bytes() + 1);
        size = f.size_bytes();
      }
    }
  });
  EXPECT_THAT(InstallV2(cloud, state.path()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("GetEdgeModel ended edge.safetensors at ")));
  EXPECT_GT(size, 0);
  EXPECT_THAT(Entries(state.path()), testing::IsEmpty());
}

TEST(EdgeModelFetchTest, AConfigWhoseSignatureDoesNotMatchInstallsNothing) {
  common::TempDir state;
  FakeCloud cloud(&V2());
  cloud.SetChunkHook([](duet::v1::EdgeModelChunk* chunk) {
    if (!chunk->has_config()) return;
    // A weight swapped for another file, its checksum updated, the
    // signature not: the config no longer signs what it describes.
    for (auto& f : *chunk->mutable_config()->mutable_files()) {
      if (f.name() == common::kEdgeFile) f.set_sha256(std::string(64, 'a'));
    }
  });
  EXPECT_THAT(InstallV2(cloud, state.path()),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("whose config signature does not match its "
                                 "contents")));
  EXPECT_THAT(Entries(state.path()), testing::IsEmpty());
}

TEST(EdgeModelFetchTest, AnotherVersionThanAskedIsRefused) {
  common::TempDir state;
  FakeCloud cloud(&V1());
  cloud.Serve(&V2());
  ModelStore store(state.path());
  duet::v1::GetEdgeModelRequest request;
  request.set_model_version(2);
  request.set_model_fingerprint(V1().fingerprint());
  EXPECT_THAT(store.Install([&](const std::string& dir) {
    return EdgeModelFetch::Download(&cloud, request,
                                    absl::Now() + absl::Seconds(60), dir);
  }),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("asked for v2")));
  EXPECT_THAT(Entries(state.path()), testing::IsEmpty());
}

TEST(EdgeModelFetchTest, ChunksOutOfOrderAreRefused) {
  EdgeModelFetch fetch("/nonexistent", {});
  duet::v1::EdgeModelChunk first;
  *first.mutable_config() = V2().config();
  first.add_files(common::kEdgeFile);
  first.add_files(common::kEdgeInt8File);
  ASSERT_TRUE(fetch.Receive(first).ok());
  duet::v1::EdgeModelChunk chunk;
  chunk.set_file(common::kEdgeFile);
  chunk.set_offset(10);
  chunk.set_data("x");
  EXPECT_THAT(fetch.Receive(chunk),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("starts at offset 10, expected 0")));
  duet::v1::EdgeModelChunk missing;
  *missing.mutable_config() = V2().config();
  missing.add_files(common::kEdgeFile);
  EdgeModelFetch other("/nonexistent", {});
  EXPECT_THAT(other.Receive(missing),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("needs [edge.safetensors, "
                                 "edge_int8.safetensors]")));
}

}  // namespace
}  // namespace duet::edge
