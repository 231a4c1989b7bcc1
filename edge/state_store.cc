#include "edge/state_store.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"
#include "edge/internal/binary_io.h"
#include "edge/internal/crc32c.h"

namespace duet::edge {
namespace {

using internal::BinaryReader;
using internal::BinaryWriter;
using internal::Crc32c;

constexpr char kSnapshotMagic[8] = {'D', 'U', 'E', 'T', 'S', 'N', 'A', 'P'};
constexpr char kLogMagic[8] = {'D', 'U', 'E', 'T', 'L', 'O', 'G', '1'};
// Snapshot formats: 1 kept rows only; 2 adds the model name and the history
// item ids; 3 the recent client interaction ids. Logs are format 1 (their
// records always carried item ids; record type 3 adds a client id).
constexpr uint32_t kFormatV1 = 1;
constexpr uint32_t kSnapshotFormat = 3;
constexpr uint32_t kLogFormat = 1;
constexpr uint8_t kInteractionRecord = 1;
constexpr uint8_t kProfileRecord = 2;
constexpr uint8_t kIdentifiedInteractionRecord = 3;  // + client id
// magic + format version + payload length + payload crc
constexpr size_t kSnapshotHeaderBytes = 8 + 4 + 8 + 4;
constexpr size_t kRecordHeaderBytes = 4 + 4 + 4;  // length, ~length, crc
// Bounds a record so a corrupt length cannot make us allocate gigabytes.
constexpr uint32_t kMaxRecordBytes = 64 << 20;

constexpr char kResetHint[] =
    "; start with --reset_state to discard the stored state";

// The model name in a format-1 snapshot's label ("<name> v<version> (...)").
std::string NameFromLabel(const std::string& label) {
  const size_t v = label.rfind(" v", label.find(" (signature"));
  return v == std::string::npos ? "" : label.substr(0, v);
}

}  // namespace

// A snapshot as stored, before it is checked against the loaded model.
struct StateStore::Snapshot {
  uint32_t format = 0;
  std::string signature, label, name;
  uint64_t sequence = 0;
  UserStateData data;  // tables and memo in the writer's model's widths
};

// A log as stored: its model signature and its intact records in order.
struct StateStore::LogRecord {
  uint8_t type = 0;
  uint64_t sequence = 0;
  int64_t item = 0;           // interaction
  std::string id;             // interaction: the client's id, if any
  uint64_t version = 0;       // profile
  std::vector<float> floats;  // interaction rows or profile s
  size_t offset = 0;
};
struct StateStore::Log {
  std::string signature;
  std::vector<LogRecord> records;
};

StateStore::StateStore(const Options& options, const common::Model& model)
    : options_(options),
      fs_(options.fs != nullptr ? options.fs : PosixFileSystem()),
      model_(model) {}

StateStore::~StateStore() = default;

std::string StateStore::Path(const char* name) const {
  return absl::StrCat(options_.dir, "/", name);
}

std::string StateStore::LogHeader() const {
  std::string header(kLogMagic, sizeof(kLogMagic));
  BinaryWriter w(&header);
  w.Put<uint32_t>(kLogFormat);
  w.PutString(model_.config().signature());
  w.Put<uint32_t>(Crc32c(header));
  return header;
}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(
    const Options& options, const common::Model& model, UserState* state) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError("state_dir is empty");
  }
  if (options.snapshot_every < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "snapshot_every is %d, must be >= 1", options.snapshot_every));
  }
  std::unique_ptr<StateStore> store(new StateStore(options, model));
  RETURN_IF_ERROR(store->fs_->CreateDirs(options.dir));
  if (options.reset) {
    RETURN_IF_ERROR(store->fs_->Remove(store->Path(kSnapshotFile)));
    RETURN_IF_ERROR(store->fs_->Remove(store->Path(kLogFile)));
    RETURN_IF_ERROR(store->fs_->SyncDir(options.dir));
    store->recovery_report_ = "state reset: starting empty; ";
  }
  RETURN_IF_ERROR(store->Load(state));
  return store;
}

