#!/usr/bin/python3
"""embtrain over emulated hosts (launch/emulate_hosts.sh): ranks in separate
network namespaces, talking TCP over shaped veth links through a bridge.

    /usr/bin/python3 tests/cluster/test_emulated_hosts.py --embtrain build/embtrain [--only NAME]

- a short `embtrain train` (cli_harness.small_recsys) over 2 emulated hosts
  x 1 rank ends with checkpoint files, exported tables, training loss and
  evaluation bit for bit equal to the same run of 2 ranks on one host over
  shared memory, and the bytes really crossed the links (each host's eth0
  counters grow by at least what the run's embedding exchanges must send);
- running the script twice in a row replaces the first set of hosts;
  `--down` leaves no namespace, link or file of its prefix behind;
- bad arguments, and --delay on a kernel without netem, are refused with a
  message that names them;
- bench/cluster_scaling.sh over 2 hosts writes its report, with busbw and
  algbw as nccl-tests defines them and never above the shaped link rate.

Every test makes its hosts under a prefix of its own (the process id) and
removes them in `finally`, pass or fail. Without root, `ip`, or the rights
to make namespaces and veth links (a container without CAP_NET_ADMIN or
CAP_SYS_ADMIN), the whole script exits 77 (ctest's SKIP_RETURN_CODE) and
says why. Prints `N passed, M failed`.
"""
import filecmp
import json
import os
import shutil
import subprocess
import sys

import numpy as np

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)
import cli_harness  # noqa: E402  (tests/cli_harness.py)

SCRIPT = os.path.join(os.path.dirname(TESTS), "launch", "emulate_hosts.sh")
SKIP = 77
EMBTRAIN = None
STEPS = 12
# Bytes each host's link must carry in the 12-step training run, at least:
# the id, row and gradient exchanges of one step of 64 samples already pass
# this (bench's accounting is checked exactly in test_bench_bytes_cross_links).
TRAIN_FLOOR = 4096
PREFIX = "t%04d" % (os.getpid() % 10000)  # at most 6 characters, this run's own


def hosts(*args, prefix=PREFIX, check=True):
    p = subprocess.run(["bash", SCRIPT] + list(args) + ["--prefix", prefix], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if check:
        assert p.returncode == 0, "emulate_hosts.sh %s: exit %d\n%s%s" % (
            " ".join(args), p.returncode, p.stdout, p.stderr)
    return p


def host_dir(prefix=PREFIX):
    return "/tmp/embtrain-hosts-" + prefix


def down(prefix=PREFIX):
    hosts("--down", prefix=prefix, check=False)


def leftovers(prefix=PREFIX):
    """Namespaces, root-namespace links and files of this prefix still there."""
    ns = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], stdout=subprocess.PIPE, text=True).stdout
    found = [n for n in ns if n.startswith(prefix + "-")]
    found += [l for l in links.split() if l.startswith(prefix + "-")]
    if os.path.exists(host_dir(prefix)):
        found.append(host_dir(prefix))
    return found


def link_bytes():
    """{host: (rx_bytes, tx_bytes)} of each host's eth0."""
    out = hosts("--stats").stdout
    return {f[0]: (int(f[1]), int(f[2])) for f in (line.split() for line in out.splitlines())}


