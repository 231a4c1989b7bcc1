#include "cloud/served_models.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model/model_config.h"

namespace duet::cloud {

const char* ServedStateName(ServedModels::State s) {
  return s == ServedModels::State::kAvailable ? "AVAILABLE" : "RETIRING";
}

absl::Time ServedModels::LastUsed(const Entry& e) {
  const int64_t ns = e.last_used_ns.load(std::memory_order_relaxed);
  return ns == 0 ? e.loaded : absl::FromUnixNanos(ns);
}

void ServedModels::Add(std::shared_ptr<ModelRuntime> rt,
                       std::shared_ptr<const EdgePart> edge,
                       absl::Status edge_error, prometheus::Counter* queries,
                       absl::Time now) {
  auto e = std::make_unique<Entry>();
  e->rt = std::move(rt);
  e->edge = std::move(edge);
  e->edge_error = std::move(edge_error);
  e->queries_counter = queries;
  e->loaded = now;
  common::MutexLock lock(&mu_);
  e->seq = next_seq_++;
  entries_.push_back(std::move(e));
  std::stable_sort(
      entries_.begin(), entries_.end(),
      [](const std::unique_ptr<Entry>& a, const std::unique_ptr<Entry>& b) {
        if (a->version() != b->version()) {
          return a->version() > b->version();
        }
        return a->seq > b->seq;
      });
}

bool ServedModels::Contains(const std::string& signature) const {
  common::ReaderMutexLock lock(&mu_);
  for (const auto& e : entries_) {
    if (e->rt->model().config().signature() == signature) return true;
  }
  return false;
}

std::shared_ptr<ModelRuntime> ServedModels::Newest() const {
  common::ReaderMutexLock lock(&mu_);
  return entries_.empty() ? nullptr : entries_.front()->rt;
}

const ServedModels::Entry* ServedModels::FindLocked(
    uint32_t version, uint64_t fingerprint) const {
  for (const auto& e : entries_) {
    if (version != 0 && e->version() != version) continue;
    if (fingerprint != 0 && e->rt->model().fingerprint() != fingerprint) {
      continue;
    }
    return e.get();
  }
  return nullptr;
}

std::string ServedModels::DescribeLocked() const {
  std::vector<std::string> parts;
  for (const auto& e : entries_) {
    parts.push_back(
        absl::StrCat(common::ModelLabel(e->rt->model().config()),
                     e->state == State::kRetiring ? " (retiring)" : ""));
  }
  return parts.empty() ? "no model" : absl::StrJoin(parts, ", ");
}

std::string ServedModels::Describe() const {
  common::ReaderMutexLock lock(&mu_);
  return DescribeLocked();
}

absl::Status ServedModels::NotServedLocked(uint32_t version,
                                           uint64_t fingerprint) const {
  const std::string name =
      entries_.empty() ? "" : entries_.front()->rt->model().config().name();
  return absl::FailedPreconditionError(absl::StrFormat(
      "model %s v%d%s is not served; this server serves %s", name, version,
      fingerprint != 0 ? absl::StrFormat(" (signature %016x)", fingerprint)
                       : std::string(),
      DescribeLocked()));
}

absl::StatusOr<std::shared_ptr<ModelRuntime>> ServedModels::Route(
    uint32_t version, uint64_t fingerprint, absl::Time now) const {
  common::ReaderMutexLock lock(&mu_);
  const Entry* e = FindLocked(version, fingerprint);
  if (e == nullptr) return NotServedLocked(version, fingerprint);
  e->queries.fetch_add(1, std::memory_order_relaxed);
  e->last_used_ns.store(absl::ToUnixNanos(now), std::memory_order_relaxed);
  if (e->queries_counter != nullptr) e->queries_counter->Increment();
  return e->rt;
}

absl::StatusOr<std::shared_ptr<ModelRuntime>> ServedModels::Find(
    uint32_t version, uint64_t fingerprint) const {
  common::ReaderMutexLock lock(&mu_);
  const Entry* e = FindLocked(version, fingerprint);
  if (e == nullptr) return NotServedLocked(version, fingerprint);
  return e->rt;
}

absl::StatusOr<std::shared_ptr<const EdgePart>> ServedModels::EdgePartOf(
    uint32_t version, uint64_t fingerprint) const {
  common::ReaderMutexLock lock(&mu_);
  const Entry* e = FindLocked(version, fingerprint);
  if (e == nullptr) return NotServedLocked(version, fingerprint);
  if (e->edge == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the edge part of ", common::ModelLabel(e->rt->model().config()),
        " is not available: ", e->edge_error.message()));
  }
  return e->edge;
}

bool ServedModels::Serves(uint32_t version) const {
  common::ReaderMutexLock lock(&mu_);
  return FindLocked(version, 0) != nullptr;
}

std::vector<ServedModels::Retired> ServedModels::Apply(
    absl::Time now, const std::vector<uint32_t>& pinned) {
  common::MutexLock lock(&mu_);
  // Versions the policy keeps, by number (the newest always).
  std::vector<uint32_t> keep = pinned;
  if (!policy_.versions.empty()) {
    keep.insert(keep.end(), policy_.versions.begin(), policy_.versions.end());
  } else {
    std::vector<uint32_t> numbers;
    for (const auto& e : entries_) {
      if (std::find(numbers.begin(), numbers.end(), e->version()) ==
          numbers.end()) {
        numbers.push_back(e->version());  // descending
      }
    }
    for (size_t i = 0;
         i < numbers.size() && static_cast<int>(i) < policy_.keep_latest; ++i) {
      keep.push_back(numbers[i]);
    }
  }
  std::vector<Retired> retired;
  for (size_t i = 0; i < entries_.size();) {
    Entry& e = *entries_[i];
    // Of one version number only the latest loaded signature is kept.
    bool superseded = false;
    for (size_t j = 0; j < i; ++j) {
      if (entries_[j]->version() == e.version()) superseded = true;
    }
    const bool kept =
        i == 0 || (!superseded && std::find(keep.begin(), keep.end(),
                                            e.version()) != keep.end());
    if (kept) {
      e.state = State::kAvailable;
      ++i;
      continue;
    }
    if (e.state == State::kAvailable) {
      e.state = State::kRetiring;
      e.retiring_since = now;
    }
    if (now - std::max(LastUsed(e), e.retiring_since) >= policy_.grace) {
      retired.push_back(
          {e.version(), e.rt->model().config().signature(), e.queries.load()});
      entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    ++i;
  }
  return retired;
}

std::vector<ServedModels::Info> ServedModels::List() const {
  common::ReaderMutexLock lock(&mu_);
  std::vector<Info> out;
  for (const auto& e : entries_) {
    Info info;
    info.version = e->version();
    info.signature = e->rt->model().config().signature();
    info.state = e->state;
    info.queries = e->queries.load();
    info.loaded = e->loaded;
    info.last_used = LastUsed(*e);
    info.edge_bytes = e->edge != nullptr ? e->edge->bytes() : 0;
    out.push_back(info);
  }
  return out;
}

}  // namespace duet::cloud
