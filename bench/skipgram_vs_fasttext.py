#!/usr/bin/python3
"""skipgram against fastText: words/s and embedding quality, side by side.

Generates a corpus with planted structure, trains embtrain's `skipgram`
workload (under mpirun, 2 ranks by default) and Debian's `fasttext
skipgram` (-minn 0 -maxn 0: plain word2vec vectors, 2 threads) on it with
the same dim, window, negatives, epochs, min_count and subsampling, and
reports for each:

  words/s   training words per second as the tool itself times it (fastText:
            its final words/sec/thread x threads, counting its end-of-line
            token; embtrain: the trainer's summary, training steps only)
  wall_s    seconds of the whole command (reading, training, writing vectors)
  cpu_s     CPU seconds of the whole command and its children (steadier than
            wall_s on a shared machine; MPI ranks spin while they wait)
  quality   the share of a topic word's 10 nearest neighbours (cosine, over
            the whole vocabulary) that belong to its topic, averaged over
            topic words; computed the same way for both from the word2vec
            text files they write

The corpus: `topics` topics of `words_per_topic` words plus `general`
function words. A sentence picks a topic and draws each word from it with
probability --topic-share, else a function word, else (--noise) a word of
a random topic. Words are Zipf-distributed within their pool, so rare
topic words get few occurrences and neither tool reaches quality 1.0.

    /usr/bin/python3 bench/skipgram_vs_fasttext.py --embtrain build/embtrain

Prints '#' metadata lines, then the result table; --json PATH also writes
the numbers. Exits 1 when a tool fails or its quality is not clearly above
chance, 2 when fastText is missing (apt-get install fasttext).
"""
import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from debian_python import import_or_rerun  # noqa: E402

