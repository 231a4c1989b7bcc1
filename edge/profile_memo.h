// The memoization register of the Duet paper (§5.1): the static bottom MLP
// output z_s = StaticBottomMLP(s) for the current profile s. A profile change
// recomputes z_s in the background (on the executor given at construction)
// and publishes it by swapping an immutable snapshot, so a query reads
// either the old or the new z_s in full and never waits for a recompute.
// Thread-safe. The destructor waits for its scheduled recomputes.
#ifndef DUET_EDGE_PROFILE_MEMO_H_
#define DUET_EDGE_PROFILE_MEMO_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/base/mutex.h"
#include "common/kernels/mlp.h"

namespace duet::edge {

class ProfileMemo {
 public:
  // Runs a task later, on some other thread (a shared background pool).
  using Executor = std::function<void(std::function<void()>)>;

  // One published value: z_s for profile version `version`. Immutable.
  struct Value {
    uint64_t version = 0;
    std::vector<float> z_s;
  };

  struct Options {
    const common::Fp32Mlp* static_bottom = nullptr;  // nullptr: identity
    int static_in = 0;
    int static_out = 0;
    Executor executor;  // required for RecomputeInBackground
    // Called after each background recompute with its duration.
    std::function<void(absl::Duration)> on_recompute;
  };

  explicit ProfileMemo(Options options);
  ~ProfileMemo();
  ProfileMemo(const ProfileMemo&) = delete;
  ProfileMemo& operator=(const ProfileMemo&) = delete;

  // Computes and publishes z_s for profile `s` now (start-up, log replay).
  absl::Status ComputeNow(absl::Span<const float> s, uint64_t version);
  // Publishes a persisted z_s. INVALID_ARGUMENT on a wrong width.
  absl::Status Restore(uint64_t version, std::vector<float> z_s);
  // Schedules z_s = StaticBottomMLP(s) and returns at once. The result is
  // published unless a newer version was published first.
  void RecomputeInBackground(std::vector<float> s, uint64_t version);

  // The current value; a short critical section, never a recompute.
  std::shared_ptr<const Value> Current() const;
  uint64_t version() const { return Current()->version; }
  // Blocks until version() >= v or the timeout passes; true if reached.
  bool WaitForVersion(uint64_t v, absl::Duration timeout) const;
  // Background recomputes completed so far.
  int64_t recomputes() const;

 private:
  absl::StatusOr<std::vector<float>> Compute(absl::Span<const float> s) const;
  void Publish(std::shared_ptr<const Value> value);

  const Options options_;
  mutable common::Mutex mu_;
  std::shared_ptr<const Value> current_ ABSL_GUARDED_BY(mu_);
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t recomputes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace duet::edge

#endif  // DUET_EDGE_PROFILE_MEMO_H_