def ok(p):
    assert p.returncode == 0, "exit %d\n%s\n%s" % (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    return p


def train(cmd_prefix, run_dir, seed):
    args = cli_harness.small_recsys(run_dir, STEPS, **{"train.seed": str(seed)})
    return ok(subprocess.run(cmd_prefix + [EMBTRAIN] + args, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=300))


def last_checkpoint(run_dir):
    root = os.path.join(run_dir, "checkpoints")
    return os.path.join(root, sorted(d for d in os.listdir(root) if d.startswith("step_"))[-1])


def export(ckpt, table, out):
    ok(subprocess.run([EMBTRAIN, "export", "--checkpoint", ckpt, "--table", table, "--out", out],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120))
    return np.load(out)


def summary(run_dir):
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    return [l for l in lines if l["type"] == "summary"][-1]


def test_two_hosts_equal_shared_memory(work):
    seed = int.from_bytes(os.urandom(2), "little")
    print("seed %d" % seed, flush=True)
    shm, net = os.path.join(work, "shm"), os.path.join(work, "net")
    train(cli_harness.mpirun(2), shm, seed)
    try:
        hosts("2", "--rate", "10gbit")
        before = link_bytes()
        mpirun = [os.path.join(host_dir(), "mpirun"), "-np", "2", "-x", "OMP_NUM_THREADS=1"]
        train(mpirun, net, seed)
        after = link_bytes()
    finally:
        down()
    a, b = last_checkpoint(shm), last_checkpoint(net)
    assert os.path.basename(a) == os.path.basename(b) == "step_%08d" % STEPS, (a, b)
    files = sorted(f for f in os.listdir(a) if f.endswith(".npy"))
    assert files == sorted(f for f in os.listdir(b) if f.endswith(".npy")), (files, os.listdir(b))
    assert "users.rank1.weights.npy" in files and "items.rank1.state.npy" in files, files
    for f in files:  # weights and optimizer state of each rank's shard, the dense part
        assert filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False), "%s differs" % f
    for table in ("users", "items"):  # and the whole tables, as export writes them
        ta, tb = (export(ckpt, table, os.path.join(work, "%s.%d.npy" % (table, i)))
                  for i, ckpt in enumerate((a, b)))
        assert ta.dtype == np.float32 and ta.tobytes() == tb.tobytes(), table
        assert np.isfinite(ta).all() and np.abs(ta).max() > 0, table
    sa, sb = summary(shm), summary(net)
    for key in ("steps", "train_loss", "eval_auc", "eval_loss"):
        assert sa[key] == sb[key], "%s: shared memory %r, hosts %r" % (key, sa[key], sb[key])
    # Both ranks' traffic crossed the links (test_bench_bytes_cross_links
    # checks the counters against the engine's own accounting).
    for host in sorted(after):
        rx, tx = (after[host][i] - before[host][i] for i in (0, 1))
        print("%s: received %d bytes, sent %d over eth0" % (host, rx, tx), flush=True)
        assert rx >= TRAIN_FLOOR and tx >= TRAIN_FLOOR, "%s carried %d/%d bytes (< %d)" % (
            host, rx, tx, TRAIN_FLOOR)


