#!/usr/bin/python3
"""Parity test: `embtrain replay --pool` against torch.nn.EmbeddingBag.

Random cases as in replay_parity.py (whose table, option and optimizer draws
this script reuses), with bags: mode sum / mean / max, bags as a 2-D batch or
1-D ids with offsets (include_last_offset too, ids past the last bag
included), per-sample weights with sum, empty and all-padding bags. Every
forward output and the final table are compared with an oracle built from
PyTorch: the rows from torch.nn.Embedding (max_norm renorms there, over every
id), pooled per bag with torch ops, autograd taking each bag's gradient back
to its ids, and torch.optim on the sparse gradient. Each case first checks
that oracle's forward (and, where PyTorch supports it, its weight gradient)
against torch.nn.EmbeddingBag itself. Where PyTorch has no sparse path
(max, or scale_grad_by_freq) the rows present in the step are the bag's
distinct non-padding ids, as for Embedding (README, "Semantics").

    /usr/bin/python3 tests/parity/bag_parity.py --embtrain build/embtrain \\
        --cases 40 [--seed S] [--case-seed S] [--np P] [--device cuda] \\
        [--pool-at owner]

With --pool-at owner the bags are pooled at the rows' owners (replay
--pool-at owner), which sums in another order: the same oracle and
tolerance (relative, never bitwise, for bags anyway), each output widened
by the float32 bound of a reordered sum of its bag (reorder_bound).

Last line: "P passed, F failed"; exit status 0 only when F == 0.
"""

import argparse
import os
import shlex
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import replay_parity as rp  # noqa: E402  (the table/optimizer draws and helpers)

MODES = ("sum", "mean", "max")
MAX_BAGS = 40
MAX_LEN = 12


class BagCase(rp.Case):
    """replay_parity's Case (table, options, optimizer, number of steps) with
    its steps redrawn as bags. Everything follows from `seed`."""

    def __init__(self, seed):
        super().__init__(seed)
        rng = np.random.default_rng([seed, 7])
        modes = ("sum", "mean") if self.scale_grad_by_freq else MODES
        self.mode = str(rng.choice(modes))
        self.form = str(rng.choice(["2d", "offsets", "last_offset"]))
        self.per_sample_weights = self.mode == "sum" and rng.random() < 0.5
        N = self.N
        flavor = seed % 8
        steps = []
        for k in range(len(self.steps)):
            heavy = rng.random() < 0.4
            pool = rng.choice(N, size=int(rng.integers(1, min(N, 4) + 1)), replace=False) \
                if heavy else np.arange(N)
            B = int(rng.integers(0 if flavor == 3 else 1, MAX_BAGS + 1))
            if self.form == "2d":
                L = int(rng.integers(0 if flavor == 3 else 1, MAX_LEN + 1))
                sizes = np.full(B, L)
            else:
                sizes = rng.integers(0, MAX_LEN + 1, B)  # empty bags included
            n_bagged = int(sizes.sum())
            extra = int(rng.integers(0, 4)) if self.form == "last_offset" else 0
            ids = rng.choice(pool, size=n_bagged + extra)
            if self.pad is not None:
                ids[rng.random(ids.size) < rng.uniform(0.05, 0.4)] = self.pad
                if B > 1 and rng.random() < 0.5:  # one all-padding bag
                    b = int(rng.integers(0, B))
                    start = int(sizes[:b].sum())
                    ids[start:start + sizes[b]] = self.pad
            dtype = np.int32 if rng.random() < 0.5 else np.int64
            starts = np.concatenate([[0], np.cumsum(sizes)]).astype(dtype)
            if self.form == "2d":
                ids = ids.reshape(B, sizes[0] if B else 0)
                offsets = None
            elif self.form == "offsets":
                offsets = starts[:-1]
            else:
                offsets = starts
            weights = (rng.uniform(-2, 2, ids.shape).astype(np.float32)
                       if self.per_sample_weights else None)
            grad = rng.standard_normal((B, self.D)).astype(np.float32)
            steps.append((ids.astype(dtype), offsets, weights, grad, starts.astype(np.int64)))
        self.bag_steps = steps

    def binary_options(self):
        opts = super().binary_options() + ["--pool", self.mode]
        if self.form != "2d":
            opts.append("--offsets")
        if self.form == "last_offset":
            opts.append("--include-last-offset")
        if self.per_sample_weights:
            opts.append("--per-sample-weights")
        return opts

    def describe(self):
        steps = " ".join("%s%s/%d bags" % (s[0].dtype, list(s[0].shape), s[3].shape[0])
                         for s in self.bag_steps)
        return "N=%d D=%d optimizer=%s %s steps=[%s]" % (
            self.N, self.D, self.optimizer, " ".join(self.binary_options()), steps)


