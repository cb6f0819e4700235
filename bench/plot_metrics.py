#!/usr/bin/python3
"""Summary table and plots of a training run's metrics.jsonl.

    /usr/bin/python3 bench/plot_metrics.py RUN_DIR [--out DIR]

Reads RUN_DIR/metrics.jsonl (the format is in the README, "metrics.jsonl")
and prints one table: the run's summary, its evaluations and the first and
last progress lines. With matplotlib (Debian's python3-matplotlib, which
scripts/install_deps.sh installs) it also writes into --out (default
RUN_DIR) train_loss.png (train loss by step, eval loss on top), eval.png
(every evaluated metric by step, dashed at the hidden ground truth's value
where the summary has one, recsys' reference AUC) and speed.png (lookups/s
by step). An empty metrics.jsonl is an error.
"""
import argparse
import json
import os
import sys


def read_metrics(path):
    lines = []
    with open(path) as f:
        for n, text in enumerate(f, 1):
            text = text.strip()
            if not text:
                continue
            try:
                lines.append(json.loads(text))
            except ValueError as e:
                sys.exit("%s:%d: not a JSON line (%s)" % (path, n, e))
    return lines


def by_type(lines, kind):
    return [m for m in lines if m.get("type") == kind]


def print_table(lines):
    train, evals = by_type(lines, "train"), by_type(lines, "eval")
    summary = by_type(lines, "summary")
    rows = []
    if train:
        rows.append(("steps logged", "%d .. %d" % (train[0]["step"], train[-1]["step"])))
        rows.append(("train loss", "%.4f -> %.4f" % (train[0]["loss"], train[-1]["loss"])))
        rows.append(("lookups/s (last)", "%.3g" % train[-1]["lookups_per_s"]))
    for e in evals:
        metrics = ", ".join("%s %.4f" % (k, v) for k, v in sorted(e.items())
                            if k not in ("type", "step", "when"))
        rows.append(("eval step %d (%s)" % (e["step"], e.get("when", "")), metrics))
    skipped = by_type(lines, "skipped")
    if skipped:
        rows.append(("skipped steps", ", ".join(str(s["step"]) for s in skipped)))
    for s in summary:
        extra = " (stopped by %s)" % s["stopped_by"] if "stopped_by" in s else ""
        rows.append(("run", "steps %d..%d in %.1f s%s" % (s["first_step"], s["steps"],
                                                          s["seconds"], extra)))
    width = max((len(k) for k, _ in rows), default=0)
    for k, v in rows:
        print("%s  %s" % (k.ljust(width), v))


def plot(lines, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        # Another python3 first on PATH: Debian's has python3-matplotlib.
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from debian_python import rerun_under_debian
        rerun_under_debian(["--plots-only"])
        print("(no plots: matplotlib is missing; apt-get install python3-matplotlib)")
        return []
    train, evals = by_type(lines, "train"), by_type(lines, "eval")
    written = []

    def save(fig, name):
        path = os.path.join(out, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    if train:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([m["step"] for m in train], [m["loss"] for m in train], label="train loss")
        with_loss = [e for e in evals if "loss" in e]
        if with_loss:
            ax.plot([e["step"] for e in with_loss], [e["loss"] for e in with_loss], "o-",
                    label="eval loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        save(fig, "train_loss.png")
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([m["step"] for m in train], [m["lookups_per_s"] for m in train])
        ax.set_xlabel("step")
        ax.set_ylabel("lookups/s")
        save(fig, "speed.png")
    keys = sorted({k for e in evals for k in e if k not in ("type", "step", "when")})
    if keys:
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.5 * len(keys)), squeeze=False)
        # The hidden ground truth's value of a metric (the summary's
        # reference_<metric>, e.g. recsys' AUC), as the line to approach.
        reference = {}
        for s in by_type(lines, "summary"):
            reference.update({k[len("reference_"):]: v for k, v in s.items()
                              if k.startswith("reference_")})
        for ax, k in zip(axes[:, 0], keys):
            pts = [(e["step"], e[k]) for e in evals if k in e]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=k)
            if k in reference:
                ax.axhline(reference[k], color="gray", linestyle="--", label="reference")
                ax.legend()
            ax.set_ylabel(k)
        axes[-1, 0].set_xlabel("step")
        save(fig, "eval.png")
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="where the PNGs go (default: RUN_DIR)")
    parser.add_argument("--plots-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        sys.exit("%s: no such file (is %s a run's log.dir?)" % (path, args.run_dir))
    lines = read_metrics(path)
    if not lines:
        sys.exit("%s: empty (the run stopped before its first progress line?)" % path)
    if not args.plots_only:
        print_table(lines)
    out = args.out or args.run_dir
    os.makedirs(out, exist_ok=True)
    for p in plot(lines, out):
        print("wrote %s" % p)


if __name__ == "__main__":
    main()
