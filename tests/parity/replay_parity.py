#!/usr/bin/python3
"""Parity test: `embtrain replay` against torch.nn.Embedding + torch.optim.

Random cases: each draws a table, a few steps of (ids, grad) and an optimizer
from one seed, runs `embtrain replay` on them and compares every forward
output and the final table with a PyTorch oracle (row-wise Adagrad, which
PyTorch lacks, is a numpy reference). Bad-input cases: each feeds the binary
one defect and expects a non-zero exit, a message naming the defect and no
output. The exact semantics are in shared/TORCH_SEMANTICS.md.

    /usr/bin/python3 tests/parity/replay_parity.py --embtrain build/embtrain \
        --cases 40 [--seed S] [--case-seed S] [--keep DIR]
    /usr/bin/python3 tests/parity/replay_parity.py --self-test --cases 200

Last line: "P passed, F failed"; exit status 0 only when F == 0.
Needs only the standard library, numpy and torch (Debian's python3-torch 1.13).
"""

import argparse
import io
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

OPTIMIZERS = ("sgd", "adagrad", "adam", "rowwise_adagrad")
D_CHOICES = (1, 2, 3, 5, 7, 8, 16, 33, 64)
MAX_IDS = 400
TOL = 1e-5  # pass if |got - want| <= TOL * max(1, |want|) (+ slack, below)
# Relative noise put on the gradients of a second oracle run to measure how
# sensitive each output is to float32 rounding (see `run_random_case`).
PERTURB = 4e-6
SLACK_FACTOR = 2.0
TIMEOUT_S = 120


def f32(x):
    """A Python float exactly representable in float32, so that the binary
    (whether it parses into float or double) and the oracle use one value."""
    return float(np.float32(x))


def fmt(x):
    return repr(x) if isinstance(x, float) else str(x)


class OracleError(Exception):
    """The oracle contradicted itself: a bug in this script or in torch."""


# --------------------------------------------------------------------------
# Random cases
# --------------------------------------------------------------------------

