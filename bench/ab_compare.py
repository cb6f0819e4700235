#!/usr/bin/env python3
"""A/B comparison of two embtrain builds on the same bench workloads.

Runs `embtrain bench --json` of build A and build B in alternating order,
round after round, so that both see the same machine state (the other
load, the CPU's clock), and prints per workload the median step time of
each, the ratio B/A and the spread over rounds: the same-run ratio that
says whether a change made a step faster or slower beyond the noise.

    bench/ab_compare.py --a OLD/embtrain --b NEW/embtrain [--rounds 5] [--steps 30]
        [--ranks 1,2,4] [--optimizer adam,sgd] [-- extra bench options]

Each workload is bench-A (bench's defaults: 1M x 128, batch 4096 x 20 per
rank, Zipf 1.05, 10% padding) with the given optimizer and number of ranks
(weak scaling, as bench/scaling.sh; threads per rank = cores / ranks). Needs
only the standard library.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def bench_cmd(binary, ranks, optimizer, args, extra):
    threads = max(1, os.cpu_count() // ranks)
    cmd = []
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks),
               "-x", "OMP_NUM_THREADS=%d" % threads]
        if os.geteuid() == 0:
            cmd.insert(1, "--allow-run-as-root")
    cmd += [binary, "bench", "--json", "--optimizer", optimizer, "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--threads", str(threads)]
    if optimizer == "sgd":
        cmd += ["--lr", "0.1"]
    return cmd + extra


def step_ms(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit("bench failed (%d): %s\n%s" % (done.returncode, " ".join(cmd),
                                                 done.stderr.strip()[-2000:]))
    return json.loads(done.stdout.strip().splitlines()[-1])["step_ms"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="embtrain binary A (the baseline)")
    p.add_argument("--b", required=True, help="embtrain binary B (the change)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--optimizer", default="adam,sgd")
    p.add_argument("extra", nargs="*", help="more bench options (after --)")
    args = p.parse_args()
    print("# ab_compare: A %s, B %s, %d rounds, %d steps + %d warmup, host %s, %d cpus"
          % (args.a, args.b, args.rounds, args.steps, args.warmup, os.uname().nodename,
             os.cpu_count()), flush=True)
    print("%-16s %10s %10s %8s %18s %18s" % ("workload", "A ms", "B ms", "B/A", "A min..max",
                                             "B min..max"))
    for optimizer in args.optimizer.split(","):
        for ranks in [int(r) for r in args.ranks.split(",")]:
            times = {"a": [], "b": []}
            for r in range(args.rounds):
                order = ("a", "b") if r % 2 == 0 else ("b", "a")
                for which in order:
                    binary = args.a if which == "a" else args.b
                    times[which].append(step_ms(bench_cmd(binary, ranks, optimizer, args,
                                                          args.extra)))
            a, b = statistics.median(times["a"]), statistics.median(times["b"])
            print("%-16s %10.2f %10.2f %8.3f %18s %18s" % (
                "%s P=%d" % (optimizer, ranks), a, b, b / a,
                "%.2f..%.2f" % (min(times["a"]), max(times["a"])),
                "%.2f..%.2f" % (min(times["b"]), max(times["b"]))), flush=True)


if __name__ == "__main__":
    main()