def pool(case, rows, flat_ids, weights, starts):
    """The bags' outputs from their positions' rows (torch ops, autograd)."""
    outs = []
    for b in range(starts.size - 1):
        pos = np.arange(starts[b], starts[b + 1])
        if case.pad is not None:
            pos = pos[flat_ids[pos] != case.pad]
        if pos.size == 0:
            outs.append(torch.zeros(case.D))
            continue
        r = rows[torch.from_numpy(pos)]
        if case.mode == "max":
            outs.append(r.max(dim=0).values)
        elif case.mode == "mean":
            outs.append(r.sum(dim=0) / pos.size)
        elif weights is not None:
            outs.append((r * torch.from_numpy(weights[pos])[:, None]).sum(dim=0))
        else:
            outs.append(r.sum(dim=0))
    return torch.stack(outs) if outs else torch.zeros(0, case.D)


def check_against_embedding_bag(case, weight_before, step, want_out, want_grad):
    """The composed oracle's forward and dense gradient must be PyTorch's
    EmbeddingBag's, where PyTorch 1.13 can be asked (see the exceptions
    below; its dense backward with scale_grad_by_freq is wrong: pytorch
    issue 190063)."""
    ids, offsets, weights, grad, starts = step
    if case.form == "last_offset" and (case.padding_idx is not None or case.mode == "max" or
                                       starts[-1] < ids.size):
        # PyTorch 1.13 corrupts its heap on include_last_offset with
        # padding_idx or mode max; and ids past the last offset are in no
        # bag for its sum's forward, but its mean divides the last bag by a
        # count that includes them and its backward gives them the last
        # bag's gradient. In embtrain they are in no bag, for everything
        # (README, "Semantics").
        return
    if ids.ndim == 2 and ids.shape[1] == 0:
        return  # PyTorch 1.13 cannot build offsets for bags of length 0
    eb = torch.nn.EmbeddingBag.from_pretrained(
        weight_before.clone(), freeze=False, max_norm=case.max_norm,
        norm_type=float(case.norm_type), mode=case.mode,
        include_last_offset=case.form == "last_offset", padding_idx=case.padding_idx)
    inp = torch.from_numpy(ids.astype(np.int64))
    off = None if offsets is None else torch.from_numpy(offsets.astype(np.int64))
    psw = None if weights is None else torch.from_numpy(weights.reshape(-1) if off is not None
                                                        else weights)
    out = eb(inp, off, per_sample_weights=psw)
    if not np.allclose(out.detach().numpy(), want_out, rtol=1e-5, atol=1e-5):
        raise rp.OracleError("composed forward differs from torch.nn.EmbeddingBag")
    if case.scale_grad_by_freq or want_grad is None:
        return
    out.backward(torch.from_numpy(grad))
    # Each row sums one term per occurrence, in another order than the
    # oracle: allow float32 rounding on the sum of the terms' sizes.
    counts = np.bincount(ids.reshape(-1).astype(np.int64), minlength=case.N)
    term = float(np.abs(grad).max(initial=0.0)) * (
        1.0 if weights is None else float(np.abs(weights).max(initial=0.0)))
    allowed = 1e-5 + 1e-6 * counts[:, None] * term + 1e-5 * np.abs(want_grad)
    if not np.all(np.abs(eb.weight.grad.numpy() - want_grad) <= allowed):
        raise rp.OracleError("composed gradient differs from torch.nn.EmbeddingBag's")