class Case:
    """One random replay problem. Everything is drawn from `seed` alone, so
    `--case-seed seed` reproduces it exactly."""

    def __init__(self, seed):
        self.seed = seed
        rng = np.random.default_rng(seed)
        # The seed's low bits force a flavor, so that 40 cases are sure to
        # contain the corner cases and a single seed still reproduces its case.
        flavor = seed % 8
        if flavor == 0:
            self.N = 1
        elif flavor == 1:
            self.N = int(rng.integers(2, 9))
        else:
            self.N = int(rng.integers(1, 301))
        N = self.N
        self.D = int(rng.choice(D_CHOICES))
        self.W = rng.standard_normal((N, self.D)).astype(np.float32)

        r = rng.random()
        if flavor == 2:  # needs a padding row for its all-padding step
            r = 0.5 + r / 2
        if r < 1 / 3:
            self.padding_idx = None
        elif r < 2 / 3:
            self.padding_idx = int(rng.integers(0, N))
        else:
            self.padding_idx = int(rng.integers(-N, 0))
        self.pad = None if self.padding_idx is None else self.padding_idx % N

        self.norm_type = int(rng.choice([1, 2, 3]))
        self.pass_norm_type = not (self.norm_type == 2 and rng.random() < 0.5)
        self.max_norm = None
        if flavor == 5 or rng.random() < 0.4:
            # Put max_norm among the rows' norms so that some rows get
            # renormed and some do not.
            norms = np.sum(np.abs(self.W.astype(np.float64)) ** self.norm_type,
                           axis=1) ** (1.0 / self.norm_type)
            if N == 1:
                self.max_norm = f32(norms[0] * rng.uniform(0.5, 1.5))
            else:
                self.max_norm = f32(np.quantile(norms, rng.uniform(0.2, 0.8)))
            self.max_norm = max(self.max_norm, f32(1e-3))

        self.scale_grad_by_freq = bool(flavor == 4 or rng.random() < 0.4)
        self.freeze = bool(rng.random() < 0.08)
        self.optimizer = str(rng.choice(OPTIMIZERS))

        # Hyper-parameters; None = option not passed (binary uses its default).
        def maybe(value):
            return value if rng.random() < 0.75 else None

        self.lr = f32(rng.uniform(0.01, 0.5))
        self.lr_decay = self.eps = self.iav = self.betas = None
        if self.optimizer == "adagrad":
            self.lr_decay = maybe(f32(rng.uniform(0.0, 0.2)))
            self.eps = maybe(f32(10 ** rng.uniform(-10, -4)))
            self.iav = maybe(f32(rng.choice([0.0, rng.uniform(0.0, 1.0)])))
        elif self.optimizer == "adam":
            self.betas = maybe((f32(rng.uniform(0.5, 0.95)),
                                f32(rng.uniform(0.9, 0.9999))))
            self.eps = maybe(f32(10 ** rng.uniform(-8, -4)))
        elif self.optimizer == "rowwise_adagrad":
            self.eps = maybe(f32(10 ** rng.uniform(-8, -4)))
            self.iav = maybe(f32(rng.choice([0.0, rng.uniform(0.0, 1.0)])))

        K = int(rng.integers(1, 6))
        special = int(rng.integers(0, K))  # the all-padding or empty step
        heavy_dups = flavor == 4 or rng.random() < 0.4
        pad_rate = rng.uniform(0.05, 0.4)
        self.steps = []
        for k in range(K):
            if flavor == 3 and k == special:
                shape = [(0,), (3, 0), (2, 0, 4)][int(rng.integers(0, 3))]
            else:
                shape = random_shape(rng)
                if flavor == 2 and k == special and 0 in shape:
                    shape = (int(rng.integers(1, 20)),)
            size = int(np.prod(shape))
            if heavy_dups:
                pool = rng.choice(N, size=int(rng.integers(1, min(N, 5) + 1)),
                                  replace=False)
            else:
                pool = np.arange(N)
            ids = rng.choice(pool, size=size)
            if self.pad is not None:
                ids[rng.random(size) < pad_rate] = self.pad
                if flavor == 2 and k == special:
                    ids[:] = self.pad
            dtype = np.int32 if rng.random() < 0.5 else np.int64
            ids = ids.astype(dtype).reshape(shape)
            grad = rng.standard_normal(shape + (self.D,)).astype(np.float32)
            self.steps.append((ids, grad))

    def binary_options(self):
        """Options of `embtrain replay` after --weights/--batches/--steps/--out."""
        opts = [("--optimizer", self.optimizer), ("--lr", self.lr)]
        if self.padding_idx is not None:
            opts.append(("--padding-idx", self.padding_idx))
        if self.max_norm is not None:
            opts.append(("--max-norm", self.max_norm))
            if self.pass_norm_type:
                opts.append(("--norm-type", float(self.norm_type)))
        if self.scale_grad_by_freq:
            opts.append(("--scale-grad-by-freq", None))
        if self.betas is not None:
            opts.append(("--betas", "%r,%r" % self.betas))
        if self.eps is not None:
            opts.append(("--eps", self.eps))
        if self.lr_decay is not None:
            opts.append(("--lr-decay", self.lr_decay))
        if self.iav is not None:
            opts.append(("--initial-accumulator-value", self.iav))
        if self.freeze:
            opts.append(("--freeze", None))
        args = []
        for name, value in opts:
            if value is None:
                args.append(name)
            elif fmt(value).startswith("-"):
                # "--padding-idx -3" could be read as option "-3"; the
                # attached form is unambiguous for any parser.
                args.append("%s=%s" % (name, fmt(value)))
            else:
                args += [name, fmt(value)]
        return args

    def describe(self):
        steps = " ".join("%s%s" % (ids.dtype, list(ids.shape))
                         for ids, _ in self.steps)
        return ("N=%d D=%d optimizer=%s %s steps=[%s]"
                % (self.N, self.D, self.optimizer,
                   " ".join(self.binary_options()[2:]), steps))


