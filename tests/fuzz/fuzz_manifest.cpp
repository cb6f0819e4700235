// libFuzzer target: a checkpoint's manifest.json read through the public
// read_checkpoint_info on a scratch checkpoint folder. Any bytes must give
// the checkpoint's info or embtrain::Error.
#include <filesystem>

#include "embtrain/checkpoint.hpp"
#include "embtrain/errors.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = embtrain_fuzz::scratch_path("ckpt");
    std::filesystem::create_directories(d);
    return d;
  }();
  embtrain_fuzz::write_file(dir + "/manifest.json", data, size);
  try {
    embtrain::read_checkpoint_info(dir);
  } catch (const embtrain::Error&) {
  }
  return 0;
}
