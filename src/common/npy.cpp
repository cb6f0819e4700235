#include "embtrain/npy.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "embtrain/checked_size.hpp"
#include "embtrain/errors.hpp"

namespace embtrain {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

// Value of `key` in the header dict, as the raw text up to the next
// top-level comma or closing brace (a tuple for 'shape').
std::string header_value(const std::string& header, const std::string& key,
                         const std::string& path) {
  const std::string quoted[] = {"'" + key + "'", "\"" + key + "\""};
  size_t at = std::string::npos;
  for (const auto& q : quoted)
    if ((at = header.find(q)) != std::string::npos) {
      at += q.size();
      break;
    }
  EMBTRAIN_REQUIRE(at != std::string::npos, path, ": malformed .npy header (no '", key,
                   "' field): ", header);
  at = header.find(':', at);
  EMBTRAIN_REQUIRE(at != std::string::npos, path, ": malformed .npy header: ", header);
  ++at;
  while (at < header.size() && header[at] == ' ') ++at;
  size_t end = at;
  if (end < header.size() && header[end] == '(') {
    end = header.find(')', end);
    EMBTRAIN_REQUIRE(end != std::string::npos, path, ": malformed .npy shape: ", header);
    ++end;
  } else {
    while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  }
  std::string v = header.substr(at, end - at);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& path) {
  EMBTRAIN_REQUIRE(text.size() >= 2 && text.front() == '(' && text.back() == ')', path,
                   ": malformed .npy shape ", text);
  std::vector<int64_t> shape;
  std::stringstream ss(text.substr(1, text.size() - 2));
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(' ');
    if (b == std::string::npos) continue;  // trailing comma of a 1-tuple
    item = item.substr(b);
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
    }
    while (used < item.size() && (item[used] == ' ' || item[used] == 'L')) ++used;
    EMBTRAIN_REQUIRE(v >= 0 && used == item.size(), path, ": malformed .npy shape ", text);
    shape.push_back(v);
  }
  return shape;
}

}  // namespace

int64_t NpyArray::numel() const {
  const std::optional<int64_t> n = checked_product(shape);
  EMBTRAIN_REQUIRE(n, "array of shape ", shape_to_string(shape), " has more elements than ",
                   kMaxSize, " (valid: a product of dimensions that fits in 64 bits)");
  return *n;
}

IdsView ids_view(const NpyArray& a) {
  EMBTRAIN_REQUIRE(a.dtype == DType::kInt32 || a.dtype == DType::kInt64,
                   "ids must be int32 or int64, got ", dtype_name(a.dtype));
  return IdsView{a.data.data(), a.dtype, a.shape};
}

