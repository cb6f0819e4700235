// A 64-bit FNV-1a fingerprint of bytes: cheap, deterministic on every
// platform, for telling whether ranks hold the same data (not a checksum
// against tampering).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace embtrain {

constexpr uint64_t kFnvBasis = 14695981039346656037ull;

inline uint64_t fnv1a(const void* data, size_t bytes, uint64_t h = kFnvBasis) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

inline uint64_t fnv1a(const std::string& text, uint64_t h = kFnvBasis) {
  return fnv1a(text.data(), text.size(), h);
}

template <typename T>
uint64_t fnv1a(const std::vector<T>& v, uint64_t h = kFnvBasis) {
  return fnv1a(v.data(), v.size() * sizeof(T), h);
}

// As 16 hex digits.
inline std::string fingerprint_hex(uint64_t h) {
  static const char kHex[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) s[i] = kHex[h & 15];
  return s;
}

}  // namespace embtrain
