// The step-time model of `embtrain plan`: a machine profile (what `embtrain
// bench --profile` measured on one machine), the shape of a job's step,
// and an optional two-level cluster, give a predicted step time.
//
//   local phase  = its time per lookup (bucket_by_owner, expand,
//                  reduce_requested) x lookups per rank, or per distinct row
//                  (gather_owned, combine_at_owner, update) x distinct ids
//                  per rank, scaled by dim / the profile's dim where rows move
//   an exchange  = per all-to-all: latency x messages + bytes / bandwidth,
//                  bytes per rank = distinct ids x (P - 1) / P x bytes per id
//                  (ownership is cyclic, so each owner holds 1/P of them)
//                  + the engine's own cost beyond the raw all-to-all: its
//                  packing and rendezvous, what the profile's sharded run
//                  measured above the model for its own step less its wait,
//                  scaled by distinct ids / the profile's; and its wait for
//                  the slowest rank (how unevenly the ranks reach the
//                  exchange), scaled by the local phases / the profile's
//   calibration  = the machine-bound parts (local phases, the engine's own
//                  exchange cost) times one factor, which makes the profile's
//                  own step equal its measured median step (the phases are
//                  means over steps of the slowest rank's time: a few slow
//                  steps weigh less); the all-to-alls too when predicting the
//                  profile's own network (no cluster, a sharded profile)
//   two levels   = the intra-host part (gpus_per_host - 1 peers) then the
//                  inter-host part (P - gpus_per_host peers), in sequence
//   step         = the sum (no overlap: the engine's exchanges block; a
//                  pipelined run hides part of exchange_ids, not counted)
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace embtrain {
namespace app {

// One engine's local phases as measured: ms per lookup or per distinct row
// of a rank, in a run of `ranks` ranks with `dim` floats per row.
struct PhaseCosts {
  int ranks = 1, threads = 1;
  int64_t dim = 0;
  std::string optimizer;
  double lookups = 0, distinct = 0;       // per rank per step of the measured run
  double step_ms = 0;                     // its measured step (median)
  std::map<std::string, double> ms;       // per step, max over ranks, by phase (exchanges too)
  std::map<std::string, double> wait_ms;  // of an exchange's ms, the wait for the slowest rank
  int wire_bytes = 4;                     // its step's shape, for the exchanges' own cost
  bool counts = false;
};

// The all-to-all of the profile's communicator, fitted to a few sizes:
// ms = latency x (P - 1) messages + bytes sent per rank / bandwidth.
struct AllToAllCost {
  bool measured = false;
  int ranks = 1;
  double latency_us = 0;      // per message
  double bandwidth_gbps = 0;  // GB/s a rank sends to the others
  std::string note;
  std::vector<std::pair<double, double>> points;  // bytes sent per rank, ms
};

struct MachineProfile {
  std::string host, cpu, device, gpu;
  double copy_bandwidth_gbps = 0;
  std::map<std::string, PhaseCosts> engines;  // "local", "sharded"
  AllToAllCost alltoall;
};

nlohmann::json profile_json(const MachineProfile& p);
// Throws embtrain::Error naming `path` and the bad field.
MachineProfile profile_from_json(const nlohmann::json& j, const std::string& path);
MachineProfile read_profile(const std::string& path);

// A cluster of `hosts` x `per_host` ranks: --cluster
// "hosts=64,gpus_per_host=8,intra=450GB/s,inter=400Gbit/s[,intra_latency=3us]
// [,inter_latency=10us][,device_memory=80GB][,host_memory=2TB]". `intra` is
// each rank's bandwidth to the ranks of its host, `inter` each rank's to
// other hosts (one NIC per GPU; give the NIC's rate / gpus_per_host for a
// shared one).
struct Cluster {
  int hosts = 1, per_host = 1;
  double intra_bps = 0, inter_bps = 0;  // bytes per second
  double intra_latency_s = 3e-6, inter_latency_s = 10e-6;
  double device_bytes = -1;  // each GPU's memory (-1: not given)
  double host_bytes = -1;    // each host's memory (-1: not given)
  int ranks() const { return hosts * per_host; }
};
Cluster parse_cluster(const std::string& text);

// "450GB/s", "400Gbit/s", "10gbit" -> bytes per second; "80GB", "2TB",
// "512MiB" -> bytes. Throw embtrain::Error naming `what`.
double parse_rate(const std::string& text, const std::string& what);
double parse_size(const std::string& text, const std::string& what);

// One step of a job on one rank.
struct StepShape {
  double lookups = 0;   // ids looked up per rank per step
  double distinct = 0;  // distinct ids among them
  int64_t dim = 0;
  int wire_bytes = 4;  // per element of a row on the wire
  int tables = 1;
  bool counts = false;  // scale_grad_by_freq: ids' counts sent with the gradients
};

// The expected number of distinct ids among `draws` ids of which a
// fraction `pad_frac` is the padding id 0 and the rest follow Zipf(alpha)
// over ids 1..rows-1 (zipf.hpp): sum over ids of 1 - (1 - p)^n, plus 1
// for the padding id when any is drawn.
double expected_distinct_zipf(int64_t rows, double alpha, double draws, double pad_frac);

struct Prediction {
  struct Part {
    std::string name;
    double ms = 0;
    double bytes = 0;  // exchanges: sent per rank per step
    int alltoalls = 0;
    double messages = 0;  // per all-to-all
    double network_ms = 0,
           engine_ms = 0;  // exchanges: of ms, the all-to-alls' and the engine's own
    double wait_ms = 0;    // of engine_ms, the wait for the slowest rank
  };
  std::vector<Part> phases, exchanges;
  double step_ms = 0;
  std::string engine;               // whose phases were used
  double calibration = 1;           // the machine-bound parts' factor (step_model.cpp)
  bool network_calibrated = false;  // the all-to-alls' too (the profile's own network)
  std::vector<std::string> notes;   // what the prediction assumes
};

// `cluster` null: the profile's own machine and communicator.
Prediction predict_step(const MachineProfile& profile, const StepShape& shape, int ranks,
                        const Cluster* cluster);

}  // namespace app
}  // namespace embtrain
