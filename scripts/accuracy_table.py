#!/usr/bin/env python3
"""Mean and spread of the demo's rows.csv over several runs (seeds), as a Markdown table.

usage: accuracy_table.py RUN_DIR [RUN_DIR ...]   (each RUN_DIR holds the rows.csv and table.md of
one `posekd demo` run). Rows are matched by model name; AP, AP50 and AR are reported as
mean (min-max) over the runs.
"""
import csv
import os
import sys


def read_rows(path):
    with open(path, newline="") as f:
        return {r["model"]: r for r in csv.DictReader(f)}


def main(dirs):
    if not dirs:
        sys.exit("usage: accuracy_table.py RUN_DIR [RUN_DIR ...]")
    runs = []
    for d in dirs:
        p = os.path.join(d, "rows.csv")
        if not os.path.exists(p):
            sys.exit(f"{p}: missing (did the demo run finish?)")
        runs.append(read_rows(p))
    models = list(runs[0].keys())
    cols = ["AP", "AP50", "AR"]
    out = [f"| model | {' | '.join(c + ' mean (min-max)' for c in cols)} | runs |",
           "|---|" + "---|" * (len(cols) + 1)]
    for m in models:
        cells = []
        present = [r[m] for r in runs if m in r]
        for c in cols:
            v = [float(r[c]) for r in present]
            cells.append(f"{sum(v) / len(v):.3f} ({min(v):.3f}-{max(v):.3f})")
        out.append(f"| {m} | {' | '.join(cells)} | {len(present)} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1:])
