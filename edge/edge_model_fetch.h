// Receives the edge part of one model version from a GetEdgeModel stream
// into a directory and checks everything before it counts as received:
// the first chunk's config validates, carries its own signature
// (common::ComputeSignature over it: the files' checksums are signed) and is
// the version asked for; `files` is exactly edge.safetensors plus
// edge_int8.safetensors when the config lists it; data chunks come file by
// file at contiguous offsets, at most 1 MiB each; every file ends at its
// recorded size with its recorded SHA-256. Then model.pbtxt is written from
// the config (text format) and every file is fsync'ed. Any deviation is a
// DATA_LOSS / FAILED_PRECONDITION naming the file, offset or field, and the
// caller discards the directory (ModelStore::Install does). Not thread-safe.
#ifndef DUET_EDGE_EDGE_MODEL_FETCH_H_
#define DUET_EDGE_EDGE_MODEL_FETCH_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/format/sha256.h"
#include "duet/v1/scoring.pb.h"
#include "edge/cloud_client.h"
#include "edge/file_system.h"

namespace duet::edge {

inline constexpr int64_t kMaxEdgeModelChunkBytes = 1 << 20;

class EdgeModelFetch {
 public:
  // Bytes received so far and the total the config announces.
  using Progress = std::function<void(int64_t received, int64_t total)>;

  // Writes into `dir` (existing, empty). `want` (version, fingerprint; 0:
  // any) is what the request asked for.
  EdgeModelFetch(std::string dir, duet::v1::ModelTarget want,
                 Progress progress = nullptr);
  ~EdgeModelFetch();

  // Downloads `request` from `cloud` into `dir` and checks it; returns the
  // config. The cloud's errors keep their code, prefixed with what failed;
  // CANCELLED once `canceller` (may be null) is.
  static absl::StatusOr<duet::v1::ModelConfig> Download(
      CloudClient* cloud, const duet::v1::GetEdgeModelRequest& request,
      absl::Time deadline, const std::string& dir, Progress progress = nullptr,
      CallCanceller* canceller = nullptr);

  absl::Status Receive(const duet::v1::EdgeModelChunk& chunk);
  // After the last chunk: every file complete and checked, model.pbtxt
  // written, all synced.
  absl::Status Finish();

  const duet::v1::ModelConfig& config() const { return config_; }
  int64_t received_bytes() const { return received_; }

 private:
  struct File {
    std::string name;
    int64_t size = 0;
    std::string sha256;
    int64_t written = 0;
    common::Sha256 hash;
    std::unique_ptr<AppendableFile> out;
  };
  absl::Status Start(const duet::v1::EdgeModelChunk& chunk);
  // Closes the current file: complete, checksum as recorded, synced.
  absl::Status Close(File& file);

  const std::string dir_;
  const duet::v1::ModelTarget want_;
  const Progress progress_;
  bool started_ = false;
  duet::v1::ModelConfig config_;
  std::vector<std::unique_ptr<File>> files_;
  size_t current_ = 0;  // index into files_ of the file being received
  int64_t received_ = 0, total_ = 0;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_EDGE_MODEL_FETCH_H_