def reorder_bound(case, rows, flat_ids, weights, starts):
    """Per output value, how far two float32 sums of a bag's terms in
    different orders can be apart: each is within (n - 1) u sum|terms| of
    the exact sum (n: the bag's pooled positions, u = 2^-24), so twice that
    (over the count for mean). Owner pooling adds each owner's part first,
    then the parts: another order than one process's. Max adds nothing: 0."""
    if case.mode == "max":
        return np.zeros((starts.size - 1, case.D))
    magnitude = pool(case, rows.detach().abs(), flat_ids,
                     None if weights is None else np.abs(weights), starts).numpy()
    n = np.array([np.count_nonzero(flat_ids[starts[b]:starts[b + 1]] != case.pad)
                  if case.pad is not None else starts[b + 1] - starts[b]
                  for b in range(starts.size - 1)], np.float64)
    return 2.0 * np.maximum(n - 1, 0)[:, None] * 2.0 ** -24 * magnitude.astype(np.float64)


# Two ids' values in a max bag's column this close (relative) are a tie
# that float32 rounding decides once the rows have been updated: PyTorch
# applies SGD's duplicate rows one after another, embtrain sums them first
# (TORCH_SEMANTICS.md), which may move a row by an ulp, and max_norm caps
# rows to nearly equal values. (In the first step both start from the same
# bits and renorm them alike: ties there are exact on both sides, and both
# let the first position win.)
NEAR_TIE = 1e-6


def near_tie(case, rows, flat_ids, starts):
    """Whether a max bag has, in some column, its greatest value within
    NEAR_TIE of a value of another id: which id wins (and gets the bag's
    gradient) is then down to rounding."""
    if case.mode != "max":
        return False
    values = rows.detach().numpy()
    for b in range(starts.size - 1):
        ids = flat_ids[starts[b]:starts[b + 1]]
        keep = ids != case.pad if case.pad is not None else np.ones(ids.size, bool)
        distinct = np.unique(ids[keep])
        if distinct.size < 2:
            continue
        first = [int(np.nonzero(ids == i)[0][0]) + starts[b] for i in distinct]
        v = values[first]  # one row per distinct id
        top = np.sort(v, axis=0)
        gap = top[-1] - top[-2]
        if np.any(gap <= NEAR_TIE * np.maximum(np.abs(top[-1]), 1e-30)):
            return True
    return False


