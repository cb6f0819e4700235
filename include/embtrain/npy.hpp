// Reading and writing NumPy .npy files (format versions 1.0-3.0): the
// little-endian, C-order arrays numpy writes for float32, int32 and int64.
// Anything else is refused with an error that names the file and what was
// found, never silently converted.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "embtrain/ids.hpp"  // DType

namespace embtrain {

struct NpyArray {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<char> data;  // C order, little-endian

  int64_t numel() const;
  template <typename T>
  const T* as() const { return reinterpret_cast<const T*>(data.data()); }
  template <typename T>
  T* as() { return reinterpret_cast<T*>(data.data()); }
};

// A view of an int32 or int64 array as a batch of ids; throws Error for
// any other type.
IdsView ids_view(const NpyArray& a);

NpyArray read_npy(const std::string& path);

// Writes to `path` through a temporary file in the same folder and a rename,
// so a reader never sees a half-written file.
void write_npy(const std::string& path, DType dtype, const std::vector<int64_t>& shape,
               const void* data);

}  // namespace embtrain
