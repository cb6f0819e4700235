// read_npy / write_npy: round trips, files written by numpy (fixtures from
// tests/data/make_npy_fixtures.py), files we must refuse, and numpy reading
// what we write.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <unistd.h>

#include "embtrain/errors.hpp"
#include "embtrain/npy.hpp"
#include "test_util.hpp"

namespace {

namespace fs = std::filesystem;
using embtrain::DType;
using embtrain::NpyArray;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

std::string fixture(const std::string& name) {
  return std::string(EMBTRAIN_TEST_DATA) + "/" + name;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The message of the embtrain::Error that reading `path` throws, or "" after
// recording a failure when it reads fine or throws something else.
std::string read_error(const std::string& path) {
  try {
    embtrain::read_npy(path);
  } catch (const embtrain::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << path << ": expected embtrain::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << path << ": read without an error";
  return "";
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool have_numpy() { return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0; }

// A fresh, empty folder per test, removed afterwards.
class NpyFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("embtrain_npy_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// ---------------------------------------------------------------- round trips

template <typename T>
std::vector<T> random_values(int64_t n, std::mt19937_64& rng) {
  std::vector<T> v(static_cast<size_t>(n));
  if constexpr (std::is_floating_point_v<T>) {
    std::normal_distribution<float> dist(0.f, 100.f);
    for (auto& x : v) x = dist(rng);
  } else {
    std::uniform_int_distribution<T> dist(std::numeric_limits<T>::min(),
                                          std::numeric_limits<T>::max());
    for (auto& x : v) x = dist(rng);
  }
  return v;
}

template <typename T>
void check_round_trip(const std::string& file, DType dtype, const std::vector<int64_t>& shape,
                      std::mt19937_64& rng) {
  SCOPED_TRACE(std::string(embtrain::dtype_name(dtype)) + " " + embtrain::shape_to_string(shape));
  const std::vector<T> values = random_values<T>(numel(shape), rng);
  embtrain::write_npy(file, dtype, shape, values.data());

  const NpyArray a = embtrain::read_npy(file);
  EXPECT_EQ(a.dtype, dtype);
  EXPECT_EQ(a.shape, shape);
  EXPECT_EQ(a.numel(), numel(shape));
  ASSERT_EQ(a.data.size(), values.size() * sizeof(T));
  EXPECT_TRUE(std::equal(values.begin(), values.end(), a.as<T>()));

  // The npy format pads the header so that the data starts at a multiple of 64.
  const auto file_size = static_cast<int64_t>(fs::file_size(file));
  EXPECT_EQ((file_size - static_cast<int64_t>(values.size() * sizeof(T))) % 64, 0);
}

TEST_F(NpyFiles, RoundTripsEveryDtypeAndShape) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {5}, {2, 3, 4}, {3, 0}};
  for (const auto& shape : shapes) {
    check_round_trip<float>(path("a.npy"), DType::kFloat32, shape, rng);
    check_round_trip<int32_t>(path("a.npy"), DType::kInt32, shape, rng);
    check_round_trip<int64_t>(path("a.npy"), DType::kInt64, shape, rng);
  }
}

// The streaming reader and writer (checkpoints and from_pretrained move
// tables through them a chunk at a time): a file written in random pieces
// is write_npy's byte for byte; byte ranges and windowed rows read back
// what was written; a writer dropped unfinished leaves nothing behind.
TEST_F(NpyFiles, PiecesEqualTheWholeFile) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  for (int round = 0; round < 20; ++round) {
    const int64_t rows = 1 + static_cast<int64_t>(rng() % 300);
    const int64_t width = 1 + static_cast<int64_t>(rng() % 40);
    std::vector<float> data(static_cast<size_t>(rows * width));
    for (float& x : data) x = normal(rng);
    const std::string whole = path("whole.npy"), pieces = path("pieces.npy");
    embtrain::write_npy(whole, DType::kFloat32, {rows, width}, data.data());
    {
      embtrain::NpyWriter writer(pieces, DType::kFloat32, {rows, width});
      const int64_t bytes = rows * width * 4;
      for (int64_t at = 0; at < bytes;) {
        const int64_t n = std::min<int64_t>(bytes - at, 1 + static_cast<int64_t>(rng() % 999));
        writer.write(reinterpret_cast<const char*>(data.data()) + at, n);
        at += n;
      }
      writer.finish();
    }
    std::ifstream a(whole, std::ios::binary), b(pieces, std::ios::binary);
    const std::string wa((std::istreambuf_iterator<char>(a)), std::istreambuf_iterator<char>());
    const std::string wb((std::istreambuf_iterator<char>(b)), std::istreambuf_iterator<char>());
    ASSERT_EQ(wa, wb) << "rows " << rows << ", width " << width;

    embtrain::NpyReader reader(pieces);
    ASSERT_EQ(reader.shape(), (std::vector<int64_t>{rows, width}));
    const int64_t first = static_cast<int64_t>(rng() % static_cast<uint64_t>(rows * width));
    const int64_t count =
        static_cast<int64_t>(rng() % static_cast<uint64_t>(rows * width - first + 1));
    std::vector<float> range(static_cast<size_t>(count));
    reader.read(first * 4, count * 4, range.data());
    EXPECT_TRUE(std::equal(range.begin(), range.end(), data.begin() + first)) << "byte range";
    embtrain::NpyRowReader row_reader(&reader, width, 1 + static_cast<int64_t>(rng() % 50));
    for (int64_t r = static_cast<int64_t>(rng() % 5); r < rows;
         r += 1 + static_cast<int64_t>(rng() % 7))
      ASSERT_TRUE(
          std::equal(data.begin() + r * width, data.begin() + (r + 1) * width, row_reader.row(r)))
          << "row " << r << " of " << rows;
  }
  {
    embtrain::NpyWriter dropped(path("dropped.npy"), DType::kFloat32, {2, 2});
    const float half[2] = {1.f, 2.f};
    dropped.write(half, sizeof(half));
  }
  EXPECT_FALSE(fs::exists(path("dropped.npy")));
  EXPECT_FALSE(fs::exists(path("dropped.npy.tmp")));
}

TEST_F(NpyFiles, WriteLeavesNoTemporaryFileBehind) {
  const std::vector<float> v = {1.f, -2.f, 3.5f};
  embtrain::write_npy(path("w.npy"), DType::kFloat32, {3}, v.data());
  // Overwriting an existing file goes through the temporary file too.
  const std::vector<int64_t> w = {7, 8};
  embtrain::write_npy(path("w.npy"), DType::kInt64, {1, 2}, w.data());

  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_)) names.push_back(entry.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"w.npy"});

  const NpyArray a = embtrain::read_npy(path("w.npy"));
  EXPECT_EQ(a.dtype, DType::kInt64);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(a.as<int64_t>()[0], 7);
  EXPECT_EQ(a.as<int64_t>()[1], 8);
}