def oracle(case, perturb_rng=None, reorder=None, ties=None):
    """Forward outputs of every step and the final table (see the module
    docstring). With perturb_rng the gradients get relative noise of size
    PERTURB, to measure float32 sensitivity as replay_parity does. A list
    `reorder` gets each step's reorder_bound; a list `ties` whether each
    step had a near tie (near_tie)."""
    emb = torch.nn.Embedding.from_pretrained(
        torch.from_numpy(case.W.copy()), freeze=case.freeze, padding_idx=case.padding_idx,
        max_norm=case.max_norm, norm_type=float(case.norm_type), sparse=True)
    weight = emb.weight
    optimizer = None if case.freeze else rp.make_optimizer(case, weight)
    accum = np.full(case.N, 0.0 if case.iav is None else case.iav, np.float64)
    outs = []
    for step in case.bag_steps:
        ids, _, weights, grad, starts = step
        flat = ids.reshape(-1).astype(np.int64)
        flat_w = None if weights is None else weights.reshape(-1)
        before = weight.detach().clone()
        rows = emb(torch.from_numpy(flat))  # renorms every id, as EmbeddingBag does
        if case.scale_grad_by_freq and flat.size and rows.requires_grad:
            scale = torch.from_numpy(rp.freq_scale(flat))
            rows.register_hook(lambda g, s=scale: g * s[:, None])
        out = pool(case, rows, flat, flat_w, starts)
        outs.append(out.detach().numpy().copy())
        if ties is not None:
            ties.append(len(outs) > 1 and near_tie(case, rows, flat, starts))
        if reorder is not None:
            reorder.append(reorder_bound(case, rows, flat, flat_w, starts))
        if case.freeze:
            continue
        g = grad
        if perturb_rng is not None:
            g = (grad * (1 + rp.PERTURB * perturb_rng.standard_normal(grad.shape))).astype(
                np.float32)
        weight.grad = None
        if flat.size:
            # rows * 0: every looked-up non-padding id is in the sparse
            # gradient, also one in no bag or one that won no max column.
            ((out * torch.from_numpy(g)).sum() + (rows * 0).sum()).backward()
        if perturb_rng is None:
            dense = None if weight.grad is None else weight.grad.to_dense().numpy()
            if dense is None:
                dense = np.zeros((case.N, case.D), np.float32)
            check_against_embedding_bag(case, before, step, outs[-1], dense)
        if weight.grad is None or weight.grad._nnz() == 0:
            rp.count_empty_step(optimizer, weight)
        elif optimizer is None:
            rp.rowwise_adagrad_step(case, weight, accum, weight.grad)
        else:
            optimizer.step()
    return outs, weight.detach().numpy().copy()


def write_case_files(case, work):
    weights = os.path.join(work, "W.npy")
    batches = os.path.join(work, "batches")
    os.makedirs(batches, exist_ok=True)
    np.save(weights, case.W)
    for k, (ids, offsets, psw, grad, _) in enumerate(case.bag_steps):
        np.save(os.path.join(batches, "ids_%d.npy" % k), ids)
        np.save(os.path.join(batches, "grad_%d.npy" % k), grad)
        if offsets is not None:
            np.save(os.path.join(batches, "offsets_%d.npy" % k), offsets)
        if psw is not None:
            np.save(os.path.join(batches, "weights_%d.npy" % k), psw)
    return weights, batches


def run_random_case(case, embtrain, work):
    reorder = [] if POOL_AT_ARGS else None  # pooled at the owners: sums in another order
    ties = []
    want_outs, want_w = oracle(case, reorder=reorder, ties=ties)
    pert_outs, pert_w = oracle(case, np.random.default_rng(case.seed + 1))
    slacks = [np.abs(a.astype(np.float64) - b) for a, b in zip(want_outs, pert_outs)]
    if reorder is not None:
        slacks = [s + r / rp.SLACK_FACTOR for s, r in zip(slacks, reorder)]
    slack_w = np.abs(want_w.astype(np.float64) - pert_w)
    weights, batches = write_case_files(case, work)
    out = os.path.join(work, "out")
    cmd = LAUNCH + [embtrain, "replay", "--weights", weights, "--batches", batches,
                    "--steps", str(len(case.bag_steps)), "--out", out] + \
        case.binary_options() + DEVICE_ARGS + POOL_AT_ARGS
    rc, stderr = rp.run_binary(cmd)
    if rc != 0:
        return ["exit status %s; stderr: %s" % (rc, stderr.strip()[-2000:]),
                "command: " + shlex.join(cmd)]
    def differences(steps, table):
        found = []
        for k in range(steps):
            got = np.load(os.path.join(out, "out_%d.npy" % k))
            found += rp.compare("out_%d" % k, got, want_outs[k], slacks[k])
        if table:
            got_w = np.load(os.path.join(out, "weights.npy"))
            found += rp.compare("weights", got_w, want_w, slack_w)
        return found

    problems = differences(len(case.bag_steps), table=True)
    # After a step with a near tie the two may rightly part (near_tie):
    # where they do, what came before must still agree.
    if problems and True in ties:
        tied = ties.index(True)
        problems = differences(tied + 1, table=False)
        if not problems:
            print("    (they part after step %d, whose max has another id's value within %g: "
                  "outputs up to it agree)" % (tied, NEAR_TIE))
    if problems:
        problems.append("command: " + shlex.join(cmd))
    return problems


