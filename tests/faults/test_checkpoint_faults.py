#!/usr/bin/python3
"""Checkpoint faults, end to end through `embtrain train` and `embtrain export`.

    /usr/bin/python3 tests/faults/test_checkpoint_faults.py --embtrain build/embtrain \
        [--only NAME] [--seed N]

Each test damages a checkpoint (or the disk under it) the way a crash, a bad
disk or a hand edit would, then checks the exit status (1, on every rank),
the message (what, where, the valid range), the time (no hang) and what is
on disk afterwards (nothing half-written, complete checkpoints intact).
Random choices (which bytes flip, which row turns NaN) come from --seed,
printed, so a failure can be replayed. Prints `N passed, M failed`.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_harness  # noqa: E402  (tests/cli_harness.py)

EMBTRAIN = None
SEED = None
TIMEOUT_S = 120     # a run that takes longer has hung
ERROR_WITHIN_S = 60  # an error run must end well before that


def mpirun(np_):
    return cli_harness.mpirun(np_)


def run(args, np_=1, expect_ok=True):
    cmd = mpirun(np_) + [EMBTRAIN] + args
    start = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=TIMEOUT_S)
    p.seconds = time.monotonic() - start
    if expect_ok and p.returncode != 0:
        raise AssertionError("command failed (%d): %s\nstdout:\n%s\nstderr:\n%s" % (
            p.returncode, " ".join(cmd), p.stdout[-3000:], p.stderr[-3000:]))
    return p


def expect_error(p, *needles):
    """Exit status 1, in time, one report, and every needle in stderr."""
    assert p.returncode == 1, "expected exit status 1, got %d\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, p.stdout[-2000:], p.stderr)
    assert p.seconds < ERROR_WITHIN_S, "error took %.0f s" % p.seconds
    for n in needles:
        assert n in p.stderr, "stderr lacks %r:\n%s" % (n, p.stderr)
    assert "internal error" not in p.stderr and "MPI_ABORT" not in p.stderr, p.stderr


def train_args(work, **overrides):
    """A small, fast recsys run of 4 steps into WORK/run (cli_harness.small_recsys)."""
    return cli_harness.small_recsys(os.path.join(work, "run"), 4, **overrides)


def ckpt_root(work):
    return os.path.join(work, "run", "checkpoints")


def step_dir(work, step):
    return os.path.join(ckpt_root(work), "step_%08d" % step)


def export_args(ckpt, work, table="users"):
    return ["export", "--checkpoint", ckpt, "--table", table,
            "--out", os.path.join(work, "export_%s.npy" % table)]


def latest(work):
    with open(os.path.join(ckpt_root(work), "latest")) as f:
        return f.read().strip()


def snapshot(folder):
    """Every file under `folder` with its bytes: what must not change."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


# CRC-32C (Castagnoli), written here again so the tests check the binary's
# checksums against an independent implementation.
def _crc_table():
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for x in data:
        crc = (crc >> 8) ^ CRC_TABLE[(crc ^ x) & 0xFF]
    return crc ^ 0xFFFFFFFF


def load_manifest(step):
    with open(os.path.join(step, "manifest.json")) as f:
        return json.load(f)


def save_manifest(step, manifest):
    with open(os.path.join(step, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)


def reseal(step, name):
    """Records the file's new size and checksum in the manifest, as a
    careful forger would: only the checks behind the checksum remain."""
    with open(os.path.join(step, name), "rb") as f:
        data = f.read()
    m = load_manifest(step)
    m["files"][name] = {"bytes": len(data), "crc32c": "%08x" % crc32c(data)}
    save_manifest(step, m)


def table_of(manifest, name):
    return [t for t in manifest["tables"] if t["name"] == name][0]


def assert_checkpoint_sound(work, step, np_=1):
    """The checkpoint verifies (export reads every weights shard) and every
    file matches the checksum the manifest records."""
    d = step_dir(work, step)
    m = load_manifest(d)
    for name, entry in m["files"].items():
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        assert len(data) == entry["bytes"] and "%08x" % crc32c(data) == entry["crc32c"], name
    run(export_args(d, work))


def trained(work, np_=2, **overrides):
    """A 2-rank run of 4 steps; returns its checkpoint folder."""
    run(train_args(work, **overrides), np_)
    return step_dir(work, int(overrides.get("train.steps", 4)))


# ---------------------------------------------------------------- tests

def test_flipped_bytes_in_shard(work):
    """64 flipped bytes in a weights shard: resume and export refuse it,
    naming the file and both checksums; the checkpoint stays as it was."""
    step = trained(work)
    name = "users.rank1.weights.npy"
    path = os.path.join(step, name)
    data = bytearray(open(path, "rb").read())
    rng = np.random.default_rng(SEED)
    for pos in rng.choice(np.arange(128, len(data)), size=64, replace=False):
        data[pos] ^= int(rng.integers(1, 256))
    open(path, "wb").write(bytes(data))
    recorded = load_manifest(step)["files"][name]["crc32c"]
    found = "%08x" % crc32c(data)
    before = snapshot(ckpt_root(work))
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.resume": step}), 2,
            expect_ok=False)
    expect_error(p, name, "corrupt", found, recorded)
    expect_error(run(export_args(step, work), expect_ok=False), name, found, recorded)
    assert snapshot(ckpt_root(work)) == before, "the checkpoint root changed"


