// Stop signals: SIGTERM (a scheduler's end of a job, `scancel`, `kill`),
// SIGINT (Ctrl-C) and SIGUSR1 (Slurm's `--signal=USR1@T` warning) ask a
// training run to stop at the end of its current step, save a checkpoint
// and exit. A second signal of the same kind while the first is pending
// ends the process at once (the default action), so a stuck save can still
// be interrupted.
#pragma once

namespace embtrain {

class StopSignals {
 public:
  // Installs the handlers; the destructor restores what was there before.
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The signal received since construction (SIGTERM, ...), or 0.
  static int received();
  // "SIGTERM", "SIGINT", "SIGUSR1".
  static const char* name(int signal);
};

}  // namespace embtrain
