#!/usr/bin/python3
"""The report of bench/cluster_scaling.sh: reads its raw.jsonl (one
`embtrain bench --json` object per run, tagged with mode, hosts, link rate
and the bytes the hosts' links sent), writes scaling.jsonl (one line per
run, the numbers below), step_breakdown.png and efficiency.png beside it,
and prints a table.

    /usr/bin/python3 bench/cluster_report.py OUT/raw.jsonl [--out OUT]

Per run (P hosts x 1 rank):
- step_ms, lookups_per_s: bench's median step and its lookups/s;
- efficiency: E = (work * T(1) + raw(P)) / T(P) (bench/scaling_common.py),
  work = P for weak scaling, 1 for strong; T(1) is the local engine's step,
  the median of its runs (t1_runs_ms: each, to judge the machine's noise);
  a configuration run in several rounds is its run of median step time
  (step_ms_runs: each round's);
- phase_ms: each stage of the step, max over ranks;
- per exchange (ids, rows, grads), nccl-tests' definitions for all-to-all:
  the size S is a rank's send buffer, its own slot included (the bytes it
  sends the other ranks, bench's bytes_sent_per_step / P, times P/(P-1));
  algbw = S / t, busbw = algbw * (P-1)/P (the bytes that cross the rank's
  link per second; with one rank per host it is bounded by the link rate);
  t is the exchange's transfer time (max over ranks, the wait for the
  slowest rank at the barrier before it excluded); raw_busbw the same for
  the plain all-to-all of the same bytes bench times beside it;
- network_share: the exchanges' transfer time over the step time
  (skew_share: their wait for the slowest rank, which is imbalance, not
  network);
- link_bytes_per_engine_byte: what the hosts' links carried (kernel
  counters) per byte bench says the exchanges sent, warm-up included; at
  least 1 (headers, bench's raw all-to-all and MPI's own messages add).
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scaling_common import EXCHANGES, STAGES, efficiency  # noqa: E402


def derive(run, t1):
    b, p = run["bench"], run["hosts"]
    work = p if run["mode"] == "weak" else 1
    out = {"mode": run["mode"], "hosts": p, "ranks": b["ranks"], "rate_gbit": run["rate_gbit"],
           "threads": run["threads"], "step_ms": b["step_ms"], "lookups_per_s": b["lookups_per_s"],
           "lookups_per_step": b["lookups_per_step"], "t1_ms": t1,
           "raw_alltoall_ms": b.get("raw_alltoall_ms", 0.0),
           "efficiency": efficiency(work, t1, b.get("raw_alltoall_ms", 0.0), b["step_ms"]),
           "phase_ms": {k: b["phase_ms_max_over_ranks"][k] for k in STAGES},
           "bytes_sent_per_step": b["bytes_sent_per_step"]["total"],
           "link_tx_bytes": run["link_tx_bytes"], "exchanges": {}}
    # What the hosts' links sent (kernel counters, all hosts, TCP/IP headers,
    # warm-up steps and bench's raw all-to-all included) per byte the engine
    # says its exchanges sent in the timed and warm-up steps: at least 1.
    engine = b["bytes_sent_per_step"]["total"] * (run.get("steps", 0) + run.get("warmup", 0))
    out["link_bytes_per_engine_byte"] = run["link_tx_bytes"] / engine if engine > 0 and p > 1 else None
    net = skew = 0.0
    if p > 1:
        for x in EXCHANGES:
            e = b["exchanges_ms_max_over_ranks"][x]
            to_others = b["bytes_sent_per_step"][x.replace("exchange_", "")] / p
            size = to_others * p / (p - 1)
            t, raw = e["transfer_ms"] * 1e-3, e["raw_ms"] * 1e-3
            algbw = size / t if t > 0 else 0.0
            out["exchanges"][x] = {
                "bytes_per_rank": size, "ms": e["ms"], "transfer_ms": e["transfer_ms"],
                "skew_ms": e["skew_ms"], "raw_ms": e["raw_ms"], "algbw_GBps": algbw / 1e9,
                "busbw_GBps": algbw * (p - 1) / p / 1e9,
                "busbw_gbit": algbw * (p - 1) / p * 8 / 1e9,
                "raw_busbw_gbit": (to_others / raw * 8 / 1e9) if raw > 0 else 0.0}
            net += e["transfer_ms"]
            skew += e["skew_ms"]
    out["network_ms"] = net
    out["network_share"] = net / b["step_ms"]
    out["skew_share"] = skew / b["step_ms"]
    return out


def plots(rows, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("weak", "strong") if any(r["mode"] == m for r in rows)]
    rates = sorted({r["rate_gbit"] for r in rows if r["hosts"] > 1})
    if not rates:
        return []
    colors = {s: plt.cm.tab10(i) for i, s in enumerate(STAGES)}
    fig, axes = plt.subplots(len(modes), len(rates), figsize=(4.2 * len(rates), 3.6 * len(modes)),
                             squeeze=False, sharey="row")
    for i, mode in enumerate(modes):
        for j, rate in enumerate(rates):
            ax = axes[i][j]
            sel = sorted((r for r in rows if r["mode"] == mode and (r["hosts"] == 1 or r["rate_gbit"] == rate)),
                         key=lambda r: r["hosts"])
            xs = [str(r["hosts"]) for r in sel]
            bottom = [0.0] * len(sel)
            for s in STAGES:
                v = [r["phase_ms"][s] for r in sel]
                ax.bar(xs, v, bottom=bottom, color=colors[s], label=s,
                       hatch="//" if s in EXCHANGES else None, edgecolor="white", linewidth=0.3)
                bottom = [a + c for a, c in zip(bottom, v)]
            ax.plot(xs, [r["step_ms"] for r in sel], "k_", markersize=18, label="step (median)")
            ax.set_title("%s scaling, %g Gbit/s links" % (mode, rate), fontsize=9)
            ax.set_xlabel("hosts x 1 rank (1: local engine)")
            if j == 0:
                ax.set_ylabel("ms per step (stages: max over ranks)")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    breakdown = os.path.join(out_dir, "step_breakdown.png")
    fig.savefig(breakdown, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(modes), figsize=(4.6 * len(modes), 3.6), squeeze=False)
    for i, mode in enumerate(modes):
        ax = axes[0][i]
        for rate in rates:
            sel = sorted((r for r in rows if r["mode"] == mode and (r["hosts"] == 1 or r["rate_gbit"] == rate)),
                         key=lambda r: r["hosts"])
            ax.plot([r["hosts"] for r in sel], [r["efficiency"] for r in sel], "o-", label="%g Gbit/s" % rate)
        ax.axhline(1.0, color="grey", linewidth=0.6)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["hosts"] for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_ylim(0, max(1.1, max(r["efficiency"] for r in rows) * 1.05))
        ax.set_title("%s scaling: E = (%sT(1) + raw) / T(P)" % (mode, "P " if mode == "weak" else ""), fontsize=9)
        ax.set_xlabel("hosts x 1 rank")
        ax.set_ylabel("efficiency E")
        ax.legend(fontsize=8)
    fig.tight_layout()
    eff = os.path.join(out_dir, "efficiency.png")
    fig.savefig(eff, dpi=110)
    plt.close(fig)
    return [breakdown, eff]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("--out", help="folder for scaling.jsonl and the plots (default: the raw file's)")
    args = ap.parse_args()
    out_dir = args.out or os.path.dirname(os.path.abspath(args.raw))
    os.makedirs(out_dir, exist_ok=True)
    runs = [json.loads(line) for line in open(args.raw) if line.strip()]
    base = [r for r in runs if r["hosts"] == 1 and r["mode"] == runs[0]["mode"]]
    if not base:
        sys.exit("cluster_report.py: %s has no 1-host run (T(1), the baseline)" % args.raw)
    # T(1): the baseline run of median step time (the lower of the middle
    # two), one row per mode for it.
    t1 = statistics.median_low(r["bench"]["step_ms"] for r in base)
    t1_runs = [r["bench"]["step_ms"] for r in base]
    # Each configuration (mode, hosts, rate) that ran in several rounds:
    # its run of median step time (the lower of the middle two).
    groups = {}
    for r in runs:
        key = (r["mode"], r["hosts"], r["rate_gbit"] if r["hosts"] > 1 else 0)
        groups.setdefault(key, []).append(r)
    rows = []
    for key, rs in sorted(groups.items()):
        chosen = t1 if key[1] == 1 else statistics.median_low(r["bench"]["step_ms"] for r in rs)
        row = derive(next(r for r in rs if r["bench"]["step_ms"] == chosen), t1)
        row["step_ms_runs"] = [r["bench"]["step_ms"] for r in rs]
        row["t1_runs_ms"] = t1_runs
        rows.append(row)
    with open(os.path.join(out_dir, "scaling.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print("# T(1) = %.1f ms, the median of the local engine's runs: %s" % (
        t1, " ".join("%.1f" % t for t in t1_runs)))
    print("%-6s %5s %5s %9s %10s %5s %6s %6s  %s" % (
        "mode", "hosts", "Gbit", "step_ms", "lookups/s", "E", "net%", "skew%",
        "busbw Gbit/s ids/rows/grads (raw a2a)  sent MB/step  link/engine bytes"))
    for r in sorted(rows, key=lambda r: (r["mode"] != "weak", r["rate_gbit"], r["hosts"])):
        ex = r["exchanges"]
        bw = " ".join("%.2f" % ex[x]["busbw_gbit"] for x in EXCHANGES) if ex else "-"
        if ex:
            bw += " (%s)" % " ".join("%.2f" % ex[x]["raw_busbw_gbit"] for x in EXCHANGES)
        link = r["link_bytes_per_engine_byte"]
        print("%-6s %5d %5s %9.1f %10.4g %5.2f %5.0f%% %5.0f%%  %s  %s  %s" % (
            r["mode"], r["hosts"], "%g" % r["rate_gbit"] if r["hosts"] > 1 else "-", r["step_ms"],
            r["lookups_per_s"], r["efficiency"], 100 * r["network_share"], 100 * r["skew_share"], bw,
            "%.1f" % (r["bytes_sent_per_step"] / 1e6) if r["hosts"] > 1 else "-",
            "-" if link is None else "%.2f" % link))
    for path in plots(rows, out_dir):
        print("wrote " + path)
    print("wrote " + os.path.join(out_dir, "scaling.jsonl"))


if __name__ == "__main__":
    main()
