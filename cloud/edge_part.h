// EdgePart: the part of one model version an edge needs to run it — its
// config and the edge weight files (edge.safetensors and, when the config
// lists it, edge_int8.safetensors) — held in memory by the cloud for as
// long as it serves the version, so GetEdgeModel can stream it even after a
// release replaced the files on disk (a single-directory deployment).
#ifndef DUET_CLOUD_EDGE_PART_H_
#define DUET_CLOUD_EDGE_PART_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "duet/v1/model.pb.h"

namespace duet::cloud {

struct EdgePart {
  struct File {
    std::string name;
    std::string bytes;
  };
  duet::v1::ModelConfig config;
  std::vector<File> files;  // in the order GetEdgeModel streams them
  int64_t bytes() const;
};

// Reads the edge files of `config` from `dir` and checks each against its
// size and SHA-256 in config.files: FAILED_PRECONDITION naming the file when
// it is not listed or changed on disk since the model was written (a newer
// release is being written over it), NOT_FOUND when it is missing.
absl::StatusOr<EdgePart> ReadEdgePart(const std::string& dir,
                                      const duet::v1::ModelConfig& config);

// The names of the edge files of `config`, in streaming order.
std::vector<std::string> EdgeFileNames(const duet::v1::ModelConfig& config);

}  // namespace duet::cloud

#endif  // DUET_CLOUD_EDGE_PART_H_