def bad_cases():
    """(name, files, options, message groups): each must exit non-zero,
    write nothing and name the defect. The base is 2 steps of 3 bags over
    1-D ids with offsets on a 10 x 4 table, --pool sum."""
    ids = np.array([0, 3, 3, 9, 5, 1, 2], np.int64)
    offsets = np.array([0, 2, 5], np.int64)
    grad = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    base = {"ids": ids, "offsets": offsets, "grad": grad}
    return base, [
        ("unknown --pool-at", {}, ["--pool-at=nowhere"], [["nowhere"], ["requester, owner"]]),
        ("valid baseline (must pass)", {}, [], None),
        ("offsets[0] != 0", {"offsets_1": np.array([1, 2, 5])}, [], [["offsets[0]"], ["1"]]),
        ("decreasing offsets", {"offsets_1": np.array([0, 5, 2])}, [],
         [["offsets[2]"], ["decrease", "less"]]),
        ("offset past the end", {"offsets_0": np.array([0, 2, 9])}, [],
         [["offsets[2]"], ["9"], ["7"]]),
        ("2-D ids with --offsets", {"ids_0": ids[:6].reshape(3, 2)}, [],
         [["ids_0.npy"], ["offsets"]]),
        ("1-D ids without --offsets", {}, ["-offsets"], [["ids_0.npy"], ["offsets"]]),
        ("weights with mean", {}, ["--pool=mean", "--per-sample-weights"],
         [["per-sample-weights", "per-sample weights"], ["sum"]]),
        ("max with scale_grad_by_freq", {}, ["--pool=max", "--scale-grad-by-freq"],
         [["scale-grad-by-freq", "scale_grad_by_freq"], ["max"]]),
        ("unknown mode", {}, ["--pool=median"], [["median"], ["sum, mean, max"]]),
        ("grad of the ids' shape", {"grad_1": np.zeros((7, 4), np.float32)}, [],
         [["grad_1.npy"], ["(3, 4)"]]),
        ("2-D offsets", {"offsets_1": np.array([[0, 2, 5]])}, [], [["offsets_1.npy"], ["1-D"]]),
    ]


def run_bad_case(index, name, files, options, checks, base, embtrain, work):
    W = np.random.default_rng(99).standard_normal((10, 4)).astype(np.float32)
    weights = os.path.join(work, "W.npy")
    batches = os.path.join(work, "batches")
    os.makedirs(batches)
    np.save(weights, W)
    for k in range(2):
        for key in ("ids", "offsets", "grad"):
            np.save(os.path.join(batches, "%s_%d.npy" % (key, k)), base[key])
        np.save(os.path.join(batches, "weights_%d.npy" % k), np.ones(7, np.float32))
    for key, array in files.items():
        np.save(os.path.join(batches, key + ".npy"), array)
    out = os.path.join(work, "out")
    opts = ["--pool=sum", "--offsets"]
    for o in options:
        if o.startswith("-offsets"):
            opts.remove("--offsets")
        elif o.startswith("--pool="):
            opts[0] = o
        else:
            opts.append(o)
    cmd = LAUNCH + [embtrain, "replay", "--weights", weights, "--batches", batches,
                    "--steps", "2", "--out", out, "--optimizer", "sgd", "--lr", "0.1"] + \
        opts + DEVICE_ARGS
    rc, stderr = rp.run_binary(cmd)
    present = sorted(os.listdir(out)) if os.path.isdir(out) else []
    problems = []
    if checks is None:
        if rc != 0:
            problems.append("exit status %s; stderr: %s" % (rc, stderr.strip()[-2000:]))
        else:
            # Independent of the oracle: two SGD steps of sum bags by hand.
            want = W.copy()
            for k in range(2):
                for b in range(3):
                    end = base["offsets"][b + 1] if b + 1 < 3 else base["ids"].size
                    for p in range(base["offsets"][b], end):
                        want[base["ids"][p]] -= 0.1 * base["grad"][b]
            got = np.load(os.path.join(out, "weights.npy"))
            problems += rp.compare("weights", got, want, 0.0)
    else:
        if rc is None or rc <= 0:
            problems.append("exit status %s, expected a non-zero exit" % rc)
        if present:
            problems.append("out dir not empty after the error: %s" % present)
        for group in checks:
            if not any(g.lower() in stderr.lower() for g in group):
                problems.append("stderr does not mention any of %s" % group)
        if problems:
            problems.append("stderr: " + (stderr.strip()[-2000:] or "(empty)"))
    if problems:
        problems.append("command: " + shlex.join(cmd))
    return problems


