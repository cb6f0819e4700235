// libFuzzer target: the recsys click-log reader (user<TAB>items<TAB>
// candidate<TAB>label) on any bytes. It must return samples within the
// ranges it was given, or throw embtrain::Error.
#include <cstdlib>

#include "embtrain/errors.hpp"
#include "embtrain/workloads/recsys.hpp"
#include "fuzz_util.hpp"

namespace {
constexpr int64_t kUsers = 100, kItems = 1000, kHistory = 8;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = embtrain_fuzz::scratch_path("clicks.tsv");
  embtrain_fuzz::write_file(path, data, size);
  embtrain::recsys::Clicks c;
  try {
    c = embtrain::recsys::read_click_log(path, kUsers, kItems, kHistory);
  } catch (const embtrain::Error&) {
    return 0;
  }
  const int64_t n = c.size();
  if (n < 1 || static_cast<int64_t>(c.history.size()) != n * kHistory) std::abort();
  for (int64_t i = 0; i < n; ++i) {
    if (c.users[i] < 0 || c.users[i] >= kUsers) std::abort();
    if (c.candidates[i] < 1 || c.candidates[i] > kItems) std::abort();
    if (c.labels[i] != 0.f && c.labels[i] != 1.f) std::abort();
  }
  for (int64_t item : c.history)
    if (item < 0 || item > kItems) std::abort();  // 0 is the padding
  return 0;
}
