// The `fleet` target: K simulated devices in this process, each an
// edge::UserState (scratchpad, profile memo) behind the edge library's own
// Recommender — the request flow duet-edge runs: BeginQuery, the int8 user
// model, UserVector, await Scores, relay cache — on one or several shared
// GrpcCloudClient ScoringSession streams to duet-cloud. Scratchpads start
// full, with the rows of sampled items fetched from the cloud
// (GetItemEmbeddings) and the items' ids kept. Device d is "fleet-<d>" to
// the cloud's release policy and follows the version announced to it
// (tools/loadgen/fleet_release.h); model_switches() counts the switches.
#ifndef DUET_TOOLS_LOADGEN_FLEET_TARGET_H_
#define DUET_TOOLS_LOADGEN_FLEET_TARGET_H_

#include <memory>

#include "absl/status/statusor.h"
#include "common/model/model.h"
#include "tools/loadgen/grpc_targets.h"

namespace duet::loadgen {

// `model` (edge part loaded) must outlive the target. Fails with the
// cloud's status when it cannot be reached while filling the scratchpads.
absl::StatusOr<std::unique_ptr<Target>> CreateFleetTarget(
    const TargetOptions& options, const common::Model* model);

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_FLEET_TARGET_H_
