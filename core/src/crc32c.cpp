// CRC32C, table-driven with slicing-by-8 (a few hundred MB/s, plenty for
// event files and checkpoint checksums; no SSE4.2 dependence).
#include "alignkit/core/crc32c.hpp"

#include <array>

namespace alignkit::core {
namespace {

constexpr uint32_t kCastagnoliReflected = 0x82F63B78u;

struct Tables {
  // slice[k][b]: the CRC contribution of byte b followed by k zero bytes.
  std::array<std::array<uint32_t, 256>, 8> slice{};

  Tables() {
    for (uint32_t byte = 0; byte < 256; ++byte) {
      uint32_t crc = byte;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kCastagnoliReflected : 0u);
      slice[0][byte] = crc;
    }
    for (size_t k = 1; k < slice.size(); ++k)
      for (uint32_t byte = 0; byte < 256; ++byte)
        slice[k][byte] = (slice[k - 1][byte] >> 8) ^ slice[0][slice[k - 1][byte] & 0xFFu];
  }
};

const Tables& tables() {
  static const Tables instance;
  return instance;
}

}  // namespace

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size) {
  const auto& t = tables().slice;
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  while (size >= 8) {
    // Bytes are combined explicitly, so the result does not depend on host endianness.
    uint32_t low = crc ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    crc = t[7][low & 0xFFu] ^ t[6][(low >> 8) & 0xFFu] ^ t[5][(low >> 16) & 0xFFu] ^ t[4][low >> 24] ^
          t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    size -= 8;
  }
  while (size-- > 0) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFFu];
  return ~crc;
}

}  // namespace alignkit::core