TEST_F(NpyFiles, WriteIntoMissingFolderThrowsNamingTheFile) {
  const std::vector<float> v = {1.f};
  const std::string file = path("no_such_folder/out.npy");
  try {
    embtrain::write_npy(file, DType::kFloat32, {1}, v.data());
    FAIL() << "write_npy into a missing folder did not throw";
  } catch (const embtrain::Error& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
  }
}

TEST(ShapeToString, RendersLikeNumpy) {
  EXPECT_EQ(embtrain::shape_to_string({}), "()");
  EXPECT_EQ(embtrain::shape_to_string({5}), "(5,)");
  EXPECT_EQ(embtrain::shape_to_string({2, 3, 4}), "(2, 3, 4)");
  EXPECT_EQ(embtrain::shape_to_string({3, 0}), "(3, 0)");
}

// ------------------------------------------------------- files numpy wrote

// Reads a fixture and checks dtype, shape and every value against `value(i)`
// of the flat index i (the formulas of make_npy_fixtures.py).
template <typename T, typename F>
void expect_fixture(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                    F value) {
  SCOPED_TRACE(name);
  const NpyArray a = embtrain::read_npy(fixture(name));
  EXPECT_EQ(a.dtype, dtype);
  EXPECT_EQ(a.shape, shape);
  ASSERT_EQ(a.numel(), numel(shape));
  ASSERT_EQ(static_cast<int64_t>(a.data.size()), numel(shape) * static_cast<int64_t>(sizeof(T)));
  for (int64_t i = 0; i < a.numel(); ++i)
    EXPECT_EQ(a.as<T>()[i], value(i)) << "at flat index " << i;
}

TEST(NpyFromNumpy, Float32) {
  expect_fixture<float>("f4_2x3x4.npy", DType::kFloat32, {2, 3, 4},
                        [](int64_t i) { return static_cast<float>(0.25 * i - 3); });
}

TEST(NpyFromNumpy, Int32) {
  expect_fixture<int32_t>("i4_5.npy", DType::kInt32, {5},
                          [](int64_t i) { return static_cast<int32_t>(3 - 7 * i); });
}

