// Top-k selection of scored candidates, shared by the cloud, the reference
// evaluators and the edge.
#ifndef DUET_COMMON_TOP_K_H_
#define DUET_COMMON_TOP_K_H_

#include <algorithm>
#include <cstdint>
#include <vector>

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

}  // namespace duet::common

#endif  // DUET_COMMON_TOP_K_H_