def test_truncated_shard(work):
    step = trained(work)
    name = "users.rank0.state.npy"
    path = os.path.join(step, name)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.resume": step}), 2,
            expect_ok=False)
    expect_error(p, name, "%d bytes" % (size // 2), "records %d" % size, "truncated")
    assert latest(work) == "step_00000004"


def test_truncated_manifest(work):
    """A manifest cut short inside its longest string: the error names the
    file and says what is wrong in a line, not the whole string up to the
    cut."""
    step = trained(work)
    path = os.path.join(step, "manifest.json")
    text = open(path).read()
    # Half way through its longest string (the effective configuration).
    longest, at = (0, 0), 0
    while at < len(text):
        if text[at] != '"':
            at += 1
            continue
        end = at + 1
        while text[end] != '"':
            end += 2 if text[end] == "\\" else 1
        if end - at > longest[1] - longest[0]:
            longest = (at, end)
        at = end + 1
    assert longest[1] - longest[0] > 1000, "the manifest's longest string is short: %r" % (longest,)
    with open(path, "w") as f:
        f.write(text[:(longest[0] + longest[1]) // 2])
    for args in (train_args(work, **{"train.steps": "8", "checkpoint.resume": step}),
                 export_args(step, work)):
        p = run(args, 2 if args[0] == "train" else 1, expect_ok=False)
        expect_error(p, path, "malformed checkpoint manifest")
        line = [l for l in p.stderr.splitlines() if "malformed checkpoint manifest" in l][0]
        assert len(line) < len(path) + 300, "error line of %d characters:\n%s" % (len(line), line)


def test_dropped_shard(work):
    """A manifest without rank 1's shard of a table would have left those
    rows at their random start."""
    step = trained(work)
    m = load_manifest(step)
    items = table_of(m, "items")
    items["shards"] = [s for s in items["shards"] if s["rank"] != 1]
    save_manifest(step, m)
    for args in (train_args(work, **{"train.steps": "8", "checkpoint.resume": step}),
                 export_args(step, work, "items")):
        expect_error(run(args, 2 if args[0] == "train" else 1, expect_ok=False),
                     "table 'items'", "shard of rank 1 is missing", "ranks 0..1")


def test_swapped_shards(work):
    """Rank 0's and rank 1's files swapped on disk (same shapes), or their
    names swapped in the manifest: either would load the wrong rows."""
    step = trained(work)
    a, b = (os.path.join(step, "users.rank%d.weights.npy" % r) for r in (0, 1))
    assert os.path.getsize(a) == os.path.getsize(b)
    os.rename(a, a + ".x")
    os.rename(b, a)
    os.rename(a + ".x", b)
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.resume": step}), 2,
            expect_ok=False)
    expect_error(p, "users.rank", "weights.npy is corrupt")
    os.rename(a, a + ".x")  # back as they were, then swap the names in the manifest
    os.rename(b, a)
    os.rename(a + ".x", b)
    m = load_manifest(step)
    shards = table_of(m, "users")["shards"]
    shards[0]["weights"], shards[1]["weights"] = shards[1]["weights"], shards[0]["weights"]
    save_manifest(step, m)
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.resume": step}), 2,
            expect_ok=False)
    expect_error(p, "table 'users'", "weights file is 'users.rank1.weights.npy'",
                 "expected 'users.rank0.weights.npy'")


def test_duplicate_and_overlapping_shards(work):
    step = trained(work)
    original = load_manifest(step)
    m = json.loads(json.dumps(original))
    shards = table_of(m, "users")["shards"]
    shards[1] = dict(shards[0])  # rank 0's shard twice, rank 1's gone
    save_manifest(step, m)
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.resume": step}), 2,
            expect_ok=False)
    expect_error(p, "table 'users'", "rank 0 appears twice", "ranks 0..1")
    # The block layout of version 1: rank 1's rows said to start inside rank 0's.
    m = json.loads(json.dumps(original))
    m["version"] = 1
    del m["files"]
    for t in m["tables"]:
        P, rows = len(t["shards"]), t["rows"]
        bounds = [r * (rows // P) + min(r, rows % P) for r in range(P + 1)]
        for r, s in enumerate(t["shards"]):
            s["row_begin"], s["rows"] = bounds[r], bounds[r + 1] - bounds[r]
        del t["sharding"]
    table_of(m, "users")["shards"][1]["row_begin"] = 100
    save_manifest(step, m)
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.resume": step}), 2,
            expect_ok=False)
    expect_error(p, "table 'users'", "starts at row 100", "rows are [150, 300)")


def test_negative_step(work):
    """step -5 used to train 65 steps."""
    step = trained(work)
    m = load_manifest(step)
    m["step"] = -5
    save_manifest(step, m)
    p = run(train_args(work, **{"train.steps": "60", "checkpoint.resume": step}), 2,
            expect_ok=False)
    expect_error(p, "'step' = -5 is out of range [0, 9223372036854775807]")
    assert sorted(os.listdir(ckpt_root(work))) == ["latest", "step_00000004"]


def test_huge_rows(work):
    """rows = 2**60 used to crash export (a segfault); resume refuses it too."""
    step = trained(work)
    m = load_manifest(step)
    table_of(m, "users")["rows"] = 2 ** 60
    save_manifest(step, m)
    limit = "overflows the limit of 9223372036854775807 bytes"
    expect_error(run(export_args(step, work), expect_ok=False), "table 'users'",
                 "1152921504606846976 rows x 8 floats", limit)
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.resume": step}), 2,
            expect_ok=False)
    expect_error(p, "table 'users'", limit)
    # Rows that fit but that the shards do not hold.
    table_of(m, "users")["rows"] = 2 ** 40
    save_manifest(step, m)
    expect_error(run(export_args(step, work), expect_ok=False), "table 'users'",
                 "holds 150 rows", "gives rank 0 549755813888")


def test_nan_weights_refused_on_load(work):
    """A NaN written into a shard, with its checksum recorded anew: the
    load refuses it by the row it is in."""
    step = trained(work)
    rng = np.random.default_rng(SEED)
    local = int(rng.integers(0, 150))
    name = "users.rank1.weights.npy"
    w = np.load(os.path.join(step, name))
    w[local, int(rng.integers(0, 8))] = np.nan
    np.save(os.path.join(step, name), w)
    reseal(step, name)
    global_row = 2 * local + 1  # cyclic: rank 1's local row k is row 2k + 1
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.resume": step}), 2,
            expect_ok=False)
    expect_error(p, "table 'users' row %d holds a non-finite weight" % global_row)
    expect_error(run(export_args(step, work), expect_ok=False),
                 "table 'users' row %d holds a non-finite weight" % global_row)
    assert latest(work) == "step_00000004"


