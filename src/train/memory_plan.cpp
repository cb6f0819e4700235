#include "embtrain/memory_plan.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "embtrain/errors.hpp"
#include "embtrain/row_math.hpp"
#include "embtrain/sharded_embedding.hpp"  // transfer_chunk_bytes

namespace embtrain {

namespace {

// A value of /proc/meminfo in bytes ("MemAvailable:  123 kB"), or -1.
double meminfo_bytes(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string name, unit;
  double value = 0;
  while (in >> name >> value) {
    std::getline(in, unit);
    if (name == key + ":") return value * 1024;
  }
  return -1;
}

// A cgroup v2 file holding a byte count ("max" or absent: -1).
double cgroup_bytes(const char* file) {
  std::ifstream in(std::string("/sys/fs/cgroup/") + file);
  std::string text;
  if (!(in >> text) || text == "max") return -1;
  try {
    return std::stod(text);
  } catch (const std::exception&) {
    return -1;
  }
}

std::string count_text(double n) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.0f", n);
  std::string digits = text, out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

}  // namespace

std::string bytes_text(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) bytes /= 1024, ++u;
  char text[64];
  std::snprintf(text, sizeof(text), u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return text;
}

double process_memory_bytes(const char* key) {
  std::ifstream in("/proc/self/status");
  const std::string name = std::string(key) + ":";
  for (std::string line; std::getline(in, line);)
    if (line.compare(0, name.size(), name) == 0) return std::stod(line.substr(name.size())) * 1024;
  return -1;
}

void MemoryPlan::add_process() {
  static const double at_start = std::max(process_memory_bytes(), 0.0);  // the first plan's
  add("this process (code, MPI, libraries: its resident memory before the run)", at_start);
}

void MemoryPlan::add_table(const TableSpec& spec, double rows, int ranks) {
  const double shard = std::ceil(rows / std::max(ranks, 1));
  const double width = static_cast<double>(spec.dim) +
                       static_cast<double>(optimizer_state_width(spec.optimizer.kind, spec.dim));
  add(detail::concat("table ", spec.name, " (shard of ", count_text(shard), " rows x ", spec.dim,
                     ", weights and ", optimizer_name(spec.optimizer.kind), " state)"),
      shard * width * 4, /*device=*/true);
  lines_.back().device_only = true;
}

void MemoryPlan::add_transfer_buffers() {
  if (!gpu_) return;
  add("transfer buffers (3 chunks of " + bytes_text(static_cast<double>(transfer_chunk_bytes())) +
          ": rows to and from checkpoints and .npy files)",
      3.0 * static_cast<double>(transfer_chunk_bytes()));
}

double MemoryPlan::total() const {
  double sum = 0;
  for (const Line& l : lines_) sum += on_host(l) ? l.bytes : 0;
  return sum;
}

double MemoryPlan::device_total() const {
  double sum = 0;
  for (const Line& l : lines_) sum += l.device ? l.bytes : 0;
  return sum;
}

std::string MemoryPlan::text(bool device) const {
  size_t width = 0;
  for (const Line& l : lines_) width = std::max(width, l.what.size());
  std::string out;
  for (const Line& l : lines_)
    if (device ? l.device : on_host(l))
      out += "  " + l.what + std::string(width - l.what.size() + 2, ' ') + bytes_text(l.bytes) +
             "\n";
  out += "  total" + std::string(width - 3, ' ') + bytes_text(device ? device_total() : total()) +
         "\n";
  return out;
}

double host_bytes_per_rank(int ranks_on_host, std::string* source) {
  double available = meminfo_bytes("MemAvailable");
  *source = "MemAvailable in /proc/meminfo";
  const double limit = cgroup_bytes("memory.max"), used = cgroup_bytes("memory.current");
  if (limit > 0 && (available < 0 || limit - std::max(used, 0.0) < available)) {
    available = limit - std::max(used, 0.0);
    *source = "the cgroup's memory.max less memory.current";
  }
  return available < 0 ? -1 : available / std::max(ranks_on_host, 1);
}

void check_memory_plan(Communicator& comm, int ranks_on_host, const MemoryPlan& plan,
                       const std::string& advice) {
  std::string source;
  const double mine = host_bytes_per_rank(ranks_on_host, &source);
  std::string error;
  if (mine >= 0 && plan.total() > mine)
    error = detail::concat("the run does not fit in memory: rank ", comm.rank(), " needs ",
                           bytes_text(plan.total()), " but has ", bytes_text(mine), " (",
                           source, ", shared by ", ranks_on_host, " rank(s) on its host):\n",
                           plan.text(), advice);
  error = comm.agree_on_error(error);
  if (!error.empty()) throw AgreedError(error);
}

std::string device_memory_error(const MemoryPlan& plan, int rank, int device,
                                int ranks_on_device, double free_bytes, double total_bytes,
                                const std::string& advice) {
  const double mine = free_bytes / std::max(ranks_on_device, 1);
  if (plan.device_total() <= mine) return "";
  return detail::concat("the run does not fit in device memory: rank ", rank, " needs ",
                        bytes_text(plan.device_total()), " on GPU ", device, " but has ",
                        bytes_text(mine), " (", bytes_text(free_bytes), " free of ",
                        bytes_text(total_bytes), ", shared by ", ranks_on_device,
                        " rank(s) of its host):\n", plan.text(/*device=*/true), advice);
}

}  // namespace embtrain