(np,) = import_or_rerun(["numpy"])


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embtrain", default="build/embtrain", help="the embtrain binary")
    p.add_argument("--mpirun", default="mpirun", help="Open MPI's mpirun")
    p.add_argument("--fasttext", default="fasttext", help="the fastText binary")
    p.add_argument("--ranks", type=int, default=2, help="embtrain ranks (1 thread each)")
    p.add_argument("--threads", type=int, default=2, help="fastText threads")
    p.add_argument("--words", type=float, default=2e6, help="corpus size in words")
    p.add_argument("--topics", type=int, default=40)
    p.add_argument("--words-per-topic", type=int, default=500)
    p.add_argument("--general", type=int, default=400, help="function words")
    p.add_argument("--topic-share", type=float, default=0.25,
                   help="chance a word comes from its sentence's topic")
    p.add_argument("--noise", type=float, default=0.3,
                   help="chance a word comes from a random topic")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--negatives", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--subsample", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=4096,
                   help="embtrain corpus positions (centers) per rank per step")
    p.add_argument("--lr", type=float, default=0.0,
                   help="embtrain learning rate of both tables (0: the workload's default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default="", help="keep files here (default: a temp folder)")
    p.add_argument("--json", default="", help="also write the results here")
    p.add_argument("--corpus-only", default="", metavar="PATH",
                   help="only write the planted-topic corpus to PATH and exit")
    p.add_argument("--skip-embtrain", action="store_true",
                   help="run fastText only (to check the rest of the script)")
    return p.parse_args()


# ---- corpus ---------------------------------------------------------------

def topic_word(t, j):
    return "t%d_w%d" % (t, j)


def topic_of(word):
    """The topic of a word 't12_w3', or -1 for a function word or '</s>'."""
    m = re.match(r"t(\d+)_w\d+$", word)
    return int(m.group(1)) if m else -1


def zipf_probs(n):
    p = 1.0 / np.arange(1, n + 1)
    return p / p.sum()


def write_corpus(path, a, rng):
    """Writes about a.words words, one sentence per line; returns (words, lines)."""
    T, M, G = a.topics, a.words_per_topic, a.general
    topic_names = np.array([[topic_word(t, j) for j in range(M)] for t in range(T)])
    general_names = np.array(["g%d" % j for j in range(G)])
    pt, pg = zipf_probs(M), zipf_probs(G)
    words = lines = 0
    target = int(a.words)
    with open(path, "w") as f:
        while words < target:
            # A block of sentences at a time, vectorised.
            n = 2000
            lengths = rng.integers(8, 25, size=n)
            topics = rng.integers(0, T, size=n)
            total = int(lengths.sum())
            sentence_topic = np.repeat(topics, lengths)
            kind = rng.random(total)
            from_topic = rng.choice(M, size=total, p=pt)
            from_general = rng.choice(G, size=total, p=pg)
            random_topic = rng.integers(0, T, size=total)
            tokens = np.where(
                kind < a.topic_share, topic_names[sentence_topic, from_topic],
                np.where(kind < a.topic_share + a.noise, topic_names[random_topic, from_topic],
                         general_names[from_general]))
            at = 0
            out = []
            for length in lengths:
                out.append(" ".join(tokens[at:at + length]))
                at += length
            f.write("\n".join(out) + "\n")
            words += total
            lines += n
    return words, lines


# ---- quality --------------------------------------------------------------

def read_word2vec(path):
    with open(path, encoding="utf-8") as f:
        rows, dim = map(int, f.readline().split())
        words, vecs = [], np.empty((rows, dim), dtype=np.float32)
        for i, line in enumerate(f):
            parts = line.rstrip().split(" ")
            words.append(parts[0])
            vecs[i] = np.asarray(parts[1:], dtype=np.float32)
    if len(words) != rows:
        raise RuntimeError("%s: header says %d rows, found %d" % (path, rows, len(words)))
    return words, vecs


def topic_quality(path, k=10):
    """Mean share of a topic word's k nearest neighbours in its topic, and
    the number of topic words it averaged over."""
    words, vecs = read_word2vec(path)
    keep = [i for i, w in enumerate(words) if w != "</s>"]  # fastText's end-of-line token
    words = [words[i] for i in keep]
    vecs = vecs[keep]
    topic = np.array([topic_of(w) for w in words])
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    unit = vecs / np.maximum(norms, 1e-12)
    queries = np.nonzero(topic >= 0)[0]
    shares = []
    for start in range(0, len(queries), 1024):
        q = queries[start:start + 1024]
        sim = unit[q] @ unit.T
        sim[np.arange(len(q)), q] = -np.inf  # not its own neighbour
        near = np.argpartition(-sim, k, axis=1)[:, :k]
        shares.append((topic[near] == topic[q][:, None]).mean(axis=1))
    return float(np.concatenate(shares).mean()), len(queries)


# ---- the two tools ----------------------------------------------------------

def run(cmd, log_path):
    """Runs cmd, its output to log_path; returns (wall seconds, CPU seconds
    of it and its children: on a shared machine the less noisy figure)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        with open(log_path, errors="replace") as log:
            tail = log.read()[-3000:]
        raise RuntimeError("%s exited with %d:\n%s" % (" ".join(cmd[:3]), rc, tail))
    return wall, cpu


def run_fasttext(a, corpus, workdir):
    prefix = os.path.join(workdir, "fasttext")
    cmd = [a.fasttext, "skipgram", "-input", corpus, "-output", prefix,
           "-dim", str(a.dim), "-ws", str(a.window), "-neg", str(a.negatives),
           "-epoch", str(a.epochs), "-minCount", str(a.min_count), "-t", str(a.subsample),
           "-minn", "0", "-maxn", "0", "-thread", str(a.threads), "-verbose", "2"]
    log = prefix + ".log"
    wall, cpu = run(cmd, log)
    with open(log, errors="replace") as f:
        text = f.read()
    rates = re.findall(r"words/sec/thread:\s*([0-9.]+)", text)
    if not rates:
        raise RuntimeError("fastText printed no words/sec/thread (see %s)" % log)
    return {"words_per_s": float(rates[-1]) * a.threads, "wall_s": wall, "cpu_s": cpu,
            "vectors": prefix + ".vec", "command": " ".join(cmd)}


def embtrain_command(a, config_path):
    """The one place that knows how embtrain is launched."""
    cmd = [a.mpirun, "-np", str(a.ranks)]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += ["--oversubscribe", "-x", "OMP_NUM_THREADS=1", a.embtrain, "train", "--config", config_path]
    return cmd


def run_embtrain(a, corpus, workdir):
    vectors = os.path.join(workdir, "embtrain.vec")
    log_dir = os.path.join(workdir, "embtrain_run")
    config = {
        "train": {"workload": "skipgram", "epochs": a.epochs, "seed": a.seed, "threads": 1,
                  "batch_size": a.batch_size},
        "log": {"dir": log_dir, "interval": 1000, "overwrite": "true"},
        "checkpoint": {"enabled": "false"},
        "skipgram": {"corpus": corpus, "min_count": a.min_count, "window": a.window,
                     "negatives": a.negatives, "subsample": a.subsample,
                     "eval_fraction": 0, "export": vectors},
        "table.input": {"dim": a.dim},
        "table.output": {"dim": a.dim},
    }
    if a.lr > 0:
        config["table.input"]["lr"] = config["table.output"]["lr"] = a.lr
    config_path = os.path.join(workdir, "embtrain.ini")
    with open(config_path, "w") as f:
        for section, keys in config.items():
            f.write("[%s]\n" % section)
            for k, v in keys.items():
                f.write("%s = %s\n" % (k, v))
            f.write("\n")
    cmd = embtrain_command(a, config_path)
    wall, cpu = run(cmd, os.path.join(workdir, "embtrain.log"))
    summary = None
    with open(os.path.join(log_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if record.get("type") == "summary":
                summary = record
    if summary is None or "words_per_s" not in summary:
        raise RuntimeError("embtrain wrote no summary with words_per_s (see %s)" % log_dir)
    return {"words_per_s": summary["words_per_s"], "wall_s": wall, "cpu_s": cpu,
            "vectors": vectors, "command": " ".join(cmd)}


def main():
    a = parse_args()
    if a.corpus_only:
        os.makedirs(os.path.dirname(os.path.abspath(a.corpus_only)), exist_ok=True)
        words, lines = write_corpus(a.corpus_only, a, np.random.default_rng(a.seed))
        print("wrote %s: %d words, %d lines" % (a.corpus_only, words, lines))
        return 0
    if shutil.which(a.fasttext) is None:
        print("error: '%s' not found; install Debian's fastText: apt-get install fasttext"
              % a.fasttext, file=sys.stderr)
        return 2
    if not a.skip_embtrain and not os.access(a.embtrain, os.X_OK):
        print("error: no embtrain binary at %s (build it: cmake -S . -B build && "
              "cmake --build build)" % a.embtrain, file=sys.stderr)
        return 1
    workdir = a.workdir or tempfile.mkdtemp(prefix="skipgram_vs_fasttext_")
    os.makedirs(workdir, exist_ok=True)
    corpus = os.path.join(workdir, "corpus.txt")
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    words, lines = write_corpus(corpus, a, rng)
    chance = (a.words_per_topic - 1) / (a.topics * a.words_per_topic + a.general - 1)

    print("# skipgram (embtrain) vs fasttext skipgram -minn 0 -maxn 0")
    print("# host %s, %d cores, %s" % (platform.node(), os.cpu_count(), platform.processor() or platform.machine()))
    print("# corpus %s: %d words, %d lines (%.1f s to write), seed %d" % (corpus, words, lines, time.perf_counter() - t0, a.seed))
    print("# planted: %d topics x %d words + %d function words; topic share %.2f, noise %.2f"
          % (a.topics, a.words_per_topic, a.general, a.topic_share, a.noise))
    print("# both: dim %d, window %d, negatives %d, epochs %d, min_count %d, subsample %g"
          % (a.dim, a.window, a.negatives, a.epochs, a.min_count, a.subsample))
    print("# embtrain: %d ranks x 1 thread; fastText: %d threads" % (a.ranks, a.threads))
    print("# quality: share of a topic word's 10 nearest neighbours in its topic (chance ~%.3f)" % chance)
    sys.stdout.flush()

    results, failures = {}, []
    tools = [("fasttext", run_fasttext)]
    if not a.skip_embtrain:
        tools.append(("embtrain", run_embtrain))
    for name, fn in tools:
        try:
            r = fn(a, corpus, workdir)
            r["quality"], r["queries"] = topic_quality(r["vectors"])
            print("# %s: %s" % (name, r["command"]))
            if r["quality"] < 3 * chance:
                failures.append("%s: quality %.3f is not clearly above chance %.3f" % (name, r["quality"], chance))
            results[name] = r
        except (RuntimeError, OSError, ValueError) as e:
            failures.append("%s: %s" % (name, e))

    print("%-10s %12s %9s %9s %9s %9s" % ("tool", "words/s", "wall_s", "cpu_s", "quality", "queries"))
    for name, r in results.items():
        print("%-10s %12.0f %9.2f %9.2f %9.4f %9d"
              % (name, r["words_per_s"], r["wall_s"], r["cpu_s"], r["quality"], r["queries"]))
    if "fasttext" in results and "embtrain" in results:
        f, e = results["fasttext"], results["embtrain"]
        print("# embtrain vs fastText: words/s x%.2f, wall time x%.2f, CPU time x%.2f, quality %+.4f"
              % (e["words_per_s"] / f["words_per_s"], e["wall_s"] / f["wall_s"],
                 e["cpu_s"] / f["cpu_s"], e["quality"] - f["quality"]))
    for msg in failures:
        print("# FAILED %s" % msg)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "words": words, "lines": lines, "chance": chance,
                       "results": results, "failures": failures}, f, indent=2)
    if not a.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
