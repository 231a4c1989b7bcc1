#include "edge/user_state.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"

namespace duet::edge {
namespace {

Scratchpad::Options ScratchpadOptions(const common::Model& model,
                                      int refresh_every) {
  Scratchpad::Options o;
  for (const auto& t : model.config().user_tables()) {
    o.history_lengths.push_back(t.history_length());
  }
  o.dim = model.config().embedding_dim();
  o.refresh_every = refresh_every;
  return o;
}

int MaxHistoryLength(const common::Model& model) {
  int longest = 0;
  for (const auto& t : model.config().user_tables()) {
    longest = std::max(longest, t.history_length());
  }
  return longest;
}

}  // namespace

absl::Status CheckFinite(absl::Span<const float> v, const char* field) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s[%d] is %f; values must be finite", field, i, v[i]));
    }
  }
  return absl::OkStatus();
}

UserState::UserState(const common::Model* model, Options options)
    : model_(model),
      history_capacity_(MaxHistoryLength(*model)),
      scratchpad_(ScratchpadOptions(*model, options.refresh_every)),
      profile_(model->dims().static_in, 0.0f) {
  ProfileMemo::Options memo;
  memo.static_bottom = model->static_bottom();
  memo.static_in = model->dims().static_in;
  memo.static_out = model->dims().static_out;
  memo.executor = std::move(options.executor);
  memo.on_recompute = std::move(options.on_memo_recompute);
  memo_ = std::make_unique<ProfileMemo>(std::move(memo));
}

absl::StatusOr<std::unique_ptr<UserState>> UserState::Create(
    const common::Model* model, Options options) {
  if (model == nullptr || !model->has_edge()) {
    return absl::FailedPreconditionError(
        "user state needs the edge part of the model (edge.safetensors)");
  }
  std::unique_ptr<UserState> state(new UserState(model, std::move(options)));
  const std::vector<float> zeros(model->dims().static_in, 0.0f);
  RETURN_IF_ERROR(state->memo_->ComputeNow(zeros, 0));
  return state;
}

absl::Status UserState::CheckRowsModel(
    const duet::v1::GetItemEmbeddingsResponse& fetched,
    bool allow_unreported) const {
  if (fetched.model_fingerprint() == 0) {
    if (allow_unreported) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "the cloud's GetItemEmbeddings does not report the model of its rows "
        "(a duet-cloud older than the edge); the edge needs rows of ",
        common::ModelLabel(model_->config())));
  }
  if (fetched.model_fingerprint() != model_->fingerprint() ||
      fetched.model_version() != model_->config().version()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the cloud sent rows of model v%d (signature %016x), this edge runs "
        "%s",
        fetched.model_version(), fetched.model_fingerprint(),
        common::ModelLabel(model_->config())));
  }
  return absl::OkStatus();
}

absl::Status UserState::ValidateInteractionRows(
    absl::Span<const float> rows) const {
  const int expected = model_->dims().pooled;
  if (static_cast<int>(rows.size()) != expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "item embedding rows have %d values, model %s expects %d "
        "(%d user tables x dim %d)",
        rows.size(), common::ModelLabel(model_->config()), expected,
        model_->config().user_tables_size(), model_->config().embedding_dim()));
  }
  return CheckFinite(rows, "rows");
}

absl::Status UserState::ValidateProfile(absl::Span<const float> s) const {
  const int expected = model_->dims().static_in;
  if (static_cast<int>(s.size()) != expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "static_features has %d values, model %s expects %d", s.size(),
        common::ModelLabel(model_->config()), expected));
  }
  return CheckFinite(s, "static_features");
}

uint64_t UserState::PushInteraction(int64_t item_id,
                                    absl::Span<const float> rows,
                                    absl::string_view interaction_id) {
  common::MutexLock lock(&mu_);
  scratchpad_.Push(rows);
  history_items_.push_back(item_id);
  while (static_cast<int>(history_items_.size()) > history_capacity_) {
    history_items_.pop_front();
  }
  ++interactions_total_;
  if (!interaction_id.empty()) {
    RememberLocked(std::string(interaction_id), interactions_total_);
  }
  return interactions_total_;
}

void UserState::RememberLocked(std::string id, uint64_t sequence) {
  recent_index_[id] = sequence;
  recent_ids_.push_back({std::move(id), sequence});
  while (static_cast<int>(recent_ids_.size()) > kRecentInteractionIds) {
    const UserStateData::RecentId& oldest = recent_ids_.front();
    auto it = recent_index_.find(oldest.id);
    // A repeated id points at its newest entry: keep that one.
    if (it != recent_index_.end() && it->second == oldest.sequence) {
      recent_index_.erase(it);
    }
    recent_ids_.pop_front();
  }
}

std::optional<uint64_t> UserState::FindInteraction(absl::string_view id) const {
  common::ReaderMutexLock lock(&mu_);
  auto it = recent_index_.find(id);
  if (it == recent_index_.end()) return std::nullopt;
  return it->second;
}