LAUNCH = []
DEVICE_ARGS = []
POOL_AT_ARGS = []  # --pool-at owner: the random cases pool at the owners


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embtrain", required=True, help="path to the embtrain binary")
    parser.add_argument("--cases", type=int, default=40, help="random cases (default 40)")
    parser.add_argument("--seed", type=int, help="master seed (default: from the clock)")
    parser.add_argument("--case-seed", type=int, help="run only the case with this seed")
    parser.add_argument("--keep", metavar="DIR", help="keep work files under DIR")
    parser.add_argument("--np", type=int, default=0, help="run under 'mpirun -np NP'")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--pool-at", choices=["requester", "owner"], default="requester",
                        help="where replay pools the random cases' bags")
    args = parser.parse_args()
    if args.device != "cpu":
        DEVICE_ARGS.extend(["--device", args.device])
    if args.pool_at != "requester":
        POOL_AT_ARGS.extend(["--pool-at", args.pool_at])
    if args.np > 0:
        LAUNCH.extend(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(args.np),
                       "-x", "OMP_NUM_THREADS=1"])
        if os.geteuid() == 0:
            LAUNCH.insert(1, "--allow-run-as-root")
    embtrain = os.path.abspath(args.embtrain)
    if not os.access(embtrain, os.X_OK):
        parser.error("not an executable: %s" % embtrain)
    torch.set_num_threads(1)

    case_seeds = rp.draw_case_seeds(args)
    root, cleanup = rp.work_root(args, "bag_parity_")
    rerun = "%s %s --embtrain %s%s%s%s --case-seed " % (
        sys.executable, shlex.quote(sys.argv[0]), shlex.quote(embtrain),
        " --np %d" % args.np if args.np else "",
        " --device " + args.device if args.device != "cpu" else "",
        " --pool-at " + args.pool_at if args.pool_at != "requester" else "")

    report = rp.Reporter()
    try:
        for i, seed in enumerate(case_seeds):
            work = rp.fresh_dir(root, "case%03d_seed%d" % (i, seed))
            case = BagCase(seed)
            try:
                problems = run_random_case(case, embtrain, work)
            except rp.OracleError as e:
                problems = ["ORACLE SELF-CHECK FAILED (bug in this script or torch, "
                            "not embtrain): %s" % e]
            report("case %d seed=%d" % (i, seed), problems,
                   "[%s]\n    rerun: %s%d" % (case.describe(), rerun, seed))
        # The bad inputs do not depend on --pool-at: the default run has them.
        if args.case_seed is None and args.pool_at == "requester":
            base, cases = bad_cases()
            for j, (name, files, options, checks) in enumerate(cases):
                work = rp.fresh_dir(root, "bad%02d" % j)
                report("bad input: %s" % name,
                       run_bad_case(j, name, files, options, checks, base, embtrain, work), "")
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