TEST(NpyFromNumpy, Int64BeyondInt32) {
  expect_fixture<int64_t>("i8_4x2.npy", DType::kInt64, {4, 2},
                          [](int64_t i) { return 1000000007 * i - (int64_t{1} << 40); });
}

TEST(NpyFromNumpy, ZeroDimensional) {
  expect_fixture<float>("f4_scalar.npy", DType::kFloat32, {}, [](int64_t) { return 3.25f; });
}

TEST(NpyFromNumpy, Empty) {
  expect_fixture<float>("f4_empty.npy", DType::kFloat32, {0}, [](int64_t) { return 0.f; });
  expect_fixture<int64_t>("i8_empty_3x0.npy", DType::kInt64, {3, 0},
                          [](int64_t) { return int64_t{0}; });
}

TEST(NpyFromNumpy, FormatVersions2And3) {
  expect_fixture<float>("f4_v2_3x2.npy", DType::kFloat32, {3, 2},
                        [](int64_t i) { return static_cast<float>(1.5 * i + 0.5); });
  expect_fixture<int32_t>("i4_v3_7.npy", DType::kInt32, {7},
                          [](int64_t i) { return static_cast<int32_t>(i * i - 20); });
}

// --------------------------------------------------------- files we refuse

TEST(NpyRefuses, EveryBadFileWithAnErrorNamingIt) {
  const char* names[] = {"bad_big_endian.npy",
                         "bad_fortran.npy",
                         "bad_float64.npy",
                         "bad_int16.npy",
                         "bad_magic.npy",
                         "bad_truncated_data.npy",
                         "bad_truncated_header.npy",
                         "no_such_file.npy"};
  for (const char* name : names) {
    const std::string msg = read_error(fixture(name));
    EXPECT_NE(msg.find(fixture(name)), std::string::npos) << name << ": " << msg;
  }
}

// The error says what was found, not only that something is wrong.
TEST(NpyRefuses, SaysWhatWasFound) {
  EXPECT_NE(read_error(fixture("bad_big_endian.npy")).find(">f4"), std::string::npos);
  EXPECT_NE(read_error(fixture("bad_float64.npy")).find("<f8"), std::string::npos);
  EXPECT_NE(read_error(fixture("bad_int16.npy")).find("<i2"), std::string::npos);
  EXPECT_NE(lower(read_error(fixture("bad_fortran.npy"))).find("fortran"), std::string::npos);
}

// ---------------------------------------- shapes whose byte count overflows

// A version 1.0 .npy file with the given header dict text and data bytes,
// written byte by byte: what a corrupt or hostile file may hold.
void write_raw_npy(const std::string& file, const std::string& dict, const std::string& data) {
  std::string header = dict;
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  std::string bytes = "\x93NUMPY";
  bytes += '\x01';
  bytes += '\x00';
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header + data;
  std::FILE* out = std::fopen(file.c_str(), "wb");
  ASSERT_NE(out, nullptr) << file;
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), out), bytes.size());
  std::fclose(out);
}

std::string npy_dict(const std::string& descr, const std::vector<int64_t>& shape) {
  return "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " +
         embtrain::shape_to_string(shape) + ", }";
}

// The cases of issue 14 (D1): each shape's byte count wraps around 2^64 to
// the data the file holds (none, or 160 bytes), which a wrapped product
// once took for a match.
TEST_F(NpyFiles, RefusesShapesWhoseByteCountWrapsToTheFileSize) {
  const int64_t k62 = int64_t{1} << 62;
  struct Case {
    const char* descr;
    std::vector<int64_t> shape;
    size_t data_bytes;
  };
  const Case cases[] = {{"<i4", {k62}, 0}, {"<f4", {k62, 4}, 0}, {"<f4", {k62 + 10, 4}, 160}};
  for (const Case& c : cases) {
    const std::string file = path("wrap.npy");
    write_raw_npy(file, npy_dict(c.descr, c.shape), std::string(c.data_bytes, '\0'));
    const std::string msg = read_error(file);
    SCOPED_TRACE(msg);
    EXPECT_NE(msg.find(file), std::string::npos);
    EXPECT_NE(msg.find(embtrain::shape_to_string(c.shape)), std::string::npos);
    EXPECT_NE(msg.find("fits in 64 bits"), std::string::npos);  // the valid range
  }
}

