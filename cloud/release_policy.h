// ReleasePolicy: which model version each device should run (DESIGN §3
// "Releases"), from `release.pbtxt` (duet.v1.ReleasePolicy in text format).
// Without a policy every device's target is the newest served version. A
// staged release names a canary version for a percentage of devices (by a
// hash of their device id) and/or a list of devices; everyone else gets
// target_version. A named version that is not served is announced to nobody
// (devices keep their version) until it is.
// Immutable; the watcher swaps a new one in when the file changes.
#ifndef DUET_CLOUD_RELEASE_POLICY_H_
#define DUET_CLOUD_RELEASE_POLICY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cloud/served_models.h"
#include "duet/v1/model.pb.h"
#include "duet/v1/scoring.pb.h"

namespace duet::cloud {

inline constexpr char kReleasePolicyFile[] = "release.pbtxt";

class ReleasePolicy {
 public:
  ReleasePolicy() = default;  // no policy: the newest for everyone
  // INVALID_ARGUMENT naming the field for a percent outside [0, 100], a
  // canary without canary_version, or an empty device id.
  static absl::StatusOr<ReleasePolicy> FromProto(duet::v1::ReleasePolicy p);
  // NOT_FOUND when the file does not exist; INVALID_ARGUMENT naming the
  // file when it does not parse or validate.
  static absl::StatusOr<ReleasePolicy> ReadFile(const std::string& path);

  // True when `device_id` is in the canary.
  bool InCanary(std::string_view device_id) const;
  // The version `device_id` should run, of those `served` serves; nullopt
  // when the policy names a version that is not served.
  std::optional<duet::v1::ModelTarget> TargetFor(
      std::string_view device_id, const ServedModels& served) const;
  // The versions the policy names (never retired while named).
  std::vector<uint32_t> Pinned() const;
  // In words, for logs and GetModelStatus.
  std::string Describe() const;
  const duet::v1::ReleasePolicy& proto() const { return proto_; }

 private:
  explicit ReleasePolicy(duet::v1::ReleasePolicy p) : proto_(std::move(p)) {}
  duet::v1::ReleasePolicy proto_;
};

// FNV-1a 64 of `device_id` mod 100: the device's canary bucket.
int CanaryBucket(std::string_view device_id);

}  // namespace duet::cloud

#endif  // DUET_CLOUD_RELEASE_POLICY_H_
