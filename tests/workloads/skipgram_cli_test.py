#!/usr/bin/python3
"""End-to-end test of the skipgram workload through `embtrain train`.

    /usr/bin/python3 tests/workloads/skipgram_cli_test.py --embtrain build/embtrain

Trains on a generated corpus with planted topics under mpirun (2 ranks),
then checks: the held-out loss fell, the neighbours printed for a topic word
are mostly of its topic, the exported word2vec file holds the vocabulary in
row order, vocab.txt lets `embtrain export` write the same vectors from the
checkpoint, train.pipeline=false trains the same bits, and bad [skipgram] keys end the run with a message that names
the key and the valid range. Seed: --seed, else the clock (printed).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

TIMEOUT_S = 300


def mpirun(ranks):
    if ranks == 1:
        return []
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks),
           "-x", "OMP_NUM_THREADS=1"]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    return cmd


def run(embtrain, args, ranks=1):
    cmd = mpirun(ranks) + [embtrain] + args
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=TIMEOUT_S), " ".join(cmd)


def write_corpus(path, rng, topics=6, per_topic=40, general=40, lines=2500):
    """Lines of one topic each: 40% topic words, the rest function words."""
    with open(path, "w") as f:
        for _ in range(lines):
            t = rng.integers(topics)
            words = []
            for _ in range(rng.integers(8, 20)):
                if rng.random() < 0.4:
                    words.append("t%d_w%d" % (t, min(per_topic - 1, int(rng.pareto(1.0) * 4))))
                else:
                    words.append("g%d" % min(general - 1, int(rng.pareto(1.0) * 4)))
            f.write(" ".join(words) + "\n")


def read_word2vec(path):
    with open(path) as f:
        rows, dim = map(int, f.readline().split())
        words, vecs = [], []
        for line in f:
            parts = line.split()
            words.append(parts[0])
            vecs.append(np.array(parts[1:], dtype=np.float32))
    assert len(words) == rows and all(len(v) == dim for v in vecs), path
    return words, np.stack(vecs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--embtrain", required=True)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    seed = a.seed if a.seed is not None else time.time_ns() % (2 ** 32)
    print("seed %d (replay with --seed %d)" % (seed, seed))
    work = tempfile.mkdtemp(prefix="skipgram_cli_")
    failures = []

    def check(cond, what):
        print(("ok    " if cond else "FAIL  ") + what)
        if not cond:
            failures.append(what)

    try:
        corpus = os.path.join(work, "corpus.txt")
        write_corpus(corpus, np.random.default_rng(seed))
        log_dir = os.path.join(work, "run")
        vec = os.path.join(work, "vectors.vec")
        base = ["train", "--train.workload=skipgram", "--train.threads=1",
                "--skipgram.corpus=" + corpus, "--skipgram.min_count=3",
                "--table.input.dim=24", "--table.output.dim=24", "--log.quiet=true"]
        proc, cmd = run(a.embtrain, base + [
            "--train.epochs=3", "--train.batch_size=256", "--log.dir=" + log_dir,
            "--skipgram.neighbors=t0_w0,t1_w0", "--skipgram.neighbors_k=5",
            "--skipgram.export=" + vec], ranks=2)
        check(proc.returncode == 0, "train 2 ranks: %s\n%s" % (cmd, proc.stderr[-2000:]))
        if proc.returncode != 0:
            return 1

        evals = [json.loads(l) for l in open(os.path.join(log_dir, "metrics.jsonl"))]
        evals = [e for e in evals if e.get("type") == "eval"]
        first, last = evals[0]["loss"], evals[-1]["loss"]
        check(last < 0.8 * first, "held-out loss falls: %.4f -> %.4f" % (first, last))

        # "  t0_w0: w 0.93, w 0.91, ..." on rank 0's stdout.
        lines = re.findall(r"^  (t\d+_w0): (.*)$", proc.stdout, re.M)
        check(len(lines) == 2, "neighbours printed for both words:\n" + proc.stdout[-1500:])
        for word, rest in lines:
            near = [item.split()[0] for item in rest.split(",")]
            same = sum(n.split("_")[0] == word.split("_")[0] for n in near)
            check(len(near) == 5 and same >= 3,
                  "%s's 5 neighbours mostly of its topic: %s" % (word, rest))

        words, vecs = read_word2vec(vec)
        vocab = [l.split()[0] for l in open(os.path.join(log_dir, "vocab.txt"))]
        counts = [int(l.split()[1]) for l in open(os.path.join(log_dir, "vocab.txt"))]
        check(words == vocab, "export rows follow vocab.txt")
        check(counts == sorted(counts, reverse=True) and min(counts) >= 3,
              "vocab.txt by descending count, all >= min_count")

        out = os.path.join(work, "from_checkpoint.vec")
        proc, cmd = run(a.embtrain, ["export", "--checkpoint", os.path.join(log_dir, "checkpoints"),
                                     "--table", "input", "--out", out])
        check(proc.returncode == 0, "export from checkpoint: %s\n%s" % (cmd, proc.stderr))
        if proc.returncode == 0:
            words2, vecs2 = read_word2vec(out)
            check(words2 == words and np.array_equal(vecs2, vecs),
                  "embtrain export writes the vectors skipgram.export wrote")

        # train.pipeline (on by default) trains the same bits as without it.
        flat = os.path.join(work, "unpipelined")
        flat_vec = os.path.join(work, "unpipelined.vec")
        proc, cmd = run(a.embtrain, base + [
            "--train.epochs=3", "--train.batch_size=256", "--log.dir=" + flat,
            "--train.pipeline=false", "--skipgram.export=" + flat_vec], ranks=2)
        check(proc.returncode == 0, "train 2 ranks unpipelined: %s\n%s" % (cmd, proc.stderr[-2000:]))
        if proc.returncode == 0:
            summaries = [[j for j in map(json.loads, open(os.path.join(d, "metrics.jsonl")))
                          if j["type"] == "summary"][-1] for d in (log_dir, flat)]
            check(summaries[0]["prefetched_steps"] == summaries[0]["steps"] - 1 and
                  summaries[1]["prefetched_steps"] == 0,
                  "pipelined run prefetched every step after the first, unpipelined none: %s" %
                  [s["prefetched_steps"] for s in summaries])
            words3, vecs3 = read_word2vec(flat_vec)
            check(words3 == words and vecs3.tobytes() == vecs.tobytes(),
                  "train.pipeline=false exports the same vectors, bitwise")
            # No skipgram.neighbors: those of the 5 most frequent words.
            shown = re.findall(r"^  (\S+): ", proc.stdout, re.M)
            check("of the most frequent words" in proc.stdout and shown == vocab[:5],
                  "unset skipgram.neighbors shows the 5 most frequent words: %s" % shown)

        # Bad keys: one message naming the key and the valid values, exit 1.
        bad = [
            ([], "skipgram.corpus"),
            (["--skipgram.corpus=" + corpus + ".missing"], "cannot open"),
            (["--skipgram.corpus=" + corpus, "--skipgram.window=0"], "valid: [1, 1000]"),
            (["--skipgram.corpus=" + corpus, "--skipgram.subsample=2"], "skipgram.subsample"),
            (["--skipgram.corpus=" + corpus, "--skipgram.lowercase=maybe"], "skipgram.lowercase"),
            (["--skipgram.corpus=" + corpus, "--skipgram.neighbors=t0_w0,nope"], "'nope'"),
        ]
        for extra, part in bad:
            args = ["train", "--train.workload=skipgram", "--log.quiet=true",
                    "--log.dir=" + os.path.join(work, "bad")] + extra
            proc, cmd = run(a.embtrain, args)
            check(proc.returncode == 1 and part in proc.stderr,
                  "%s -> exit 1 naming %r (got %d: %s)" % (" ".join(extra) or "no corpus", part,
                                                          proc.returncode, proc.stderr.strip()[-400:]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
