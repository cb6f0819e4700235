#!/usr/bin/python3
"""End-to-end tests of `embtrain train` and `embtrain export` through the CLI.

    /usr/bin/python3 tests/train/test_train_cli.py --embtrain build/embtrain [--only NAME]

Covers: config errors (unknown key with file:line, ill-typed and out-of-range
values, command-line overrides), train.pipeline and train.overlap_chunks
training the same bits as without them, table options that train's keys and
replay's flags accept and refuse alike, exact resume (a run resumed from step k
ends bitwise equal to an uninterrupted run, 1 and 2 ranks), re-sharding a
checkpoint from 2 to 3 ranks (and the true epoch after a 2 -> 4 ranks resume),
loading a checkpoint of the older block
layout, checkpoint/config mismatches, a stale partial
checkpoint left by a crash, export to .npy, from_pretrained with freeze, and
the quickstart config on a short setting. Prints `N passed, M failed`.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import cli_harness  # noqa: E402  (the mpirun prefix, small_recsys, the runner)

EMBTRAIN = None
DEVICE = "cpu"
TIMEOUT_S = 300
# Whether this machine has an NVIDIA GPU (then train.device = cuda may work).
HAVE_GPU = shutil.which("nvidia-smi") is not None and subprocess.run(
    ["nvidia-smi", "-L"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def run(args, np_=1, expect_ok=True, env=None):
    """`embtrain ARGS` as a job of np_ ranks; `env`: variables added for
    every rank."""
    env = env or {}
    cmd = cli_harness.mpirun(np_, pass_env=sorted(env)) + [EMBTRAIN] + args
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=TIMEOUT_S, env=dict(os.environ, **env))
    if expect_ok and p.returncode != 0:
        raise AssertionError("command failed (%d): %s\nstdout:\n%s\nstderr:\n%s" % (
            p.returncode, " ".join(cmd), p.stdout[-3000:], p.stderr[-3000:]))
    return p


def small_recsys(work, **overrides):
    """A small, fast recsys run's command line: 12 steps into WORK/run."""
    return cli_harness.small_recsys(os.path.join(work, "run"), 12, **overrides)


def export(ckpt, table, out):
    run(["export", "--checkpoint", ckpt, "--table", table, "--out", out])
    return np.load(out)


def expect_error(p, *needles):
    assert p.returncode == 1, "expected exit status 1, got %d\n%s" % (p.returncode, p.stderr)
    for n in needles:
        assert n in p.stderr, "stderr lacks %r:\n%s" % (n, p.stderr)


# ---------------------------------------------------------------- tests

def test_config_errors(work):
    ini = os.path.join(work, "bad.ini")
    with open(ini, "w") as f:
        f.write("[train]\nworkload = recsys\nsteps = 5\n\n[recsys]\nusers = 100\nbogus_key = 3\n")
    expect_error(run(["train", "--config", ini], expect_ok=False), "bad.ini:7", "recsys.bogus_key")
    with open(ini, "w") as f:
        f.write("[train]\nsteps = many\n")
    expect_error(run(["train", "--config", ini], expect_ok=False), "train.steps", "bad.ini:2",
                 "not an integer")
    expect_error(run(small_recsys(work, **{"train.batch_size": "0"}), expect_ok=False),
                 "train.batch_size", "command line", "[1, ")
    expect_error(run(small_recsys(work, **{"table.items.optimizer": "adamw"}), expect_ok=False),
                 "table.items.optimizer", "sgd, adagrad, adam, rowwise_adagrad")
    expect_error(run(small_recsys(work, **{"train.workload": "nope"}), expect_ok=False),
                 "config key 'train.workload' = 'nope' (command line): not a workload",
                 "recsys")
    # Errors found once the workload knows its tables name the key and its source.
    expect_error(run(small_recsys(work, **{"table.users.padding_idx": "300"}), expect_ok=False),
                 "config key 'table.users.padding_idx' = '300' (command line): not a row of "
                 "table 'users', which has 300 (valid: [-300, 299]")
    expect_error(run(small_recsys(work, **{"table.items.rows": "7"}), expect_ok=False),
                 "config key 'table.items.rows' = '7' (command line): workload recsys needs")
    expect_error(run(small_recsys(work, **{"table.items.dim": "4"}), expect_ok=False),
                 "(command line) and table.items.dim = 4 (command line) must be equal")
    # An allowed change that names no key would let nothing through.
    expect_error(run(small_recsys(work, **{"checkpoint.allow_changes": "train.sed, table.*.lr"}),
                     expect_ok=False),
                 "config key 'checkpoint.allow_changes'", "'train.sed' is no key (did you mean "
                 "'train.seed'?)")
    expect_error(run(small_recsys(work, **{"checkpoint.allow_changes": "tables.*"}),
                     expect_ok=False), "'tables.*' is no key")
    with open(ini, "w") as f:
        f.write("[train]\nworkload = nope\n")
    expect_error(run(["train", "--config", ini], expect_ok=False),
                 "config key 'train.workload' = 'nope' (" + ini + ":2): not a workload")
    expect_error(run(["train", "--config", os.path.join(work, "missing.ini")], expect_ok=False),
                 "missing.ini")
    expect_error(run(small_recsys(work) + ["--no.such.key=1"], expect_ok=False), "no.such.key")
    expect_error(run(small_recsys(work, **{"train.device": "gpu"}), expect_ok=False),
                 "train.device", "cpu, cuda")
    expect_error(run(small_recsys(work, **{"train.data_comm": "tcp"}), expect_ok=False),
                 "train.data_comm", "auto, nccl, mpi-staged")
    if not HAVE_GPU:
        # Asking for a GPU where there is none: one clear line, exit 1 on every rank.
        p = run(small_recsys(work, **{"train.device": "cuda"}), np_=2, expect_ok=False)
        expect_error(p, "device cuda")
        assert p.stderr.count("device cuda") == 1, "more than one rank reported:\n" + p.stderr
    # Keys match exactly; near misses get a suggestion, on the command line
    # and in a file; every file error names its line.
    p = run(small_recsys(work) + ["--train.step=200"], expect_ok=False)
    expect_error(p, "command line: unknown key 'train.step' (did you mean 'train.steps'?)")
    assert p.stderr.count("embtrain train: ") == 1, p.stderr  # the prefix once
    with open(ini, "w") as f:
        f.write("[train]\nsteps = 5\n[table.items]\nlrr = 0.1\n")
    expect_error(run(["train", "--config", ini], expect_ok=False),
                 "bad.ini:4: unknown key 'table.items.lrr' (did you mean 'table.items.lr'?)")
    with open(ini, "w") as f:
        f.write("[train]\nsteps = 5\n\nsteps = 6\n")
    expect_error(run(["train", "--config", ini], expect_ok=False),
                 "bad.ini:4: key 'train.steps' is set twice (first at line 2)")
    with open(ini, "w") as f:
        f.write("[train]\nsteps = 5\njust some words\n")
    expect_error(run(["train", "--config", ini], expect_ok=False),
                 "bad.ini:3: 'just some words' is not 'key = value'")
    # The effective configuration reproduces the run: it parses back.
    run(small_recsys(work))
    effective = os.path.join(work, "run", "config.ini")
    assert "users = 300" in open(effective).read()
    run(["train", "--config", effective, "--log.dir=" + os.path.join(work, "again")])
    # It names the ranks it ran with (its first line; a comment to the parser).
    run(small_recsys(work, **{"log.dir": os.path.join(work, "two")}), 2)
    with open(os.path.join(work, "two", "config.ini")) as f:
        assert f.readline().startswith("# written by a run of 2 rank(s); again: mpirun -np 2 "), \
            open(os.path.join(work, "two", "config.ini")).read()[:300]


