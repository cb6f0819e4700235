#!/usr/bin/python3
"""Bad input files and values through the embtrain command line (issue 14):
each must end the job with one error naming the thing, the place and the
valid range, exit status 1 on every rank, no hang, nothing half-written.

    /usr/bin/python3 tests/inputs/test_bad_inputs.py --embtrain build/embtrain [--only NAME]

Covers: .npy shapes whose byte count wraps around 2^64 to the file's size
(ids, gradients, weights) under replay with 1 and 2 ranks, leaving no
output and no `*.partial-*` folder; malformed Adam betas; a folder given as config file, click log or corpus;
a corpus too short to train on; a binary file as corpus or as config; a
key of the other workload; a bench beyond memory; replay of an empty
folder. Prints
`N passed, M failed`.
"""
import glob
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_harness  # noqa: E402  (tests/cli_harness.py)

EMBTRAIN = None
TIMEOUT_S = 120
K62 = 1 << 62


def mpirun(np_):
    return cli_harness.mpirun(np_)


def expect_error(args, *needles, np_=1):
    """Runs embtrain, which must fail with status 1 and every needle in stderr."""
    cmd = mpirun(np_) + [EMBTRAIN] + args
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=TIMEOUT_S)
    assert p.returncode == 1, "expected exit status 1, got %d: %s\n%s" % (
        p.returncode, " ".join(cmd), p.stderr[-3000:])
    for n in needles:
        assert n in p.stderr, "stderr lacks %r:\n%s" % (n, p.stderr[-3000:])
    assert "internal error" not in p.stderr, p.stderr[-3000:]
    return p


def write_npy(path, descr, shape, data=b""):
    """A .npy v1.0 file written byte by byte, whatever its shape claims."""
    shape_text = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_text)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data)


def good_weights(path, rows=10, dim=4):
    write_npy(path, "<f4", (rows, dim), struct.pack("<%df" % (rows * dim), *range(rows * dim)))


def assert_nothing_written(out):
    assert not os.path.exists(out), out + " was written"
    left = glob.glob(out + ".partial-*")
    assert not left, "left behind: %s" % left


def skipgram(work, corpus, *extra):
    return ["train", "--train.workload=skipgram", "--train.threads=1", "--log.quiet=true",
            "--skipgram.corpus=" + corpus, "--skipgram.min_count=1", "--train.steps=2",
            "--log.dir=" + os.path.join(work, "run")] + list(extra)


def recsys(work, *extra):
    return ["train", "--train.workload=recsys", "--train.threads=1", "--log.quiet=true",
            "--train.steps=2", "--recsys.users=50", "--recsys.items=50",
            "--recsys.eval_samples=100", "--recsys.train_samples=500",
            "--log.dir=" + os.path.join(work, "run")] + list(extra)


# ---------------------------------------------------------------- tests

def test_replay_wrapping_ids_and_grad(work):
    """D1: ids <i4 (2^62,) with no data, grad (2^62, 4): once a segfault in
    first_bad at every P, leaving out.partial-PID."""
    weights, batches = os.path.join(work, "W.npy"), os.path.join(work, "b")
    os.makedirs(batches)
    good_weights(weights)
    write_npy(os.path.join(batches, "ids_0.npy"), "<i4", (K62,))
    write_npy(os.path.join(batches, "grad_0.npy"), "<f4", (K62, 4))
    for np_ in (1, 2):
        out = os.path.join(work, "out%d" % np_)
        p = expect_error(["replay", "--weights", weights, "--batches", batches, "--out", out],
                         "ids_0.npy", "(%d,)" % K62, "fits in 64 bits", np_=np_)
        assert p.stderr.count("ids_0.npy") == 1, "more than one rank reported:\n" + p.stderr
        assert_nothing_written(out)


def test_replay_wrapping_weights(work):
    """D1: weights (2^62 + 10, 4) with 160 data bytes were accepted and an
    unloadable weights.npy written."""
    weights, batches = os.path.join(work, "W.npy"), os.path.join(work, "b")
    os.makedirs(batches)
    write_npy(weights, "<f4", (K62 + 10, 4), b"\0" * 160)
    write_npy(os.path.join(batches, "ids_0.npy"), "<i8", (1,), struct.pack("<q", 0))
    write_npy(os.path.join(batches, "grad_0.npy"), "<f4", (1, 4), b"\0" * 16)
    for np_ in (1, 2):
        out = os.path.join(work, "out%d" % np_)
        expect_error(["replay", "--weights", weights, "--batches", batches, "--out", out],
                     "W.npy", "(%d, 4)" % (K62 + 10), "fits in 64 bits", np_=np_)
        assert_nothing_written(out)


def test_malformed_betas(work):
    """D2: '0.9,' once read past a dead temporary and set B2 = 0."""
    for bad in ("0.9,", ",0.9", "0.9", "0.9,0.999,0.5", "0.9,x"):
        expect_error(recsys(work, "--table.users.optimizer=adam",
                            "--table.users.betas=" + bad),
                     "table.users.betas", "B1,B2 with each in [0, 1)")


