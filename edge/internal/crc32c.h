// CRC-32C (Castagnoli), bytewise table; checksums of state files.
#ifndef DUET_EDGE_INTERNAL_CRC32C_H_
#define DUET_EDGE_INTERNAL_CRC32C_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace duet::edge::internal {

// Crc32c("123456789") == 0xE3069283.
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);

}  // namespace duet::edge::internal

#endif  // DUET_EDGE_INTERNAL_CRC32C_H_