def test_table_options_agree(work):
    """A table option is declared once for train's table.NAME.KEY and the
    --KEY flag of replay: both take the same values and name the option,
    where its value came from and the valid values when they refuse one."""
    weights = os.path.join(work, "W.npy")
    batches = os.path.join(work, "batches")
    os.makedirs(batches)
    np.save(weights, np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32))
    np.save(os.path.join(batches, "ids_0.npy"), np.array([0, 3, 3, 9], np.int64))
    np.save(os.path.join(batches, "grad_0.npy"), np.ones((4, 4), np.float32))
    cases = [  # key, value, accepted, what a refusal must say besides the key
        ("betas", "0.5,0.75", True, []),
        ("betas", "0.9,", False, ["B2", "[0, 1)"]),
        ("betas", "0.9", False, ["B1,B2"]),
        ("betas", "1,0.9", False, ["B1", "[0, 1)"]),
        ("norm_type", "+inf", True, []),
        ("norm_type", "inf", True, []),
        ("norm_type", "0", False, ["[1e-06, 1e+06] or inf"]),
        ("eps", "-1", False, ["[0, 1]"]),
        ("lr", "fast", False, ["not a number"]),
        ("max_norm", "0", False, ["[1e-30, 1e+30]"]),
        ("optimizer", "adamw", False, ["sgd, adagrad, adam, rowwise_adagrad"]),
        ("scale_grad_by_freq", "maybe", False, ["true, false"]),
        ("freeze", "true", True, []),
    ]
    for key, value, accepted, words in cases:
        flag = "--" + key.replace("_", "-")
        train = small_recsys(work, **{"table.users." + key: value, "train.steps": "1",
                                      "checkpoint.enabled": "false", "log.overwrite": "true"})
        replay = ["replay", "--weights", weights, "--batches", batches,
                  "--out", os.path.join(work, "out"), "%s=%s" % (flag, value)]
        for args, name in [(train, "table.users." + key), (replay, flag)]:
            p = run(args, expect_ok=False)
            if accepted:
                assert p.returncode == 0, "%s=%s refused:\n%s" % (name, value, p.stderr)
            else:
                expect_error(p, name, "'%s'" % value, "command line", *words)


def resume_equals_uninterrupted(work, np_):
    full = os.path.join(work, "full")
    run(small_recsys(work, **{"log.dir": full}), np_)
    part = os.path.join(work, "part")
    run(small_recsys(work, **{"log.dir": part, "train.steps": "5"}), np_)
    run(small_recsys(work, **{"log.dir": part, "checkpoint.resume": "auto"}), np_)
    for table in ("users", "items"):
        a = export(os.path.join(full, "checkpoints"), table, os.path.join(work, "a.npy"))
        b = export(os.path.join(part, "checkpoints"), table, os.path.join(work, "b.npy"))
        assert a.tobytes() == b.tobytes(), "table %s differs after resume (max |diff| %g)" % (
            table, np.abs(a - b).max())
    da = np.load(os.path.join(full, "checkpoints", "step_00000012", "dense.npy"))
    db = np.load(os.path.join(part, "checkpoints", "step_00000012", "dense.npy"))
    assert da.tobytes() == db.tobytes(), "dense parameters differ after resume"


def test_resume_exact_1_rank(work):
    resume_equals_uninterrupted(work, 1)


def test_resume_exact_2_ranks(work):
    resume_equals_uninterrupted(work, 2)


def summary_of(run_dir):
    import json
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    return [j for j in lines if j["type"] == "summary"][-1]


