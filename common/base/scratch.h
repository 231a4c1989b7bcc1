// Grow-only scratch buffers: thread-local vectors reused across calls, so
// hot paths allocate only while warming up.
#ifndef DUET_COMMON_BASE_SCRATCH_H_
#define DUET_COMMON_BASE_SCRATCH_H_

#include <cstddef>
#include <vector>

namespace duet::common {

// Ensures `v` holds at least n elements (never shrinks) and returns its data.
template <typename T>
T* GrowTo(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace duet::common

#endif  // DUET_COMMON_BASE_SCRATCH_H_