def test_folders_as_files(work):
    """D9: a folder where a file belongs was 'internal error:
    basic_filebuf::underflow'."""
    folder = os.path.join(work, "a_folder")
    os.makedirs(folder)
    expect_error(["train", "--config", folder], folder, "is a folder", "INI file")
    expect_error(recsys(work, "--recsys.data=" + folder), folder, "is a folder", "TSV file")
    expect_error(skipgram(work, folder), folder, "is a folder", "text file", np_=2)


def test_corpus_too_short(work):
    """D9: a one-word corpus trained 0 lookups at loss 0."""
    corpus = os.path.join(work, "one.txt")
    with open(corpus, "w") as f:
        f.write("hello\n")
    p = expect_error(skipgram(work, corpus), corpus, "too little text", "two words", np_=2)
    assert p.stderr.count("too little text") == 1, p.stderr


def test_binary_corpus(work):
    """D9: binary garbage was trained and exported."""
    corpus = os.path.join(work, "blob.bin")
    with open(corpus, "wb") as f:
        f.write(os.urandom(1 << 16))
    expect_error(skipgram(work, corpus), corpus, "is not text", "UTF-8")


def test_binary_config_is_shown_escaped(work):
    """A binary file given as the config: its first line shown with
    \\xNN escapes (it was written raw to the terminal), at most 80 chars."""
    config = os.path.join(work, "garbage.ini")
    with open(config, "wb") as f:
        f.write(b"\x00\x01\x1bbin\xff" + b"z" * 200 + b"\n")
    p = expect_error(["train", "--config", config], config + ":1: '\\x00\\x01\\x1bbin\\xff",
                     "is not 'key = value'")
    line = [l for l in p.stderr.splitlines() if config + ":1:" in l][0]
    assert all(32 <= ord(c) < 127 for c in line) and "z..." in line and "z" * 80 not in line, line


def test_other_workloads_keys(work):
    """A key of the workload (or a table) this run does not train is said
    to be that workload's, not 'unknown'; a typo of this run's own key
    still gets its suggestion."""
    expect_error(recsys(work, "--skipgram.window=3"),
                 "key 'skipgram.window' belongs to workload skipgram")
    expect_error(recsys(work, "--table.input.dim=3"),
                 "key 'table.input.dim' belongs to workload skipgram")
    expect_error(recsys(work, "--recsys.userz=3"),
                 "unknown key 'recsys.userz' (did you mean 'recsys.users'?)")


def test_bench_too_big_and_bad_bag(work):
    """bench of a table beyond the host's memory: refused with its plan, on
    every rank (it was std::bad_alloc, an internal error); --bag 0 names
    --bag (it named --seq)."""
    expect_error(["bench", "--rows", "10000000000000", "--dim", "128"],
                 "does not fit in memory", "table bench (shard of", "fewer --rows", np_=2)
    expect_error(["bench", "--bag", "0"], "option --bag = 0 is invalid (valid: >= 1")


def test_replay_of_an_empty_folder(work):
    """replay --batches of a folder with no ids_0.npy: an error (it replayed
    nothing and said it wrote the output)."""
    weights = os.path.join(work, "w.npy")
    good_weights(weights)
    empty = os.path.join(work, "empty")
    os.makedirs(empty)
    out = os.path.join(work, "out")
    expect_error(["replay", "--weights", weights, "--batches", empty, "--out", out],
                 "option --batches: %s holds no ids_0.npy" % empty, np_=2)
    assert_nothing_written(out)


def test_ranks_running_different_commands(work):
    """Rank 0 training while rank 1 benchmarks: an error naming both on
    every rank, exit status 1 (the first collectives of different sizes
    aborted the job inside MPI: MPI_ERR_TRUNCATE, exit 15)."""
    cmd = cli_harness.mpirun_base() + ["-np", "1", EMBTRAIN] + recsys(work) + \
        [":", "-np", "1", EMBTRAIN, "bench", "--rows", "100", "--steps", "1"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=TIMEOUT_S)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert "the embtrain 'command' is 'bench' on rank 1 but 'train' on rank 0" in p.stderr, \
        p.stderr[-2000:]
    assert "MPI_ERR" not in p.stderr and "internal error" not in p.stderr, p.stderr[-2000:]


def test_version(work):
    p = subprocess.run([EMBTRAIN, "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=TIMEOUT_S)
    assert p.returncode == 0 and p.stdout.startswith("embtrain ") and "+" in p.stdout, p


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    def setup(args):
        global EMBTRAIN
        EMBTRAIN = args.embtrain
    return cli_harness.run_tests(globals(), "embtrain_inputs_", on_args=setup)


if __name__ == "__main__":
    sys.exit(main())
