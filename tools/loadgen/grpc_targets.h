// The targets that need only the model config: `edge` (Recommend and
// RecordInteraction on a duet-edge), `monolithic` (MonolithicScore on
// duet-cloud with each simulated user's raw inputs) and `score` (unary Score
// with a synthetic int8 user vector). Also the channel helper shared with
// the fleet target.
#ifndef DUET_TOOLS_LOADGEN_GRPC_TARGETS_H_
#define DUET_TOOLS_LOADGEN_GRPC_TARGETS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/rpc/tls.h"
#include "duet/v1/model.pb.h"
#include "duet/v1/scoring.pb.h"
#include "grpcpp/grpcpp.h"
#include "tools/loadgen/sampler.h"
#include "tools/loadgen/target.h"

namespace duet::loadgen {

struct TargetOptions {
  std::string addr;              // gRPC target
  common::ClientTlsOptions tls;  // --tls_*; empty: plaintext
  int channels = 1;   // separate HTTP/2 connections, users spread over them
  int devices = 1;    // simulated users
  int relay_top = 0;  // embedding relay requested per query (fleet)
  int streams = 1;    // ScoringSession streams (fleet)
  uint64_t seed = 1;
  double zipf = 0;  // popularity of history items
  duet::v1::ModelConfig config;
};

// `count` channels to `addr`, each on its own connection; TLS errors of
// common::MakeChannelCredentials.
using Channels = std::vector<std::shared_ptr<grpc::Channel>>;
absl::StatusOr<Channels> MakeChannels(const std::string& addr, int count,
                                      const common::ClientTlsOptions& tls);

// A gRPC status as the absl code it maps onto one-to-one.
inline absl::StatusCode CodeOf(const grpc::Status& s) {
  return static_cast<absl::StatusCode>(s.error_code());
}

// A synthetic int8 user vector that the cloud accepts for `config`.
duet::v1::UserVector SyntheticUserVector(const duet::v1::ModelConfig& config,
                                         Rng& rng);
// The bytes h2load sends for one unary Score call: the gRPC length prefix
// (1 byte flag 0, 4 bytes big-endian length) and the serialized request.
std::string GrpcFrame(const google::protobuf::Message& message);

absl::StatusOr<std::unique_ptr<Target>> CreateEdgeTarget(
    const TargetOptions& options);
absl::StatusOr<std::unique_ptr<Target>> CreateMonolithicTarget(
    const TargetOptions& options);
absl::StatusOr<std::unique_ptr<Target>> CreateScoreTarget(
    const TargetOptions& options);

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_GRPC_TARGETS_H_