def test_pipeline_same_bits(work):
    """train.pipeline = true (each step distributes the next one's ids
    ahead) trains the same bits as false, on 1 and 2 ranks; periodic
    evaluations in between (which drop a prefetch, so none is made before
    one) keep it so. 12 steps with evaluations after steps 5 and 10:
    steps 1-11 could be prefetched, all but 5 and 10 are."""
    for np_ in (1, 2):
        dirs = {}
        for pipeline in ("true", "false"):
            d = os.path.join(work, "np%d_%s" % (np_, pipeline))
            run(small_recsys(work, **{"log.dir": d, "train.pipeline": pipeline,
                                      "train.eval_every": "5"}), np_)
            dirs[pipeline] = d
        assert summary_of(dirs["true"])["prefetched_steps"] == 9, summary_of(dirs["true"])
        assert summary_of(dirs["false"])["prefetched_steps"] == 0, summary_of(dirs["false"])
        for table in ("users", "items"):
            a, b = (export(os.path.join(dirs[p], "checkpoints"), table,
                           os.path.join(work, "%s.npy" % p)) for p in ("true", "false"))
            assert a.tobytes() == b.tobytes(), "%d ranks: table %s differs (max |diff| %g)" % (
                np_, table, np.abs(a - b).max())
        da, db = (np.load(os.path.join(dirs[p], "checkpoints", "step_00000012", "dense.npy"))
                  for p in ("true", "false"))
        assert da.tobytes() == db.tobytes(), "%d ranks: dense parameters differ" % np_


def test_overlap_same_bits(work):
    """train.overlap_chunks = 3 (rows and gradients in 3 slices, the owners'
    gathers and updates between them) trains the same bits as 1, on 2 and 3
    ranks, with the pipeline on and evaluations between; recsys pools its
    items' bags at the owners, whose partial rows move whole beside the
    users' slices."""
    for np_ in (2, 3):
        dirs = {}
        for chunks in ("1", "3"):
            d = os.path.join(work, "np%d_chunks%s" % (np_, chunks))
            run(small_recsys(work, **{"log.dir": d, "train.overlap_chunks": chunks,
                                      "train.eval_every": "5"}), np_)
            dirs[chunks] = d
        assert summary_of(dirs["3"])["sliced_steps"] == 12, summary_of(dirs["3"])
        assert summary_of(dirs["1"])["sliced_steps"] == 0, summary_of(dirs["1"])
        for table in ("users", "items"):
            a, b = (export(os.path.join(dirs[c], "checkpoints"), table,
                           os.path.join(work, "chunks%s.npy" % c)) for c in ("1", "3"))
            assert a.tobytes() == b.tobytes(), "%d ranks: table %s differs (max |diff| %g)" % (
                np_, table, np.abs(a - b).max())
        da, db = (np.load(os.path.join(dirs[c], "checkpoints", "step_00000012", "dense.npy"))
                  for c in ("1", "3"))
        assert da.tobytes() == db.tobytes(), "%d ranks: dense parameters differ" % np_


def test_reshard_2_to_3(work):
    two = os.path.join(work, "two")
    run(small_recsys(work, **{"log.dir": two, "train.steps": "6"}), 2)
    before = {t: export(os.path.join(two, "checkpoints"), t, os.path.join(work, t + "0.npy"))
              for t in ("users", "items")}
    # Resume at the checkpoint's own step with 3 ranks: nothing trains, and
    # the checkpoint written at the end holds the same tables in 3 shards.
    three = os.path.join(work, "three")
    run(small_recsys(work, **{"log.dir": three, "train.steps": "6",
                              "checkpoint.resume": os.path.join(two, "checkpoints")}), 3)
    manifest = open(os.path.join(three, "checkpoints", "step_00000006", "manifest.json")).read()
    assert '"ranks": 3' in manifest
    for t in ("users", "items"):
        after = export(os.path.join(three, "checkpoints"), t, os.path.join(work, t + "1.npy"))
        assert after.tobytes() == before[t].tobytes(), "table %s changed by re-sharding" % t
    # And training goes on from there.
    run(small_recsys(work, **{"log.dir": three, "train.steps": "9",
                              "checkpoint.resume": "auto"}), 3)


