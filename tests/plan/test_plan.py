#!/usr/bin/python3
"""`embtrain plan` against independent arithmetic and against measured runs.

    /usr/bin/python3 tests/plan/test_plan.py --embtrain build/embtrain [--only NAME]

- its memory plan equals the bytes computed here from the config (shards of
  ceil(rows / P) rows x (dim + optimizer state) floats, the workload's data
  and step buffers), for random shapes (seed printed); on GPUs the tables
  are device lines only and the host holds three transfer chunks;
- a run that cannot fit is flagged (exit 1, "DOES NOT FIT", the plan), on
  this host and on a --cluster with host_memory;
- the plan is within 5% of the peak RSS of each rank of a CPU training run
  whose tables dominate (2M x 64 rows per table, adagrad);
- (the step time against measured runs: test_step_time.py)
- the --cluster exchange arithmetic equals latency x messages + bytes /
  bandwidth computed here; bad options are refused naming them.
Prints `N passed, M failed`.
"""
import json
import math
import os
import random
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_harness  # noqa: E402  (tests/cli_harness.py)

EMBTRAIN = None
HERE = os.path.dirname(os.path.abspath(__file__))
RECSYS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "configs", "recsys.ini")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(args, np_=1, timeout=600, prefix=()):
    cmd = cli_harness.mpirun(np_) + list(prefix) + [EMBTRAIN] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def plan_json(args, must_fit=True):
    p = run(["plan", "--json"] + args)
    assert p.returncode == 0 or (not must_fit and p.returncode == 1), p.stdout + p.stderr
    return json.loads(p.stdout)


STATE = {"sgd": 0, "adagrad": 1, "rowwise_adagrad": None, "adam": 2}


def state_width(optimizer, dim):
    return 1 if optimizer == "rowwise_adagrad" else STATE[optimizer] * dim


def recsys_bytes(ranks, users, items, du, di, ou, oi, batch, history, latent, eval_samples):
    """What one rank of recsys holds, computed from the config alone."""
    tables = {}
    for name, rows, dim, opt in (("users", users, du, ou), ("items", items + 1, di, oi)):
        tables[name] = math.ceil(rows / ranks) * (dim + state_width(opt, dim)) * 4
    data = (users + items + 1) * (latent * 4 + 16) + eval_samples * (history + 3) * 8
    floats = du + (history + 1) * di
    step = batch * floats * 4 * 6 + min(8192, eval_samples) * floats * 4
    return tables, data, step


def test_memory_arithmetic(work):
    seed = random.randrange(1 << 30)
    print("  seed %d" % seed)
    rng = random.Random(seed)
    for _ in range(4):
        ranks = rng.choice([1, 2, 3, 8, 64])
        users, items = rng.randrange(1000, 10 ** 7), rng.randrange(1000, 10 ** 7)
        du, di = rng.choice([8, 16, 64, 100]), rng.choice([8, 32, 128])
        ou, oi = rng.choice(list(STATE)), rng.choice(list(STATE))
        batch, history = rng.randrange(1, 5000), rng.randrange(0, 50)
        latent, eval_samples = rng.randrange(1, 64), rng.randrange(1, 100000)
        j = plan_json(["--ranks", str(ranks), "--config", RECSYS,
                       "--recsys.users=%d" % users, "--recsys.items=%d" % items,
                       "--table.users.dim=%d" % du, "--table.items.dim=%d" % di,
                       "--table.users.optimizer=" + ou, "--table.items.optimizer=" + oi,
                       "--train.batch_size=%d" % batch, "--recsys.history=%d" % history,
                       "--recsys.latent_dim=%d" % latent, "--recsys.eval_samples=%d" % eval_samples],
                      must_fit=False)
        tables, data, step = recsys_bytes(ranks, users, items, du, di, ou, oi, batch, history,
                                          latent, eval_samples)
        lines = {l["what"].split(" (")[0]: l["bytes"] for l in j["memory_per_rank"]["lines"]}
        assert lines["table users"] == tables["users"], (lines, tables)
        assert lines["table items"] == tables["items"], (lines, tables)
        assert abs(lines["synthetic clicks"] - data) <= 1e-9 * data, (lines, data)
        assert abs(lines["step buffers"] - step) <= 1e-9 * step, (lines, step)
        process = lines["this process"]
        assert 1e6 < process < 500e6, process
        total = tables["users"] + tables["items"] + data + step + process
        assert abs(j["memory_per_rank"]["total_bytes"] - total) <= 1e-9 * total
        # The same run on GPUs: the tables in device memory only, the host
        # holding the data, the step buffers and three transfer chunks
        # (EMBTRAIN_TRANSFER_CHUNK_BYTES, 64 MiB by default).
        chunk = rng.choice([None, 4096, 1 << 20])
        env = dict(ENV, EMBTRAIN_TRANSFER_CHUNK_BYTES=str(chunk)) if chunk else ENV
        g = json.loads(subprocess.run(
            [EMBTRAIN, "plan", "--json", "--ranks", str(ranks), "--config", RECSYS,
             "--train.device=cuda", "--recsys.users=%d" % users, "--recsys.items=%d" % items,
             "--table.users.dim=%d" % du, "--table.items.dim=%d" % di,
             "--table.users.optimizer=" + ou, "--table.items.optimizer=" + oi,
             "--train.batch_size=%d" % batch, "--recsys.history=%d" % history,
             "--recsys.latent_dim=%d" % latent, "--recsys.eval_samples=%d" % eval_samples],
            capture_output=True, text=True, timeout=600, env=env).stdout)
        glines = {l["what"].split(" (")[0]: l for l in g["memory_per_rank"]["lines"]}
        for name in ("table users", "table items"):
            assert glines[name]["device"] and not glines[name]["host"], glines[name]
        transfer = 3 * (chunk or 64 << 20)
        assert glines["transfer buffers"]["bytes"] == transfer and \
            glines["transfer buffers"]["host"], glines
        host = data + step + transfer + glines["this process"]["bytes"]
        assert abs(g["memory_per_rank"]["total_bytes"] - host) <= 1e-9 * host, (g, host)
        device = tables["users"] + tables["items"] + step
        assert abs(g["memory_per_rank"]["device_bytes"] - device) <= 1e-9 * device, (g, device)


