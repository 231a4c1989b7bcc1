#include "edge/state_store.h"

#include <utility>

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
constexpr uint32_t kFormatVersion = 1;
constexpr uint8_t kInteractionRecord = 1;
constexpr uint8_t kProfileRecord = 2;
// magic + format version + payload length + payload crc
constexpr size_t kSnapshotHeaderBytes = 8 + 4 + 8 + 4;
constexpr size_t kRecordHeaderBytes = 4 + 4 + 4;  // length, ~length, crc
// Bounds a record so a corrupt length cannot make us allocate gigabytes.
constexpr uint32_t kMaxRecordBytes = 64 << 20;

constexpr char kResetHint[] =
    "; start with --reset_state to discard the stored state";

absl::Status Foreign(const std::string& path, const std::string& signature,
                     const common::Model& model) {
  return absl::FailedPreconditionError(
      absl::StrCat(path, " was written for model signature ", signature,
                   ", but the loaded model is ",
                   common::ModelLabel(model.config()), kResetHint));
}

}  // namespace

StateStore::StateStore(const Options& options, const common::Model& model)
    : options_(options),
      fs_(options.fs != nullptr ? options.fs : PosixFileSystem()),
      model_(model) {}

std::string StateStore::Path(const char* name) const {
  return absl::StrCat(options_.dir, "/", name);
}

std::string StateStore::LogHeader() const {
  std::string header(kLogMagic, sizeof(kLogMagic));
  BinaryWriter w(&header);
  w.Put<uint32_t>(kFormatVersion);
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
  uint64_t snapshot_sequence = 0;
  if (fs_->Exists(Path(kSnapshotFile))) {
    RETURN_IF_ERROR(LoadSnapshot(state, &snapshot_sequence));
    absl::StrAppend(&recovery_report_, "loaded snapshot at sequence ",
                    snapshot_sequence, "; ");
  }
  sequence_ = snapshot_sequence;
  if (fs_->Exists(Path(kLogFile))) {
    RETURN_IF_ERROR(ReplayLog(state, snapshot_sequence));
  } else {
    RETURN_IF_ERROR(StartLog(/*fresh=*/true));
  }
  const UserStateInfo info = state->Info();
  absl::StrAppend(&recovery_report_, "interactions_total ",
                  info.interactions_total, ", profile_version ",
                  info.profile_version);
  return absl::OkStatus();
}

