// CRC32C (Castagnoli polynomial, reflected 0x82F63B78), as used by TFRecord
// framing in TensorBoard event files, plus TFRecord's masking of stored CRCs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace alignkit::core {

// Extends `crc` (the CRC of the bytes before these; 0 to start) over `size` bytes.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size);

inline uint32_t crc32c(const void* data, size_t size) { return crc32c_extend(0, data, size); }
inline uint32_t crc32c(std::string_view bytes) { return crc32c(bytes.data(), bytes.size()); }

// TFRecord stores masked CRCs so that a CRC of data that itself holds CRCs
// does not degenerate: rotate right by 15 and add a constant.
inline uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t unmask_crc32c(uint32_t masked) {
  uint32_t rotated = masked - 0xa282ead8u;
  return (rotated >> 17) | (rotated << 15);
}

}  // namespace alignkit::core
