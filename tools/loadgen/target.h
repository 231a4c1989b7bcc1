// What the load driver talks to: one implementation per --target (edge,
// fleet, monolithic, score). A Target owns its gRPC channels and its
// simulated users' state; Query and Interact are called from many driver
// threads at once and must be thread-safe. Failures are reported as a
// status code in the result, never thrown.
#ifndef DUET_TOOLS_LOADGEN_TARGET_H_
#define DUET_TOOLS_LOADGEN_TARGET_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tools/loadgen/sampler.h"
#include "tools/loadgen/summary.h"

namespace duet::loadgen {

struct QuerySpec {
  int user = 0;  // simulated user / device in [0, devices)
  std::vector<int64_t> candidates;
  int top_k = 1;
  absl::Duration deadline = absl::Seconds(1);
};

struct QueryResult {
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;         // for errors
  int64_t bytes_up = 0;        // serialized request payloads
  int64_t bytes_down = 0;      // serialized response payloads
  std::vector<int64_t> items;  // returned item ids, best first
  double edge_joules = 0;      // device CPU energy (fleet: phone profile)
};

class Target {
 public:
  virtual ~Target() = default;
  virtual QueryResult Query(const QuerySpec& query, Rng& rng) = 0;
  // `user` interacts with `item` (one it was shown): RecordInteraction on
  // the edge, a scratchpad push in fleet mode, a history append for the
  // monolithic user. The score target has no user state: a no-op.
  virtual absl::Status Interact(int user, int64_t item,
                                absl::Duration deadline) = 0;
  // Model versions the simulated devices switched to during the run (the
  // fleet follows the cloud's announced targets); unset for the others.
  virtual std::optional<ModelSwitches> model_switches() const {
    return std::nullopt;
  }
};

}  // namespace duet::loadgen

#endif  // DUET_TOOLS_LOADGEN_TARGET_H_
