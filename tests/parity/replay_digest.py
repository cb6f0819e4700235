#!/usr/bin/python3
"""Digests of what `embtrain replay` writes, for showing that two builds
compute the same bits (a refactor, a new backend, another rank count).

It replays a fixed set of cases (replay_parity.py's random cases, plus larger
ones with Zipf ids and heavy duplicates), then prints one line per output
file: case, file, SHA-256 of the array's bytes. Two runs that print the same
lines wrote the same files bit for bit:

    /usr/bin/python3 tests/parity/replay_digest.py --embtrain OLD/embtrain > old.txt
    /usr/bin/python3 tests/parity/replay_digest.py --embtrain NEW/embtrain > new.txt
    diff old.txt new.txt

It checks nothing itself (replay_parity.py compares with PyTorch); it is the
tool that makes "the same output files before and after" a one-line diff.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import replay_parity  # noqa: E402  (the case generator)


class ZipfCase:
    """A larger case than the parity suite's: Zipf ids over N rows, a long
    batch with many duplicates (long segments), padding, every option."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.N = int(rng.integers(1000, 20000))
        self.D = int(rng.choice([4, 16, 33, 128]))
        self.W = rng.standard_normal((self.N, self.D)).astype(np.float32)
        self.optimizer = replay_parity.OPTIMIZERS[seed % 4]
        self.padding_idx = int(rng.integers(-self.N, self.N)) if seed % 3 else None
        self.scale = bool(seed % 2)
        self.max_norm = float(np.float32(np.sqrt(self.D))) if seed % 5 == 0 else None
        ranks = np.arange(1, self.N + 1, dtype=np.float64)
        p = ranks ** -1.05
        p /= p.sum()
        self.steps = []
        for _ in range(3):
            shape = (int(rng.integers(200, 800)), int(rng.integers(1, 40)))
            ids = rng.choice(self.N, size=shape, p=p)
            if self.padding_idx is not None:
                ids[rng.random(shape) < 0.1] = self.padding_idx % self.N
            ids = ids.astype(np.int32 if rng.random() < 0.5 else np.int64)
            grad = rng.standard_normal(shape + (self.D,)).astype(np.float32)
            self.steps.append((ids, grad))

    def binary_options(self):
        args = ["--optimizer", self.optimizer, "--lr", "0.05"]
        if self.padding_idx is not None:
            args.append("--padding-idx=%d" % self.padding_idx)
        if self.scale:
            args.append("--scale-grad-by-freq")
        if self.max_norm is not None:
            args += ["--max-norm", repr(self.max_norm)]
        return args


def digest(path):
    array = np.load(path, allow_pickle=False)
    h = hashlib.sha256()
    h.update(str(array.dtype).encode() + str(array.shape).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:32]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embtrain", required=True, help="path to the embtrain binary")
    parser.add_argument("--np", type=int, default=0, help="run under 'mpirun -np NP'")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--cases", type=int, default=40, help="parity-suite cases")
    parser.add_argument("--zipf-cases", type=int, default=8, help="larger Zipf cases")
    parser.add_argument("--seed", type=int, default=20261201, help="master seed")
    args = parser.parse_args()

    launch = []
    if args.np > 0:
        launch = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(args.np),
                  "-x", "OMP_NUM_THREADS=1"]
        if os.geteuid() == 0:
            launch.insert(1, "--allow-run-as-root")
    seeds = np.random.default_rng(args.seed).integers(0, 2 ** 31, args.cases)
    cases = [replay_parity.Case(int(s) - int(s) % 8 + i % 8) for i, s in enumerate(seeds)]
    cases += [ZipfCase(args.seed + k) for k in range(args.zipf_cases)]
    print("# replay digests: seed %d, np %d, device %s" % (args.seed, args.np, args.device))
    with tempfile.TemporaryDirectory(prefix="replay_digest_") as root:
        for i, case in enumerate(cases):
            work = os.path.join(root, "case%03d" % i)
            os.makedirs(work)
            weights, batches = replay_parity.write_case_files(case, work)
            out = os.path.join(work, "out")
            cmd = launch + [os.path.abspath(args.embtrain), "replay", "--weights", weights,
                            "--batches", batches, "--out", out] + case.binary_options()
            if args.device != "cpu":
                cmd += ["--device", args.device]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if proc.returncode != 0:
                print("case %d seed %d: exit %d: %s" % (i, case.seed, proc.returncode,
                                                         proc.stderr.decode()[-500:].strip()))
                continue
            for name in sorted(os.listdir(out)):
                print("case %d seed %d %s %s" % (i, case.seed, name,
                                                 digest(os.path.join(out, name))))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
