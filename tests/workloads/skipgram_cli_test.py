#!/usr/bin/python3
"""End-to-end test of the skipgram workload through `embtrain train`.

    /usr/bin/python3 tests/workloads/skipgram_cli_test.py --embtrain build/embtrain

Trains on a generated corpus with planted topics under mpirun (2 ranks),
then checks: the held-out loss fell, the neighbours printed for a topic word
are mostly of its topic, the exported word2vec file holds the vocabulary in
row order, vocab.txt lets `embtrain export` write the same vectors from the
checkpoint, train.pipeline=false trains the same bits, text with capitals
and punctuation gives the vocabulary of an independent tokenizer (lowercase
and punctuation stripping, on and off), a checkpoint holds its own
vocabulary (export after another run replaced the run folder, a resume on a
changed corpus, checkpoints saved before), `embtrain corpus` writes the
planted-topic text it describes, and bad [skipgram] keys end the
run with a message that names the key and the valid range. Seed: --seed,
else the clock (printed).
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


# The words of a sentence: a subject, a verb, objects, with capitals, commas,
# quotes, brackets, inner apostrophes and hyphens, and dashes of their own.
SUBJECTS = ["The cat", "A dog", "Our neighbour", "The old farmer", "Anna", "Bob"]
VERBS = ["sees", "doesn't like", "chases", "well-known for", "feeds", "watches"]
OBJECTS = ["the mouse", "a bird", "the garden", "(the) fence", "\"the red barn\"", "O'Brien's hat",
           "the river's edge", "e.g. apples", "the U.S.A.", "\u201cthe moon\u201d"]
ENDS = [".", "!", "?", "...", " --", ";", ":"]


def write_real_text(path, rng, sentences=1500):
    """English-looking text with capitals and punctuation, a few sentences a
    line."""
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(sentences // 3):
            parts = []
            for _ in range(3):
                s = "%s %s %s, %s%s" % (SUBJECTS[rng.integers(len(SUBJECTS))],
                                        VERBS[rng.integers(len(VERBS))],
                                        OBJECTS[rng.integers(len(OBJECTS))],
                                        OBJECTS[rng.integers(len(OBJECTS))],
                                        ENDS[rng.integers(len(ENDS))])
                if rng.random() < 0.3:
                    s = s.upper()
                parts.append(s)
            f.write(" ".join(parts) + "\n")


# The punctuation README.md's skipgram section names: ASCII, the Unicode
# dashes and quotes U+2010-U+201F, the ellipsis U+2026 and \u00ab \u00bb \u00a1 \u00bf.
PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") | {chr(c) for c in range(0x2010, 0x2020)} | \
    {"\u2026", "\u00ab", "\u00bb", "\u00a1", "\u00bf"}


def reference_words(text, lowercase, strip):
    """The README's rules, written again here: whitespace split; A-Z and the
    Latin-1 capitals lowered; punctuation at both ends of a word stripped, a
    word of punctuation only dropped."""
    out = []
    for w in re.split(r"[ \t\r\n\v\f]+", text):
        if lowercase:
            w = "".join(c.lower() if "A" <= c <= "Z" or ("\u00c0" <= c <= "\u00de" and c != "\u00d7")
                        else c for c in w)
        if strip:
            w = w.strip("".join(PUNCT))
        if w:
            out.append(w)
    return out


def reference_vocab(words, min_count, eval_fraction):
    """word2vec's vocabulary of the training part: count >= min_count, by
    descending count, ties by the words' UTF-8 bytes."""
    cut = len(words) - int(np.floor(eval_fraction * len(words)))
    counts = {}
    for w in words[:cut]:
        counts[w] = counts.get(w, 0) + 1
    kept = [(w, c) for w, c in counts.items() if c >= min_count]
    kept.sort(key=lambda wc: (-wc[1], wc[0].encode("utf-8")))
    return kept


def read_vocab(path):
    with open(path, encoding="utf-8") as f:
        return [(l.split()[0], int(l.split()[1])) for l in f]


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


