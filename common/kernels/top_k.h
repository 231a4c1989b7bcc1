// Top-k selection of scored candidates, shared by the cloud, the reference
// evaluators and the edge.
#ifndef DUET_COMMON_KERNELS_TOP_K_H_
#define DUET_COMMON_KERNELS_TOP_K_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace duet::common {

struct Scored {
  int64_t item_id;
  float ctr;
};

// The k highest CTRs, highest first; ties keep candidate order (lower index
// first) so results are deterministic. k is clamped to n.
inline std::vector<Scored> TopK(const int64_t* ids, const float* ctr, int n,
                                int k) {
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  k = std::max(0, std::min(k, n));
  auto better = [ctr](int a, int b) {
    return ctr[a] > ctr[b] || (ctr[a] == ctr[b] && a < b);
  };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), better);
  std::vector<Scored> out;
  out.reserve(k);
  for (int i = 0; i < k; ++i) out.push_back({ids[order[i]], ctr[order[i]]});
  return out;
}

// INVALID_ARGUMENT naming the first candidate whose CTR is not finite. The
// model files are verified at load, so a NaN score means finite inputs so
// large that a layer overflowed float32; the caller gets an error rather
// than a ranking built on NaN.
inline absl::Status CheckFiniteScores(const int64_t* ids, const float* ctr,
                                      int n) {
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(ctr[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the CTR of candidate %d (item %d) is %f: the inputs overflow "
          "float32 in the model's layers; send values of the magnitude the "
          "model was trained on",
          i, ids[i], ctr[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace duet::common

#endif  // DUET_COMMON_KERNELS_TOP_K_H_