absl::Status StateStore::Load(UserState* state) {
  std::optional<Snapshot> snapshot;
  if (fs_->Exists(Path(kSnapshotFile))) {
    ASSIGN_OR_RETURN(snapshot, ReadSnapshot());
    absl::StrAppend(&recovery_report_, "loaded snapshot at sequence ",
                    snapshot->sequence, " (format ", snapshot->format, "); ");
  }
  std::optional<Log> log;
  if (fs_->Exists(Path(kLogFile))) {
    ASSIGN_OR_RETURN(log, ReadLog());
  }
  const std::string& current = model_.config().signature();
  const uint64_t after = snapshot ? snapshot->sequence : 0;
  sequence_ = after;
  // The model the stored state was written for.
  const std::string& stored = snapshot ? snapshot->signature
                              : log    ? log->signature
                                       : current;
  if (log && log->signature != stored) {
    // Compact writes the snapshot before it restarts the log, so a crash in
    // between leaves the previous model's log, all of whose records the
    // snapshot already holds.
    for (const LogRecord& r : log->records) {
      if (r.sequence > after) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "interaction log %s (model signature %s) holds record %d, newer "
            "than snapshot %s (model signature %s, sequence %d): the two "
            "files belong to different states%s",
            Path(kLogFile), log->signature, r.sequence, Path(kSnapshotFile),
            stored, after, kResetHint));
      }
    }
    absl::StrAppend(&recovery_report_, "replaced the log of model signature ",
                    log->signature, " left behind by a rebuild; ");
    log.reset();
  }
  if (stored != current) {
    RETURN_IF_ERROR(
        Migrate(snapshot ? &*snapshot : nullptr, log ? &*log : nullptr, state));
  } else {
    if (snapshot) RETURN_IF_ERROR(ImportSnapshot(*snapshot, state));
    if (log) {
      RETURN_IF_ERROR(Replay(*log, after, state));
      ASSIGN_OR_RETURN(log_, fs_->OpenAppendable(Path(kLogFile)));
    } else {
      RETURN_IF_ERROR(StartLog(/*fresh=*/true));
    }
  }
  const UserStateInfo info = state->Info();
  absl::StrAppend(&recovery_report_, "interactions_total ",
                  info.interactions_total, ", profile_version ",
                  info.profile_version, ", history items ",
                  state->history_items().size());
  return absl::OkStatus();
}

absl::StatusOr<StateStore::Snapshot> StateStore::ReadSnapshot() {
  const std::string path = Path(kSnapshotFile);
  ASSIGN_OR_RETURN(const std::string file, fs_->ReadFile(path));
  auto corrupt = [&path](const std::string& what) {
    return absl::DataLossError(absl::StrCat("state snapshot ", path,
                                            " is corrupt: ", what, kResetHint));
  };
  if (file.size() < kSnapshotHeaderBytes ||
      file.compare(0, sizeof(kSnapshotMagic), kSnapshotMagic,
                   sizeof(kSnapshotMagic)) != 0) {
    return corrupt("not a duet-edge snapshot (bad magic or too short)");
  }
  BinaryReader header(absl::string_view(file).substr(sizeof(kSnapshotMagic)));
  Snapshot s;
  uint32_t crc = 0;
  uint64_t length = 0;
  header.Get(&s.format);
  header.Get(&length);
  header.Get(&crc);
  if (s.format < kFormatV1 || s.format > kSnapshotFormat) {
    return corrupt(absl::StrFormat("format version %d, expected %d to %d",
                                   s.format, kFormatV1, kSnapshotFormat));
  }
  if (file.size() - kSnapshotHeaderBytes != length) {
    return corrupt(absl::StrFormat("payload is %d bytes, header says %d",
                                   file.size() - kSnapshotHeaderBytes, length));
  }
  const absl::string_view payload =
      absl::string_view(file).substr(kSnapshotHeaderBytes);
  const uint32_t actual = Crc32c(payload);
  if (actual != crc) {
    return corrupt(absl::StrFormat(
        "checksum mismatch (stored %08x, computed %08x)", crc, actual));
  }
  BinaryReader r(payload);
  UserStateData& data = s.data;
  uint32_t num_tables = 0;
  const uint64_t max_floats = kMaxRecordBytes;
  bool ok = r.GetString(&s.signature) && r.GetString(&s.label);
  if (ok && s.format >= 2) ok = r.GetString(&s.name);
  ok = ok && r.Get(&s.sequence) && r.Get(&data.interactions_total) &&
       r.Get(&data.profile_version) && r.GetFloats(&data.profile, max_floats) &&
       r.Get(&data.memo_version) && r.GetFloats(&data.memo, max_floats) &&
       r.Get(&num_tables) && num_tables < 4096;
  int filled = 0;
  for (uint32_t t = 0; ok && t < num_tables; ++t) {
    UserStateData::Table& table = data.tables.emplace_back();
    ok = r.Get(&table.tracker) && r.Get(&table.filled) &&
         r.GetFloats(&table.slots, max_floats);
    filled = std::max(filled, table.filled);
  }
  if (ok && s.format >= 2) {
    uint32_t n = 0;
    ok = r.Get(&n) && n <= kMaxRecordBytes / sizeof(int64_t);
    for (uint32_t i = 0; ok && i < n; ++i) {
      ok = r.Get(&data.history_items.emplace_back());
    }
    if (ok && s.format >= 3) {
      ok = r.Get(&n) && n <= kRecentInteractionIds;
      for (uint32_t i = 0; ok && i < n; ++i) {
        UserStateData::RecentId& id = data.recent_ids.emplace_back();
        ok = r.GetString(&id.id) && r.Get(&id.sequence);
      }
    }
  } else if (ok) {
    // Format 1 kept the rows but not the items behind them.
    s.name = NameFromLabel(s.label);
    data.history_items.assign(std::max(filled, 0), kUnknownItem);
  }
  if (!ok || r.remaining() != 0) {
    return corrupt("malformed payload despite a valid checksum");
  }
  return s;
}

