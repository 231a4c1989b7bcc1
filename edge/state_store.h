// Crash-safe persistence of one UserState in a directory (--state_dir):
//  - `interactions.log`: append-only records (interaction: item id + rows;
//    profile: version + s), each with a CRC-32C, fdatasync'ed before
//    Append* returns, so whatever the caller acknowledges afterwards survives
//    kill -9 and power loss; its header names the model signature;
//  - `snapshot.bin`: the whole state under one CRC-32C, written atomically
//    (tmp + fsync + rename + directory fsync) by Compact, after which the log
//    restarts empty. Format 3: signature, label, model name, sequence,
//    counters, profile, memo, per table (tracker, filled, rows), the
//    history item ids (the last max(history_length), oldest first) and the
//    last kRecentInteractionIds client interaction ids with their sequence
//    (RecordInteraction's deduplication). Format 2 (no client ids) and 1
//    (no name, no item ids) still load: its rows are kept and its items
//    count as unknown (kUnknownItem) until they roll out of the history.
// The durable history is the item ids; rows and memo are caches valid for
// one model signature. Open loads the snapshot and replays the log records
// newer than it. A state of another signature of the same model name is
// migrated: item ids, counters and profile (dropped, and reported, when the
// static width changed) are kept, the scratchpad is left empty and
// needs_rebuild() is true: the caller fetches the items' rows at this model,
// UserState::RebuildScratchpad, then Compact, which writes the state under
// this signature; nothing on disk changes before that, and Append* fail
// with UNAVAILABLE meanwhile. Refused: FAILED_PRECONDITION, naming the file
// and why, for another model name, an item id outside this catalog, or a
// history whose needed ids are unknown (a format-1 snapshot); DATA_LOSS for
// a corrupt file. The daemon then refuses to start unless reset is set
// (nothing is ever discarded silently). The one repair Open makes on its
// own is cutting a torn final log record: records are appended and synced
// one at a time and acknowledged only after their sync, so only the last
// record can be incomplete, and its caller never got an OK.
// Not thread-safe: the caller serializes Append*/Compact.
#ifndef DUET_EDGE_STATE_STORE_H_
#define DUET_EDGE_STATE_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/model/model.h"
#include "edge/file_system.h"
#include "edge/user_state.h"

namespace duet::edge {

inline constexpr char kSnapshotFile[] = "snapshot.bin";
inline constexpr char kLogFile[] = "interactions.log";

class StateStore {
 public:
  struct Options {
    std::string dir;
    // Discard whatever the directory holds and start from an empty state.
    bool reset = false;
    // Compact after this many log records (ShouldCompact); >= 1.
    int snapshot_every = 1000;
    FileSystem* fs = nullptr;  // nullptr: PosixFileSystem()
  };

  // Loads the persisted state of `model` into `state` (which must be fresh)
  // and opens the log for appending. See the header comment for errors.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(
      const Options& options, const common::Model& model, UserState* state);
  ~StateStore();

  // True after Open migrated a state of another model signature, until
  // Compact persists the rebuilt state.
  bool needs_rebuild() const { return needs_rebuild_; }

  // Durably logs an interaction with `item_id` appending `rows`, and the
  // client's `interaction_id` when not empty.
  absl::Status AppendInteraction(int64_t item_id, absl::Span<const float> rows,
                                 absl::string_view interaction_id = {});
  // Durably logs `batch` in order with one write and one sync (group
  // commit): on OK every record is durable; on error none is acknowledged
  // (a partly written tail is a torn record to the next Open).
  struct Interaction {
    int64_t item_id = 0;
    absl::Span<const float> rows;
    absl::string_view interaction_id;
  };
  absl::Status AppendInteractions(absl::Span<const Interaction> batch);
  // Durably logs profile `version` = s.
  absl::Status AppendProfile(uint64_t version, absl::Span<const float> s);

  bool ShouldCompact() const {
    return records_in_log_ >= options_.snapshot_every;
  }
  // Writes `data` (the state after every record appended so far) as the new
  // snapshot and starts an empty log.
  absl::Status Compact(const UserStateData& data);

  // What Open did, for the start-up log line.
  const std::string& recovery_report() const { return recovery_report_; }
  uint64_t last_sequence() const { return sequence_; }
  int64_t records_in_log() const { return records_in_log_; }

 private:
  struct Snapshot;
  struct LogRecord;
  struct Log;

  StateStore(const Options& options, const common::Model& model);
  absl::Status Load(UserState* state);
  absl::StatusOr<Snapshot> ReadSnapshot();
  // Empty when the log's header is torn (no record was ever acknowledged).
  absl::StatusOr<std::optional<Log>> ReadLog();
  absl::Status ImportSnapshot(const Snapshot& snapshot, UserState* state);
  absl::Status Replay(const Log& log, uint64_t after_sequence,
                      UserState* state);
  absl::Status Migrate(const Snapshot* snapshot, const Log* log,
                       UserState* state);
  absl::Status StartLog(bool fresh);
  absl::Status AppendRecord(const std::string& payload);
  // Appends the framed records and syncs once; counts them.
  absl::Status AppendFramed(const std::string& records, int count);
  static std::string Frame(const std::string& payload);
  std::string InteractionPayload(uint64_t sequence, const Interaction& i) const;
  std::string Path(const char* name) const;
  std::string LogHeader() const;

  const Options options_;
  FileSystem* const fs_;
  const common::Model& model_;
  std::unique_ptr<AppendableFile> log_;
  uint64_t sequence_ = 0;  // of the last record written or replayed
  int64_t records_in_log_ = 0;
  std::string recovery_report_;
  bool needs_rebuild_ = false;
};

// The bytes of snapshot.bin in `format` (2, or 1 as duet-edge wrote it
// before item ids were kept: tests of the migration).
std::string EncodeSnapshot(const duet::v1::ModelConfig& config,
                           uint64_t sequence, const UserStateData& data,
                           uint32_t format);

}  // namespace duet::edge

#endif  // DUET_EDGE_STATE_STORE_H_
