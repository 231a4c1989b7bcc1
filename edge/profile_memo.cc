#include "edge/profile_memo.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model.h"

namespace duet::edge {

ProfileMemo::ProfileMemo(Options options) : options_(std::move(options)) {
  auto initial = std::make_shared<Value>();
  initial->z_s.assign(options_.static_out, 0.0f);
  current_ = std::move(initial);
}

ProfileMemo::~ProfileMemo() {
  common::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* pending) { return *pending == 0; }, &pending_));
}

absl::StatusOr<std::vector<float>> ProfileMemo::Compute(
    absl::Span<const float> s) const {
  if (static_cast<int>(s.size()) != options_.static_in) {
    return absl::InvalidArgumentError(
        absl::StrFormat("static_features has %d values, the model expects %d",
                        s.size(), options_.static_in));
  }
  std::vector<float> z(options_.static_out);
  if (options_.static_out > 0) {
    RETURN_IF_ERROR(common::RunOrIdentity(options_.static_bottom, s.data(), 1,
                                          options_.static_in, z.data()));
  }
  return z;
}

void ProfileMemo::Publish(std::shared_ptr<const Value> value) {
  common::MutexLock lock(&mu_);
  // Background recomputes may finish out of order: never go back.
  if (value->version >= current_->version) current_ = std::move(value);
}

absl::Status ProfileMemo::ComputeNow(absl::Span<const float> s,
                                     uint64_t version) {
  ASSIGN_OR_RETURN(std::vector<float> z, Compute(s));
  auto value = std::make_shared<Value>();
  value->version = version;
  value->z_s = std::move(z);
  Publish(std::move(value));
  return absl::OkStatus();
}

absl::Status ProfileMemo::Restore(uint64_t version, std::vector<float> z_s) {
  if (static_cast<int>(z_s.size()) != options_.static_out) {
    return absl::InvalidArgumentError(
        absl::StrFormat("memoized z_s has %d values, the model expects %d",
                        z_s.size(), options_.static_out));
  }
  auto value = std::make_shared<Value>();
  value->version = version;
  value->z_s = std::move(z_s);
  common::MutexLock lock(&mu_);
  current_ = std::move(value);
  return absl::OkStatus();
}

void ProfileMemo::RecomputeInBackground(std::vector<float> s,
                                        uint64_t version) {
  {
    common::MutexLock lock(&mu_);
    ++pending_;
  }
  options_.executor([this, s = std::move(s), version] {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::vector<float>> z = Compute(s);
    const absl::Duration took = absl::Now() - start;
    if (z.ok()) {
      auto value = std::make_shared<Value>();
      value->version = version;
      value->z_s = *std::move(z);
      Publish(std::move(value));
      if (options_.on_recompute) options_.on_recompute(took);
    }
    common::MutexLock lock(&mu_);
    if (z.ok()) ++recomputes_;
    --pending_;
  });
}

std::shared_ptr<const ProfileMemo::Value> ProfileMemo::Current() const {
  common::MutexLock lock(&mu_);
  return current_;
}

bool ProfileMemo::WaitForVersion(uint64_t v, absl::Duration timeout) const {
  common::MutexLock lock(&mu_);
  struct Arg {
    const ProfileMemo* self;
    uint64_t v;
  } arg{this, v};
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                    return a->self->current_->version >= a->v;
                                  },
                                  &arg),
                              timeout);
}

int64_t ProfileMemo::recomputes() const {
  common::MutexLock lock(&mu_);
  return recomputes_;
}

}  // namespace duet::edge
