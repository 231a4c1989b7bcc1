#include "edge/edge_model_fetch.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"
#include "edge/model_store.h"

namespace duet::edge {
namespace {

// The files a GetEdgeModel stream must carry for `config`, in any order.
std::vector<std::string> ExpectedFiles(const duet::v1::ModelConfig& config) {
  std::vector<std::string> files = {common::kEdgeFile};
  for (const duet::v1::WeightFile& f : config.files()) {
    if (f.name() == common::kEdgeInt8File) files.push_back(f.name());
  }
  return files;
}

}  // namespace

EdgeModelFetch::EdgeModelFetch(std::string dir, duet::v1::ModelTarget want,
                               Progress progress)
    : dir_(std::move(dir)), want_(std::move(want)), progress_(progress) {}

EdgeModelFetch::~EdgeModelFetch() = default;

absl::StatusOr<duet::v1::ModelConfig> EdgeModelFetch::Download(
    CloudClient* cloud, const duet::v1::GetEdgeModelRequest& request,
    absl::Time deadline, const std::string& dir, Progress progress,
    CallCanceller* canceller) {
  duet::v1::ModelTarget want;
  want.set_version(request.model_version());
  want.set_fingerprint(request.model_fingerprint());
  EdgeModelFetch fetch(dir, want, std::move(progress));
  RETURN_IF_ERROR(cloud->GetEdgeModel(
      request, deadline,
      [&fetch](const duet::v1::EdgeModelChunk& chunk) {
        return fetch.Receive(chunk);
      },
      canceller));
  RETURN_IF_ERROR(fetch.Finish());
  return fetch.config();
}

absl::Status EdgeModelFetch::Start(const duet::v1::EdgeModelChunk& chunk) {
  if (!chunk.has_config()) {
    return absl::DataLossError(
        "GetEdgeModel's first chunk has no config (the stream must start "
        "with the model's ModelConfig and its file names)");
  }
  config_ = chunk.config();
  if (absl::Status s = common::ValidateConfig(config_); !s.ok()) {
    return absl::DataLossError(
        absl::StrCat("GetEdgeModel sent an invalid config: ", s.message()));
  }
  const std::string signature = common::ComputeSignature(config_);
  if (config_.signature() != signature &&
      config_.signature() != common::LegacySignature(config_)) {
    return absl::DataLossError(absl::StrCat(
        "GetEdgeModel sent ", common::ModelLabel(config_),
        " whose config signature does not match its contents (computed ",
        signature, ")"));
  }
  if ((want_.version() != 0 && config_.version() != want_.version()) ||
      (want_.fingerprint() != 0 &&
       common::Fingerprint(config_) != want_.fingerprint())) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "GetEdgeModel sent %s, asked for v%d (signature %016x)",
        common::ModelLabel(config_), want_.version(), want_.fingerprint()));
  }
  std::vector<std::string> expected = ExpectedFiles(config_);
  std::vector<std::string> got(chunk.files().begin(), chunk.files().end());
  std::vector<std::string> sorted_expected = expected, sorted_got = got;
  std::sort(sorted_expected.begin(), sorted_expected.end());
  std::sort(sorted_got.begin(), sorted_got.end());
  if (sorted_got != sorted_expected) {
    return absl::DataLossError(
        absl::StrCat("GetEdgeModel announces files [", absl::StrJoin(got, ", "),
                     "], ", common::ModelLabel(config_), " needs [",
                     absl::StrJoin(expected, ", "), "]"));
  }
  for (const std::string& name : got) {
    auto file = std::make_unique<File>();
    file->name = name;
    for (const duet::v1::WeightFile& f : config_.files()) {
      if (f.name() == name) {
        file->size = f.size_bytes();
        file->sha256 = f.sha256();
      }
    }
    total_ += file->size;
    files_.push_back(std::move(file));
  }
  started_ = true;
  if (progress_) progress_(0, total_);
  return absl::OkStatus();
}

absl::Status EdgeModelFetch::Receive(const duet::v1::EdgeModelChunk& chunk) {
  if (!started_) return Start(chunk);
  if (chunk.has_config() || chunk.files_size() > 0) {
    return absl::DataLossError(
        "GetEdgeModel sent a second config chunk in one stream");
  }
  // The next file begins: the current one must be complete.
  while (current_ < files_.size() && chunk.file() != files_[current_]->name) {
    RETURN_IF_ERROR(Close(*files_[current_]));
    ++current_;
  }
  if (current_ == files_.size()) {
    return absl::DataLossError(absl::StrCat(
        "GetEdgeModel sent a chunk of '", chunk.file(),
        "', which is not the next announced file (files come in the order "
        "announced)"));
  }
  File& file = *files_[current_];
  const int64_t n = static_cast<int64_t>(chunk.data().size());
  if (n > kMaxEdgeModelChunkBytes) {
    return absl::DataLossError(
        absl::StrFormat("GetEdgeModel chunk of %s at offset %d has %d bytes, "
                        "at most %d are allowed",
                        file.name, chunk.offset(), n, kMaxEdgeModelChunkBytes));
  }
  if (chunk.offset() != file.written) {
    return absl::DataLossError(absl::StrFormat(
        "GetEdgeModel chunk of %s starts at offset %d, expected %d", file.name,
        chunk.offset(), file.written));
  }
  if (file.written + n > file.size) {
    return absl::DataLossError(absl::StrFormat(
        "GetEdgeModel sent %d bytes of %s, the config records %d",
        file.written + n, file.name, file.size));
  }
  if (file.out == nullptr) {
    ASSIGN_OR_RETURN(file.out, PosixFileSystem()->OpenAppendable(
                                   absl::StrCat(dir_, "/", file.name)));
  }
  RETURN_IF_ERROR(file.out->Append(chunk.data()));
  file.hash.Update(chunk.data().data(), chunk.data().size());
  file.written += n;
  received_ += n;
  if (progress_) progress_(received_, total_);
  return absl::OkStatus();
}

absl::Status EdgeModelFetch::Close(File& file) {
  if (file.written != file.size) {
    return absl::DataLossError(absl::StrFormat(
        "GetEdgeModel ended %s at %d bytes, the config records %d", file.name,
        file.written, file.size));
  }
  if (file.out == nullptr) {  // an empty file: never appended to
    ASSIGN_OR_RETURN(file.out, PosixFileSystem()->OpenAppendable(
                                   absl::StrCat(dir_, "/", file.name)));
  }
  const std::string digest = file.hash.HexDigest();
  if (digest != file.sha256) {
    return absl::DataLossError(
        absl::StrCat("GetEdgeModel sent ", file.name, " with SHA-256 ", digest,
                     ", the config records ", file.sha256));
  }
  RETURN_IF_ERROR(file.out->Sync());
  file.out.reset();
  return absl::OkStatus();
}

absl::Status EdgeModelFetch::Finish() {
  if (!started_) {
    return absl::DataLossError("GetEdgeModel's stream ended without a config");
  }
  for (; current_ < files_.size(); ++current_) {
    RETURN_IF_ERROR(Close(*files_[current_]));
  }
  const std::string config_path = absl::StrCat(dir_, "/", common::kConfigFile);
  RETURN_IF_ERROR(common::WriteConfig(config_path, config_));
  return SyncPath(config_path);
}

}  // namespace duet::edge
