// The checks of a ranking request that duet-edge (Recommend) and duet-cloud
// (BeginQuery, Score, MonolithicScore, GetItemEmbeddings) share, with one
// wording: the message names the field, the offending index and value, and
// the valid range.
#ifndef DUET_COMMON_MODEL_REQUEST_CHECKS_H_
#define DUET_COMMON_MODEL_REQUEST_CHECKS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/model/catalog.h"

namespace duet::common {

// 1 to `max_ids` ids, each in the catalog; INVALID_ARGUMENT otherwise.
// `field` is the request's field name ("candidate_ids", "item_ids").
absl::Status ValidateItemIds(const Catalog& catalog,
                             absl::Span<const int64_t> ids, int max_ids,
                             absl::string_view field = "candidate_ids");

// top_k in [1, num_candidates]; INVALID_ARGUMENT otherwise.
absl::Status ValidateTopK(int64_t top_k, int num_candidates);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_REQUEST_CHECKS_H_
