#include "edge/item_rows.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"

namespace duet::edge {

absl::Status FetchItemRows(CloudClient& cloud, const common::Model& model,
                           const std::vector<int64_t>& items,
                           const ItemRowsOptions& options, ItemRows* rows) {
  std::vector<int64_t> missing;
  for (int64_t item : items) {
    if (rows->count(item) == 0) missing.push_back(item);
  }
  // A history may hold an item more than once.
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  const size_t batch = static_cast<size_t>(std::max(1, options.batch_items));
  for (size_t begin = 0; begin < missing.size(); begin += batch) {
    duet::v1::GetItemEmbeddingsRequest get;
    get.mutable_item_ids()->Assign(
        missing.begin() + begin,
        missing.begin() + std::min(missing.size(), begin + batch));
    get.set_model_version(model.config().version());
    get.set_model_fingerprint(model.fingerprint());
    ASSIGN_OR_RETURN(
        duet::v1::GetItemEmbeddingsResponse fetched,
        cloud.GetItemEmbeddings(get, absl::Now() + options.call_timeout));
    if (fetched.model_version() != model.config().version() ||
        fetched.model_fingerprint() != model.fingerprint()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the cloud sent rows of model v%d (signature %016x) for the "
          "history, the switch needs %s",
          fetched.model_version(), fetched.model_fingerprint(),
          common::ModelLabel(model.config())));
    }
    for (duet::v1::ItemEmbeddings& e : *fetched.mutable_items()) {
      (*rows)[e.item_id()].assign(e.rows().begin(), e.rows().end());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> RowsInOrder(
    const ItemRows& rows, const std::vector<int64_t>& items) {
  std::vector<std::vector<float>> out;
  out.reserve(items.size());
  for (int64_t item : items) {
    auto it = rows.find(item);
    if (it == rows.end()) {
      return absl::InternalError(absl::StrFormat(
          "GetItemEmbeddings returned no rows for history item %d", item));
    }
    out.push_back(it->second);
  }
  return out;
}

}  // namespace duet::edge