absl::Status StateStore::ImportSnapshot(const Snapshot& snapshot,
                                        UserState* state) {
  const absl::Status imported = state->Import(snapshot.data);
  if (!imported.ok()) {
    return absl::DataLossError(
        absl::StrCat("state snapshot ", Path(kSnapshotFile),
                     " is corrupt: ", imported.message(), kResetHint));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<StateStore::Log>> StateStore::ReadLog() {
  const std::string path = Path(kLogFile);
  ASSIGN_OR_RETURN(const std::string file, fs_->ReadFile(path));
  Log log;
  if (file.size() >= sizeof(kLogMagic) &&
      file.compare(0, sizeof(kLogMagic), kLogMagic, sizeof(kLogMagic)) != 0) {
    return absl::DataLossError(absl::StrCat(
        "interaction log ", path, " is corrupt: bad magic", kResetHint));
  }
  BinaryReader h(
      absl::string_view(file).substr(std::min(file.size(), sizeof(kLogMagic))));
  uint32_t format = 0, crc = 0;
  if (!(file.size() >= sizeof(kLogMagic) && h.Get(&format) &&
        h.GetString(&log.signature) && h.Get(&crc))) {
    // The header is synced before the first record, so no record was ever
    // acknowledged from a log this short: it is recreated.
    absl::StrAppend(&recovery_report_, "recreated log with a torn header; ");
    return std::optional<Log>();
  }
  const size_t header_size = file.size() - h.remaining();
  if (format != kLogFormat ||
      Crc32c(absl::string_view(file).substr(0, header_size - 4)) != crc) {
    return absl::DataLossError(
        absl::StrCat("interaction log ", path,
                     " is corrupt: header checksum mismatch", kResetHint));
  }
  size_t offset = header_size;
  while (offset < file.size()) {
    const size_t left = file.size() - offset;
    BinaryReader r(absl::string_view(file).substr(offset));
    uint32_t length = 0, length_check = 0, record_crc = 0;
    const bool whole_header =
        r.Get(&length) && r.Get(&length_check) && r.Get(&record_crc);
    const bool length_ok =
        whole_header && length_check == ~length && length <= kMaxRecordBytes;
    const bool past_end = length_ok && left < kRecordHeaderBytes + length;
    const absl::string_view payload =
        length_ok && !past_end ? absl::string_view(file).substr(
                                     offset + kRecordHeaderBytes, length)
                               : absl::string_view();
    const bool ends_file =
        length_ok && !past_end && left == kRecordHeaderBytes + length;
    const bool crc_ok = length_ok && !past_end && Crc32c(payload) == record_crc;
    // A crash mid-append leaves a short header, a payload cut short, a
    // final record failing its checksum, or (on some filesystems) a
    // zero-filled tail.
    const bool torn = !whole_header || past_end || (ends_file && !crc_ok) ||
                      file.find_first_not_of('\0', offset) == std::string::npos;
    if (torn) {
      // Only the final record can be torn (see the header comment): it was
      // never acknowledged, so cutting it loses nothing a caller was told.
      RETURN_IF_ERROR(fs_->Truncate(path, offset));
      absl::StrAppend(&recovery_report_, "truncated a torn final log record (",
                      left, " bytes at offset ", offset, "); ");
      break;
    }
    if (!crc_ok) {
      return absl::DataLossError(absl::StrFormat(
          "interaction log %s is corrupt: record at offset %d fails its "
          "%s checksum and is not the last record%s",
          path, offset, length_ok ? "payload" : "length", kResetHint));
    }
    BinaryReader p(payload);
    LogRecord& rec = log.records.emplace_back();
    rec.offset = offset;
    bool ok = p.Get(&rec.type) && p.Get(&rec.sequence);
    if (ok && rec.type == kInteractionRecord) {
      ok = p.Get(&rec.item) && p.GetFloats(&rec.floats, kMaxRecordBytes);
    } else if (ok && rec.type == kIdentifiedInteractionRecord) {
      ok = p.Get(&rec.item) && p.GetString(&rec.id) &&
           p.GetFloats(&rec.floats, kMaxRecordBytes);
      rec.type = kInteractionRecord;
    } else if (ok && rec.type == kProfileRecord) {
      ok = p.Get(&rec.version) && p.GetFloats(&rec.floats, kMaxRecordBytes);
    } else {
      ok = false;
    }
    if (!ok || p.remaining() != 0) {
      return absl::DataLossError(absl::StrFormat(
          "interaction log %s is corrupt: record at offset %d is malformed%s",
          path, offset, kResetHint));
    }
    offset += kRecordHeaderBytes + length;
  }
  return std::optional<Log>(std::move(log));
}

absl::Status StateStore::Replay(const Log& log, uint64_t after_sequence,
                                UserState* state) {
  const std::string path = Path(kLogFile);
  int64_t replayed = 0;
  for (const LogRecord& r : log.records) {
    ++records_in_log_;
    if (r.sequence <= after_sequence) continue;
    absl::Status applied;
    if (r.sequence != sequence_ + 1) {
      applied = absl::DataLossError(
          absl::StrFormat("expected sequence %d", sequence_ + 1));
    } else if (r.type == kInteractionRecord) {
      applied = state->ValidateInteractionRows(r.floats);
      if (applied.ok()) state->PushInteraction(r.item, r.floats, r.id);
    } else {
      applied = state->ReplayProfile(r.floats, r.version);
    }
    if (!applied.ok()) {
      return absl::DataLossError(absl::StrFormat(
          "interaction log %s is corrupt: record at offset %d (sequence %d) "
          "is malformed: %s%s",
          path, r.offset, r.sequence, applied.message(), kResetHint));
    }
    sequence_ = r.sequence;
    ++replayed;
  }
  absl::StrAppend(&recovery_report_, "replayed ", replayed, " log records; ");
  return absl::OkStatus();
}

absl::Status StateStore::Migrate(const Snapshot* snapshot, const Log* log,
                                 UserState* state) {
  const duet::v1::ModelConfig& config = model_.config();
  const std::string file =
      snapshot != nullptr ? Path(kSnapshotFile) : Path(kLogFile);
  const std::string from =
      snapshot != nullptr
          ? absl::StrCat(snapshot->label.empty() ? snapshot->signature
                                                 : snapshot->label)
          : absl::StrCat("signature ", log->signature);
  auto refuse = [&](const std::string& why) {
    return absl::FailedPreconditionError(
        absl::StrCat(file, " holds the state of model ", from,
                     ", which cannot move to model ",
                     common::ModelLabel(config), ": ", why, kResetHint));
  };
  if (snapshot != nullptr && !snapshot->name.empty() &&
      snapshot->name != config.name()) {
    return refuse(absl::StrCat("a history of another model (", snapshot->name,
                               "), whose item ids mean other items"));
  }
  // Everything but rows and memo carries over: the items (the durable
  // history), the counters and the profile.
  UserStateData data;
  if (snapshot != nullptr) {
    data.interactions_total = snapshot->data.interactions_total;
    data.profile_version = snapshot->data.profile_version;
    data.profile = snapshot->data.profile;
    data.history_items = snapshot->data.history_items;
    data.recent_ids = snapshot->data.recent_ids;
  }
  std::vector<int64_t>& items = data.history_items;
  const uint64_t after = snapshot != nullptr ? snapshot->sequence : 0;
  if (log != nullptr) {
    for (const LogRecord& r : log->records) {
      ++records_in_log_;
      if (r.sequence <= after) continue;
      if (r.sequence != sequence_ + 1) {
        return absl::DataLossError(absl::StrFormat(
            "interaction log %s is corrupt: record at offset %d has sequence "
            "%d, expected %d%s",
            Path(kLogFile), r.offset, r.sequence, sequence_ + 1, kResetHint));
      }
      sequence_ = r.sequence;
      if (r.type == kInteractionRecord) {
        items.push_back(r.item);
        ++data.interactions_total;
        if (!r.id.empty()) {
          data.recent_ids.push_back({r.id, data.interactions_total});
        }
      } else {
        data.profile = r.floats;
        data.profile_version = r.version;
      }
    }
  }
  const int keep = std::min<int>(items.size(), state->history_capacity());
  items.erase(items.begin(), items.end() - keep);
  int unknown = 0;
  for (int64_t item : items) {
    if (item == kUnknownItem) {
      ++unknown;
    } else if (!model_.catalog().Contains(item)) {
      return refuse(absl::StrFormat(
          "history item %d is not in its catalog (item ids [0, %d))", item,
          model_.catalog().num_items()));
    }
  }
  if (unknown > 0) {
    return refuse(absl::StrFormat(
        "the new model needs the ids of the last %d items, and %d of them "
        "are not known (snapshot format 1 kept their rows only; the %d "
        "interactions logged since it have ids). Run the edge on the old "
        "model until %d more interactions are recorded (every snapshot it "
        "writes keeps item ids), then switch",
        keep, unknown, keep - unknown, unknown));
  }
  if (static_cast<int>(data.profile.size()) != model_.dims().static_in) {
    absl::StrAppend(&recovery_report_, "dropped the profile (",
                    data.profile.size(), " static features, the new model has ",
                    model_.dims().static_in, "); ");
    data.profile.assign(model_.dims().static_in, 0.0f);
    data.profile_version = 0;
  }
  // Rows and memo of the old model are useless: an empty scratchpad (rebuilt
  // from the items' rows at this model) and z_s recomputed by Import.
  const UserStateData fresh = state->Export();
  data.tables = fresh.tables;
  data.memo_version = 0;
  data.memo = fresh.memo;
  const size_t kept = items.size();
  RETURN_IF_ERROR(state->Import(data));
  needs_rebuild_ = true;
  absl::StrAppend(&recovery_report_, "migrating from model ", from, ": kept ",
                  kept,
                  " history item ids, scratchpad to be rebuilt from the "
                  "cloud; ");
  return absl::OkStatus();
}

absl::Status StateStore::StartLog(bool fresh) {
  const std::string path = Path(kLogFile);
  if (fresh) RETURN_IF_ERROR(fs_->WriteFileAtomically(path, LogHeader()));
  ASSIGN_OR_RETURN(log_, fs_->OpenAppendable(path));
  records_in_log_ = 0;
  return absl::OkStatus();
}

std::string StateStore::Frame(const std::string& payload) {
  std::string record;
  BinaryWriter w(&record);
  w.Put<uint32_t>(static_cast<uint32_t>(payload.size()));
  w.Put<uint32_t>(~static_cast<uint32_t>(payload.size()));
  w.Put<uint32_t>(Crc32c(payload));
  record += payload;
  return record;
}

absl::Status StateStore::AppendFramed(const std::string& records, int count) {
  if (log_ == nullptr) {
    return absl::UnavailableError(
        "the state is being rebuilt for a new model; nothing is written "
        "until the rebuild finishes");
  }
  RETURN_IF_ERROR(log_->Append(records));
  RETURN_IF_ERROR(log_->Sync());
  records_in_log_ += count;
  return absl::OkStatus();
}

absl::Status StateStore::AppendRecord(const std::string& payload) {
  return AppendFramed(Frame(payload), 1);
}

std::string StateStore::InteractionPayload(uint64_t sequence,
                                           const Interaction& i) const {
  std::string payload;
  BinaryWriter w(&payload);
  w.Put<uint8_t>(i.interaction_id.empty() ? kInteractionRecord
                                          : kIdentifiedInteractionRecord);
  w.Put<uint64_t>(sequence);
  w.Put<int64_t>(i.item_id);
  if (!i.interaction_id.empty()) w.PutString(i.interaction_id);
  w.PutFloats(std::vector<float>(i.rows.begin(), i.rows.end()));
  return payload;
}

absl::Status StateStore::AppendInteraction(int64_t item_id,
                                           absl::Span<const float> rows,
                                           absl::string_view interaction_id) {
  const Interaction one{item_id, rows, interaction_id};
  return AppendInteractions(absl::MakeConstSpan(&one, 1));
}

absl::Status StateStore::AppendInteractions(
    absl::Span<const Interaction> batch) {
  std::string records;
  for (size_t k = 0; k < batch.size(); ++k) {
    records += Frame(InteractionPayload(sequence_ + 1 + k, batch[k]));
  }
  RETURN_IF_ERROR(AppendFramed(records, static_cast<int>(batch.size())));
  sequence_ += batch.size();
  return absl::OkStatus();
}

absl::Status StateStore::AppendProfile(uint64_t version,
                                       absl::Span<const float> s) {
  std::string payload;
  BinaryWriter w(&payload);
  w.Put<uint8_t>(kProfileRecord);
  w.Put<uint64_t>(sequence_ + 1);
  w.Put<uint64_t>(version);
  w.PutFloats(std::vector<float>(s.begin(), s.end()));
  RETURN_IF_ERROR(AppendRecord(payload));
  ++sequence_;
  return absl::OkStatus();
}

std::string EncodeSnapshot(const duet::v1::ModelConfig& config,
                           uint64_t sequence, const UserStateData& data,
                           uint32_t format) {
  std::string payload;
  BinaryWriter w(&payload);
  w.PutString(config.signature());
  w.PutString(common::ModelLabel(config));
  if (format >= 2) w.PutString(config.name());
  w.Put<uint64_t>(sequence);
  w.Put<uint64_t>(data.interactions_total);
  w.Put<uint64_t>(data.profile_version);
  w.PutFloats(data.profile);
  w.Put<uint64_t>(data.memo_version);
  w.PutFloats(data.memo);
  w.Put<uint32_t>(static_cast<uint32_t>(data.tables.size()));
  for (const UserStateData::Table& t : data.tables) {
    w.Put<int32_t>(t.tracker);
    w.Put<int32_t>(t.filled);
    w.PutFloats(t.slots);
  }
  if (format >= 2) {
    w.Put<uint32_t>(static_cast<uint32_t>(data.history_items.size()));
    for (int64_t item : data.history_items) w.Put<int64_t>(item);
  }
  if (format >= 3) {
    w.Put<uint32_t>(static_cast<uint32_t>(data.recent_ids.size()));
    for (const UserStateData::RecentId& r : data.recent_ids) {
      w.PutString(r.id);
      w.Put<uint64_t>(r.sequence);
    }
  }
  std::string file(kSnapshotMagic, sizeof(kSnapshotMagic));
  BinaryWriter h(&file);
  h.Put<uint32_t>(format);
  h.Put<uint64_t>(payload.size());
  h.Put<uint32_t>(Crc32c(payload));
  file += payload;
  return file;
}

absl::Status StateStore::Compact(const UserStateData& data) {
  RETURN_IF_ERROR(fs_->WriteFileAtomically(
      Path(kSnapshotFile),
      EncodeSnapshot(model_.config(), sequence_, data, kSnapshotFormat)));
  // A crash here leaves the old log beside the new snapshot: its records
  // are all <= the snapshot's sequence, and Open skips them (or, after a
  // rebuild, replaces a log of the previous model).
  needs_rebuild_ = false;
  log_.reset();
  return StartLog(/*fresh=*/true);
}

}  // namespace duet::edge
