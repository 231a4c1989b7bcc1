// Fetching the user-table rows of a history's items at one model version
// (a switch to a new version: ModelUpdater, the load generator's fleet).
// Rows are fetched with GetItemEmbeddings for distinct ids in batches, each
// response checked to be of the asked model (a cloud answering with another
// version's rows is FAILED_PRECONDITION naming both).
#ifndef DUET_EDGE_ITEM_ROWS_H_
#define DUET_EDGE_ITEM_ROWS_H_

#include <cstdint>
#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model/model.h"
#include "edge/cloud_client.h"

namespace duet::edge {

// Item id -> its T_u * d floats at one model.
using ItemRows = std::map<int64_t, std::vector<float>>;

struct ItemRowsOptions {
  int batch_items = 256;  // ids per GetItemEmbeddings
  absl::Duration call_timeout = absl::Seconds(10);
};

// Adds to `rows` the rows of the `items` it does not hold yet, at `model`.
absl::Status FetchItemRows(CloudClient& cloud, const common::Model& model,
                           const std::vector<int64_t>& items,
                           const ItemRowsOptions& options, ItemRows* rows);

// rows[item] for each of `items` in order (UserState::RebuildScratchpad's
// input); INTERNAL naming the first item without rows.
absl::StatusOr<std::vector<std::vector<float>>> RowsInOrder(
    const ItemRows& rows, const std::vector<int64_t>& items);

}  // namespace duet::edge

#endif  // DUET_EDGE_ITEM_ROWS_H_