def test_bench_bytes_cross_links(work):
    """The kernel's byte counters of each host's link are at least what
    `embtrain bench` says its rank sent the other over the timed steps (the
    counters also carry warm-up steps, the raw all-to-all it times, MPI's
    own messages and TCP/IP headers)."""
    steps = 4
    try:
        hosts("2", "--rate", "10gbit")
        before = link_bytes()
        p = ok(subprocess.run([os.path.join(host_dir(), "mpirun"), "-np", "2", "-x", "OMP_NUM_THREADS=1",
                               EMBTRAIN, "bench", "--json", "--threads", "1", "--rows", "20000",
                               "--dim", "16", "--batch", "512", "--seq", "8", "--steps", str(steps),
                               "--warmup", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=300))
        after = link_bytes()
    finally:
        down()
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["ranks"] == 2 and r["engine"] == "sharded", r
    total = r["bytes_sent_per_step"]["total"] * steps
    least = (r["bytes_sent_per_step"]["total"] - r["bytes_sent_per_step_max_rank"]) * steps
    tx = {h: after[h][1] - before[h][1] for h in after}
    rx = {h: after[h][0] - before[h][0] for h in after}
    print("engine sent %.0f bytes in %d steps (the lesser rank %.0f); links sent %s, received %s" % (
        total, steps, least, tx, rx), flush=True)
    assert total > 0 and least > 0, r
    assert sum(tx.values()) >= total and sum(rx.values()) >= total, (tx, rx, total)
    assert min(tx.values()) >= least and min(rx.values()) >= least, (tx, rx, least)


def test_scaling_report(work):
    """bench/cluster_scaling.sh over 2 hosts at 0.2 Gbit/s: its report has
    a row per mode and host count, busbw and algbw follow from bench's own
    bytes and times by nccl-tests' definitions (recomputed here), and no
    exchange moves faster than the shaped link allows (tbf lets its bucket,
    64 KiB, through at once, hence the margin)."""
    rate = 0.2
    out = os.path.join(work, "report")
    p = subprocess.run(["bash", os.path.join(os.path.dirname(TESTS), "bench", "cluster_scaling.sh"),
                        os.path.dirname(EMBTRAIN), "--hosts", "1,2", "--rates", str(rate), "--steps", "3",
                        "--warmup", "1", "--batch", "4096", "--out", out, "--timeout", "240", "--",
                        "--rows", "20000", "--dim", "64", "--seq", "8"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    ok(p)
    for f in ("raw.jsonl", "scaling.jsonl", "step_breakdown.png", "efficiency.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    rows = [json.loads(l) for l in open(os.path.join(out, "scaling.jsonl"))]
    raws = [json.loads(l) for l in open(os.path.join(out, "raw.jsonl"))]
    assert sorted((r["mode"], r["hosts"]) for r in rows) == [
        ("strong", 1), ("strong", 2), ("weak", 1), ("weak", 2)], rows
    for r in (r for r in rows if r["hosts"] == 2):
        b = next(q["bench"] for q in raws if q["mode"] == r["mode"] and q["hosts"] == 2)
        assert r["link_bytes_per_engine_byte"] >= 1.0, r
        for x in ("exchange_rows", "exchange_grads"):
            e = r["exchanges"][x]
            # 2 ranks: each sends the other half of the exchange's total bytes.
            sent = b["bytes_sent_per_step"][x[len("exchange_"):]] / 2
            t = b["exchanges_ms_max_over_ranks"][x]["transfer_ms"] / 1e3
            assert abs(e["busbw_gbit"] - sent * 8 / t / 1e9) < 1e-9 * (1 + e["busbw_gbit"]), (x, e)
            assert abs(e["algbw_GBps"] - 2 * e["busbw_GBps"]) < 1e-12 + 1e-9 * e["algbw_GBps"], (x, e)
            print("%s %s: %.0f bytes each way, busbw %.3f Gbit/s (raw all-to-all %.3f), link %.1f" % (
                r["mode"], x, sent, e["busbw_gbit"], e["raw_busbw_gbit"], rate), flush=True)
            assert sent > 4 * 65536, (x, sent)  # large enough for the bucket not to matter much
            for bw in (e["busbw_gbit"], e["raw_busbw_gbit"]):
                assert 0 < bw <= 1.35 * rate, (x, bw)
    assert not os.path.exists(os.path.join(out, "hosts")), "the script left its hosts up"


def test_ranks_run_in_their_hosts(work):
    """Each rank sees only its own host's address: the ranks are in two
    network namespaces, not both in the first."""
    try:
        hosts("2")
        p = ok(subprocess.run([os.path.join(host_dir(), "mpirun"), "-np", "2", "sh", "-c",
                               "ip -o -4 addr show dev eth0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60))
        addrs = sorted(line.split()[3] for line in p.stdout.splitlines())
        assert addrs == ["198.18.0.1/15", "198.18.0.2/15"], p.stdout
        route = subprocess.run(["ip", "netns", "exec", PREFIX + "-h1", "ip", "-4", "route"],
                               stdout=subprocess.PIPE, text=True).stdout
        assert "default" not in route and route.split()[0] == "198.18.0.0/15", route
    finally:
        down()


def test_twice_then_down_leaves_nothing(work):
    try:
        hosts("3")
        p = hosts("2", "--rate", "1gbit")  # replaces the 3 hosts
        assert sorted(link_bytes()) == [PREFIX + "-h0", PREFIX + "-h1"], p.stdout
        with open(os.path.join(host_dir(), "hostfile")) as f:
            assert f.read().split() == ["198.18.0.1", "slots=1", "198.18.0.2", "slots=1"]
    finally:
        down()
    assert leftovers() == [], leftovers()


def test_bad_arguments(work):
    for args, needle in ((["0"], "host count '0' must be 1 to 250"),
                         (["2", "--rate", "fast"], "--rate 'fast' is not a tc rate"),
                         (["2", "--delay", "soon"], "--delay 'soon' is not a tc time"),
                         (["2", "--bogus"], "unknown option --bogus"),
                         ([], "how many hosts?")):
        p = hosts(*args, check=False)
        assert p.returncode == 1 and needle in p.stderr, (args, p.returncode, p.stderr)
    assert "must be 1 to 6 characters" in hosts("1", prefix="Bad_Prefix!", check=False).stderr
    assert leftovers() == [], leftovers()


def test_delay_needs_netem(work):
    """--delay works where the kernel has netem; where it has not, it is
    refused naming sch_netem, and nothing is left behind."""
    try:
        p = hosts("2", "--delay", "20us", "--loss", "0", check=False)
        if p.returncode == 0:
            qd = subprocess.run(["ip", "netns", "exec", PREFIX + "-h0", "tc", "qdisc", "show", "dev", "eth0"],
                                stdout=subprocess.PIPE, text=True).stdout
            assert "netem" in qd and "tbf" in qd, qd
        else:
            assert "sch_netem" in p.stderr and "--delay 0" in p.stderr, p.stderr
    finally:
        down()
    assert leftovers() == [], leftovers()


def skip_reason():
    """Why emulated hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (ip, tc)"
    probe = "p" + PREFIX[1:]
    p = hosts("1", prefix=probe, check=False)
    down(probe)
    if p.returncode != 0:
        needles = ("needs root", "cannot make network namespace", "cannot make a veth pair", "cannot make a bridge",
                   "has no 'tbf' qdisc", "needs 'ip'", "needs 'tc'")
        for line in p.stderr.splitlines():
            if any(n in line for n in needles):
                return line
    return None


def on_args(args):
    global EMBTRAIN
    EMBTRAIN = args.embtrain
    reason = skip_reason()
    if reason:
        print("SKIP: emulated hosts cannot be made here: %s" % reason, flush=True)
        sys.exit(SKIP)


if __name__ == "__main__":
    sys.exit(cli_harness.run_tests(globals(), "cluster_", on_args=on_args))