NpyReader::NpyReader(const std::string& path) : path_(path) {
  std::error_code ec;
  // A folder opens as a stream whose reads fail; name it instead.
  EMBTRAIN_REQUIRE(!std::filesystem::is_directory(path, ec), path,
                   ": is a folder (valid: a .npy file)");
  in_.open(path, std::ios::binary);
  std::ifstream& in = in_;
  EMBTRAIN_REQUIRE(in, path, ": cannot open file for reading");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<int64_t>(in.tellg());
  in.seekg(0);

  char preamble[10];
  EMBTRAIN_REQUIRE(in.read(preamble, 8) && std::memcmp(preamble, kMagic, kMagicLen) == 0,
                   path, ": not a .npy file (bad magic string)");
  const int major = static_cast<unsigned char>(preamble[6]);
  EMBTRAIN_REQUIRE(major >= 1 && major <= 3, path, ": unsupported .npy format version ",
                   major, " (supported: 1, 2, 3)");
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    EMBTRAIN_REQUIRE(in.read(reinterpret_cast<char*>(b), 2), path, ": truncated .npy header");
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    EMBTRAIN_REQUIRE(in.read(reinterpret_cast<char*>(b), 4), path, ": truncated .npy header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  EMBTRAIN_REQUIRE(header_len < (1u << 24), path, ": malformed .npy header length");
  std::string header(header_len, '\0');
  EMBTRAIN_REQUIRE(in.read(header.data(), header_len), path, ": truncated .npy header");

  const std::string descr = header_value(header, "descr", path);
  const std::string fortran = header_value(header, "fortran_order", path);
  if (descr == "'<f4'" || descr == "'|f4'")
    dtype_ = DType::kFloat32;
  else if (descr == "'<i4'")
    dtype_ = DType::kInt32;
  else if (descr == "'<i8'")
    dtype_ = DType::kInt64;
  else
    throw make_error(path, ": unsupported .npy dtype ", descr,
                     " (supported: little-endian '<f4' float32, '<i4' int32, '<i8' int64)");
  EMBTRAIN_REQUIRE(fortran == "False", path,
                   ": Fortran-order .npy arrays are not supported (save with C order, "
                   "e.g. np.ascontiguousarray)");
  shape_ = parse_shape(header_value(header, "shape", path), path);

  data_begin_ = static_cast<int64_t>(in.tellg());
  const int64_t have = file_size - data_begin_;
  const std::optional<int64_t> need = checked_product(shape_, dtype_size(dtype_));
  EMBTRAIN_REQUIRE(need, path, ": .npy shape ", shape_to_string(shape_), " of ", dtype_name(dtype_),
                   " needs more than ", kMaxSize,
                   " bytes (valid: a shape whose product of dimensions times ", dtype_size(dtype_),
                   " bytes fits in 64 bits and equals the ", have,
                   " data bytes of the file; corrupt header?)");
  data_bytes_ = *need;
  EMBTRAIN_REQUIRE(have == data_bytes_, path, ": .npy data is ", have, " bytes but shape ",
                   shape_to_string(shape_), " of ", dtype_name(dtype_), " needs ", data_bytes_,
                   " bytes (truncated or corrupt file)");
}

void NpyReader::read(int64_t offset, int64_t bytes, void* out) {
  EMBTRAIN_ASSERT(offset >= 0 && bytes >= 0 && offset + bytes <= data_bytes_);
  if (bytes == 0) return;
  in_.clear();
  in_.seekg(data_begin_ + offset);
  EMBTRAIN_REQUIRE(in_.read(static_cast<char*>(out), bytes), path_, ": read error");
}

NpyRowReader::NpyRowReader(NpyReader* reader, int64_t width, int64_t window_rows)
    : reader_(reader),
      width_(width),
      window_rows_(std::max<int64_t>(1, window_rows)),
      rows_(reader->shape().empty() ? 0 : reader->shape()[0]) {
  EMBTRAIN_ASSERT(reader->dtype() == DType::kFloat32 && reader->shape().size() == 2 &&
                  reader->shape()[1] == width);
}

const float* NpyRowReader::row(int64_t r) {
  EMBTRAIN_ASSERT(r >= 0 && r < rows_);
  if (r < first_ || r >= first_ + count_) {
    first_ = r;
    count_ = std::min(window_rows_, rows_ - r);
    window_.resize(static_cast<size_t>(count_ * width_));
    reader_->read(r * width_ * 4, count_ * width_ * 4, window_.data());
  }
  return window_.data() + (r - first_) * width_;
}

NpyArray read_npy(const std::string& path) {
  NpyReader reader(path);
  NpyArray a;
  a.dtype = reader.dtype();
  a.shape = reader.shape();
  const int64_t bytes = a.numel() * dtype_size(a.dtype);
  a.data.resize(static_cast<size_t>(bytes));
  reader.read(0, bytes, a.data.data());
  return a;
}

NpyWriter::NpyWriter(const std::string& path, DType dtype, const std::vector<int64_t>& shape)
    : path_(path), tmp_(path + ".tmp") {
  const char* descr = dtype == DType::kFloat32 ? "<f4" : dtype == DType::kInt32 ? "<i4" : "<i8";
  std::string header = detail::concat("{'descr': '", descr, "', 'fortran_order': False, 'shape': ",
                                      shape_to_string(shape), ", }");
  // Pad with spaces so that magic + version + length + header + '\n' is a
  // multiple of 64 bytes, as numpy does.
  const size_t unpadded = kMagicLen + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  EMBTRAIN_REQUIRE(header.size() < 65536, path, ": shape too long for a .npy v1 header");

  const std::optional<int64_t> bytes = checked_product(shape, dtype_size(dtype));
  EMBTRAIN_REQUIRE(bytes, path, ": cannot write shape ", shape_to_string(shape), " of ",
                   dtype_name(dtype), ": more than ", kMaxSize, " bytes");
  bytes_ = *bytes;
  out_.open(tmp_, std::ios::binary | std::ios::trunc);
  EMBTRAIN_REQUIRE(out_, tmp_, ": cannot open file for writing");
  const unsigned char version_and_len[4] = {1, 0, static_cast<unsigned char>(header.size() & 0xff),
                                            static_cast<unsigned char>(header.size() >> 8)};
  out_.write(kMagic, kMagicLen);
  out_.write(reinterpret_cast<const char*>(version_and_len), 4);
  out_.write(header.data(), static_cast<std::streamsize>(header.size()));
}

NpyWriter::~NpyWriter() {
  if (done_) return;
  out_.close();
  std::remove(tmp_.c_str());
}

void NpyWriter::write(const void* data, int64_t bytes) {
  EMBTRAIN_ASSERT(!done_ && bytes >= 0 && written_ + bytes <= bytes_);
  out_.write(static_cast<const char*>(data), bytes);
  written_ += bytes;
}

void NpyWriter::finish() {
  EMBTRAIN_ASSERT(!done_ && written_ == bytes_);
  out_.flush();
  EMBTRAIN_REQUIRE(out_, path_, ": write failed (disk full?)");
  out_.close();
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw make_error(path_, ": cannot rename temporary file into place");
  done_ = true;
}

void write_npy(const std::string& path, DType dtype, const std::vector<int64_t>& shape,
               const void* data) {
  NpyWriter writer(path, dtype, shape);
  const std::optional<int64_t> bytes = checked_product(shape, dtype_size(dtype));
  writer.write(data, *bytes);
  writer.finish();
}

}  // namespace embtrain
