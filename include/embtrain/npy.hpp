// Reading and writing NumPy .npy files (format versions 1.0-3.0): the
// little-endian, C-order arrays numpy writes for float32, int32 and int64.
// Anything else is refused with an error that names the file and what was
// found, never silently converted.
#pragma once

#include <cstdint>
#include <fstream>
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

// A .npy file read in pieces: the header, checked as read_npy checks it,
// then any byte range of its data, so that a table streams through a
// buffer of bounded size.
class NpyReader {
 public:
  explicit NpyReader(const std::string& path);
  const std::string& path() const { return path_; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  // `bytes` bytes of the data from byte `offset` on into `out`.
  void read(int64_t offset, int64_t bytes, void* out);

 private:
  std::string path_;
  std::ifstream in_;
  DType dtype_ = DType::kFloat32;
  std::vector<int64_t> shape_;
  int64_t data_begin_ = 0, data_bytes_ = 0;
};

// Rows of a 2-D float32 .npy (rows x width), asked for in increasing order
// and read in windows of at most `window_rows` rows: row(r) stays valid
// until the next call.
class NpyRowReader {
 public:
  NpyRowReader(NpyReader* reader, int64_t width, int64_t window_rows);
  const float* row(int64_t r);

 private:
  NpyReader* reader_;
  int64_t width_, window_rows_, rows_;
  int64_t first_ = 0, count_ = 0;  // the rows in window_
  std::vector<float> window_;
};

// write_npy in pieces: the header at construction, then the data in any
// number of write() calls, then finish(), which checks that the data fills
// the shape and renames the file into place. Destroyed unfinished, it
// removes its temporary file.
class NpyWriter {
 public:
  NpyWriter(const std::string& path, DType dtype, const std::vector<int64_t>& shape);
  ~NpyWriter();
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;
  void write(const void* data, int64_t bytes);
  void finish();

 private:
  std::string path_, tmp_;
  std::ofstream out_;
  int64_t bytes_ = 0, written_ = 0;
  bool done_ = false;
};

}  // namespace embtrain
