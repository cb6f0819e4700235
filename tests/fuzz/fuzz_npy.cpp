// libFuzzer target: read_npy on any bytes. It must return an array whose
// data is exactly shape x item size bytes, or throw embtrain::Error; an
// array it returns must survive write_npy and read back equal.
#include <cstring>

#include "embtrain/errors.hpp"
#include "embtrain/npy.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string in = embtrain_fuzz::scratch_path("in.npy");
  embtrain_fuzz::write_file(in, data, size);
  embtrain::NpyArray a;
  try {
    a = embtrain::read_npy(in);
  } catch (const embtrain::Error&) {
    return 0;
  }
  const int64_t bytes = a.numel() * embtrain::dtype_size(a.dtype);
  if (static_cast<int64_t>(a.data.size()) != bytes) std::abort();

  static const std::string out = embtrain_fuzz::scratch_path("out.npy");
  try {
    embtrain::write_npy(out, a.dtype, a.shape, a.data.data());
  } catch (const embtrain::Error&) {
    return 0;  // a shape too long for a version 1.0 header, which is all we write
  }
  const embtrain::NpyArray b = embtrain::read_npy(out);
  if (b.dtype != a.dtype || b.shape != a.shape || b.data != a.data) std::abort();
  return 0;
}
