// Little-endian encoding of state files: an appending writer and a
// bounds-checked reader (a short or malformed input is an error, never UB).
#ifndef DUET_EDGE_INTERNAL_BINARY_IO_H_
#define DUET_EDGE_INTERNAL_BINARY_IO_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace duet::edge::internal {

// x86-64 is little-endian; the formats are defined as little-endian.
class BinaryWriter {
 public:
  explicit BinaryWriter(std::string* out) : out_(out) {}
  template <typename T>
  void Put(T v) {
    out_->append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void PutFloats(const std::vector<float>& v) {
    Put<uint64_t>(v.size());
    out_->append(reinterpret_cast<const char*>(v.data()),
                 v.size() * sizeof(float));
  }
  void PutString(absl::string_view s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_->append(s.data(), s.size());
  }

 private:
  std::string* out_;
};

class BinaryReader {
 public:
  explicit BinaryReader(absl::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T* v) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(v, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  // `max` bounds the count so a corrupt length cannot exhaust memory.
  bool GetFloats(std::vector<float>* v, uint64_t max) {
    uint64_t n;
    if (!Get(&n) || n > max || in_.size() < n * sizeof(float)) return false;
    v->resize(n);
    std::memcpy(v->data(), in_.data(), n * sizeof(float));
    in_.remove_prefix(n * sizeof(float));
    return true;
  }
  bool GetString(std::string* s) {
    uint32_t n;
    if (!Get(&n) || in_.size() < n) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  size_t remaining() const { return in_.size(); }

 private:
  absl::string_view in_;
};

}  // namespace duet::edge::internal

#endif  // DUET_EDGE_INTERNAL_BINARY_IO_H_
