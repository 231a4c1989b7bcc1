// One user's on-device state: the scratchpad (history rows, trackers, pooled
// sums), the profile s with its version, the memoized z_s and the interaction
// counter. One process can hold many (the load generator's fleet mode).
// Thread-safe: queries take a shared lock, interactions an exclusive one; a
// profile change only swaps the memo in the background.
#ifndef DUET_EDGE_USER_STATE_H_
#define DUET_EDGE_USER_STATE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/base/mutex.h"
#include "common/model/model.h"
#include "duet/v1/scoring.pb.h"
#include "edge/profile_memo.h"
#include "edge/scratchpad.h"
#include "edge/user_model.h"

namespace duet::edge {

// An entry of the history whose item id is not known: rows restored from a
// format-1 snapshot, which kept rows only, or pushed by a caller that has no
// id (the load generator's fleet mode).
inline constexpr int64_t kUnknownItem = -1;

// Everything a UserState persists (StateStore's snapshot payload).
struct UserStateData {
  struct Table {
    int tracker = 0;
    int filled = 0;
    std::vector<float> slots;  // history_length * d, slot order
  };
  uint64_t interactions_total = 0;
  uint64_t profile_version = 0;
  std::vector<float> profile;  // s
  uint64_t memo_version = 0;
  std::vector<float> memo;  // z_s for memo_version
  std::vector<Table> tables;
  // The items behind the scratchpad, oldest first: the last
  // max(history_length) interactions (kUnknownItem where the id is lost).
  // The durable history; the table rows are a cache of its rows.
  std::vector<int64_t> history_items;
  // Client ids of the last kRecentInteractionIds interactions that had one,
  // oldest first, with the interactions_total their interaction made.
  struct RecentId {
    std::string id;
    uint64_t sequence = 0;
  };
  std::vector<RecentId> recent_ids;
};

// How many client interaction ids a state remembers (RecordInteraction
// retries are deduplicated among them).
inline constexpr int kRecentInteractionIds = 1024;

// What GetState reports about one user.
struct UserStateInfo {
  struct Table {
    std::string name;
    int history_length = 0;
    int filled = 0;
    int tracker = 0;
  };
  std::vector<Table> tables;
  uint64_t interactions_total = 0;
  uint64_t profile_version = 0;
  uint64_t memo_version = 0;
  int history_items = 0;  // item ids behind the scratchpad
};

class UserState {
 public:
  struct Options {
    ProfileMemo::Executor executor;  // runs background memo recomputes
    std::function<void(absl::Duration)> on_memo_recompute;
    int refresh_every = 0;  // Scratchpad::Options::refresh_every
  };

  // The initial profile is all zeros (version 0) with its z_s computed now.
  static absl::StatusOr<std::unique_ptr<UserState>> Create(
      const common::Model* model, Options options);

  // INVALID_ARGUMENT naming the field for a wrong size or a NaN/Inf.
  absl::Status ValidateInteractionRows(absl::Span<const float> rows) const;
  absl::Status ValidateProfile(absl::Span<const float> s) const;
  // FAILED_PRECONDITION naming both models unless `fetched` holds rows of
  // this state's model (GetItemEmbeddingsResponse's version and
  // fingerprint). A response that does not report its model (a cloud older
  // than those fields) passes only when `allow_unreported`.
  absl::Status CheckRowsModel(
      const duet::v1::GetItemEmbeddingsResponse& fetched,
      bool allow_unreported) const;

  // Appends one interaction with `item_id` and its rows (T_u * d floats,
  // validated); returns the new interactions_total. A non-empty
  // `interaction_id` is remembered with it (FindInteraction).
  uint64_t PushInteraction(int64_t item_id, absl::Span<const float> rows,
                           absl::string_view interaction_id = {});
  // The interactions_total the interaction with client id `id` made, when it
  // is among the remembered ones.
  std::optional<uint64_t> FindInteraction(absl::string_view id) const;
  // The same for a caller that has no item id (kUnknownItem).
  uint64_t PushInteraction(absl::Span<const float> rows) {
    return PushInteraction(kUnknownItem, rows);
  }
  // Replaces the scratchpad with the rows of history_items() (rows[i] for
  // item i, T_u * d floats each, validated): table t then holds the last
  // history_length[t] of them. The rebuild after a model change.
  absl::Status RebuildScratchpad(const std::vector<std::vector<float>>& rows);
  // The last max(history_length) item ids, oldest first.
  std::vector<int64_t> history_items() const;
  // max(history_length): how many item ids the state keeps.
  int history_capacity() const { return history_capacity_; }
  // Sets the profile (validated) and starts the memo recompute in the
  // background; returns the new profile version.
  uint64_t UpdateProfile(absl::Span<const float> s);
  // The same with a given version and a synchronous recompute (log replay).
  absl::Status ReplayProfile(absl::Span<const float> s, uint64_t version);

  // Runs the user model on the current memo and pooled history with context
  // c (dims().dynamic_in floats, validated). Never waits for a recompute.
  absl::Status ComputeUserVector(const UserModel& model, const float* c,
                                 UserModel::Output* out) const;

  UserStateData Export() const;
  // Replaces the state; INVALID_ARGUMENT when it does not fit the model.
  absl::Status Import(const UserStateData& data);
  UserStateInfo Info() const;
  uint64_t profile_version() const;

  const ProfileMemo& memo() const { return *memo_; }
  const common::Model& model() const { return *model_; }

 private:
  UserState(const common::Model* model, Options options);
  void RememberLocked(std::string id, uint64_t sequence)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const common::Model* model_;
  const int history_capacity_;
  mutable common::Mutex mu_;
  Scratchpad scratchpad_ ABSL_GUARDED_BY(mu_);
  std::vector<float> profile_ ABSL_GUARDED_BY(mu_);
  uint64_t profile_version_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t interactions_total_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<int64_t> history_items_ ABSL_GUARDED_BY(mu_);
  std::deque<UserStateData::RecentId> recent_ids_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> recent_index_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ProfileMemo> memo_;
};

// Checks values are finite: INVALID_ARGUMENT "<field>[i] is nan, ..." else.
absl::Status CheckFinite(absl::Span<const float> v, const char* field);

}  // namespace duet::edge

#endif  // DUET_EDGE_USER_STATE_H_