def test_refuses_what_cannot_fit(work):
    args = ["--config", RECSYS, "--recsys.users=10000000000", "--table.users.dim=32"]
    p = run(["plan", "--ranks", "2"] + args)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "DOES NOT FIT" in p.stdout, p.stdout
    assert "table users (shard of 5,000,000,000 rows x 32, weights and adagrad state)" in p.stdout
    assert "the run does not fit in memory: each rank needs" in p.stderr, p.stderr
    assert "Each rank holds 1/P of every table" in p.stderr
    # 2 x 10^8 users x 256 (410 GB with adagrad's state) fit 64 hosts of
    # 1 TB (8 ranks per host), not 64 of 4 GB.
    args = ["--config", RECSYS, "--recsys.users=200000000", "--table.users.dim=256",
            "--recsys.latent_dim=1"]
    cluster = "hosts=64,gpus_per_host=8,intra=450GB/s,inter=400Gbit/s,host_memory=1TB"
    j = plan_json(["--ranks", "512", "--cluster", cluster] + args)
    assert j["fits"] and j["available_per_rank_bytes"] == 1e12 / 8, j
    p = run(["plan", "--ranks", "512", "--cluster", cluster.replace("1TB", "4GB")] + args)
    assert p.returncode == 1 and "DOES NOT FIT" in p.stdout, p.stdout + p.stderr


def test_memory_plan_within_5_percent_of_peak_rss(work):
    # Tables dominate: 2M rows x 64 x (weights + adagrad) per table.
    args = ["--config", RECSYS, "--recsys.users=2000000", "--recsys.items=2000000",
            "--train.steps=5", "--log.quiet=true", "--checkpoint.enabled=false",
            "--log.dir=" + os.path.join(work, "run"), "--train.threads=1"]
    planned = plan_json(["--ranks", "2"] + args)["memory_per_rank"]["total_bytes"]
    p = run(["train"] + args, np_=2, prefix=["/usr/bin/python3", os.path.join(HERE, "peak_rss.py")])
    assert p.returncode == 0, p.stdout + p.stderr
    peaks = [int(l.split()[1]) * 1024 for l in p.stderr.splitlines() if l.startswith("peak_rss_kib")]
    assert len(peaks) == 2, p.stderr
    # The wrapper's own python adds nothing: ru_maxrss of the children is the largest child's.
    for peak in peaks:
        off = (planned - peak) / peak
        print("  plan %.1f MiB, peak RSS %.1f MiB: %+.1f%%" % (planned / 2 ** 20, peak / 2 ** 20,
                                                               100 * off))
        assert abs(off) <= 0.05, (planned, peak)


def write_profile(path, device):
    """A machine profile written here, not measured: a 2-rank sharded engine
    whose phases take 1 ms each per 1000 lookups (500 distinct, dim 64)."""
    phases = {n: 1.0 for n in ["bucket_by_owner", "gather_owned", "expand", "reduce_requested",
                               "combine_at_owner", "update"]}
    engine = {"ranks": 2, "threads": 1, "dim": 64, "optimizer": "adam", "lookups_per_rank": 1000,
              "distinct_per_rank": 500, "step_ms": 6.0, "phase_ms": phases, "wire_bytes": 4,
              "counts": True}
    profile = {"kind": "embtrain machine profile", "version": 1, "host": "h", "cpu": "c",
               "device": device, "gpu": "g" if device == "cuda" else "",
               "copy_bandwidth_gbps": 100, "engines": {"sharded": engine},
               "alltoall": {"measured": True, "ranks": 2, "latency_us": 5, "bandwidth_gbps": 10}}
    with open(path, "w") as f:
        json.dump(profile, f)
    return path