def random_shape(rng):
    rank = int(rng.integers(1, 4))
    if rank == 1:
        return (int(rng.integers(0, MAX_IDS + 1)),)
    if rank == 2:
        a = int(rng.integers(1, 21))
        return (a, int(rng.integers(0, MAX_IDS // a + 1)))
    a, b = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    return (a, b, int(rng.integers(0, MAX_IDS // (a * b) + 1)))


# --------------------------------------------------------------------------
# Oracle: PyTorch (and numpy for row-wise Adagrad)
# --------------------------------------------------------------------------

def freq_scale(ids):
    """Per-position factor 1/count[id], counted over all positions of the
    step (padding included), as float32 like PyTorch's dense backward."""
    flat = ids.reshape(-1)
    if flat.size == 0:
        return np.ones(ids.shape, np.float32)
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    return (1.0 / counts).astype(np.float32)[inverse].reshape(ids.shape)


def check_freq_trick(case, ids, grad, sparse_grad):
    """PyTorch refuses scale_grad_by_freq with sparse=True, so the oracle
    pre-scales the output gradient. Check that against PyTorch's own dense
    path on the same step."""
    dense = torch.nn.Embedding.from_pretrained(
        torch.zeros(case.N, case.D), freeze=False, padding_idx=case.padding_idx,
        scale_grad_by_freq=True, sparse=False)
    dense(torch.from_numpy(ids.astype(np.int64))).backward(torch.from_numpy(grad))
    want = dense.weight.grad.numpy()
    got = sparse_grad.to_dense().numpy()
    if not np.all(np.abs(got - want) <= 1e-5 * np.maximum(1.0, np.abs(want))):
        raise OracleError("pre-scaled sparse gradient differs from PyTorch's "
                          "dense scale_grad_by_freq gradient")


def make_optimizer(case, weight):
    if case.optimizer == "sgd":
        return torch.optim.SGD([weight], lr=case.lr)
    if case.optimizer == "adagrad":
        return torch.optim.Adagrad(
            [weight], lr=case.lr,
            lr_decay=0.0 if case.lr_decay is None else case.lr_decay,
            eps=1e-10 if case.eps is None else case.eps,
            initial_accumulator_value=0.0 if case.iav is None else case.iav)
    if case.optimizer == "adam":
        return torch.optim.SparseAdam(
            [weight], lr=case.lr,
            betas=(0.9, 0.999) if case.betas is None else case.betas,
            eps=1e-8 if case.eps is None else case.eps)
    return None  # rowwise_adagrad: numpy below


def count_empty_step(optimizer, weight):
    """A step without gradient rows advances the step counter and changes
    nothing else. PyTorch 1.13's Adagrad/SparseAdam crash on an empty sparse
    gradient, so bump their counter by hand instead of calling step()."""
    if isinstance(optimizer, torch.optim.SparseAdam):
        state = optimizer.state[weight]
        if len(state) == 0:  # as SparseAdam.step() would create it
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(weight)
            state["exp_avg_sq"] = torch.zeros_like(weight)
        state["step"] += 1
    elif isinstance(optimizer, torch.optim.Adagrad):
        optimizer.state[weight]["step"] += 1  # a tensor, created in __init__


def rowwise_adagrad_step(case, weight, accum, sparse_grad):
    """FBGEMM's exact row-wise Adagrad on the coalesced gradient, in float64:
    G_r += mean_j g_rj^2;  w_r -= lr * g_r / (sqrt(G_r) + eps)."""
    eps = 1e-8 if case.eps is None else case.eps
    g = sparse_grad.coalesce()
    rows = g.indices()[0].numpy()
    vals = g.values().numpy().astype(np.float64)
    accum[rows] += np.mean(vals * vals, axis=1)
    w = weight.detach().numpy()[rows].astype(np.float64)
    w -= case.lr * vals / (np.sqrt(accum[rows])[:, None] + eps)
    with torch.no_grad():
        weight[torch.from_numpy(rows)] = torch.from_numpy(w.astype(np.float32))


def oracle(case, perturb_rng=None):
    """Forward outputs of every step and the final table, per PyTorch.
    With perturb_rng the gradients get relative noise of size PERTURB."""
    emb = torch.nn.Embedding.from_pretrained(
        torch.from_numpy(case.W.copy()), freeze=case.freeze,
        padding_idx=case.padding_idx, max_norm=case.max_norm,
        norm_type=float(case.norm_type), sparse=True)
    weight = emb.weight
    optimizer = None if case.freeze else make_optimizer(case, weight)
    accum = np.full(case.N, 0.0 if case.iav is None else case.iav, np.float64)
    trick_checked = perturb_rng is not None  # check once, on the exact run
    outs = []
    for ids, grad in case.steps:
        out = emb(torch.from_numpy(ids.astype(np.int64)))
        outs.append(out.detach().numpy().copy())
        if case.freeze:
            continue
        if perturb_rng is not None:
            grad = grad * (1 + PERTURB * perturb_rng.standard_normal(grad.shape))
            grad = grad.astype(np.float32)
        out_grad = grad
        if case.scale_grad_by_freq:
            out_grad = grad * freq_scale(ids)[..., None]
        weight.grad = None
        out.backward(torch.from_numpy(out_grad))
        if case.scale_grad_by_freq and not trick_checked and ids.size > 0:
            check_freq_trick(case, ids, grad, weight.grad)
            trick_checked = True
        if weight.grad._nnz() == 0:  # empty batch or all padding
            count_empty_step(optimizer, weight)
        elif optimizer is None:
            rowwise_adagrad_step(case, weight, accum, weight.grad)
        else:
            optimizer.step()
    return outs, weight.detach().numpy().copy()


def numpy_reference(case, dtype=np.float32):
    """The semantics of TORCH_SEMANTICS.md written out in plain numpy, used
    only by --self-test to check the PyTorch oracle (and this script's
    tolerances) without the binary. With dtype=float32 it sums duplicates
    sequentially in float32, as a straightforward C++ version would."""
    N, D = case.N, case.D
    W = case.W.astype(dtype)
    pad = case.pad
    p = float(case.norm_type)
    lr = case.lr
    iav = 0.0 if case.iav is None else case.iav
    state1 = np.full((N, D), iav, np.float64)  # adagrad sum / adam m
    state2 = np.zeros((N, D), np.float64)      # adam v
    rowacc = np.full(N, iav, np.float64)       # row-wise adagrad G
    t = 0
    outs = []
    for ids, grad in case.steps:
        flat = ids.reshape(-1).astype(np.int64)
        if case.max_norm is not None:
            for r in np.unique(flat):
                norm = np.sum(np.abs(W[r].astype(np.float64)) ** p) ** (1 / p)
                if norm > case.max_norm:
                    W[r] = (W[r] * (case.max_norm / (norm + 1e-7))).astype(dtype)
        outs.append(W[flat].reshape(ids.shape + (D,)).astype(np.float32))
        if case.freeze:
            continue
        g = grad.reshape(-1, D).astype(dtype)
        if case.scale_grad_by_freq:
            _, inv, cnt = np.unique(flat, return_inverse=True, return_counts=True)
            g = g * (1.0 / cnt)[inv][:, None].astype(dtype)
        keep = flat != pad if pad is not None else np.ones(flat.size, bool)
        rows, inv = np.unique(flat[keep], return_inverse=True)
        gs = np.zeros((rows.size, D), dtype)
        np.add.at(gs, inv, g[keep])
        gs = gs.astype(np.float64)
        t += 1
        if rows.size == 0:
            continue
        w = W[rows].astype(np.float64)
        if case.optimizer == "sgd":
            w -= lr * gs
        elif case.optimizer == "adagrad":
            eps = 1e-10 if case.eps is None else case.eps
            lr_decay = 0.0 if case.lr_decay is None else case.lr_decay
            state1[rows] += gs * gs
            w -= lr / (1 + (t - 1) * lr_decay) * gs / (np.sqrt(state1[rows]) + eps)
        elif case.optimizer == "adam":
            eps = 1e-8 if case.eps is None else case.eps
            b1, b2 = (0.9, 0.999) if case.betas is None else case.betas
            state1[rows] += (gs - state1[rows]) * (1 - b1)
            state2[rows] += (gs * gs - state2[rows]) * (1 - b2)
            step_size = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            w -= step_size * state1[rows] / (np.sqrt(state2[rows]) + eps)
        else:
            eps = 1e-8 if case.eps is None else case.eps
            rowacc[rows] += np.mean(gs * gs, axis=1)
            w -= lr * gs / (np.sqrt(rowacc[rows])[:, None] + eps)
        W[rows] = w.astype(dtype)
    return outs, W.astype(np.float32)


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------

def compare(name, got, want, slack):
    """List of problems (empty = pass). The tolerance is TOL relative with an
    absolute floor of TOL, widened by SLACK_FACTOR * slack (see
    run_random_case)."""
    if got.dtype != np.dtype("<f4"):
        return ["%s: dtype %s, expected little-endian float32" % (name, got.dtype.str)]
    if got.shape != want.shape:
        return ["%s: shape %s, expected %s" % (name, got.shape, want.shape)]
    if got.size == 0:
        return []
    err = np.abs(got.astype(np.float64) - want)
    allowed = TOL * np.maximum(1.0, np.abs(want)) + SLACK_FACTOR * slack
    bad = ~(err <= allowed)  # NaN counts as bad
    if not bad.any():
        return []
    worst = np.unravel_index(np.argmax(np.where(bad, err / allowed, -1)), got.shape)
    if np.isnan(got).any():
        worst = np.unravel_index(np.argmax(np.isnan(got)), got.shape)
    return ["%s: %d of %d values differ; worst at %s: got %r, want %r "
            "(|diff| %.3g, allowed %.3g)"
            % (name, bad.sum(), bad.size, tuple(int(i) for i in worst),
               float(got[worst]), float(want[worst]), float(err[worst]),
               float(allowed[worst]))]


def expected_files(case):
    return ["out_%d.npy" % k for k in range(len(case.steps))] + ["weights.npy"]


def write_case_files(case, work):
    weights = os.path.join(work, "W.npy")
    batches = os.path.join(work, "batches")
    os.makedirs(batches, exist_ok=True)
    np.save(weights, case.W)
    for k, (ids, grad) in enumerate(case.steps):
        np.save(os.path.join(batches, "ids_%d.npy" % k), ids)
        np.save(os.path.join(batches, "grad_%d.npy" % k), grad)
    return weights, batches


# Prefix of every embtrain command: empty for one process, an mpirun line
# for --np P (the sharded step must give the single-process result).
LAUNCH = []
# Appended to every replay command: "--device cuda" runs the step on the GPU.
DEVICE_ARGS = []


def run_binary(cmd):
    """(returncode, stderr); returncode None on timeout."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, "timed out after %d s" % TIMEOUT_S
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def run_random_case(case, embtrain, work):
    """Problems found in one random case (empty list = pass)."""
    # The exact oracle is the reference. A second run with slightly perturbed
    # gradients measures, per value, how much float32 rounding can move it:
    # Adam and Adagrad divide by |g| + eps, so a gradient row whose duplicates
    # nearly cancel flips sign or size under reordered summation; likewise a
    # long sum of duplicates carries rounding above TOL. That measured
    # sensitivity is added to the tolerance; it is ~0 almost everywhere.
    want_outs, want_w = oracle(case)
    pert_outs, pert_w = oracle(case, np.random.default_rng(case.seed + 1))
    slacks = [np.abs(a.astype(np.float64) - b) for a, b in zip(want_outs, pert_outs)]
    slack_w = np.abs(want_w.astype(np.float64) - pert_w)

    if embtrain is None:  # --self-test: the numpy reference stands in
        got_outs, got_w = numpy_reference(case)
        problems = []
        for k, got in enumerate(got_outs):
            problems += compare("out_%d" % k, got, want_outs[k], slacks[k])
        return problems + compare("weights", got_w, want_w, slack_w)

    weights, batches = write_case_files(case, work)
    out = os.path.join(work, "out")
    if case.seed % 2:  # the binary must cope with both
        os.makedirs(out, exist_ok=True)
    cmd = LAUNCH + [embtrain, "replay", "--weights", weights, "--batches", batches,
           "--steps", str(len(case.steps)), "--out", out] + case.binary_options() + DEVICE_ARGS
    rc, stderr = run_binary(cmd)
    problems = []
    if rc != 0:
        problems.append("exit status %s; stderr: %s" % (rc, stderr.strip()[-2000:]))
        return problems + ["command: " + shlex.join(cmd)]
    present = sorted(os.listdir(out)) if os.path.isdir(out) else []
    expected = expected_files(case)
    missing = [f for f in expected if f not in present]
    extra = [f for f in present if f not in expected]
    if missing or extra:
        problems.append("output files: missing %s, unexpected %s" % (missing, extra))
    for k, name in enumerate(expected):
        if name in missing:
            continue
        try:
            got = np.load(os.path.join(out, name), allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file is a finding
            problems.append("%s: numpy cannot read it: %s" % (name, e))
            continue
        if name == "weights.npy":
            problems += compare(name, got, want_w, slack_w)
        else:
            problems += compare(name, got, want_outs[k], slacks[k])
    if problems:
        problems.append("command: " + shlex.join(cmd))
    return problems


# --------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------

def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def bad_input_cases():
    """(name, files to overwrite in batches/, option changes, message checks).

    The base is a valid 2-step SGD replay on a 10 x 4 table. Option changes
    are (option, value) pairs replacing or adding options (value None: a
    flag; a list: the raw tokens to append). A message check is a list of
    groups; each group needs one of its strings in stderr (case-insensitive).
    Most defects sit in step 1 so that a binary which wrote step 0's output
    before noticing is caught.
    """
    rng = np.random.default_rng(1234)
    grad = rng.standard_normal((6, 4)).astype(np.float32)
    ids = np.array([0, 3, 3, 9, 5, 1], np.int64)
    valid_range = "[0, 10)"

    def with_id(value, dtype):
        bad = ids.astype(dtype)
        bad[2] = value
        return npy_bytes(bad)

    raw = npy_bytes(grad)
    return [
        ("valid baseline (must pass)", {}, [], None),
        ("id == N", {"ids_1.npy": with_id(10, np.int64)}, [],
         [["10"], [valid_range]]),
        ("negative id", {"ids_1.npy": with_id(-1, np.int32)}, [],
         [["-1"], [valid_range]]),
        ("int64 id far out of range",
         {"ids_0.npy": with_id(2 ** 40 + 7, np.int64)}, [],
         [[str(2 ** 40 + 7)], [valid_range]]),
        ("garbage ids file", {"ids_0.npy": rng.bytes(64)}, [], [["ids_0.npy"]]),
        ("truncated grad file", {"grad_1.npy": raw[:-5]}, [], [["grad_1.npy"]]),
        ("big-endian grad", {"grad_1.npy": npy_bytes(grad.astype(">f4"))}, [],
         [["grad_1.npy"]]),
        ("Fortran-order grad",
         {"grad_1.npy": npy_bytes(np.asfortranarray(grad))}, [], [["grad_1.npy"]]),
        ("float64 ids", {"ids_1.npy": npy_bytes(ids.astype(np.float64))}, [],
         [["ids_1.npy"]]),
        ("grad with wrong D",
         {"grad_1.npy": npy_bytes(np.zeros((6, 5), np.float32))}, [],
         [["grad_1.npy", "shape"]]),
        ("grad with wrong batch shape",
         {"grad_0.npy": npy_bytes(np.zeros((2, 3, 4), np.float32))}, [],
         [["grad_0.npy", "shape"]]),
        ("unknown option", {}, [("--bogus", ["--bogus", "1"])], [["bogus"]]),
        ("unknown optimizer", {}, [("--optimizer", "adamax_nope")],
         [["adamax_nope"]]),
        ("padding_idx == N", {}, [("--padding-idx", "10")],
         [["padding"], ["10"]]),
        ("padding_idx == -N-1", {}, [("--padding-idx", "-11")],
         [["padding"], ["-11"]]),
        ("missing batch file", {}, [("--steps", "3")],
         [["ids_2.npy", "grad_2.npy"]]),
    ], (ids, grad)


def run_bad_case(index, name, files, changes, checks, base, embtrain, work):
    ids, grad = base
    W = np.random.default_rng(99).standard_normal((10, 4)).astype(np.float32)
    weights = os.path.join(work, "W.npy")
    batches = os.path.join(work, "batches")
    os.makedirs(batches)
    np.save(weights, W)
    for k in range(2):
        np.save(os.path.join(batches, "ids_%d.npy" % k), ids)
        np.save(os.path.join(batches, "grad_%d.npy" % k), grad * (k + 1))
    for fname, data in files.items():
        with open(os.path.join(batches, fname), "wb") as f:
            f.write(data)
    out = os.path.join(work, "out")
    if index % 2:  # absent or existing-and-empty before: both must stay empty
        os.makedirs(out)

    opts = {"--weights": weights, "--batches": batches, "--steps": "2",
            "--out": out, "--optimizer": "sgd", "--lr": "0.1"}
    extra = []
    for opt, value in changes:
        if isinstance(value, list):
            extra += value
        else:
            opts[opt] = value
    cmd = LAUNCH + [embtrain, "replay"]
    for opt, value in opts.items():
        cmd += ["%s=%s" % (opt, value)] if value.startswith("-") else [opt, value]
    cmd += extra + DEVICE_ARGS
    rc, stderr = run_binary(cmd)
    present = sorted(os.listdir(out)) if os.path.isdir(out) else []

    problems = []
    if checks is None:  # the valid baseline
        if rc != 0:
            problems.append("exit status %s; stderr: %s" % (rc, stderr.strip()[-2000:]))
        elif present != ["out_0.npy", "out_1.npy", "weights.npy"]:
            problems.append("output files %s" % present)
        else:
            want = W.copy()
            np.add.at(want, ids, -0.1 * (grad + 2 * grad))
            got = np.load(os.path.join(out, "weights.npy"))
            problems += compare("weights", got, want, 0.0)
    else:
        if rc is None or rc <= 0:
            problems.append("exit status %s, expected a non-zero exit (not a "
                            "signal or timeout)" % rc)
        if present:
            problems.append("out dir not empty after the error: %s" % present)
        text = stderr.lower()
        for group in checks:
            if not any(s.lower() in text for s in group):
                problems.append("stderr does not mention any of %s" % group)
        if problems:
            problems.append("stderr: " + (stderr.strip()[-2000:] or "(empty)"))
    if problems:
        problems.append("command: " + shlex.join(cmd))
    return problems


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

class Reporter:
    """Counts and prints each case's verdict: "ok   LABEL", or "FAIL LABEL
    DETAIL" and then its problems (bag_parity.py reports with it too)."""

    def __init__(self):
        self.passed = self.failed = 0

    def __call__(self, label, problems, detail):
        if problems:
            self.failed += 1
            print("FAIL %s  %s" % (label, detail))
            for p in problems:
                print("    " + p)
        else:
            self.passed += 1
            print("ok   %s" % label)
        sys.stdout.flush()

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        return 0 if self.failed == 0 else 1


def draw_case_seeds(args):
    """--case-seed alone, or --cases seeds drawn from --seed (printed; from
    the clock when not given) whose low bits cycle through the flavors."""
    if args.case_seed is not None:
        return [args.case_seed]
    seed = args.seed if args.seed is not None else time.time_ns() % 2 ** 32
    print("master seed: %d  (rerun with --seed %d)" % (seed, seed))
    seeds = np.random.default_rng(seed).integers(0, 2 ** 31, args.cases)
    return [int(s) - int(s) % 8 + i % 8 for i, s in enumerate(seeds)]


def work_root(args, prefix):
    """(root folder, its TemporaryDirectory or None): --keep DIR, kept, or a
    temporary folder removed at the end."""
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        return os.path.abspath(args.keep), None
    cleanup = tempfile.TemporaryDirectory(prefix=prefix)
    return cleanup.name, cleanup


def fresh_dir(root, name):
    work = os.path.join(root, name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    return work


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embtrain", help="path to the embtrain binary")
    parser.add_argument("--cases", type=int, default=40,
                        help="number of random cases (default 40)")
    parser.add_argument("--seed", type=int,
                        help="master seed (default: from the clock; printed)")
    parser.add_argument("--case-seed", type=int,
                        help="run only the random case with this seed")
    parser.add_argument("--keep", metavar="DIR",
                        help="write work files under DIR and keep them")
    parser.add_argument("--self-test", action="store_true",
                        help="check the oracle against a numpy model of the "
                             "semantics; needs no binary")
    parser.add_argument("--np", type=int, default=0,
                        help="run embtrain under 'mpirun -np NP' (row-sharded table)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where embtrain runs the step (replay --device)")
    args = parser.parse_args()
    if args.device != "cpu":
        DEVICE_ARGS.extend(["--device", args.device])
    if args.np > 0:
        global LAUNCH
        LAUNCH = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(args.np),
                  "-x", "OMP_NUM_THREADS=1"]
        if os.geteuid() == 0:
            LAUNCH.insert(1, "--allow-run-as-root")
        rerun_np = " --np %d" % args.np
    else:
        rerun_np = ""
    if args.self_test == bool(args.embtrain):
        parser.error("give exactly one of --embtrain and --self-test")
    embtrain = os.path.abspath(args.embtrain) if args.embtrain else None
    if embtrain and not os.access(embtrain, os.X_OK):
        parser.error("not an executable: %s" % embtrain)
    torch.set_num_threads(1)  # small tensors; keeps runs reproducible

    case_seeds = draw_case_seeds(args)
    root, cleanup = work_root(args, "replay_parity_")

    rerun = "%s %s %s --case-seed " % (
        sys.executable, shlex.quote(sys.argv[0]),
        "--self-test" if embtrain is None else "--embtrain " + shlex.quote(embtrain) + rerun_np +
        (" --device " + args.device if args.device != "cpu" else ""))

    report = Reporter()

    try:
        for i, seed in enumerate(case_seeds):
            work = fresh_dir(root, "case%03d_seed%d" % (i, seed))
            case = Case(seed)
            try:
                problems = run_random_case(case, embtrain, work)
            except OracleError as e:
                problems = ["ORACLE SELF-CHECK FAILED (bug in this script or "
                            "torch, not embtrain): %s" % e]
            report("case %d seed=%d" % (i, seed), problems,
                   "[%s]\n    rerun: %s%d" % (case.describe(), rerun, seed))

        if embtrain is not None and args.case_seed is None:
            cases, base = bad_input_cases()
            for j, (name, files, changes, checks) in enumerate(cases):
                work = fresh_dir(root, "bad%02d" % j)
                problems = run_bad_case(j, name, files, changes, checks, base,
                                        embtrain, work)
                report("bad input: %s" % name, problems, "")
    finally:
        if cleanup is not None:
            cleanup.cleanup()

    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
