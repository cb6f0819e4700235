#!/usr/bin/env python3
"""Per-kernel time and device-memory traffic of one profiled bench step.

Reads the raw CSV that `ncu --csv --page raw --metrics
gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum` wrote for
an `embtrain bench --device cuda --json` run, and that run's JSON line, and
prints one line per kernel name (launches, time, MB read and written, the
achieved GB/s and its share of the copy bandwidth the same bench measured),
slowest first. Issue 10's item 4 asks for exactly this: bytes moved per
kernel against the measured copy bandwidth.

    bench/ncu_summary.py NCU_CSV BENCH_JSON

Kernels of the table's setup (its draw) and of bench's bandwidth probe are
listed too; the line "step kernels" sums the others.
"""
import csv
import json
import re
import sys

TIME, READ, WRITE = "gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum"
# Kernels that run outside the timed step: the table's draw and the fill of
# its optimizer state (bench's bandwidth probe is a copy, not a kernel).
NOT_STEP = ("draw_normal_kernel", "fill_kernel")

# ncu writes each metric in the unit it picks (the units row of --page raw).
SCALE = {"nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0,
         "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9,
         "KB": 1e3, "MB": 1e6, "GB": 1e9}


def read_rows(path):
    """The profiled launches: dicts of the CSV's columns, values in SI units."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own notes start otherwise
    reader = csv.DictReader(lines)
    units, rows = None, []
    for row in reader:
        if not row.get("ID", "").strip().isdigit():
            units = row  # the units row
            continue
        rows.append(row)
    if not rows:
        sys.exit("ncu_summary.py: no profiled kernel in %s" % path)
    missing = [m for m in (TIME, READ, WRITE) if m not in rows[0]]
    if missing:
        sys.exit("ncu_summary.py: %s lacks the metrics %s" % (path, ", ".join(missing)))

    def value(row, metric):
        text = row[metric].replace(",", "").strip()
        unit = (units or {}).get(metric, "").strip()
        if unit not in SCALE:
            sys.exit("ncu_summary.py: unknown unit %r of %s" % (unit, metric))
        return float(text) * SCALE[unit]

    return [{"name": row["Kernel Name"], "s": value(row, TIME),
             "read": value(row, READ), "write": value(row, WRITE)} for row in rows]


def qualified(name):
    """A demangled kernel name without its return type and parameter list."""
    name = name.replace("(anonymous namespace)::", "")
    name = re.sub(r"^void ", "", name)
    return name.split("(")[0].strip()


def base_name(name):
    """The kernel's own name: no namespaces or template arguments either."""
    return re.sub(r"<.*>", "", qualified(name)).split("::")[-1]


def short(name, width=60):
    name = qualified(name)
    if name.startswith("embtrain::"):
        name = name[len("embtrain::"):]
    return name if len(name) <= width else name[:width - 3] + "..."


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    launches = read_rows(sys.argv[1])
    bench = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
    copy_gbs = float(bench.get("copy_bandwidth_gbps", 0.0))
    kernels = {}
    for k in launches:
        entry = kernels.setdefault(k["name"], {"n": 0, "s": 0.0, "read": 0.0, "write": 0.0})
        entry["n"] += 1
        for key in ("s", "read", "write"):
            entry[key] += k[key]
    print("# %s, %s; copy bandwidth measured by the same bench: %.0f GB/s"
          % (bench.get("gpu", "?"), bench.get("optimizer", "?"), copy_gbs))
    print("%-60s %4s %9s %9s %9s %8s %6s" % ("kernel", "n", "us", "MB read", "MB write", "GB/s",
                                            "%copy"))
    step = {"s": 0.0, "bytes": 0.0}
    for name, e in sorted(kernels.items(), key=lambda kv: -kv[1]["s"]):
        moved = e["read"] + e["write"]
        gbs = moved / e["s"] / 1e9 if e["s"] > 0 else 0.0
        print("%-60s %4d %9.1f %9.2f %9.2f %8.0f %5.0f%%" % (
            short(name), e["n"], e["s"] * 1e6, e["read"] / 1e6, e["write"] / 1e6, gbs,
            100 * gbs / copy_gbs if copy_gbs > 0 else 0.0))
        if base_name(name) not in NOT_STEP:
            step["s"] += e["s"]
            step["bytes"] += moved
    if step["s"] > 0:
        gbs = step["bytes"] / step["s"] / 1e9
        print("step kernels: %.1f us, %.2f MB moved, %.0f GB/s (%.0f%% of copy); "
              "bench's floor for the step: %.1f us" % (
                  step["s"] * 1e6, step["bytes"] / 1e6, gbs,
                  100 * gbs / copy_gbs if copy_gbs > 0 else 0.0,
                  1e3 * float(bench.get("floor_ms", 0.0))))


if __name__ == "__main__":
    main()
