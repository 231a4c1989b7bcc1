#include "cloud/edge_part.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/format/sha256.h"
#include "common/model/model_config.h"

namespace duet::cloud {

int64_t EdgePart::bytes() const {
  int64_t n = 0;
  for (const File& f : files) n += static_cast<int64_t>(f.bytes.size());
  return n;
}

std::vector<std::string> EdgeFileNames(const duet::v1::ModelConfig& config) {
  std::vector<std::string> names = {common::kEdgeFile};
  const std::string int8 = common::Int8TensorFile(config);
  if (!int8.empty() && int8 != common::kEdgeFile) names.push_back(int8);
  return names;
}

absl::StatusOr<EdgePart> ReadEdgePart(const std::string& dir,
                                      const duet::v1::ModelConfig& config) {
  EdgePart part;
  part.config = config;
  for (const std::string& name : EdgeFileNames(config)) {
    const duet::v1::WeightFile* listed = nullptr;
    for (const duet::v1::WeightFile& f : config.files()) {
      if (f.name() == name) listed = &f;
    }
    if (listed == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model ", common::ModelLabel(config), " does not list ", name));
    }
    const std::string path = absl::StrCat(dir, "/", name);
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
    std::ostringstream bytes;
    bytes << in.rdbuf();
    EdgePart::File file{name, std::move(bytes).str()};
    const std::string sha =
        common::Sha256Hex(file.bytes.data(), file.bytes.size());
    if (static_cast<int64_t>(file.bytes.size()) != listed->size_bytes() ||
        sha != listed->sha256()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s is %d bytes with SHA-256 %s, model %s lists %d bytes with %s "
          "(replaced since the model was loaded?)",
          path, file.bytes.size(), sha, common::ModelLabel(config),
          listed->size_bytes(), listed->sha256()));
    }
    part.files.push_back(std::move(file));
  }
  return part;
}

}  // namespace duet::cloud
