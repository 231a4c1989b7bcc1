// A fixed-size, 64-byte aligned, owning array of trivially copyable values
// (cache-line aligned rows for the gather and oneDNN kernels). Move-only.
#ifndef DUET_COMMON_BASE_ALIGNED_BUFFER_H_
#define DUET_COMMON_BASE_ALIGNED_BUFFER_H_

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

namespace duet::common {

template <typename T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  static constexpr size_t kAlignment = 64;

  AlignedBuffer() = default;
  // Zero-initialized; aborts (std::bad_alloc) when memory is exhausted.
  explicit AlignedBuffer(size_t n) : size_(n) {
    if (n == 0) return;
    const size_t bytes =
        (n * sizeof(T) + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, bytes);
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    data_.reset(static_cast<T*>(p));
  }

  // Grow-only scratch: reallocates (zeroed; the old contents are not kept)
  // when `n` exceeds size(). Returns data().
  T* Reserve(size_t n) {
    if (n > size_) *this = AlignedBuffer(n);
    return data();
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_.get()[i]; }
  const T& operator[](size_t i) const { return data_.get()[i]; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  size_t size_ = 0;
};

}  // namespace duet::common

#endif  // DUET_COMMON_BASE_ALIGNED_BUFFER_H_
