#include "machine_info.hpp"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <vector>

#include "common/timer.hpp"

namespace embtrain {
namespace app {

MachineInfo machine_info() {
  MachineInfo info;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) info.host = host;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      info.cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  info.cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  return info;
}

double measure_copy_bandwidth_gbps(int threads) {
  const size_t bytes = size_t{256} << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  double best_ms = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    Stopwatch clock;
#pragma omp parallel num_threads(threads)
    {
      const size_t parts = static_cast<size_t>(omp_get_num_threads());
      const size_t me = static_cast<size_t>(omp_get_thread_num());
      const size_t begin = bytes * me / parts, end = bytes * (me + 1) / parts;
      std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
    }
    best_ms = std::min(best_ms, clock.lap_ms());
  }
  return 2.0 * static_cast<double>(bytes) / (best_ms * 1e6);
}

}  // namespace app
}  // namespace embtrain
