// CRC-32C against the published check value and the iSCSI test vectors of
// RFC 3720 (B.4), and continuation over any split of the input.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/crc32c.hpp"

namespace embtrain {
namespace {

TEST(Crc32cTest, KnownValues) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32c(check.data(), check.size()), 0xe3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  std::vector<unsigned char> bytes(32, 0);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x8a9136aau);
  bytes.assign(32, 0xff);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x62a8ab43u);
  for (int i = 0; i < 32; ++i) bytes[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x46dd794eu);
  for (int i = 0; i < 32; ++i) bytes[i] = static_cast<unsigned char>(31 - i);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x113fdb5cu);
  EXPECT_EQ(crc32c_hex(0xe3069283u), "e3069283");
  EXPECT_EQ(crc32c_hex(0x1u), "00000001");
}

TEST(Crc32cTest, ContinuesOverAnySplit) {
  const uint32_t seed = 1234;
  std::mt19937 rng(seed);
  std::vector<unsigned char> bytes(1000);
  for (auto& b : bytes) b = static_cast<unsigned char>(rng());
  const uint32_t whole = crc32c(bytes.data(), bytes.size());
  for (size_t split : {0, 1, 7, 8, 9, 63, 500, 999, 1000}) {
    const uint32_t head = crc32c(bytes.data(), split);
    EXPECT_EQ(crc32c(bytes.data() + split, bytes.size() - split, head), whole)
        << "split at " << split << " (seed " << seed << ")";
  }
  bytes[517] ^= 0x10;  // one flipped bit changes it
  EXPECT_NE(crc32c(bytes.data(), bytes.size()), whole);
}

}  // namespace
}  // namespace embtrain
