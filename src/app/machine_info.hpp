#pragma once

#include <string>

namespace embtrain {
namespace app {

struct MachineInfo {
  std::string host;
  std::string cpu;  // model name from /proc/cpuinfo
  int cores = 0;    // logical CPUs online
};

MachineInfo machine_info();

// Measured copy bandwidth with `threads` threads, in GB/s counting bytes
// read plus bytes written (memcpy of a buffer far larger than the caches,
// best of several runs).
double measure_copy_bandwidth_gbps(int threads);

}  // namespace app
}  // namespace embtrain