absl::Status StateStore::LoadSnapshot(UserState* state,
                                      uint64_t* last_sequence) {
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
  uint32_t format = 0, crc = 0;
  uint64_t length = 0;
  header.Get(&format);
  header.Get(&length);
  header.Get(&crc);
  if (format != kFormatVersion) {
    return corrupt(absl::StrFormat("format version %d, expected %d", format,
                                   kFormatVersion));
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
  std::string signature, label;
  UserStateData data;
  uint32_t num_tables = 0;
  const uint64_t max_floats = kMaxRecordBytes;
  bool ok = r.GetString(&signature) && r.GetString(&label);
  if (ok && signature != model_.config().signature()) {
    return Foreign(path, absl::StrCat(signature, " (", label, ")"), model_);
  }
  ok = ok && r.Get(last_sequence) && r.Get(&data.interactions_total) &&
       r.Get(&data.profile_version) && r.GetFloats(&data.profile, max_floats) &&
       r.Get(&data.memo_version) && r.GetFloats(&data.memo, max_floats) &&
       r.Get(&num_tables) && num_tables < 4096;
  for (uint32_t t = 0; ok && t < num_tables; ++t) {
    UserStateData::Table& table = data.tables.emplace_back();
    ok = r.Get(&table.tracker) && r.Get(&table.filled) &&
         r.GetFloats(&table.slots, max_floats);
  }
  if (!ok || r.remaining() != 0) {
    return corrupt("malformed payload despite a valid checksum");
  }
  const absl::Status imported = state->Import(data);
  if (!imported.ok()) return corrupt(std::string(imported.message()));
  return absl::OkStatus();
}

absl::Status StateStore::ReplayLog(UserState* state, uint64_t after_sequence) {
  const std::string path = Path(kLogFile);
  ASSIGN_OR_RETURN(const std::string file, fs_->ReadFile(path));
  const std::string header = LogHeader();
  if (file.size() < header.size()) {
    // The header is synced before the first record, so no record was ever
    // acknowledged from a log this short: recreate it.
    absl::StrAppend(&recovery_report_, "recreated log with a torn header; ");
    return StartLog(/*fresh=*/true);
  }
  if (file.compare(0, sizeof(kLogMagic), kLogMagic, sizeof(kLogMagic)) != 0) {
    return absl::DataLossError(absl::StrCat(
        "interaction log ", path, " is corrupt: bad magic", kResetHint));
  }
  if (file.compare(0, header.size(), header) != 0) {
    BinaryReader r(absl::string_view(file).substr(sizeof(kLogMagic)));
    uint32_t format = 0;
    std::string signature;
    if (r.Get(&format) && format == kFormatVersion && r.GetString(&signature) &&
        signature != model_.config().signature()) {
      return Foreign(path, signature, model_);
    }
    return absl::DataLossError(
        absl::StrCat("interaction log ", path,
                     " is corrupt: header checksum mismatch", kResetHint));
  }
  const int dims = model_.dims().pooled;
  size_t offset = header.size();
  int64_t replayed = 0;
  while (offset < file.size()) {
    const size_t left = file.size() - offset;
    BinaryReader r(absl::string_view(file).substr(offset));
    uint32_t length = 0, length_check = 0, crc = 0;
    const bool whole_header =
        r.Get(&length) && r.Get(&length_check) && r.Get(&crc);
    const bool length_ok =
        whole_header && length_check == ~length && length <= kMaxRecordBytes;
    const bool past_end = length_ok && left < kRecordHeaderBytes + length;
    const absl::string_view payload =
        length_ok && !past_end ? absl::string_view(file).substr(
                                     offset + kRecordHeaderBytes, length)
                               : absl::string_view();
    const bool ends_file =
        length_ok && !past_end && left == kRecordHeaderBytes + length;
    const bool crc_ok = length_ok && !past_end && Crc32c(payload) == crc;
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
    uint8_t type = 0;
    uint64_t sequence = 0;
    bool ok = p.Get(&type) && p.Get(&sequence);
    absl::Status applied;
    if (ok && type == kInteractionRecord) {
      int64_t item = 0;
      std::vector<float> rows;
      ok = p.Get(&item) && p.GetFloats(&rows, dims) && p.remaining() == 0;
      if (ok && sequence > after_sequence) {
        applied = state->ValidateInteractionRows(rows);
        if (applied.ok()) state->PushInteraction(rows);
      }
    } else if (ok && type == kProfileRecord) {
      uint64_t version = 0;
      std::vector<float> s;
      ok = p.Get(&version) && p.GetFloats(&s, kMaxRecordBytes) &&
           p.remaining() == 0;
      if (ok && sequence > after_sequence) {
        applied = state->ReplayProfile(s, version);
      }
    } else {
      ok = false;
    }
    if (!ok || !applied.ok() ||
        (sequence > after_sequence && sequence != sequence_ + 1)) {
      return absl::DataLossError(absl::StrFormat(
          "interaction log %s is corrupt: record at offset %d (sequence %d, "
          "expected %d) is malformed%s%s",
          path, offset, sequence, sequence_ + 1,
          applied.ok() ? "" : absl::StrCat(": ", applied.message()),
          kResetHint));
    }
    if (sequence > after_sequence) {
      sequence_ = sequence;
      ++replayed;
    }
    ++records_in_log_;
    offset += kRecordHeaderBytes + length;
  }
  absl::StrAppend(&recovery_report_, "replayed ", replayed, " log records; ");
  ASSIGN_OR_RETURN(log_, fs_->OpenAppendable(path));
  return absl::OkStatus();
}

absl::Status StateStore::StartLog(bool fresh) {
  const std::string path = Path(kLogFile);
  if (fresh) RETURN_IF_ERROR(fs_->WriteFileAtomically(path, LogHeader()));
  ASSIGN_OR_RETURN(log_, fs_->OpenAppendable(path));
  records_in_log_ = 0;
  return absl::OkStatus();
}

absl::Status StateStore::AppendRecord(const std::string& payload) {
  std::string record;
  BinaryWriter w(&record);
  w.Put<uint32_t>(static_cast<uint32_t>(payload.size()));
  w.Put<uint32_t>(~static_cast<uint32_t>(payload.size()));
  w.Put<uint32_t>(Crc32c(payload));
  record += payload;
  RETURN_IF_ERROR(log_->Append(record));
  RETURN_IF_ERROR(log_->Sync());
  ++records_in_log_;
  return absl::OkStatus();
}

absl::Status StateStore::AppendInteraction(int64_t item_id,
                                           absl::Span<const float> rows) {
  std::string payload;
  BinaryWriter w(&payload);
  w.Put<uint8_t>(kInteractionRecord);
  w.Put<uint64_t>(sequence_ + 1);
  w.Put<int64_t>(item_id);
  w.PutFloats(std::vector<float>(rows.begin(), rows.end()));
  RETURN_IF_ERROR(AppendRecord(payload));
  ++sequence_;
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

absl::Status StateStore::Compact(const UserStateData& data) {
  std::string payload;
  BinaryWriter w(&payload);
  w.PutString(model_.config().signature());
  w.PutString(common::ModelLabel(model_.config()));
  w.Put<uint64_t>(sequence_);
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
  std::string file(kSnapshotMagic, sizeof(kSnapshotMagic));
  BinaryWriter h(&file);
  h.Put<uint32_t>(kFormatVersion);
  h.Put<uint64_t>(payload.size());
  h.Put<uint32_t>(Crc32c(payload));
  file += payload;
  RETURN_IF_ERROR(fs_->WriteFileAtomically(Path(kSnapshotFile), file));
  // A crash here leaves the old log beside the new snapshot: its records
  // are all <= the snapshot's sequence, and Open skips them.
  log_.reset();
  return StartLog(/*fresh=*/true);
}

}  // namespace duet::edge