def real_text(embtrain, work, seed, check):
    """Text with capitals and punctuation: by default words are lowercased
    and lose the punctuation at their ends (vocab.txt is the independent
    reference's, word for word and count for count); with the keys off
    they are kept as they are. Named neighbours are folded the same way
    ('Cat' and '"Mouse"' find cat and mouse)."""
    text_path = os.path.join(work, "story.txt")
    write_real_text(text_path, np.random.default_rng(seed + 1))
    text = open(text_path, encoding="utf-8").read()
    cases = [  # (keys, lowercase, strip)
        (['--skipgram.neighbors=Cat,"Mouse"'], True, True),  # the defaults
        (["--skipgram.lowercase=false", "--skipgram.strip_punctuation=false"], False, False),
        (["--skipgram.strip_punctuation=false"], True, False),
    ]
    for keys, lowercase, strip in cases:
        d = os.path.join(work, "story_%s_%s" % (lowercase, strip))
        proc, cmd = run(embtrain, ["train", "--train.workload=skipgram", "--train.threads=1",
                                   "--skipgram.corpus=" + text_path, "--skipgram.min_count=2",
                                   "--train.epochs=1", "--train.batch_size=512",
                                   "--table.input.dim=8", "--table.output.dim=8",
                                   "--log.dir=" + d] + keys, ranks=2)
        what = "lowercase=%s strip_punctuation=%s" % (lowercase, strip)
        check(proc.returncode == 0, "train on text, %s: %s\n%s" % (what, cmd, proc.stderr[-2000:]))
        if proc.returncode != 0:
            continue
        want = reference_vocab(reference_words(text, lowercase, strip), 2, 0.05)
        got = read_vocab(os.path.join(d, "vocab.txt"))
        check(got == want, "%s: vocab.txt is the reference tokenizer's (%d words, %d expected; "
              "first differences %s)" % (what, len(got), len(want),
                                        [(g, w) for g, w in zip(got, want) if g != w][:3]))
        words = {w for w, _ in got}
        if strip:
            check({"cat", "mouse", "doesn't", "well-known", "o'brien's", "e.g", "u.s.a",
                   "moon"} <= words and all(w == w.lower() for w in words),
                  "%s: lowercase words, inner apostrophes, hyphens and dots kept: %s" % (
                      what, sorted(words)[:40]))
            check(re.search(r"^  cat: ", proc.stdout, re.M) and
                  re.search(r"^  mouse: ", proc.stdout, re.M),
                  "neighbours of 'Cat' and '\"Mouse\"' are those of cat and mouse:\n" +
                  proc.stdout[-800:])
        else:
            check("mouse," in words and ("THE" in words) != lowercase,
                  "%s: 'mouse,' is a word, and 'THE' %s" % (
                      what, "is not" if lowercase else "is"))


