#include "cloud/release_policy.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/text_format.h"

namespace duet::cloud {

int CanaryBucket(std::string_view device_id) {
  uint64_t h = 14695981039346656037ULL;
  for (const char c : device_id) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return static_cast<int>(h % 100);
}

absl::StatusOr<ReleasePolicy> ReleasePolicy::FromProto(
    duet::v1::ReleasePolicy p) {
  if (p.canary_percent() < 0 || p.canary_percent() > 100) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "canary_percent is %d, must be in [0, 100]", p.canary_percent()));
  }
  const bool canary = p.canary_percent() > 0 || p.canary_devices_size() > 0;
  if (canary && p.canary_version() == 0) {
    return absl::InvalidArgumentError(
        "canary_percent / canary_devices need canary_version");
  }
  for (int i = 0; i < p.canary_devices_size(); ++i) {
    if (p.canary_devices(i).empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("canary_devices[%d] is empty", i));
    }
  }
  return ReleasePolicy(std::move(p));
}

absl::StatusOr<ReleasePolicy> ReleasePolicy::ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  std::ostringstream text;
  text << in.rdbuf();
  duet::v1::ReleasePolicy p;
  if (!google::protobuf::TextFormat::ParseFromString(text.str(), &p)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a duet.v1.ReleasePolicy in text format"));
  }
  absl::StatusOr<ReleasePolicy> policy = FromProto(std::move(p));
  if (!policy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", policy.status().message()));
  }
  return policy;
}

bool ReleasePolicy::InCanary(std::string_view device_id) const {
  if (proto_.canary_version() == 0) return false;
  for (const std::string& d : proto_.canary_devices()) {
    if (d == device_id) return true;
  }
  return !device_id.empty() &&
         CanaryBucket(device_id) < proto_.canary_percent();
}

std::optional<duet::v1::ModelTarget> ReleasePolicy::TargetFor(
    std::string_view device_id, const ServedModels& served) const {
  const uint32_t version =
      InCanary(device_id) ? proto_.canary_version() : proto_.target_version();
  absl::StatusOr<std::shared_ptr<ModelRuntime>> rt = served.Find(version, 0);
  if (!rt.ok()) return std::nullopt;
  duet::v1::ModelTarget target;
  target.set_version((*rt)->model().config().version());
  target.set_fingerprint((*rt)->model().fingerprint());
  return target;
}

std::vector<uint32_t> ReleasePolicy::Pinned() const {
  std::vector<uint32_t> v;
  if (proto_.target_version() != 0) v.push_back(proto_.target_version());
  if (proto_.canary_version() != 0) v.push_back(proto_.canary_version());
  return v;
}

std::string ReleasePolicy::Describe() const {
  std::string s =
      proto_.target_version() == 0
          ? std::string("every device: the newest served version")
          : absl::StrCat("every device: v", proto_.target_version());
  if (proto_.canary_version() != 0) {
    absl::StrAppend(&s, "; canary v", proto_.canary_version(), ": ",
                    proto_.canary_percent(), "% of devices");
    if (proto_.canary_devices_size() > 0) {
      absl::StrAppend(&s, " and ",
                      absl::StrJoin(proto_.canary_devices(), ", "));
    }
  }
  return s;
}

}  // namespace duet::cloud