def test_nonfinite_pretrained_rows_refused_at_load(work):
    """Pretrained rows holding an infinity, or a NaN in a row the step never
    reads (the items' padding row: pooling skips it), could never be
    checkpointed: the load refuses them, naming the key, the row and the
    column, before anything is trained or written (the save's own check of
    each chunk is test_checkpoint_save.cpp's)."""
    rng = np.random.default_rng(SEED)
    for table, rows, row, bad in (("users", 300, int(rng.integers(0, 300)), np.inf),
                                  ("items", 501, 0, np.nan)):
        start = rng.standard_normal((rows, 8)).astype(np.float32)
        column = int(rng.integers(0, 8))
        start[row, column] = bad
        npy = os.path.join(work, table + "_start.npy")
        np.save(npy, start)
        p = run(train_args(work, **{"table.%s.init" % table: npy}), 2, expect_ok=False)
        expect_error(p, "config key 'table.%s.init' = '%s': row %d, column %d is %s "
                     "(valid: finite values)" % (table, npy, row, column, "inf" if bad > 0 else "nan"))
        root = ckpt_root(work)
        assert not os.path.exists(root), os.listdir(root)


def test_auto_after_latest_deleted(work):
    """With `latest` gone, resume = auto used to start again at step 0 and
    overwrite step_*: it takes the newest checkpoint that verifies."""
    run(train_args(work, **{"train.steps": "6", "checkpoint.every": "2"}), 2)
    os.remove(os.path.join(ckpt_root(work), "latest"))
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.every": "2",
                                "checkpoint.resume": "auto", "log.quiet": "false"}), 2)
    assert "latest is missing" in p.stderr and "took " in p.stderr, p.stderr
    assert "step_00000006" in p.stderr, p.stderr
    assert "at step 6" in p.stdout, p.stdout
    assert latest(work) == "step_00000008"
    assert_checkpoint_sound(work, 8)


