#include "edge/scratchpad.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"

namespace duet::edge {
namespace {
constexpr size_t kFloatsPerLine =
    common::AlignedBuffer<float>::kAlignment / sizeof(float);
size_t RoundUp(size_t n) {
  return (n + kFloatsPerLine - 1) / kFloatsPerLine * kFloatsPerLine;
}
}  // namespace

Scratchpad::Scratchpad(const Options& options)
    : dim_(options.dim), refresh_every_(options.refresh_every) {
  size_t total = 0;
  for (int n : options.history_lengths) {
    total += RoundUp(static_cast<size_t>(n) * dim_);
  }
  // One block for the user: every table's ring starts on a cache line.
  storage_ = common::AlignedBuffer<float>(std::max<size_t>(total, 1));
  float* block = storage_.data();
  tables_.reserve(options.history_lengths.size());
  size_t offset = 0;
  for (int n : options.history_lengths) {
    Table& t = tables_.emplace_back(n);
    t.slots = block + offset;
    t.sum.assign(dim_, 0.0);
    offset += RoundUp(static_cast<size_t>(n) * dim_);
  }
  pooled_.assign(tables_.size() * dim_, 0.0f);
}

int64_t Scratchpad::row_bytes() const {
  int64_t bytes = 0;
  for (const Table& t : tables_) {
    bytes += int64_t{t.tracker.capacity()} * dim_ * sizeof(float);
  }
  return bytes;
}

void Scratchpad::Push(absl::Span<const float> rows) {
  for (int ti = 0; ti < num_tables(); ++ti) {
    Table& t = tables_[ti];
    const float* row = rows.data() + static_cast<size_t>(ti) * dim_;
    float* slot = t.slots + static_cast<size_t>(t.tracker.Advance()) * dim_;
    // Slots not yet filled hold zeros, so subtracting them is a no-op.
    for (int k = 0; k < dim_; ++k) {
      t.sum[k] += static_cast<double>(row[k]) - static_cast<double>(slot[k]);
      slot[k] = row[k];
    }
    if (t.filled < t.tracker.capacity()) ++t.filled;
    const int every =
        refresh_every_ > 0 ? refresh_every_ : t.tracker.capacity();
    if (++t.pushes_since_refresh >= every) {
      Refresh(ti);
    } else {
      float* p = pooled_.data() + static_cast<size_t>(ti) * dim_;
      for (int k = 0; k < dim_; ++k) p[k] = static_cast<float>(t.sum[k]);
    }
  }
}

void Scratchpad::Refresh(int ti) {
  Table& t = tables_[ti];
  std::fill(t.sum.begin(), t.sum.end(), 0.0);
  const int n = t.tracker.capacity();
  // Oldest to newest, the order the reference pools the history in.
  const int first = t.filled < n ? 0 : t.tracker.oldest();
  for (int i = 0; i < t.filled; ++i) {
    const float* row = t.slots + static_cast<size_t>((first + i) % n) * dim_;
    for (int k = 0; k < dim_; ++k) t.sum[k] += row[k];
  }
  float* p = pooled_.data() + static_cast<size_t>(ti) * dim_;
  for (int k = 0; k < dim_; ++k) p[k] = static_cast<float>(t.sum[k]);
  t.pushes_since_refresh = 0;
}

void Scratchpad::RefreshAll() {
  for (int t = 0; t < num_tables(); ++t) Refresh(t);
}

absl::Span<const float> Scratchpad::table_slots(int t) const {
  return absl::MakeConstSpan(
      tables_[t].slots,
      static_cast<size_t>(tables_[t].tracker.capacity()) * dim_);
}

absl::Status Scratchpad::Restore(int ti, absl::Span<const float> slots,
                                 int tracker, int filled) {
  if (ti < 0 || ti >= num_tables()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "user table %d does not exist (the model has %d)", ti, num_tables()));
  }
  Table& t = tables_[ti];
  const int n = t.tracker.capacity();
  if (slots.size() != static_cast<size_t>(n) * dim_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "user table %d: %d stored values, expected history_length %d x dim %d",
        ti, slots.size(), n, dim_));
  }
  if (filled < 0 || filled > n || tracker < 0 || tracker >= n ||
      (filled < n && tracker != filled)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "user table %d: tracker %d / filled %d inconsistent with "
        "history_length %d",
        ti, tracker, filled, n));
  }
  std::memcpy(t.slots, slots.data(), slots.size() * sizeof(float));
  t.tracker.Reset(tracker);
  t.filled = filled;
  Refresh(ti);
  return absl::OkStatus();
}

}  // namespace duet::edge
