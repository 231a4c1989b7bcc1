#include "common/model/request_checks.h"

#include "absl/strings/str_format.h"

namespace duet::common {

absl::Status ValidateItemIds(const Catalog& catalog,
                             absl::Span<const int64_t> ids, int max_ids,
                             absl::string_view field) {
  const size_t n = ids.size();
  if (n == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is empty; a query needs 1 to %d candidates", field, max_ids));
  }
  if (n > static_cast<size_t>(max_ids)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has %d ids, this server accepts at most %d (--max_candidates)",
        field, n, max_ids));
  }
  for (size_t i = 0; i < n; ++i) {
    if (!catalog.Contains(ids[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s[%d] is %d, valid item ids are [0, %d)", field, i,
                          ids[i], catalog.num_items()));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTopK(int64_t top_k, int num_candidates) {
  if (top_k < 1 || top_k > num_candidates) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "top_k is %d, must be in [1, %d] (the number of candidates)", top_k,
        num_candidates));
  }
  return absl::OkStatus();
}

}  // namespace duet::common