def test_cluster_exchanges(work):
    path = write_profile(os.path.join(work, "p.json"), "cuda")
    H, G = 4, 8
    P = H * G
    j = plan_json(["--ranks", str(P), "--profile", path,
                   "--cluster", "hosts=%d,gpus_per_host=%d,intra=100GB/s,inter=100Gbit/s,"
                   "intra_latency=2us,inter_latency=8us" % (H, G),
                   "--bench", "--rows", "1000000", "--dim", "128", "--batch", "1000", "--seq", "10"])
    pr = j["prediction"]
    u = pr["distinct_per_rank"]
    away = u * (P - 1) / P

    def alltoall(nbytes):
        intra, inter = nbytes * (G - 1) / (P - 1), nbytes * (P - G) / (P - 1)
        return 1e3 * (2e-6 * (G - 1) + intra / 100e9 + 8e-6 * (P - G) + inter / 12.5e9)

    expect = {"exchange_ids": alltoall((P - 1) * 8) + alltoall(away * 8),
              "exchange_rows": alltoall(away * 128 * 4),
              "exchange_grads": alltoall(away * 128 * 4) + alltoall(away * 4)}
    for name, ms in expect.items():
        got = pr["exchange_ms"][name]["network_ms"]
        assert abs(got - ms) <= 1e-9 * ms, (name, got, ms)
    # Local phases: per lookup or distinct row, dim 128 over the profile's 64.
    lookups = pr["lookups_per_rank"]
    assert abs(pr["phase_ms"]["bucket_by_owner"] - pr["calibration"] * lookups / 1000) < 1e-9
    assert abs(pr["phase_ms"]["update"] - pr["calibration"] * u / 500 * 2) < 1e-9


def test_bags_are_named_in_the_notes(work):
    # The step model counts lookups, not bags: a pooled table must say how
    # it was modeled, naming the table and where it pools.
    path = write_profile(os.path.join(work, "bags.json"), "cpu")
    bench = ["--bench", "--rows", "100000", "--dim", "32", "--batch", "64"]

    def notes(args):
        return plan_json(["--ranks", "4", "--profile", path] + args)["prediction"]["notes"]

    def about_bags(ns):
        return [n for n in ns if "bags" in n]

    assert about_bags(notes(bench + ["--seq", "20"])) == [], "a plain job has no bag note"
    for at in ("owner", "requester"):
        got = about_bags(notes(bench + ["--bag", "20", "--pool-at", at]))
        assert len(got) == 1 and ("at the %s" % ("owners" if at == "owner" else "requester")) in got[0], got
        assert got[0].startswith("table bench "), got  # bench's table is named "bench"
    # recsys: its items are bags, pooled at the owners unless told otherwise.
    got = about_bags(notes(["--config", RECSYS]))
    assert len(got) == 1 and got[0].startswith("table items ") and "at the owners" in got[0], got
    got = about_bags(notes(["--config", RECSYS, "--table.items.pool_at=requester"]))
    assert len(got) == 1 and "at the requester" in got[0], got


def test_bad_options_are_refused(work):
    for args, message in [
            (["--config", RECSYS], "option --ranks is required"),
            (["--ranks", "0", "--config", RECSYS], "option --ranks = '0' is invalid"),
            (["--ranks", "8", "--cluster", "hosts=2,gpus_per_host=4,inter=1parsec", "--config",
              RECSYS], "option --cluster inter = '1parsec': unknown unit"),
            (["--ranks", "8", "--cluster", "hosts=2,gpus_per_host=4,inter=1GB/s,intra=2GB/s,x=1",
              "--config", RECSYS], "option --cluster: unknown key 'x'"),
            (["--ranks", "9", "--cluster", "hosts=2,gpus_per_host=4,inter=1GB/s,intra=2GB/s",
              "--config", RECSYS], "gives 2 x 4 = 8 ranks but --ranks = 9"),
            (["--ranks", "2", "--profile", "/nonexistent.json", "--config", RECSYS],
             "option --profile = '/nonexistent.json': cannot open"),
            (["--ranks", "2", "--config", RECSYS, "--train.nope=1"],
             "unknown key 'train.nope'; 'embtrain train --help' lists the keys"),
            # A corpus that is not there was planned as 0 bytes that fit.
            (["--ranks", "2", "--config", RECSYS.replace("recsys.ini", "skipgram.ini"),
              "--skipgram.corpus=/nonexistent.txt"],
             "config key 'skipgram.corpus' = '/nonexistent.txt': cannot size it")]:
        p = run(["plan"] + args)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert message in p.stderr, (args, p.stderr)


def main():
    def setup(args):
        global EMBTRAIN
        EMBTRAIN = args.embtrain
    return cli_harness.run_tests(globals(), "plan_", on_args=setup)


if __name__ == "__main__":
    sys.exit(main())
