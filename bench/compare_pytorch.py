#!/usr/bin/python3
"""Side-by-side step time: embtrain bench against torch.nn.Embedding (or EmbeddingBag).

Runs the same synthetic workload (batch x seq ids, Zipf over rows 1..rows-1,
a fraction set to the padding id 0) through PyTorch (sparse gradients,
torch.optim.SparseAdam or SGD) and through `embtrain bench --json`, in one
run on the same machine, and prints both step times and their ratio.
PyTorch cannot combine sparse gradients with scale_grad_by_freq, so its side
runs without it while embtrain runs with it (the harder job).

Presets (any flag given explicitly wins):
  bench-A  CPU: 1,000,000 x 128, batch 4096 x seq 20, Zipf 1.05, 10% padding,
           2 threads (the default)
  bench-G  GPU: 10,000,000 x 128, batch 65,536 x seq 16, Zipf 1.05, 10%
           padding, --device cuda: both sides keep ids, gradient and output
           in GPU memory and are timed to the end of the GPU's work
  bench-A-bag  bench-A with each sample's 20 ids one bag, mean-pooled:
           torch.nn.EmbeddingBag (sparse) against `embtrain bench --pool`
           (--pool sum or mean; PyTorch has no sparse max)

    /usr/bin/python3 bench/compare_pytorch.py --embtrain build/embtrain --optimizer adam
    python3 bench/compare_pytorch.py --preset bench-G --embtrain build/embtrain
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from debian_python import import_or_rerun  # noqa: E402

np, torch = import_or_rerun(["numpy", "torch"])


def zipf_ids(rng, rows, alpha, n, pad_frac):
    k = np.arange(1, rows, dtype=np.float64)
    cdf = np.cumsum(k ** -alpha)
    cdf /= cdf[-1]
    ids = np.searchsorted(cdf, rng.random(n), side="left") + 1
    ids[rng.random(n) < pad_frac] = 0
    return ids.astype(np.int64)


PRESETS = {
    "bench-A": dict(rows=1_000_000, dim=128, batch=4096, seq=20, zipf=1.05, pad_frac=0.1,
                    device="cpu"),
    "bench-G": dict(rows=10_000_000, dim=128, batch=65_536, seq=16, zipf=1.05, pad_frac=0.1,
                    device="cuda"),
    "bench-A-bag": dict(rows=1_000_000, dim=128, batch=4096, seq=20, zipf=1.05, pad_frac=0.1,
                        device="cpu", pool="mean"),
}


def pytorch_step_ms(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    rng = np.random.default_rng(args.seed)
    n = args.batch * args.seq
    batches = [torch.from_numpy(zipf_ids(rng, args.rows, args.zipf, n, args.pad_frac))
               .view(args.batch, args.seq).to(device) for _ in range(args.distinct_batches)]
    uniques = [len(torch.unique(b)) for b in batches]
    if args.pool:
        grad = torch.randn(args.batch, args.dim, device=device)
        emb = torch.nn.EmbeddingBag(args.rows, args.dim, mode=args.pool, padding_idx=0,
                                    sparse=True, device=device)
    else:
        grad = torch.randn(args.batch, args.seq, args.dim, device=device)
        emb = torch.nn.Embedding(args.rows, args.dim, padding_idx=0, sparse=True, device=device)
    if args.optimizer == "adam":
        opt = torch.optim.SparseAdam(emb.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(emb.parameters(), lr=args.lr)
    times = []
    for s in range(args.warmup + args.steps):
        ids = batches[s % len(batches)]
        sync()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = emb(ids)
        out.backward(grad)
        opt.step()
        sync()
        if s >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    # Give the GPU memory back before embtrain runs beside this process.
    del emb, opt, out, batches, grad
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(times), statistics.mean(uniques)


def machine_line(args):
    line = f"# host {platform.node()}, {os.cpu_count()} cpus, torch {torch.__version__}"
    if args.device == "cuda":
        return line + f", gpu {torch.cuda.get_device_name(0)}"
    return line + f", {args.threads} threads"


def embtrain_result(args):
    cmd = [args.embtrain, "bench", "--json", "--rows", str(args.rows), "--dim", str(args.dim),
           "--batch", str(args.batch), "--seq", str(args.seq), "--zipf", str(args.zipf),
           "--pad-frac", str(args.pad_frac), "--optimizer", args.optimizer, "--lr", str(args.lr),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--seed", str(args.seed),
           "--distinct-batches", str(args.distinct_batches), "--device", args.device]
    if args.pool:
        cmd += ["--pool", args.pool]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"embtrain bench failed ({done.returncode}): {done.stderr.strip()}")
    return cmd, json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--embtrain", default="build/embtrain")
    p.add_argument("--preset", choices=sorted(PRESETS), default="bench-A")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--rows", type=int)
    p.add_argument("--dim", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--seq", type=int)
    p.add_argument("--zipf", type=float)
    p.add_argument("--pad-frac", type=float)
    p.add_argument("--pool", choices=["sum", "mean"],
                   help="bags: each sample's ids pooled (EmbeddingBag)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--distinct-batches", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: PyTorch sees no CUDA device here")
    if args.lr is None:
        args.lr = 1e-3 if args.optimizer == "adam" else 0.1

    print(machine_line(args), flush=True)
    print(f"# workload {args.preset if args.preset else ''} {args.rows} x {args.dim}, batch "
          f"{args.batch} x seq {args.seq}, zipf {args.zipf}, pad-frac {args.pad_frac}, "
          f"{'bags pooled by ' + args.pool + ', ' if args.pool else ''}"
          f"{args.optimizer}, device {args.device}, {args.steps} steps + {args.warmup} warmup",
          flush=True)
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
    if ours.get("gpu"):
        print(f"embtrain gpu: {ours['gpu']}")
    if args.json:
        print(json.dumps({"pytorch_step_ms": torch_ms, "embtrain": ours, "speedup": ratio}))


if __name__ == "__main__":
    main()
