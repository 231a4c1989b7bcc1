// ServedModels: the model versions duet-cloud serves side by side during a
// release (DESIGN §3 "Releases"; TF Serving's version policy and Triton's
// version_policy are the anchors). Each served version is a ModelRuntime
// with its edge part (for GetEdgeModel) and its use: queries routed to it
// and when the last one was.
//  * Route() picks the runtime a query names by version (0: the newest) and
//    fingerprint (0: any), counting the use; a version not served is
//    FAILED_PRECONDITION naming the ones that are.
//  * Add() puts a new runtime beside the others (the same signature twice
//    replaces nothing: the caller checks Contains first).
//  * Apply() enforces the version policy: versions outside it (the latest
//    `keep_latest` by version number, or an explicit list, plus pinned
//    ones, e.g. the release policy's targets) turn RETIRING and are retired
//    (dropped; queries that hold them finish) once no query has used them
//    for `grace`. The newest version is never retired.
// Thread-safe.
#ifndef DUET_CLOUD_SERVED_MODELS_H_
#define DUET_CLOUD_SERVED_MODELS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cloud/edge_part.h"
#include "cloud/model_runtime.h"
#include "common/base/mutex.h"
#include "prometheus/counter.h"

namespace duet::cloud {

struct VersionPolicy {
  int keep_latest = 2;             // ignored when `versions` is set
  std::vector<uint32_t> versions;  // an explicit list
  absl::Duration grace = absl::Seconds(60);
};

class ServedModels {
 public:
  enum class State { kAvailable, kRetiring };
  // One served version, as GetModelStatus and the metrics report it.
  struct Info {
    uint32_t version = 0;
    std::string signature;
    State state = State::kAvailable;
    int64_t queries = 0;
    absl::Time loaded;
    absl::Time last_used;  // `loaded` until a query used it
    int64_t edge_bytes = 0;
  };
  // A version retired by Apply.
  struct Retired {
    uint32_t version = 0;
    std::string signature;
    int64_t queries = 0;
  };

  explicit ServedModels(VersionPolicy policy) : policy_(std::move(policy)) {}

  // `edge` may be null when the edge part could not be read (GetEdgeModel
  // then fails with `edge_error`); `queries` counts the version's queries in
  // the metrics (may be null).
  void Add(std::shared_ptr<ModelRuntime> rt,
           std::shared_ptr<const EdgePart> edge, absl::Status edge_error,
           prometheus::Counter* queries, absl::Time now);
  bool Contains(const std::string& signature) const;

  // The newest version (highest number; the latest loaded among equals).
  std::shared_ptr<ModelRuntime> Newest() const;
  // See the header comment. Counts a query for the runtime returned.
  absl::StatusOr<std::shared_ptr<ModelRuntime>> Route(uint32_t version,
                                                      uint64_t fingerprint,
                                                      absl::Time now) const;
  // The same without counting (validation before a query is admitted).
  absl::StatusOr<std::shared_ptr<ModelRuntime>> Find(
      uint32_t version, uint64_t fingerprint) const;
  // The edge part of a served version (version 0: the newest).
  absl::StatusOr<std::shared_ptr<const EdgePart>> EdgePartOf(
      uint32_t version, uint64_t fingerprint) const;
  bool Serves(uint32_t version) const;

  // Enforces the policy at `now`, keeping `pinned` versions; returns what
  // it retired.
  std::vector<Retired> Apply(absl::Time now,
                             const std::vector<uint32_t>& pinned);

  std::vector<Info> List() const;  // newest first
  // "rm2 v2 (signature 1a2b...), rm2 v1 (...)", for logs and errors.
  std::string Describe() const;
  const VersionPolicy& policy() const { return policy_; }

 private:
  struct Entry {
    std::shared_ptr<ModelRuntime> rt;
    std::shared_ptr<const EdgePart> edge;
    absl::Status edge_error;
    prometheus::Counter* queries_counter = nullptr;
    absl::Time loaded;
    uint64_t seq = 0;  // load order
    State state = State::kAvailable;
    absl::Time retiring_since;
    mutable std::atomic<int64_t> queries{0};
    mutable std::atomic<int64_t> last_used_ns{0};
    uint32_t version() const { return rt->model().config().version(); }
  };
  const Entry* FindLocked(uint32_t version, uint64_t fingerprint) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status NotServedLocked(uint32_t version, uint64_t fingerprint) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::string DescribeLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  static absl::Time LastUsed(const Entry& e);

  const VersionPolicy policy_;
  mutable common::Mutex mu_;
  // Newest first: version descending, then load order descending.
  std::vector<std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

const char* ServedStateName(ServedModels::State s);

}  // namespace duet::cloud

#endif  // DUET_CLOUD_SERVED_MODELS_H_
