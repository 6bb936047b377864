// CRC32C against published vectors (RFC 3720 appendix B.4 and the common
// "123456789" check value) and TFRecord's masking.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "alignkit/core/crc32c.hpp"

using namespace alignkit::core;

TEST_CASE("crc32c matches the Castagnoli check value") {
  CHECK(crc32c("123456789") == 0xE3069283u);
  CHECK(crc32c("") == 0u);
}

TEST_CASE("crc32c matches the RFC 3720 test vectors") {
  std::vector<unsigned char> zeros(32, 0x00), ones(32, 0xFF), up(32), down(32);
  for (int i = 0; i < 32; ++i) {
    up[i] = static_cast<unsigned char>(i);
    down[i] = static_cast<unsigned char>(31 - i);
  }
  CHECK(crc32c(zeros.data(), zeros.size()) == 0x8A9136AAu);
  CHECK(crc32c(ones.data(), ones.size()) == 0x62A8AB43u);
  CHECK(crc32c(up.data(), up.size()) == 0x46DD794Eu);
  CHECK(crc32c(down.data(), down.size()) == 0x113FDB5Cu);
  // An iSCSI read command PDU (RFC 3720, B.4).
  const unsigned char read_command[48] = {0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                          0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
                                          0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
                                          0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  CHECK(crc32c(read_command, sizeof read_command) == 0xD9963A56u);
}

TEST_CASE("crc32c can be extended piece by piece, across the 8-byte fast path") {
  std::string text = "The quick brown fox jumps over the lazy dog, then over the lazy cat.";
  uint32_t whole = crc32c(text);
  for (size_t split = 0; split <= text.size(); ++split) {
    uint32_t first = crc32c(text.data(), split);
    CHECK(crc32c_extend(first, text.data() + split, text.size() - split) == whole);
  }
}

TEST_CASE("masked crc follows TFRecord's formula and unmasks back") {
  for (uint32_t crc : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, 0x80000000u, 0x12345678u}) {
    uint32_t expected = ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
    CHECK(mask_crc32c(crc) == expected);
    CHECK(unmask_crc32c(mask_crc32c(crc)) == crc);
  }
}