def samples_of_steps(first, last, epoch, global_batch):
    """Samples that steps [first, last) read: each step takes the next
    global_batch samples of the epoch, the last one of an epoch what is left."""
    per_epoch = -(-epoch // global_batch)
    return sum(min(global_batch, epoch - (s % per_epoch) * global_batch)
               for s in range(first, last))


def test_reshard_reports_true_epochs(work):
    """2 ranks train 50 steps of 128 samples (batch_size 64 per rank), then 4
    ranks resume with 256 samples a step: the printed epoch counts samples
    consumed (computed here step by step), the global batch change is
    named, and train.epochs = 2 ends at 2.00 epochs of samples, not at
    2 x the new steps per epoch."""
    import re
    n = 5000  # recsys.train_samples
    run(small_recsys(work, **{"train.steps": "50"}), 2)
    p = run(small_recsys(work, **{"train.steps": "0", "train.epochs": "2", "log.quiet": "false",
                                  "checkpoint.resume": "auto", "log.interval": "5"}), 4)
    before = samples_of_steps(0, 50, n, 128)
    assert "at step 50, epoch %.2f\n" % (before / n) in p.stdout, (before / n, p.stdout[-2500:])
    assert "the global batch changed: 128 samples per step (2 rank(s)) -> 256 (4 rank(s))" \
        in p.stdout and "does not continue exactly" in p.stdout, p.stdout[-2500:]
    # 2 - 6280 / 5000 = 0.744 epochs left, at 4 ranks 20 steps an epoch:
    # 14.88 -> 15 steps, ending at step 65 (3720 samples: exactly 2 epochs).
    lines = [json.loads(l) for l in open(os.path.join(work, "run", "metrics.jsonl"))]
    train = [j for j in lines if j["type"] == "train" and j["step"] > 50]
    assert [j["step"] for j in train] == [55, 60, 65], [j["step"] for j in train]
    for j in train:
        want = (before + samples_of_steps(50, j["step"], n, 256)) / n
        assert abs(j["epoch"] - want) < 1e-12, (j, want)
        assert re.search(r"^step %d/65  epoch %.2f " % (j["step"], want), p.stdout, re.M), \
            (j["step"], want, p.stdout[-2500:])
    assert abs(train[-1]["epoch"] - 2.0) < 1e-12, train[-1]
    # The checkpoint records the samples; a 4-rank resume of it reads them.
    m = json.load(open(os.path.join(work, "run", "checkpoints", "step_00000065", "manifest.json")))
    assert m["progress"] == {"samples": 2 * n, "global_batch": 256, "epoch_samples": n}, m
    # Without a re-shard, nothing about the global batch is said.
    q = run(small_recsys(work, **{"train.steps": "70", "log.quiet": "false",
                                  "checkpoint.resume": "auto"}), 4)
    assert "at step 65, epoch 2.00\n" in q.stdout and "global batch changed" not in q.stdout, \
        q.stdout[-1500:]


def test_block_checkpoint_loads(work):
    """A checkpoint in the block layout that embtrain wrote before tables were
    sharded cyclically (no "sharding" key, shards with row_begin) still
    resumes, re-sharded: the same run's checkpoint rewritten by hand in that
    layout loads into 3 ranks with the same tables and optimizer state."""
    import json
    two = os.path.join(work, "two")
    run(small_recsys(work, **{"log.dir": two, "train.steps": "6",
                              "table.items.optimizer": "adam"}), 2)
    step = os.path.join(two, "checkpoints", "step_00000006")
    manifest = json.load(open(os.path.join(step, "manifest.json")))
    before = {}
    for table in manifest["tables"]:
        assert table["sharding"] == "cyclic"
        P, rows = len(table["shards"]), table["rows"]
        full = {}
        for what in ("weights", "state"):
            parts = [np.load(os.path.join(step, sh[what])) for sh in table["shards"]]
            full[what] = np.zeros((rows, parts[0].shape[1]), np.float32)
            for r, part in enumerate(parts):
                full[what][r::P] = part  # cyclic: rank r holds rows r, r + P, ...
        before[table["name"]] = full
        # The block layout: lower ranks take the extra rows.
        bounds = [r * (rows // P) + min(r, rows % P) for r in range(P + 1)]
        for r, sh in enumerate(table["shards"]):
            sh["row_begin"], sh["rows"] = bounds[r], bounds[r + 1] - bounds[r]
            for what in ("weights", "state"):
                np.save(os.path.join(step, sh[what]), full[what][bounds[r]:bounds[r + 1]])
        del table["sharding"]
    # Checkpoints of that time were of version 1: no sizes and checksums.
    manifest["version"] = 1
    del manifest["files"]
    json.dump(manifest, open(os.path.join(step, "manifest.json"), "w"))
    three = os.path.join(work, "three")
    run(small_recsys(work, **{"log.dir": three, "train.steps": "6",
                              "table.items.optimizer": "adam", "checkpoint.resume": step}), 3)
    out = os.path.join(three, "checkpoints", "step_00000006")
    after_manifest = json.load(open(os.path.join(out, "manifest.json")))
    for table in after_manifest["tables"]:
        full = before[table["name"]]
        for r, sh in enumerate(table["shards"]):
            for what in ("weights", "state"):
                got = np.load(os.path.join(out, sh[what]))
                assert got.tobytes() == full[what][r::3].tobytes(), \
                    "%s %s of rank %d differs after loading the block layout" % (
                        table["name"], what, r)


def test_checkpoint_mismatch(work):
    run(small_recsys(work, **{"train.steps": "3"}))
    ckpt = os.path.join(work, "run", "checkpoints")
    p = run(small_recsys(work, **{"log.dir": os.path.join(work, "x"), "checkpoint.resume": ckpt,
                                  "table.items.dim": "16", "table.users.dim": "16"}),
            expect_ok=False)
    expect_error(p, "users", "8", "16")
    p = run(small_recsys(work, **{"log.dir": os.path.join(work, "y"), "checkpoint.resume": ckpt,
                                  "table.users.optimizer": "adam"}), expect_ok=False)
    expect_error(p, "adagrad", "adam")
    p = run(small_recsys(work, **{"log.dir": os.path.join(work, "z"),
                                  "checkpoint.resume": os.path.join(work, "nothing")}),
            expect_ok=False)
    expect_error(p, "checkpoint.resume")


def test_stale_partial_checkpoint(work):
    run(small_recsys(work, **{"train.steps": "4"}))
    ckpt = os.path.join(work, "run", "checkpoints")
    # A crash while saving step 8 leaves a temporary folder and no `latest`
    # change: the run resumes from step 4 and replaces the debris.
    stale = os.path.join(ckpt, ".step_00000008.tmp")
    os.makedirs(stale)
    with open(os.path.join(stale, "users.rank0.weights.npy"), "wb") as f:
        f.write(b"half-written")
    assert open(os.path.join(ckpt, "latest")).read().strip() == "step_00000004"
    p = run(small_recsys(work, **{"train.steps": "8", "checkpoint.resume": "auto",
                                  "log.quiet": "false"}))
    assert "resumed from" in p.stdout and "step 4" in p.stdout, p.stdout
    assert open(os.path.join(ckpt, "latest")).read().strip() == "step_00000008"
    assert not os.path.exists(stale)


def test_export_and_frozen_pretrained(work):
    run(small_recsys(work, **{"train.steps": "4"}))
    users = export(os.path.join(work, "run", "checkpoints"), "users",
                   os.path.join(work, "users.npy"))
    assert users.shape == (300, 8) and users.dtype == np.float32 and np.abs(users).max() > 0
    # from_pretrained + freeze: the table starts from the file and never moves.
    frozen = os.path.join(work, "frozen")
    run(small_recsys(work, **{"log.dir": frozen, "table.users.init": os.path.join(work, "users.npy"),
                              "table.users.freeze": "true"}), 2)
    after = export(os.path.join(frozen, "checkpoints"), "users", os.path.join(work, "u2.npy"))
    assert after.tobytes() == users.tobytes(), "frozen table changed"
    p = run(["export", "--checkpoint", os.path.join(work, "run", "checkpoints"), "--table",
             "nope", "--out", os.path.join(work, "n.npy")], expect_ok=False)
    expect_error(p, "nope")


def test_export_text_needs_a_vocabulary(work):
    """recsys's rows are ids: asking for word2vec text from its checkpoint
    names the missing vocab.txt and the ways out (.npy, --vocab), and a
    checkpoint folder holds the run's config.ini, which trains the run on."""
    run(small_recsys(work, **{"train.steps": "3"}))
    ckpt = os.path.join(work, "run", "checkpoints", "step_00000003")
    p = run(["export", "--checkpoint", ckpt, "--table", "users", "--out",
             os.path.join(work, "users.txt")], expect_ok=False)
    expect_error(p, "workload 'recsys'", "holds no vocab.txt", "FILE.npy", "--vocab")
    vocab = os.path.join(work, "users_vocab.txt")
    with open(vocab, "w") as f:
        f.writelines("user%d 1\n" % i for i in range(300))
    run(["export", "--checkpoint", ckpt, "--table", "users", "--out",
         os.path.join(work, "users.txt"), "--vocab", vocab])
    with open(os.path.join(work, "users.txt")) as f:
        assert f.readline().split() == ["300", "8"] and f.readline().split()[0] == "user0"
    # Streamed a chunk at a time (1000-byte chunks: 31 rows of 8 floats),
    # the text holds every row of the .npy export, each float read back to
    # its bits, in row order under its word.
    users = export(ckpt, "users", os.path.join(work, "users.npy"))
    chunked = os.path.join(work, "chunked.vec")
    run(["export", "--checkpoint", ckpt, "--table", "users", "--out", chunked, "--vocab", vocab],
        env={"EMBTRAIN_TRANSFER_CHUNK_BYTES": "1000"})
    with open(chunked) as f:
        assert f.readline().split() == ["300", "8"]
        lines = [l.split() for l in f]
    assert [l[0] for l in lines] == ["user%d" % i for i in range(300)]
    got = np.array([[float(x) for x in l[1:]] for l in lines], dtype=np.float32)
    assert got.tobytes() == users.tobytes(), "word2vec text differs from the .npy export"
    # A vocabulary one word short: refused, naming both counts, and no file
    # (nor a temporary one) left behind.
    short = os.path.join(work, "short_vocab.txt")
    with open(short, "w") as f:
        f.writelines("user%d 1\n" % i for i in range(299))
    bad = os.path.join(work, "bad.vec")
    p = run(["export", "--checkpoint", ckpt, "--table", "users", "--out", bad, "--vocab", short],
            expect_ok=False, env={"EMBTRAIN_TRANSFER_CHUNK_BYTES": "1000"})
    expect_error(p, "299 words", "300 rows")
    assert not [n for n in os.listdir(work) if n.startswith("bad.vec")], os.listdir(work)
    with open(os.path.join(ckpt, "config.ini")) as f:
        assert "steps = 3" in f.read()
    run(["train", "--config", os.path.join(ckpt, "config.ini"), "--train.steps=5",
         "--log.dir=" + os.path.join(work, "again"), "--checkpoint.resume=" + ckpt])


def test_quickstart_config(work):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ini = os.path.join(root, "configs", "quickstart.ini")
    p = run(["train", "--config", ini, "--train.steps=30", "--log.interval=10",
             "--log.dir=" + os.path.join(work, "qs")], 2)
    assert "eval" in p.stdout and "done:" in p.stdout, p.stdout
    lines = open(os.path.join(work, "qs", "metrics.jsonl")).read().splitlines()
    assert any('"type": "summary"' in l or '"type":"summary"' in l for l in lines)


def test_device_cuda_memory_refused(work):
    """train.device = cuda on a GPU too small for the run (the emulated
    device made 1 MiB, EMBTRAIN_EMULATED_DEVICE_MEMORY; a GPU's own size
    otherwise): refused on every rank before the engine allocates there,
    with the device lines of the plan (tables' shards, step buffers), the
    GPU's share per rank (2 ranks of this host on one device) and no
    checkpoint; the same run fits a device of 1 GiB. Only the emulated
    device can be made that small (a real GPU runs test_device_cuda)."""
    if DEVICE != "cuda" or "emulated" not in os.path.basename(EMBTRAIN):
        return
    emulated = "EMBTRAIN_EMULATED_DEVICE_MEMORY"
    # users 40,000 x 16 with Adagrad over 2 ranks: a shard of 20,000 rows of
    # 16 weights and 16 accumulators, 20,000 * 32 * 4 bytes.
    args = small_recsys(work, **{"train.device": "cuda", "recsys.users": "40000",
                                 "table.users.dim": "16", "table.items.dim": "16",
                                 "checkpoint.every": "4"})
    p = run(args, 2, expect_ok=False, env={emulated: str(1 << 20)})
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    shard_mib = 20000 * 32 * 4 / 2 ** 20
    for text in ("the run does not fit in device memory: rank 0 needs",
                 "but has 512.0 KiB (1.0 MiB free of 1.0 MiB, shared by 2 rank(s) of its host)",
                 "step buffers (train.batch_size = 64)"):
        assert text in p.stderr, (text, p.stderr[-3000:])
    line = r"table users \(shard of 20,000 rows x 16, weights and adagrad state\) +%.1f MiB\n" \
        % shard_mib
    assert re.search(line, p.stderr), (line, p.stderr[-3000:])
    assert "workload data" not in p.stderr.split("does not fit in device memory")[1], \
        "host-only lines listed as device memory: " + p.stderr[-3000:]
    run_dir = os.path.join(work, "run")  # a run that did not start leaves no folder
    assert not os.path.exists(run_dir), os.listdir(run_dir)
    run(args, 2, env={emulated: str(1 << 30)})


def test_device_cuda(work):
    """train.device = cuda (needs --device cuda: a GPU, or the emulated device
    of the CPU-only tree): the same run as on the CPU bit for bit (both
    backends add in include/embtrain/sum_order.hpp's order), its checkpoint
    files equal to the CPU run's, checkpoints that resume exactly on the
    device, and a resume of a device run on the CPU. Batches of 512, so that
    popular items own more than 64 positions (chunked sums), max_norm and
    row-wise Adagrad (row norms over 40 columns); the history bags pooled at
    the owners (recsys' default) and at the requester. The device keeps no
    host copy of a table: rows move to and from checkpoints and .npy files
    in chunks of EMBTRAIN_TRANSFER_CHUNK_BYTES, 1000 bytes here, so that
    every shard spans many chunks and chunks split rows; the CPU runs take
    the same setting (it changes nothing there). from_pretrained streams a
    .npy to the device with the CPU's result."""
    if DEVICE != "cuda":
        return
    chunks = {"EMBTRAIN_TRANSFER_CHUNK_BYTES": "1000"}
    keys = {"train.batch_size": "512", "recsys.train_samples": "8000",
            "table.users.dim": "40", "table.items.dim": "40",
            "table.items.optimizer": "rowwise_adagrad", "table.items.max_norm": "0.3",
            "table.users.optimizer": "adam", "table.users.max_norm": "0.2"}

    def config(**more):
        return small_recsys(work, **dict(keys, **more))

    cpu = os.path.join(work, "cpu")
    run(config(**{"log.dir": cpu}), 2, env=chunks)
    gpu = os.path.join(work, "gpu")
    run(config(**{"log.dir": gpu, "train.device": "cuda"}), 2, env=chunks)
    step = os.path.join("checkpoints", "step_00000012")
    files = sorted(f for f in os.listdir(os.path.join(cpu, step)) if f.endswith(".npy"))
    assert len(files) == 9, files  # dense, and weights and state of 2 tables on 2 ranks
    # The device run with its rows and gradients in 3 slices (kernels
    # enqueued between the slices' transfers): the same files again.
    sliced = os.path.join(work, "gpu_sliced")
    run(config(**{"log.dir": sliced, "train.device": "cuda", "train.overlap_chunks": "3"}), 2,
        env=chunks)
    assert summary_of(sliced)["sliced_steps"] == 12, summary_of(sliced)
    for name in files:
        for other in (gpu, sliced):
            with open(os.path.join(cpu, step, name), "rb") as a, \
                    open(os.path.join(other, step, name), "rb") as b:
                assert a.read() == b.read(), "%s of the device run %s differs from the CPU " \
                    "run's" % (name, os.path.basename(other))
    for table in ("users", "items"):
        a = export(os.path.join(cpu, "checkpoints"), table, os.path.join(work, "a.npy"))
        b = export(os.path.join(gpu, "checkpoints"), table, os.path.join(work, "b.npy"))
        assert a.tobytes() == b.tobytes(), \
            "table %s: device run differs from the CPU run (max |diff| %g)" % (
                table, np.abs(a - b).max())
    # Resume on the device from a device checkpoint: bitwise the full run.
    part = os.path.join(work, "part")
    run(config(**{"log.dir": part, "train.steps": "5", "train.device": "cuda"}), 2, env=chunks)
    # The same device checkpoint (step 5) resumed on the CPU: the CPU run's bits.
    part_cpu = os.path.join(work, "part_cpu")
    shutil.copytree(part, part_cpu)
    run(config(**{"log.dir": part_cpu, "checkpoint.resume": "auto"}), 2, env=chunks)
    for table in ("users", "items"):
        a = export(os.path.join(cpu, "checkpoints"), table, os.path.join(work, "a.npy"))
        b = export(os.path.join(part_cpu, "checkpoints"), table, os.path.join(work, "b.npy"))
        assert a.tobytes() == b.tobytes(), \
            "table %s: a device checkpoint resumed on the CPU differs from the CPU run" % table
    run(config(**{"log.dir": part, "checkpoint.resume": "auto", "train.device": "cuda"}), 2,
        env=chunks)
    for table in ("users", "items"):
        a = export(os.path.join(gpu, "checkpoints"), table, os.path.join(work, "a.npy"))
        b = export(os.path.join(part, "checkpoints"), table, os.path.join(work, "b.npy"))
        assert a.tobytes() == b.tobytes(), "table %s differs after a device resume" % table
    # A device checkpoint resumed on the CPU (with 1 rank: re-sharded too).
    run(config(**{"log.dir": part, "checkpoint.resume": "auto", "train.steps": "16"}), 1,
        env=chunks)
    # from_pretrained (users from a .npy) and zeros (items): the device
    # run's checkpoint equals the CPU run's file for file.
    seed = int.from_bytes(os.urandom(4), "little")
    print("  from_pretrained rows: numpy seed %d" % seed)
    pretrained = os.path.join(work, "users40.npy")
    np.save(pretrained, np.random.default_rng(seed).standard_normal((300, 40)).astype(np.float32))
    runs = {}
    for device in ("cpu", "cuda"):
        runs[device] = os.path.join(work, "pre_" + device)
        run(config(**{"log.dir": runs[device], "train.device": device, "train.steps": "3",
                      "table.users.init": pretrained, "table.items.init": "zeros"}), 2,
            env=chunks)
    step = os.path.join("checkpoints", "step_00000003")
    files = sorted(f for f in os.listdir(os.path.join(runs["cpu"], step)) if f.endswith(".npy"))
    assert len(files) == 9, files
    for name in files:
        with open(os.path.join(runs["cpu"], step, name), "rb") as a, \
                open(os.path.join(runs["cuda"], step, name), "rb") as b:
            assert a.read() == b.read(), \
                "%s of the from_pretrained device run differs from the CPU run's" % name
    # The runs above pool the bags at the owners (recsys' default); pooled at
    # the requester the device trains the CPU's bits too.
    for where in ("cpu", "gpu"):
        more = {"train.device": "cuda"} if where == "gpu" else {}
        run(config(**dict(more, **{"log.dir": os.path.join(work, "requester_" + where),
                                   "table.items.pool_at": "requester"})), 2, env=chunks)
    a = export(os.path.join(work, "requester_cpu", "checkpoints"), "items",
               os.path.join(work, "a.npy"))
    b = export(os.path.join(work, "requester_gpu", "checkpoints"), "items",
               os.path.join(work, "b.npy"))
    assert a.tobytes() == b.tobytes(), \
        "pool_at = requester: device run differs from the CPU run (max |diff| %g)" % \
        np.abs(a - b).max()


def test_finished_run_resumed_does_nothing(work):
    run(small_recsys(work), 1)
    run_dir = os.path.join(work, "run")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        before = f.read()
    ckpt = os.path.join(run_dir, "checkpoints", "step_00000012")
    stamp = os.stat(os.path.join(ckpt, "manifest.json")).st_mtime_ns
    p = run(small_recsys(work, **{"checkpoint.resume": "auto", "log.quiet": "false"}), 1)
    assert "is already at step 12 of 12: nothing to train" in p.stdout, p.stdout
    assert "eval" not in p.stdout.split("nothing to train")[1], p.stdout
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        assert f.read() == before, "a finished run's metrics changed on resume"
    assert os.stat(os.path.join(ckpt, "manifest.json")).st_mtime_ns == stamp


def test_log_dir_of_another_run_is_refused(work):
    run(small_recsys(work), 1)
    run_dir = os.path.join(work, "run")
    p = run(small_recsys(work, **{"train.steps": "3"}), 1, expect_ok=False)
    expect_error(p, "config key 'log.dir' = '%s' (command line): holds another run" % run_dir,
                 "--checkpoint.resume=auto", "--log.overwrite=true")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        assert '"steps":12' in f.read().replace(" ", "")  # untouched
    # A replacement that fails to start (a bad override, a bad init file)
    # leaves the run it would replace as it was, config.ini included.
    before = {name: open(os.path.join(run_dir, name), "rb").read()
              for name in ("metrics.jsonl", "config.ini")}
    for bad in ({"table.users.padding_idx": "300"},
                {"table.users.init": os.path.join(work, "missing.npy")}):
        p = run(small_recsys(work, **dict(bad, **{"train.steps": "3", "log.overwrite": "true"})),
                2, expect_ok=False)
        assert p.returncode == 1, p.stderr
        for name, data in before.items():
            assert open(os.path.join(run_dir, name), "rb").read() == data, (bad, name)
        assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [
            "latest", "step_00000012"], bad
    run(small_recsys(work, **{"train.steps": "3", "log.overwrite": "true"}), 1)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        summaries = [json.loads(l) for l in f if '"summary"' in l]
    assert [s["steps"] for s in summaries] == [3], summaries
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["latest", "step_00000003"]


def test_failed_start_leaves_no_run_folder(work):
    """A run that fails before training (a NaN in its pretrained rows, say)
    creates nothing: no log.dir with a config.ini of a run that never ran."""
    bad = np.random.default_rng(7).standard_normal((300, 8)).astype(np.float32)
    bad[123, 5] = np.nan
    path = os.path.join(work, "nan.npy")
    np.save(path, bad)
    run_dir = os.path.join(work, "never")
    p = run(small_recsys(work, **{"log.dir": run_dir, "table.users.init": path}), 2,
            expect_ok=False)
    expect_error(p, "config key 'table.users.init' = '%s': row 123, column 5 is nan" % path)
    assert not os.path.exists(run_dir), os.listdir(run_dir)


def test_export_under_mpirun_writes_once(work):
    """Under mpirun export is rank 0's (every rank writing the one file
    raced): one file, one report line, exit status 0 on every rank. An
    output folder that is not there yet is made once the work is sure to
    write (export --out, bench --profile); one that cannot be made (a file
    stands in its path) is said so up front, before any work, and a wrong
    table name (listed with the valid ones) leaves nothing behind."""
    run(small_recsys(work, **{"train.steps": "4"}))
    ckpt = os.path.join(work, "run", "checkpoints")
    one = export(ckpt, "users", os.path.join(work, "one.npy"))
    out = os.path.join(work, "three.npy")
    p = run(["export", "--checkpoint", ckpt, "--table", "users", "--out", out], 3)
    assert p.stderr.count("embtrain export: table 'users'") == 1, p.stderr
    assert np.load(out).tobytes() == one.tobytes()
    p = run(["export", "--checkpoint", ckpt, "--table", "nope", "--out",
             os.path.join(work, "n", "n.npy")], 3, expect_ok=False)
    expect_error(p, "has no table 'nope' (its tables: users, items)")
    assert not os.path.exists(os.path.join(work, "n"))
    # A run's folder (its log.dir) stands for its checkpoints, for export
    # and for a resume into another run.
    assert export(os.path.join(work, "run"), "users",
                  os.path.join(work, "from_run.npy")).tobytes() == one.tobytes()
    run(small_recsys(work, **{"log.dir": os.path.join(work, "went_on"), "train.steps": "6",
                              "checkpoint.resume": os.path.join(work, "run")}))
    with open(os.path.join(work, "went_on", "metrics.jsonl")) as f:
        assert [json.loads(l)["first_step"] for l in f if '"summary"' in l] == [4]
    # A folder not there yet is made, a few levels deep.
    deep = os.path.join(work, "new", "deeper", "u.npy")
    run(["export", "--checkpoint", ckpt, "--table", "users", "--out", deep])
    assert np.load(deep).tobytes() == one.tobytes()
    # A file where a folder should be is named as such, before any work.
    blocker = os.path.join(work, "blocker")
    with open(blocker, "w") as f:
        f.write("not a folder")
    blocked = os.path.join(blocker, "sub", "u.npy")
    p = run(["export", "--checkpoint", ckpt, "--table", "users", "--out", blocked],
            expect_ok=False)
    expect_error(p, "option --out = '%s': folder '%s' cannot be made: '%s' is not a folder"
                 % (blocked, os.path.dirname(blocked), blocker))
    p = run(["bench", "--rows", "1000", "--batch", "8", "--steps", "1", "--profile",
             os.path.join(blocker, "p.json")], expect_ok=False)
    expect_error(p, "option --profile = '%s': '%s' is not a folder"
                 % (os.path.join(blocker, "p.json"), blocker))
    profile = os.path.join(work, "profiles", "p.json")
    run(["bench", "--rows", "1000", "--batch", "8", "--steps", "1", "--profile", profile])
    with open(profile) as f:
        json.load(f)


def test_end_of_run_names_files_and_plot_works(work):
    p = run(small_recsys(work, **{"log.quiet": "false"}), 1)
    run_dir = os.path.join(work, "run")
    for needle in ("metrics:       %s/metrics.jsonl" % run_dir,
                   "config:        %s/config.ini" % run_dir,
                   "checkpoint:    %s/checkpoints/step_00000012" % run_dir,
                   "--config %s/config.ini --train.steps=24 --checkpoint.resume=auto" % run_dir):
        assert needle in p.stdout, (needle, p.stdout[-1500:])
    # The suggested command works as printed (this program's path, then
    # the arguments): config.ini reproduces the run and goes on.
    longer = re.search(r"^  train longer:  (.*)$", p.stdout, re.M).group(1).split()
    assert os.path.samefile(longer[0], EMBTRAIN), longer
    q = subprocess.run(longer, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=120)
    assert q.returncode == 0, (longer, q.stderr[-2000:])
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        summaries = [json.loads(l) for l in f if '"summary"' in l]
    assert [(s["first_step"], s["steps"]) for s in summaries] == [(0, 12), (12, 24)], summaries
    # A global batch beyond the data is said so (every step is an epoch).
    p = run(small_recsys(work, **{"log.quiet": "false", "log.dir": os.path.join(work, "small"),
                                  "recsys.train_samples": "100", "train.steps": "2"}), 2)
    assert ("note: the global batch (128 = train.batch_size x 2 ranks) is more than an "
            "epoch's 100 samples") in p.stdout, p.stdout[:2000]
    # Without checkpoints there is nothing to go on from: the suggestion
    # starts over, replacing the run (and works as printed).
    bare = os.path.join(work, "bare")
    p = run(small_recsys(work, **{"log.quiet": "false", "log.dir": bare,
                                  "checkpoint.enabled": "false"}), 2)
    line = re.search(r"^  train longer:  (.*)$", p.stdout, re.M).group(1)
    assert line.startswith("mpirun -np 2 ") and line.endswith(
        "--train.steps=24 --log.overwrite=true   (no checkpoint: starts over)"), line
    plot = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                        "bench", "plot_metrics.py")
    q = subprocess.run(["/usr/bin/python3", plot, run_dir], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    assert q.returncode == 0, q.stderr
    assert "train loss" in q.stdout and "eval step 24 (end)" in q.stdout, q.stdout
    for png in ("train_loss.png", "eval.png", "speed.png"):
        with open(os.path.join(run_dir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", png


def test_bag_tables(work):
    """table.items.kind = bag (recsys' default) pools each history in the
    table; kind = embedding brings every history row back and the model
    averages them: the same model, so the tables they train differ by
    float rounding only. The bags are pooled at the rows' owners by default
    (pool_at = owner), which trains the model of pool_at = requester, and
    kind = embedding leaves that default aside. Sum and max pooling train
    too, and the keys refuse what cannot work, naming the key."""
    tables = {}
    for kind in ("bag", "embedding"):
        d = os.path.join(work, kind)
        run(small_recsys(work, **{"log.dir": d, "table.items.kind": kind,
                                  **({"table.items.pool_at": "requester"} if kind == "bag"
                                     else {})}), 2)
        tables[kind] = export(os.path.join(d, "checkpoints"), "items",
                              os.path.join(work, kind + ".npy"))
    diff = np.abs(tables["bag"] - tables["embedding"]).max()
    assert 0 < diff < 1e-4 or diff == 0, "bag and embedding lookups trained apart: %g" % diff
    # Pooled at the owners (the default): the same model, summed in another order.
    d = os.path.join(work, "owner")
    run(small_recsys(work, **{"log.dir": d}), 2)
    with open(os.path.join(d, "config.ini")) as f:
        ini = f.read()
    items = ini[ini.index("[table.items]"):]
    assert re.search(r"\npool_at = owner +# default\n", items), ini
    owner = export(os.path.join(d, "checkpoints"), "items", os.path.join(work, "owner.npy"))
    diff = np.abs(owner - tables["bag"]).max()
    assert diff < 1e-4, "bags pooled at the owners and at the requester trained apart: %g" % diff
    # The summary counts what the steps exchanged: ids, rows and gradients
    # of two tables each way, at least a few KB a step at 2 ranks.
    for name in ("bag", "owner"):
        sent = summary_of(os.path.join(work, name))["exchange_bytes_per_step"]
        assert 4000 < sent < 1e6, (name, sent)
    for mode in ("sum", "max"):
        d = os.path.join(work, mode)
        run(small_recsys(work, **{"log.dir": d, "table.items.mode": mode}), 2)
        assert np.isfinite(summary_of(d)["train_loss"]), summary_of(d)
    expect_error(run(small_recsys(work, **{"table.items.kind": "embedding",
                                           "table.items.mode": "sum"}), expect_ok=False),
                 "table.items.mode", "needs table.items.kind = bag")
    expect_error(run(small_recsys(work, **{"table.items.kind": "embedding",
                                           "table.items.pool_at": "owner"}), expect_ok=False),
                 "table.items.pool_at", "needs table.items.kind = bag")
    expect_error(run(small_recsys(work, **{"table.items.pool_at": "nowhere"}), expect_ok=False),
                 "table.items.pool_at", "nowhere")
    expect_error(run(small_recsys(work, **{"table.users.kind": "bag"}), expect_ok=False),
                 "table.users.kind = bag")
    expect_error(run(small_recsys(work, **{"table.items.mode": "max",
                                           "table.items.scale_grad_by_freq": "true"}),
                     expect_ok=False), "table.items.mode", "scale_grad_by_freq")


def main():
    def add_args(parser):
        parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                            help="cuda: also run test_device_cuda (the binary must have a device)")

    def setup(args):
        global EMBTRAIN, DEVICE
        EMBTRAIN = args.embtrain
        DEVICE = args.device

    return cli_harness.run_tests(globals(), "train_cli_", add_args=add_args, on_args=setup)


if __name__ == "__main__":
    sys.exit(main())