def test_auto_skips_corrupt_latest(work):
    run(train_args(work, **{"train.steps": "6", "checkpoint.every": "2"}), 2)
    bad = os.path.join(step_dir(work, 6), "items.rank0.state.npy")
    with open(bad, "r+b") as f:
        f.seek(200)
        f.write(b"\xff\xff\xff\xff")
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.every": "2",
                                "checkpoint.resume": "auto", "log.quiet": "false"}), 2)
    assert "skipped step_00000006" in p.stderr and "items.rank0.state.npy" in p.stderr, p.stderr
    assert "at step 4" in p.stdout, p.stdout
    # Step 6 was trained again and saved in place of the corrupt copy.
    assert latest(work) == "step_00000008"
    assert_checkpoint_sound(work, 6)
    # No complete checkpoint at all: an error, never a fresh start over them.
    for step in (4, 6, 8):
        with open(os.path.join(step_dir(work, step), "users.rank1.weights.npy"), "r+b") as f:
            f.seek(300)
            f.write(b"\x00\x01\x02\x03")
    p = run(train_args(work, **{"train.steps": "10", "checkpoint.resume": "auto"}), 2,
            expect_ok=False)
    expect_error(p, "holds no complete checkpoint", "skipped step_00000008",
                 "skipped step_00000004")


def test_latest_names_missing_folder(work):
    run(train_args(work, **{"train.steps": "6", "checkpoint.every": "2"}), 2)
    with open(os.path.join(ckpt_root(work), "latest"), "w") as f:
        f.write("step_00000099\n")
    p = run(train_args(work, **{"train.steps": "8", "checkpoint.resume": "auto",
                                "log.quiet": "false"}), 2)
    assert "names step_00000099, which is missing" in p.stderr, p.stderr
    assert "at step 6" in p.stdout, p.stdout
    assert latest(work) == "step_00000008"


def test_resave_finished_run(work):
    """Resuming a finished run leaves its checkpoint as it is (it has nothing
    to train). A re-save interrupted after setting the old copy aside
    (where the file system cannot swap folders) is found by auto and moved
    back by the next save."""
    run(train_args(work), 2)
    before = snapshot(step_dir(work, 4))
    run(train_args(work, **{"checkpoint.resume": "auto"}), 2)
    assert latest(work) == "step_00000004"
    assert_checkpoint_sound(work, 4)
    after = snapshot(step_dir(work, 4))
    assert {k: v for k, v in after.items() if k != "manifest.json"} == \
        {k: v for k, v in before.items() if k != "manifest.json"}, "re-saved shards differ"
    assert sorted(os.listdir(ckpt_root(work))) == ["latest", "step_00000004"]
    aside = os.path.join(ckpt_root(work), ".step_00000004.old")
    os.rename(step_dir(work, 4), aside)
    p = run(train_args(work, **{"train.steps": "6", "checkpoint.resume": "auto",
                                "log.quiet": "false"}), 2)
    assert "at step 4" in p.stdout, p.stdout + p.stderr
    assert sorted(os.listdir(ckpt_root(work))) == ["latest", "step_00000004", "step_00000006"]
    assert_checkpoint_sound(work, 4)


def test_stale_temporaries_cleaned(work):
    """Temporaries of dead runs (any step's .step_N.tmp, latest.tmp) went
    on filling the disk; a save removes them and no complete checkpoint."""
    run(train_args(work, **{"train.steps": "4", "checkpoint.every": "2"}), 2)
    root = ckpt_root(work)
    stale = [os.path.join(root, ".step_00000010.tmp"), os.path.join(root, ".step_00000002.tmp")]
    for d in stale:
        os.makedirs(d)
        with open(os.path.join(d, "users.rank0.weights.npy"), "wb") as f:
            f.write(os.urandom(1 << 20))
    with open(os.path.join(root, "latest.tmp"), "w") as f:
        f.write("step_000")
    run(train_args(work, **{"train.steps": "6", "checkpoint.every": "2",
                            "checkpoint.resume": "auto"}), 2)
    assert sorted(os.listdir(root)) == ["latest", "step_00000002", "step_00000004",
                                        "step_00000006"], os.listdir(root)
    for step in (2, 4, 6):
        assert_checkpoint_sound(work, step)


