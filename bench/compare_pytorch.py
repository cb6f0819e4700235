#!/usr/bin/python3
"""Side-by-side CPU step time: embtrain bench against torch.nn.Embedding.

Runs the same synthetic workload (batch x seq ids, Zipf over rows 1..rows-1,
a fraction set to the padding id 0) through PyTorch (sparse gradients,
torch.optim.SparseAdam or SGD, same thread count) and through
`embtrain bench --json`, in one run, and prints both step times and their
ratio. PyTorch cannot combine sparse gradients with scale_grad_by_freq, so
its side runs without it while embtrain runs with it (the harder job).

Defaults are the reference workload bench-A: 1,000,000 x 128, batch 4096 x
seq 20, Zipf 1.05, 10% padding, 2 threads.

    /usr/bin/python3 bench/compare_pytorch.py --embtrain build/embtrain --optimizer adam
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch


def zipf_ids(rng, rows, alpha, n, pad_frac):
    k = np.arange(1, rows, dtype=np.float64)
    cdf = np.cumsum(k ** -alpha)
    cdf /= cdf[-1]
    ids = np.searchsorted(cdf, rng.random(n), side="left") + 1
    ids[rng.random(n) < pad_frac] = 0
    return ids.astype(np.int64)


def pytorch_step_ms(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    n = args.batch * args.seq
    batches = [torch.from_numpy(zipf_ids(rng, args.rows, args.zipf, n, args.pad_frac))
               .view(args.batch, args.seq) for _ in range(args.distinct_batches)]
    uniques = [len(torch.unique(b)) for b in batches]
    grad = torch.randn(args.batch, args.seq, args.dim)
    emb = torch.nn.Embedding(args.rows, args.dim, padding_idx=0, sparse=True)
    if args.optimizer == "adam":
        opt = torch.optim.SparseAdam(emb.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(emb.parameters(), lr=args.lr)
    times = []
    for s in range(args.warmup + args.steps):
        ids = batches[s % len(batches)]
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = emb(ids)
        out.backward(grad)
        opt.step()
        if s >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), statistics.mean(uniques)


def embtrain_result(args):
    cmd = [args.embtrain, "bench", "--json", "--rows", str(args.rows), "--dim", str(args.dim),
           "--batch", str(args.batch), "--seq", str(args.seq), "--zipf", str(args.zipf),
           "--pad-frac", str(args.pad_frac), "--optimizer", args.optimizer, "--lr", str(args.lr),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--seed", str(args.seed),
           "--distinct-batches", str(args.distinct_batches)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"embtrain bench failed ({done.returncode}): {done.stderr.strip()}")
    return cmd, json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--embtrain", default="build/embtrain")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--seq", type=int, default=20)
    p.add_argument("--zipf", type=float, default=1.05)
    p.add_argument("--pad-frac", type=float, default=0.1)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--distinct-batches", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if args.lr is None:
        args.lr = 1e-3 if args.optimizer == "adam" else 0.1

    print(f"# host {platform.node()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{args.threads} threads", flush=True)
    print(f"# workload {args.rows} x {args.dim}, batch {args.batch} x seq {args.seq}, zipf "
          f"{args.zipf}, pad-frac {args.pad_frac}, {args.optimizer}, {args.steps} steps "
          f"+ {args.warmup} warmup", flush=True)
    torch_ms, torch_unique = pytorch_step_ms(args)
    cmd, ours = embtrain_result(args)
    ratio = torch_ms / ours["step_ms"]
    print(f"# embtrain command: {' '.join(cmd)}")
    print(f"{'':10s} {'step_ms':>10s} {'unique/step':>12s}")
    print(f"{'pytorch':10s} {torch_ms:10.2f} {torch_unique:12.0f}")
    print(f"{'embtrain':10s} {ours['step_ms']:10.2f} {ours['unique_per_step']:12.0f}")
    print(f"speed-up (pytorch step / embtrain step): {ratio:.2f}x")
    print(f"embtrain floor: {ours['floor_ms']:.2f} ms at {ours['copy_bandwidth_gbps']:.1f} GB/s "
          f"copy bandwidth ({100 * ours['floor_fraction']:.0f}% of the step)")
    if args.json:
        print(json.dumps({"pytorch_step_ms": torch_ms, "embtrain": ours, "speedup": ratio}))


if __name__ == "__main__":
    main()