absl::Status UserState::RebuildScratchpad(
    const std::vector<std::vector<float>>& rows) {
  for (const std::vector<float>& r : rows) {
    RETURN_IF_ERROR(ValidateInteractionRows(r));
  }
  common::MutexLock lock(&mu_);
  if (rows.size() != history_items_.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d rows for a history of %d items", rows.size(),
                        history_items_.size()));
  }
  for (int t = 0; t < scratchpad_.num_tables(); ++t) {
    const std::vector<float> empty(
        static_cast<size_t>(scratchpad_.history_length(t)) * scratchpad_.dim(),
        0.0f);
    RETURN_IF_ERROR(scratchpad_.Restore(t, empty, 0, 0));
  }
  // Oldest first, as they were interacted with: each table's ring keeps the
  // last history_length[t] of them.
  for (const std::vector<float>& r : rows) scratchpad_.Push(r);
  scratchpad_.RefreshAll();
  return absl::OkStatus();
}

std::vector<int64_t> UserState::history_items() const {
  common::ReaderMutexLock lock(&mu_);
  return {history_items_.begin(), history_items_.end()};
}

uint64_t UserState::UpdateProfile(absl::Span<const float> s) {
  uint64_t version;
  {
    common::MutexLock lock(&mu_);
    profile_.assign(s.begin(), s.end());
    version = ++profile_version_;
  }
  memo_->RecomputeInBackground(std::vector<float>(s.begin(), s.end()), version);
  return version;
}

absl::Status UserState::ReplayProfile(absl::Span<const float> s,
                                      uint64_t version) {
  RETURN_IF_ERROR(ValidateProfile(s));
  {
    common::MutexLock lock(&mu_);
    profile_.assign(s.begin(), s.end());
    profile_version_ = version;
  }
  return memo_->ComputeNow(s, version);
}

absl::Status UserState::ComputeUserVector(const UserModel& model,
                                          const float* c,
                                          UserModel::Output* out) const {
  // Holding the shared_ptr keeps this query's z_s alive and whole even if a
  // recompute publishes a new one meanwhile.
  const std::shared_ptr<const ProfileMemo::Value> memo = memo_->Current();
  common::ReaderMutexLock lock(&mu_);
  return model.Run(memo->z_s.data(), c, scratchpad_.pooled(), out);
}

UserStateData UserState::Export() const {
  UserStateData data;
  const std::shared_ptr<const ProfileMemo::Value> memo = memo_->Current();
  data.memo_version = memo->version;
  data.memo = memo->z_s;
  common::ReaderMutexLock lock(&mu_);
  data.interactions_total = interactions_total_;
  data.profile_version = profile_version_;
  data.profile = profile_;
  for (int t = 0; t < scratchpad_.num_tables(); ++t) {
    UserStateData::Table& table = data.tables.emplace_back();
    table.tracker = scratchpad_.tracker(t);
    table.filled = scratchpad_.filled(t);
    const absl::Span<const float> slots = scratchpad_.table_slots(t);
    table.slots.assign(slots.begin(), slots.end());
  }
  data.history_items.assign(history_items_.begin(), history_items_.end());
  data.recent_ids.assign(recent_ids_.begin(), recent_ids_.end());
  return data;
}

absl::Status UserState::Import(const UserStateData& data) {
  RETURN_IF_ERROR(ValidateProfile(data.profile));
  if (data.memo_version > data.profile_version) {
    return absl::InvalidArgumentError(
        absl::StrFormat("memo version %d is newer than profile version %d",
                        data.memo_version, data.profile_version));
  }
  {
    common::MutexLock lock(&mu_);
    if (static_cast<int>(data.tables.size()) != scratchpad_.num_tables()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "state has %d user tables, model %s has %d", data.tables.size(),
          common::ModelLabel(model_->config()), scratchpad_.num_tables()));
    }
    for (int t = 0; t < scratchpad_.num_tables(); ++t) {
      const UserStateData::Table& table = data.tables[t];
      RETURN_IF_ERROR(
          scratchpad_.Restore(t, table.slots, table.tracker, table.filled));
    }
    interactions_total_ = data.interactions_total;
    const size_t keep = std::min<size_t>(
        data.history_items.size(), static_cast<size_t>(history_capacity_));
    history_items_.assign(data.history_items.end() - keep,
                          data.history_items.end());
    recent_ids_.clear();
    recent_index_.clear();
    for (const UserStateData::RecentId& r : data.recent_ids) {
      RememberLocked(r.id, r.sequence);
    }
    profile_ = data.profile;
    profile_version_ = data.profile_version;
  }
  RETURN_IF_ERROR(memo_->Restore(data.memo_version, data.memo));
  if (data.memo_version != data.profile_version) {
    // The process stopped before the background recompute finished.
    return memo_->ComputeNow(data.profile, data.profile_version);
  }
  return absl::OkStatus();
}

uint64_t UserState::profile_version() const {
  common::ReaderMutexLock lock(&mu_);
  return profile_version_;
}

UserStateInfo UserState::Info() const {
  UserStateInfo info;
  info.memo_version = memo_->version();
  common::ReaderMutexLock lock(&mu_);
  info.interactions_total = interactions_total_;
  info.profile_version = profile_version_;
  info.history_items = static_cast<int>(history_items_.size());
  for (int t = 0; t < scratchpad_.num_tables(); ++t) {
    UserStateInfo::Table& table = info.tables.emplace_back();
    table.name = model_->config().user_tables(t).name();
    table.history_length = scratchpad_.history_length(t);
    table.filled = scratchpad_.filled(t);
    table.tracker = scratchpad_.tracker(t);
  }
  return info;
}

}  // namespace duet::edge
