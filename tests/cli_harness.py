"""What the command-line test scripts share: the mpirun prefix and the
runner that calls each test_* function in a fresh temporary folder.

    sys.path.insert(0, <tests folder>); import cli_harness
    cli_harness.mpirun(2)  ->  ["mpirun", "--allow-run-as-root", ...]
    sys.exit(cli_harness.run_tests(globals(), "faults_", on_args=setup))
"""
import argparse
import os
import shutil
import tempfile
import time
import traceback


def mpirun_base(pass_env=()):
    """mpirun's options without -np: one thread per rank, oversubscribed,
    unbound, allowed as root, passing the environment variables named in
    pass_env on to the ranks (for an MPMD line of "-np 1 PROGRAM ... :")."""
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-x", "OMP_NUM_THREADS=1"]
    for name in pass_env:
        cmd += ["-x", name]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    return cmd


def mpirun(np_, pass_env=()):
    """The prefix of a job of np_ ranks; [] for one (a plain run)."""
    return [] if np_ == 1 else mpirun_base(pass_env) + ["-np", str(np_)]


def small_recsys(run_dir, steps, **overrides):
    """`embtrain train` arguments of a small, fast recsys run (users 300 x 8,
    items 501 x 8, batch 64, one thread, quiet) into run_dir; overrides are
    config keys ("table.users.dim": "16")."""
    keys = {"train.workload": "recsys", "train.steps": str(steps), "train.batch_size": "64",
            "recsys.users": "300", "recsys.items": "500", "recsys.history": "5",
            "recsys.eval_samples": "400", "recsys.train_samples": "5000",
            "table.users.dim": "8", "table.items.dim": "8", "log.interval": "4",
            "log.dir": run_dir, "train.threads": "1", "log.quiet": "true"}
    keys.update(overrides)
    return ["train"] + ["--%s=%s" % kv for kv in keys.items()]


def run_tests(namespace, prefix, add_args=None, on_args=None):
    """Runs every test_* function of `namespace` (a module's globals()) whose
    name contains --only, each with a fresh folder named `prefix`...; prints
    ok/FAIL per test and "N passed, M failed"; returns the exit status.
    `add_args(parser)` adds a script's own options; `on_args(args)` sees
    them (and --embtrain, made absolute) before the first test."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--embtrain", required=True)
    parser.add_argument("--only", help="run only tests whose name contains this")
    if add_args:
        add_args(parser)
    args = parser.parse_args()
    args.embtrain = os.path.abspath(args.embtrain)
    if on_args:
        on_args(args)
    tests = [f for name, f in sorted(namespace.items()) if name.startswith("test_")]
    passed = failed = 0
    for test in tests:
        if args.only and args.only not in test.__name__:
            continue
        work = tempfile.mkdtemp(prefix=prefix)
        start = time.time()
        try:
            test(work)
            passed += 1
            print("ok   %s (%.1f s)" % (test.__name__, time.time() - start), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s\n%s" % (test.__name__, traceback.format_exc()), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1
