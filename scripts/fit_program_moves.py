#!/usr/bin/env python3
"""Kernel time of real programs' page-table moves against the cost profile's, as lines.

For every NAME.strace / NAME.kernel.jsonl pair given (one-thread programs recorded by
scripts/record_program.py with --latency-runs), takes each mremap the kernel moved
(result != address) with untraced kernel times, counts the present PTEs the trace replay
moves, and fits ``time = a * pages + b`` by least squares to the kernel's median times and
to the cost profile's predictions for the same plans. Prints both lines.

    .venv/bin/python scripts/fit_program_moves.py tests/data/realprog/{c_realloc_1t,perl_array,\\
perl_string,py_list,py_bytearray}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from perfsim import resolve_target  # noqa: E402
from perfsim.errors import PerfsimError  # noqa: E402
from perfsim.host.program import compare_program, replay_inputs, replay_plans  # noqa: E402


def moves(stem: str, target, cost: str) -> list[tuple[int, float, float]]:
    """(present PTEs moved, kernel median µs, predicted µs) of each moved call."""
    with open(stem + ".strace", encoding="utf-8", errors="replace") as f:
        text = f.read()
    with open(stem + ".kernel.jsonl", encoding="utf-8") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    rows, entries = replay_inputs(text, stem)
    plans = replay_plans(entries, target, 1)
    res = compare_program(rows, entries, recs, target, 1, cost=cost, plans=plans)
    out = []
    for r, p in zip(res, plans, strict=True):
        us = r.get("kernel_us_untraced") or []
        if us and r["result"] != r["addr"] and r.get("predicted_ns"):
            q = p.request
            out.append((p.before.pt.present_ptes(q.old_addr, q.old_addr + q.old_len),
                        statistics.median(us), r["predicted_ns"] / 1000.0))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stems", nargs="+", help="DIR/NAME (without .strace / .kernel.jsonl)")
    ap.add_argument("--cost", default="kvm-epyc")
    ap.add_argument("--kernel", default="6.18")
    args = ap.parse_args(argv)
    t = resolve_target(args.kernel)
    pts = []
    try:
        for s in args.stems:
            pts += moves(s, t, args.cost)
    except (OSError, ValueError, PerfsimError) as e:
        print(f"fit_program_moves: {e}", file=sys.stderr)
        return 2
    if len(pts) < 3:
        print("fit_program_moves: fewer than 3 moved calls with kernel times", file=sys.stderr)
        return 2
    x = np.array([p[0] for p in pts], float)
    design = np.vstack([x, np.ones_like(x)]).T
    print(f"{len(pts)} moves of {int(x.min())}-{int(x.max())} present pages")
    for what, col in (("kernel (median of runs)", 1), (args.cost, 2)):
        a, b = np.linalg.lstsq(design, np.array([p[col] for p in pts]), rcond=None)[0]
        print(f"{what:>24}: {a * 1000:.1f} ns/page + {b:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
