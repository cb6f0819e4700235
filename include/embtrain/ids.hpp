// The ids of a step: their element types, a view of a batch of any shape,
// and the check every batch passes before a step looks anything up.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace embtrain {

// Element types of the arrays embtrain reads and writes (ids, rows, .npy files).
enum class DType { kFloat32, kInt32, kInt64 };

const char* dtype_name(DType t);  // "float32", "int32", "int64"
int dtype_size(DType t);

// "(3, 4)"-style rendering, as numpy prints shapes.
std::string shape_to_string(const std::vector<int64_t>& shape);

// A view of a batch of ids: int32 or int64, any shape (C order), host memory.
struct IdsView {
  const void* data = nullptr;
  DType dtype = DType::kInt64;
  std::vector<int64_t> shape;

  int64_t numel() const;
};

// n int64 ids in the memory a step runs in: host memory on the CPU, device
// memory once the tables are on a GPU.
struct IdSpan {
  const int64_t* data = nullptr;
  int64_t n = 0;
};

// Checks that ids are int32 or int64 and each in [0, num_embeddings);
// returns "" or the error, which names the table, the id's value, its
// position in `ids` and the valid range.
std::string check_ids(const IdsView& ids, const std::string& table, int64_t num_embeddings);

// Copies ids (int32 or int64) to int64 into `out`, reusing its memory.
void ids_to_int64(const IdsView& ids, std::vector<int64_t>* out);

}  // namespace embtrain