// Random shapes of 1 to 4 dimensions whose bytes are k * itemsize + j 2^64
// for a small k: every one must be refused, none read.
TEST_F(NpyFiles, RefusesRandomWrappingShapes) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const char* descrs[] = {"<i4", "<f4", "<i8"};
  for (int trial = 0; trial < 200; ++trial) {
    const int which = static_cast<int>(rng() % 3);
    const uint64_t item = which == 2 ? 8 : 4;
    const int dims = 1 + static_cast<int>(rng() % 4);
    // The trailing dimensions are powers of two, the first one takes the rest.
    std::vector<int64_t> shape(static_cast<size_t>(dims));
    uint64_t inner = 1;
    for (int d = 1; d < dims; ++d) {
      shape[d] = int64_t{1} << (rng() % 4);
      inner *= static_cast<uint64_t>(shape[d]);
    }
    const uint64_t k = inner * (rng() % 8);  // elements the data holds
    const uint64_t wrap = (uint64_t{1} << 63) / (inner * item) * 2;  // 2^64 / (inner * item)
    shape[0] = static_cast<int64_t>(k / inner + wrap);  // below 2^63: inner * item >= 4
    SCOPED_TRACE(embtrain::shape_to_string(shape) + " " + descrs[which]);
    const std::string file = path("rand.npy");
    write_raw_npy(file, npy_dict(descrs[which], shape), std::string(k * item, '\x01'));
    const std::string msg = read_error(file);
    EXPECT_NE(msg.find(file), std::string::npos) << msg;
  }
}

TEST(NpySizes, NumelAndWriteRefuseOverflow) {
  NpyArray a;
  a.shape = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_THROW(a.numel(), embtrain::Error);
  a.shape = {int64_t{1} << 40, int64_t{1} << 40, 0};
  EXPECT_THROW(a.numel(), embtrain::Error);  // no elements, but unaddressable dimensions
  a.shape = {3, 0};
  EXPECT_EQ(a.numel(), 0);
  const std::string file =
      ::testing::TempDir() + "/embtrain_never_written_" + std::to_string(::getpid()) + ".npy";
  EXPECT_THROW(embtrain::write_npy(file, DType::kFloat32, {int64_t{1} << 62, 4}, nullptr),
               embtrain::Error);
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(fs::exists(file + ".tmp"));
}

// ------------------------------------------------------- numpy reads ours

TEST_F(NpyFiles, NumpyReadsWhatWeWrite) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is not available";

  // The same formulas as the fixtures: numpy recomputes and compares them.
  std::vector<float> f(24);
  for (int i = 0; i < 24; ++i) f[i] = static_cast<float>(0.25 * i - 3);
  std::vector<int64_t> l(8);
  for (int i = 0; i < 8; ++i) l[i] = 1000000007LL * i - (int64_t{1} << 40);
  std::vector<int32_t> s(5);
  for (int i = 0; i < 5; ++i) s[i] = 3 - 7 * i;
  const float scalar = 3.25f;
  embtrain::write_npy(path("f.npy"), DType::kFloat32, {2, 3, 4}, f.data());
  embtrain::write_npy(path("l.npy"), DType::kInt64, {4, 2}, l.data());
  embtrain::write_npy(path("s.npy"), DType::kInt32, {5}, s.data());
  embtrain::write_npy(path("scalar.npy"), DType::kFloat32, {}, &scalar);
  embtrain::write_npy(path("empty.npy"), DType::kInt32, {3, 0}, nullptr);

  const std::string script =
      "import sys, numpy as np\n"
      "d = sys.argv[1]\n"
      "def check(name, dtype, expect):\n"
      "    a = np.load(d + '/' + name)\n"
      "    ok = a.dtype == np.dtype(dtype) and a.shape == expect.shape and (a == expect).all()\n"
      "    if not ok: print(name, a.dtype, a.shape, a); sys.exit(1)\n"
      "check('f.npy', '<f4', (0.25 * np.arange(24) - 3).astype('<f4').reshape(2, 3, 4))\n"
      "check('l.npy', '<i8', (1000000007 * np.arange(8, dtype='<i8') - 2**40).reshape(4, 2))\n"
      "check('s.npy', '<i4', 3 - 7 * np.arange(5, dtype='<i4'))\n"
      "check('scalar.npy', '<f4', np.array(3.25, dtype='<f4'))\n"
      "check('empty.npy', '<i4', np.zeros((3, 0), dtype='<i4'))\n";
  {
    std::FILE* out = std::fopen(path("check.py").c_str(), "w");
    ASSERT_NE(out, nullptr);
    std::fputs(script.c_str(), out);
    std::fclose(out);
  }
  const std::string cmd = "/usr/bin/python3 '" + path("check.py") + "' '" + dir_.string() + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "numpy did not read back what write_npy wrote";
}

}  // namespace