def vocabulary_in_checkpoint(embtrain, work, seed, check):
    """A checkpoint holds its own vocab.txt (and config.ini), checksummed.
    Run 0 (corpus a) checkpoints under the run folder; run 1 (corpus a)
    replaces it (log.overwrite) with its checkpoints in a checkpoint.dir of
    their own; run 2 (corpus b) replaces it again. Then: run 0's checkpoint
    is gone and exporting it says so; run 1's still exports with its own
    words, also copied elsewhere (usable alone); a resume on a corpus that
    changed is refused; a checkpoint saved before checkpoints held a
    vocabulary falls back to the run folder's, saying so."""
    run_dir = os.path.join(work, "shared_run")
    first_ckpt = os.path.join(work, "first_checkpoints")
    corpus_a = os.path.join(work, "corpus_a.txt")
    corpus_b = os.path.join(work, "corpus_b.txt")
    write_corpus(corpus_a, np.random.default_rng(seed + 2), topics=3, per_topic=20, lines=600)
    with open(corpus_b, "w") as f:  # other words: capitalised names
        rng = np.random.default_rng(seed + 3)
        for _ in range(600):
            f.write(" ".join("Name%d" % rng.integers(30) for _ in range(10)) + "\n")
    base = ["train", "--train.workload=skipgram", "--train.threads=1", "--train.epochs=1",
            "--skipgram.min_count=2", "--table.input.dim=8", "--table.output.dim=8",
            "--train.batch_size=512", "--log.quiet=true", "--log.dir=" + run_dir]

    def train(*args):
        proc, cmd = run(embtrain, base + list(args), ranks=2)
        check(proc.returncode == 0, "train: %s\n%s" % (cmd, proc.stderr[-2000:]))
        return proc.returncode == 0

    if not train("--skipgram.corpus=" + corpus_a):
        return
    root0 = os.path.join(run_dir, "checkpoints")
    run0 = os.path.join(root0, sorted(n for n in os.listdir(root0) if n.startswith("step_"))[-1])
    if not train("--skipgram.corpus=" + corpus_a, "--checkpoint.dir=" + first_ckpt,
                 "--log.overwrite=true"):
        return
    out = os.path.join(work, "gone.vec")
    proc, cmd = run(embtrain, ["export", "--checkpoint", run0, "--table", "input", "--out", out])
    check(proc.returncode == 1 and "does not exist" in proc.stderr and "log.overwrite" in proc.stderr,
          "export of a checkpoint log.overwrite removed is refused clearly: %s" % proc.stderr.strip())
    if not train("--skipgram.corpus=" + corpus_b, "--log.overwrite=true"):
        return
    vocab_a = reference_vocab(reference_words(open(corpus_a).read(), True, True), 2, 0.05)
    vocab_b = read_vocab(os.path.join(run_dir, "vocab.txt"))
    check(vocab_b and vocab_b[0][0].startswith("name"),
          "the run folder holds the second corpus's vocabulary: %s" % vocab_b[:3])
    step = sorted(n for n in os.listdir(first_ckpt) if n.startswith("step_"))[-1]
    step_dir = os.path.join(first_ckpt, step)
    manifest = json.load(open(os.path.join(step_dir, "manifest.json")))
    check(sorted(manifest.get("texts", [])) == ["config.ini", "vocab.txt"] and
          all(t in manifest["files"] for t in manifest.get("texts", [])),
          "the manifest lists config.ini and vocab.txt with their checksums: %s" %
          manifest.get("texts"))
    check(read_vocab(os.path.join(step_dir, "vocab.txt")) == vocab_a,
          "the checkpoint's vocab.txt is the first corpus's")
    alone = os.path.join(work, "moved", step)
    shutil.copytree(step_dir, alone)
    for ckpt, what in ((first_ckpt, "its root"), (alone, "a copy elsewhere")):
        out = os.path.join(work, "first.vec")
        proc, cmd = run(embtrain, ["export", "--checkpoint", ckpt, "--table", "input", "--out", out])
        check(proc.returncode == 0, "export run 1's checkpoint (%s): %s\n%s" % (
            what, cmd, proc.stderr))
        if proc.returncode == 0:
            words, _ = read_word2vec(out)
            check(words == [w for w, _ in vocab_a],
                  "export of run 1's checkpoint (%s) names corpus a's words" % what)
    # A flipped byte in the checkpoint's vocab.txt fails its checksum.
    with open(os.path.join(alone, "vocab.txt"), "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(b"X" if first != b"X" else b"Y")
    proc, cmd = run(embtrain, ["export", "--checkpoint", alone, "--table", "input",
                               "--out", os.path.join(work, "bad.vec")])
    check(proc.returncode == 1 and "vocab.txt is corrupt" in proc.stderr,
          "a damaged vocab.txt is caught by its checksum: %s" % proc.stderr.strip())
    # A resume whose corpus changed under the same path is refused.
    with open(corpus_a, "a") as f:
        f.write(("extra words " * 40 + "\n") * 5)
    resume = [a for a in base if not a.startswith(("--log.dir=", "--train.epochs="))]
    proc, cmd = run(embtrain, resume + [
        "--log.dir=" + os.path.join(work, "resumed"), "--skipgram.corpus=" + corpus_a,
        "--checkpoint.dir=" + first_ckpt, "--checkpoint.resume=auto", "--train.epochs=2"], ranks=2)
    check(proc.returncode == 1 and "its vocab.txt differs from this run's" in proc.stderr and
          "line 1" in proc.stderr,
          "resume on a changed corpus is refused naming vocab.txt: %s" % proc.stderr.strip()[:500])
    # A checkpoint saved before checkpoints held texts: the run folder's.
    old = os.path.join(work, "old_run")
    old_step = os.path.join(old, "checkpoints", step)
    shutil.copytree(step_dir, old_step)
    m = json.load(open(os.path.join(old_step, "manifest.json")))
    for t in m.pop("texts"):
        del m["files"][t]
        os.remove(os.path.join(old_step, t))
    json.dump(m, open(os.path.join(old_step, "manifest.json"), "w"))
    args = ["export", "--checkpoint", old_step, "--table", "input", "--out",
            os.path.join(work, "old.vec")]
    proc, cmd = run(embtrain, args)
    check(proc.returncode == 1 and "holds no vocabulary" in proc.stderr and "--vocab" in proc.stderr,
          "an old checkpoint with no vocab.txt in its run folder needs --vocab: %s" %
          proc.stderr.strip())
    shutil.copy(os.path.join(step_dir, "vocab.txt"), os.path.join(old, "vocab.txt"))
    proc, cmd = run(embtrain, args)
    check(proc.returncode == 0 and "using %s" % os.path.join(old, "vocab.txt") in proc.stderr and
          [w for w in read_word2vec(os.path.join(work, "old.vec"))[0]] == [w for w, _ in vocab_a],
          "an old checkpoint exports with the run folder's vocab.txt, saying so: %s" %
          proc.stderr.strip())


def synthetic_corpus(embtrain, work, seed, check):
    """`embtrain corpus` writes the planted-topic text it says it writes:
    about --words words in lines of 8 to 24, words named t<t>_w<j> (j <
    --words-per-topic) and g<j> (j < --general), the function words' share
    1 - topic-share - noise, Zipf within a pool (g0 about twice g1), the
    same bytes for the same seed and others for another; bad options are
    errors naming them."""
    path = os.path.join(work, "topics.txt")
    args = ["corpus", "--out", path, "--words", "60000", "--topics", "5", "--words-per-topic",
            "50", "--general", "30", "--seed", str(seed % 1000000)]
    proc, cmd = run(embtrain, args)
    check(proc.returncode == 0 and "wrote " + path in proc.stdout,
          "embtrain corpus: %s\n%s" % (cmd, proc.stderr))
    if proc.returncode != 0:
        return
    lines = open(path).read().splitlines()
    words = [w for l in lines for w in l.split()]
    check(60000 <= len(words) < 60000 + 25 and all(8 <= len(l.split()) <= 24 for l in lines),
          "%d words in lines of 8 to 24" % len(words))
    pattern = re.compile(r"^(t[0-4]_w([0-9]|[1-4][0-9])|g([0-9]|[12][0-9]))$")
    check(all(pattern.match(w) for w in words), "every word is t<0-4>_w<0-49> or g<0-29>")
    general = sum(w.startswith("g") for w in words) / len(words)
    check(abs(general - 0.45) < 0.02, "function words are 45%% of the text: %.3f" % general)
    g0, g1 = words.count("g0"), words.count("g1")
    check(1.7 < g0 / g1 < 2.3, "Zipf within the function words: g0 / g1 = %.2f" % (g0 / g1))
    again = os.path.join(work, "again.txt")
    run(embtrain, args[:2] + [again] + args[3:])
    other = os.path.join(work, "other.txt")
    run(embtrain, args[:2] + [other] + args[3:-1] + [str(seed % 1000000 + 1)])
    check(open(again).read() == open(path).read() and open(other).read() != open(path).read(),
          "the same seed writes the same bytes, another seed others")
    for bad, part in ((["--words", "5"], "--words"), (["--topic-share", "0.9"], "--noise"),
                      (["--seed", "-1"], "option --seed: -1 is out of range")):
        proc, cmd = run(embtrain, ["corpus", "--out", os.path.join(work, "bad.txt")] + bad)
        check(proc.returncode == 1 and part in proc.stderr and "valid" in proc.stderr or
              proc.returncode == 1 and "sum <= 1" in proc.stderr,
              "embtrain corpus %s -> exit 1 naming %s: %s" % (" ".join(bad), part,
                                                            proc.stderr.strip()))


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

        # Resuming with other output keys (export, neighbours): allowed,
        # they change nothing the checkpoint holds; the run goes on and
        # writes the vectors where it is told now.
        vec2 = os.path.join(work, "resumed.vec")
        proc, cmd = run(a.embtrain, base + [
            "--train.epochs=4", "--train.batch_size=256",
            "--log.dir=" + os.path.join(work, "resumed_run"),
            "--checkpoint.resume=" + os.path.join(log_dir, "checkpoints"),
            "--skipgram.neighbors=t2_w0",
            "--skipgram.neighbors_k=3", "--skipgram.export=" + vec2], ranks=2)
        check(proc.returncode == 0 and os.path.isfile(vec2) and
              re.search(r"^  t2_w0: ", proc.stdout, re.M),
              "resume with other skipgram output keys: %s\n%s" % (cmd, proc.stderr[-2000:]))

        # An export into a folder not there yet (the run's own log.dir, as
        # the README's example has it, or deeper): made when the vectors
        # are written. One whose path runs through a file: refused at the
        # start, naming the key and where it was set, leaving no run folder.
        fresh_run = os.path.join(work, "fresh_run")
        fresh_vec = os.path.join(fresh_run, "deeper", "v.vec")
        proc, cmd = run(a.embtrain, base + [
            "--train.steps=2", "--log.dir=" + fresh_run, "--skipgram.export=" + fresh_vec])
        check(proc.returncode == 0 and os.path.isfile(fresh_vec),
              "export into a folder made by the run: %s\n%s" % (cmd, proc.stderr[-2000:]))
        blocker = os.path.join(work, "blocker")
        with open(blocker, "w") as f:
            f.write("a file, not a folder")
        gone = os.path.join(blocker, "v.vec")
        proc, cmd = run(a.embtrain, base + [
            "--train.steps=2", "--log.dir=" + os.path.join(work, "gone_run"),
            "--skipgram.export=" + gone])
        check(proc.returncode == 1 and
              "config key 'skipgram.export' = '%s' (command line): '%s' is not a folder"
              % (gone, blocker) in proc.stderr and
              not os.path.exists(os.path.join(work, "gone_run")),
              "export through a file names the key and its source: %s" % proc.stderr.strip())

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

        real_text(a.embtrain, work, seed, check)
        synthetic_corpus(a.embtrain, work, seed, check)
        vocabulary_in_checkpoint(a.embtrain, work, seed, check)

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
