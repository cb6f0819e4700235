#!/usr/bin/python3
"""Faults of a running job, end to end through `embtrain train`.

    /usr/bin/python3 tests/faults/test_run_faults.py --embtrain build/embtrain [--only NAME]

Each test asserts the exit status, the message, that the job ended within
its time limit (no hang) and what is on disk afterwards:
- ranks that disagree (a table's dim, the seed, the data file's contents)
  are refused at start-up, naming the key and the ranks;
- a NaN loss (injected on one rank with EMBTRAIN_INJECT_NAN_LOSS, or a
  diverging learning rate) stops every rank before the step is applied and
  writes no checkpoint; with train.on_nonfinite = skip_step the step is
  skipped (its tables equal the run that stopped a step earlier);
- SIGTERM to one rank stops every rank after the current step with a
  checkpoint, and resuming it ends bitwise equal to an uninterrupted run;
- a run whose tables cannot fit the host's memory is refused before
  anything big is allocated, with its memory plan;
- a stopped rank (SIGSTOP) is ended by the watchdog after
  train.collective_timeout, with a message naming the ranks that did not
  arrive.
Prints `N passed, M failed`.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_harness  # noqa: E402  (tests/cli_harness.py)

EMBTRAIN = None
PASS_ENV = ["EMBTRAIN_INJECT_NAN_LOSS"]  # the fault injection reaches every rank


def mpirun_cmd(np_):
    """An mpirun prefix even for one rank (tests that signal its children)."""
    return cli_harness.mpirun_base(PASS_ENV) + ["-np", str(np_)]


def small_recsys(work, **overrides):
    """A small, fast recsys run of 12 steps into WORK/run (cli_harness.small_recsys)."""
    return cli_harness.small_recsys(os.path.join(work, "run"), 12, **overrides)


def run(args, np_=1, env=None, timeout=120, cwd=None):
    cmd = cli_harness.mpirun(np_, PASS_ENV) + [EMBTRAIN] + args
    full_env = dict(os.environ)
    full_env.setdefault("EMBTRAIN_INJECT_NAN_LOSS", "")
    full_env.update(env or {})
    start = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, env=full_env, cwd=cwd)
    p.seconds = time.time() - start
    return p


def ok(p):
    assert p.returncode == 0, "exit %d\n%s\n%s" % (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    return p


def expect_error(p, *needles):
    assert p.returncode == 1, "expected exit status 1, got %d\n%s" % (p.returncode, p.stderr)
    for n in needles:
        assert n in p.stderr, "stderr lacks %r:\n%s" % (n, p.stderr)


def export(ckpt, table, out):
    ok(run(["export", "--checkpoint", ckpt, "--table", table, "--out", out]))
    return np.load(out)


def checkpoints(run_dir):
    root = os.path.join(run_dir, "checkpoints")
    return sorted(d for d in os.listdir(root) if d.startswith("step_")) if os.path.isdir(root) else []


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def mpmd(work, per_rank):
    """An MPMD command line: one `-np 1 [-wdir D] embtrain ARGS` per rank."""
    cmd = cli_harness.mpirun_base(PASS_ENV)
    parts = []
    for wdir, args in per_rank:
        parts += (["-wdir", wdir] if wdir else []) + ["-np", "1", EMBTRAIN] + args + [":"]
    return cmd + parts[:-1]


def run_cmd(cmd, timeout=120):
    start = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    p.seconds = time.time() - start
    return p


# ---------------------------------------------------------------- agreement

def test_ranks_disagree_on_a_table(work):
    a = small_recsys(work, **{"table.users.dim": "8"})
    b = small_recsys(work, **{"table.users.dim": "16"})
    p = run_cmd(mpmd(work, [(None, a), (None, b)]))
    expect_error(p, "config key 'table.users.dim' is '16' on rank 1 but '8' on rank 0",
                 "ranks that differ from rank 0: 1")
    assert p.seconds < 60, p.seconds
    assert checkpoints(os.path.join(work, "run")) == []


def test_ranks_disagree_on_the_seed(work):
    a = small_recsys(work, **{"train.seed": "1"})
    p = run_cmd(mpmd(work, [(None, a), (None, a), (None, small_recsys(work, **{"train.seed": "2"}))]))
    expect_error(p, "config key 'train.seed' is '2' on rank 2 but '1' on rank 0",
                 "ranks that differ from rank 0: 2")


def write_clicks(path, rng, n=300):
    with open(path, "w") as f:
        for _ in range(n):
            hist = " ".join(str(int(x)) for x in rng.integers(1, 500, 3))
            f.write("%d\t%s\t%d\t%d\n" % (rng.integers(0, 300), hist, rng.integers(1, 500),
                                          rng.integers(0, 2)))


def test_ranks_disagree_on_the_data(work):
    seed = int.from_bytes(os.urandom(4), "little")
    print("  seed %d" % seed)
    rng = np.random.default_rng(seed)
    for d in ("host0", "host1"):
        os.makedirs(os.path.join(work, d))
    write_clicks(os.path.join(work, "host0", "clicks.tsv"), rng)
    write_clicks(os.path.join(work, "host1", "clicks.tsv"), rng)  # same name, other clicks
    args = small_recsys(work, **{"recsys.data": "clicks.tsv"})
    p = run_cmd(mpmd(work, [(os.path.join(work, "host0"), args),
                            (os.path.join(work, "host1"), args)]))
    expect_error(p, "workload 'data' is 'clicks.tsv: ", "on rank 1 but", "every rank must read the same data")
    # The same file on both ranks trains.
    shutil.copy(os.path.join(work, "host0", "clicks.tsv"), os.path.join(work, "host1", "clicks.tsv"))
    p = run_cmd(mpmd(work, [(os.path.join(work, "host0"), args),
                            (os.path.join(work, "host1"), args)]))
    ok(p)


# ---------------------------------------------------------------- memory

def test_memory_plan_refuses_what_cannot_fit(work):
    # 10^10 users: terabytes per rank. Refused at once with the plan, not
    # after building the data, and not with std::bad_alloc.
    p = run(small_recsys(work, **{"recsys.users": "10000000000", "table.users.dim": "32"}),
            np_=2, timeout=60)
    expect_error(p, "the run does not fit in memory: rank 0 needs",
                 "table users (shard of 5,000,000,000 rows x 32, weights and adagrad state)",
                 "Each rank holds 1/P of every table")
    assert "bad_alloc" not in p.stderr and "internal error" not in p.stderr, p.stderr
    assert p.seconds < 20, p.seconds
    assert checkpoints(os.path.join(work, "run")) == []


# ---------------------------------------------------------------- non-finite

def test_nan_loss_stops_before_the_update(work):
    p = run(small_recsys(work, **{"checkpoint.every": "4"}), np_=2,
            env={"EMBTRAIN_INJECT_NAN_LOSS": "6:1"})
    expect_error(p, "step 6: the loss on rank 1 is nan (train.on_nonfinite = stop)",
                 "its gradients were not applied", "the tables are finite")
    run_dir = os.path.join(work, "run")
    assert checkpoints(run_dir) == ["step_00000004"], checkpoints(run_dir)
    assert not any(m["type"] == "summary" for m in metrics(run_dir))
    expect_error(p, "--checkpoint.resume=auto goes on from the last checkpoint, %s"
                 % os.path.join(run_dir, "checkpoints", "step_00000004"))


def test_nan_loss_before_any_checkpoint(work):
    """A stop before the first checkpoint: the advice is to start over (it
    offered a resume there was nothing to resume from). resume = auto into
    that folder starts over, as its help says (a requeued job runs the same
    command), and says that it replaces the stopped run's metrics.jsonl
    (it did so silently). A run that began from another run's checkpoint
    and saved none is pointed at that checkpoint by name: auto looks only
    in its own folder."""
    p = run(small_recsys(work), np_=2, env={"EMBTRAIN_INJECT_NAN_LOSS": "3:0"})
    expect_error(p, "step 3: the loss on rank 0 is nan",
                 "no checkpoint was saved before it: a new run starts over")
    run_dir = os.path.join(work, "run")
    p = ok(run(small_recsys(work, **{"checkpoint.resume": "auto"}), np_=2))
    assert "checkpoint.resume = auto: no checkpoint in %s yet, so this run starts over and " \
        "replaces %s" % (os.path.join(run_dir, "checkpoints"),
                         os.path.join(run_dir, "metrics.jsonl")) in p.stderr, p.stderr
    summaries = [m for m in metrics(run_dir) if m["type"] == "summary"]
    assert [(s["first_step"], s["steps"]) for s in summaries] == [(0, 12)], summaries
    other = os.path.join(work, "other")
    p = run(small_recsys(work, **{"log.dir": other, "train.steps": "16",
                                  "checkpoint.resume": run_dir}), np_=2,
            env={"EMBTRAIN_INJECT_NAN_LOSS": "14:1"})
    expect_error(p, "it saved no checkpoint; --checkpoint.resume=%s" %
                 os.path.join(run_dir, "checkpoints", "step_00000012"))


def test_diverging_run_names_the_bad_row(work):
    p = run(small_recsys(work, **{"table.users.optimizer": "sgd", "table.items.optimizer": "sgd",
                                  "table.users.lr": "1e6", "table.items.lr": "1e6",
                                  "train.steps": "200"}), np_=2)
    expect_error(p, "(train.on_nonfinite = stop)", "is not finite")
    assert checkpoints(os.path.join(work, "run")) == []


def test_skip_step_skips_the_update(work):
    # Step 12 of 12 skipped on rank 0's say: the tables must equal an
    # 11-step run's, bit for bit, on every rank's shard.
    skipped = os.path.join(work, "skipped")
    ok(run(small_recsys(work, **{"log.dir": skipped, "train.on_nonfinite": "skip_step"}),
           np_=2, env={"EMBTRAIN_INJECT_NAN_LOSS": "12:0"}))
    m = metrics(skipped)
    assert [x["step"] for x in m if x["type"] == "skipped"] == [12], m
    assert [x for x in m if x["type"] == "summary"][0]["skipped_steps"] == 1
    short = os.path.join(work, "short")
    ok(run(small_recsys(work, **{"log.dir": short, "train.steps": "11"}), np_=2))
    for table in ("users", "items"):
        a = export(os.path.join(skipped, "checkpoints"), table, os.path.join(work, "a.npy"))
        b = export(os.path.join(short, "checkpoints"), table, os.path.join(work, "b.npy"))
        assert a.tobytes() == b.tobytes(), "table %s: the skipped step changed it" % table
    # A step skipped in the middle: the run goes on and ends finite.
    mid = os.path.join(work, "mid")
    ok(run(small_recsys(work, **{"log.dir": mid, "train.on_nonfinite": "skip_step"}),
           np_=2, env={"EMBTRAIN_INJECT_NAN_LOSS": "5:1"}))
    a = export(os.path.join(mid, "checkpoints"), "items", os.path.join(work, "c.npy"))
    assert np.isfinite(a).all()


# ---------------------------------------------------------------- signals

def rank_pids(mpirun_pid):
    """The processes mpirun started (on one host, its children), by rank."""
    pids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) != mpirun_pid:
                    continue
                with open("/proc/%s/environ" % d, "rb") as f:
                    env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
                pids[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(d)
            except (OSError, KeyError, ValueError):
                pass
    return [pids[r] for r in sorted(pids)]


def start_long_run(work, run_dir, np_=2, after_step=5, **overrides):
    keys = {"log.dir": run_dir, "train.steps": "100000", "log.interval": "5"}
    keys.update(overrides)
    cmd = mpirun_cmd(np_) + [EMBTRAIN] + small_recsys(work, **keys)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # until it has trained a little
        try:
            if any(m["type"] == "train" and m["step"] >= after_step for m in metrics(run_dir)):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return proc


def test_sigterm_saves_and_resume_is_exact(work):
    run_dir = os.path.join(work, "run")
    proc = start_long_run(work, run_dir)
    pids = rank_pids(proc.pid)
    assert len(pids) == 2, pids
    os.kill(pids[1], signal.SIGTERM)  # as a scheduler would, one rank first
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, "a stopped run must not look finished"
    summary = [m for m in metrics(run_dir) if m["type"] == "summary"][-1]
    assert summary["stopped_by"] == "SIGTERM", summary
    n = summary["steps"]
    assert checkpoints(run_dir) == ["step_%08d" % n], checkpoints(run_dir)
    # Resume to n + 6 steps; equal to a run of n + 6 steps without the stop.
    ok(run(small_recsys(work, **{"log.dir": run_dir, "checkpoint.resume": "auto",
                                 "train.steps": str(n + 6)}), np_=2))
    straight = os.path.join(work, "straight")
    ok(run(small_recsys(work, **{"log.dir": straight, "train.steps": str(n + 6)}), np_=2))
    for table in ("users", "items"):
        a = export(os.path.join(run_dir, "checkpoints"), table, os.path.join(work, "a.npy"))
        b = export(os.path.join(straight, "checkpoints"), table, os.path.join(work, "b.npy"))
        assert a.tobytes() == b.tobytes(), "table %s differs after stop + resume" % table


def test_stopped_rank_ends_the_job(work):
    # Rank 1 of 3 stops (SIGSTOP: swapped out, a hung driver, a debugger):
    # the others wait in the step's next collective until the watchdog
    # ends the job, naming rank 1.
    run_dir = os.path.join(work, "run")
    proc = start_long_run(work, run_dir, np_=3, after_step=20,
                          **{"train.collective_timeout": "4"})
    pids = rank_pids(proc.pid)
    assert len(pids) == 3, pids
    time.sleep(1.0)  # every watchdog has spoken by now
    os.kill(pids[1], signal.SIGSTOP)
    start = time.time()
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
    took = time.time() - start
    assert proc.returncode != 0
    assert "watchdog [rank 0]: no progress for 4 s" in err, err[-3000:]
    assert "(train.collective_timeout = 4 s); ranks that did not arrive: rank 1: " in err, err[-3000:]
    assert "rank 2:" not in err.split("did not arrive:")[1].split("\n")[0], err[-3000:]
    assert took < 30, took
    print("  " + [l for l in err.splitlines() if "watchdog" in l][0])


def main():
    def setup(args):
        global EMBTRAIN
        EMBTRAIN = args.embtrain
    return cli_harness.run_tests(globals(), "faults_", on_args=setup)


if __name__ == "__main__":
    sys.exit(main())
