// What the fuzz targets share: a scratch file private to the fuzzing
// process that each input is written to (the readers under test take
// paths), and the rule that an input may end in embtrain::Error, the
// project's error for bad input, and in nothing else: any other exception
// escapes LLVMFuzzerTestOneInput and libFuzzer reports it as a crash.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

namespace embtrain_fuzz {

// $TMPDIR/embtrain_fuzz_<pid>_<name>, removed (with what is inside) at exit.
inline std::string scratch_path(const std::string& name) {
  static std::set<std::string> made;
  if (made.empty()) std::atexit([] {
    std::error_code ec;
    for (const std::string& p : made) std::filesystem::remove_all(p, ec);
  });
  const char* dir = std::getenv("TMPDIR");
  std::string p = std::string(dir && *dir ? dir : "/tmp") + "/embtrain_fuzz_" +
                  std::to_string(::getpid()) + "_" + name;
  made.insert(p);
  return p;
}

// Writes `size` bytes of `data` to `path`, replacing what was there.
inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();  // the harness itself is broken
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

}  // namespace embtrain_fuzz