def test_changed_seed_refused(work):
    trained(work)
    before = snapshot(ckpt_root(work))
    p = run(train_args(work, **{"train.steps": "8", "train.seed": "2",
                                "recsys.train_samples": "6000", "checkpoint.resume": "auto"}),
            2, expect_ok=False)
    expect_error(p, "train.seed = 1 in the checkpoint, 2 now",
                 "recsys.train_samples = 5000 in the checkpoint, 6000 now",
                 "checkpoint.allow_changes")
    assert snapshot(ckpt_root(work)) == before
    p = run(train_args(work, **{"train.steps": "8", "train.seed": "2",
                                "table.users.lr": "0.2", "checkpoint.resume": "auto"}), 2,
            expect_ok=False)
    expect_error(p, "train.seed = 1 in the checkpoint, 2 now",
                 "table.users.lr = 0.1 in the checkpoint, 0.2 now")
    p = run(train_args(work, **{"train.steps": "8", "train.seed": "2",
                                "table.users.lr": "0.2", "checkpoint.resume": "auto",
                                "checkpoint.allow_changes": "train.seed, table.*.lr"}), 2,
            expect_ok=False)
    assert p.returncode == 0, p.stderr
    assert latest(work) == "step_00000008"
    # Keys that may always change: steps, threads, log.*, checkpoint.*.
    run(train_args(work, **{"train.steps": "10", "train.seed": "2", "train.threads": "2",
                            "table.users.lr": "0.2", "table.items.init": "zeros",
                            "log.interval": "1", "checkpoint.keep": "5",
                            "checkpoint.resume": "auto"}), 2)


def test_full_disk_during_save(work):
    """A full disk during a save: exit 1 on every rank with the system's
    reason, the previous checkpoint intact and still `latest`, and the
    temporary folder removed so that the space is free again."""
    mnt = os.path.join(work, "disk")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print("SKIP test_full_disk_during_save: cannot mount a tmpfs (%s)" % r.stdout.strip())
        return
    try:
        root = os.path.join(mnt, "ckpt")
        run(train_args(work, **{"checkpoint.dir": root}), 2)
        before, names = snapshot(root), sorted(os.listdir(root))
        with open(os.path.join(mnt, "filler"), "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        p = run(train_args(work, **{"train.steps": "6", "checkpoint.dir": root,
                                    "checkpoint.resume": "auto"}), 2, expect_ok=False)
        expect_error(p, "step_00000006", "disk full")
        assert snapshot(root) == before and sorted(os.listdir(root)) == names, \
            "the checkpoint root changed: %s" % sorted(os.listdir(root))
        os.remove(os.path.join(mnt, "filler"))
        run(export_args(root, work))
    finally:
        subprocess.run(["umount", mnt])


def test_metrics_write_failure(work):
    """metrics.jsonl on a full disk used to end the run with exit 0 and an
    empty file: now exit 1 on every rank, naming the file and the reason."""
    run_dir = os.path.join(work, "run")
    run(train_args(work), 2)
    # The disk fills before the run goes on: its metrics.jsonl appends fail.
    os.remove(os.path.join(run_dir, "metrics.jsonl"))
    os.symlink("/dev/full", os.path.join(run_dir, "metrics.jsonl"))
    p = run(train_args(work, **{"checkpoint.resume": "auto", "train.steps": "8"}), 2,
            expect_ok=False)
    expect_error(p, "metrics.jsonl: cannot write metrics: No space left on device")
    assert p.stderr.count("cannot write metrics") == 1, p.stderr


def main():
    def add_args(parser):
        parser.add_argument("--seed", type=int, help="seed of the random choices (default: random)")

    def setup(args):
        global EMBTRAIN, SEED
        EMBTRAIN = args.embtrain
        SEED = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
        print("seed %d (replay with --seed %d)" % (SEED, SEED), flush=True)
    return cli_harness.run_tests(globals(), "faults_", add_args=add_args, on_args=setup)


if __name__ == "__main__":
    sys.exit(main())
