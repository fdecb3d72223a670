#!/usr/bin/env python3
"""Digests of every shipped workload's results, to show a speed change left them bit-identical.

    python bench/digests.py                     # one digest per workload and seed
    python bench/digests.py --against TREE      # the same for an earlier tree, compared

For every shipped workload and each seed (its own, and 11; ``--seeds`` to choose), runs
``run_workload`` and hashes every table of the result (``calls``, ``holds``, ``flushes``,
``walker_waits``, ``users``; ``pandas.util.hash_pandas_object`` with the index, plus the
column names and dtypes) and the metrics (all but wall-clock ones). ``--against TREE`` runs
this script on that tree in a child process (``--tree TREE``) and prints every pair that
differs; exit status 1 if any does. Not a benchmark: no timing is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import require_tree, use_tree  # noqa: E402

ROOT = use_tree(__file__)

WALL_CLOCK = ("wall", "elapsed")  # metric names that measure the host, not the model


def digests(seeds: list[int | None]) -> dict[str, str]:
    import pandas as pd

    from perfsim.workload import run_workload, workload_names

    out = {}
    for name in workload_names():
        for seed in seeds:
            res, metrics, notes = run_workload(name, seed=seed)
            h = hashlib.sha256()
            for table in res.TABLES:
                df = res.frame(table)
                h.update(repr([(c, str(t)) for c, t in df.dtypes.items()]).encode())
                h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
            kept = {k: v for k, v in sorted(metrics.items())
                    if not any(w in k for w in WALL_CLOCK)}
            h.update(json.dumps(kept, sort_keys=True, default=str).encode())
            h.update(json.dumps(list(notes), default=str).encode())
            out[f"{name} seed={'own' if seed is None else seed}"] = h.hexdigest()[:16]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", metavar="TREE", help="compare with this perfsim tree")
    ap.add_argument("--seeds", default="own,11",
                    help="comma-separated seeds; 'own' is the workload's own (default own,11)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    a = ap.parse_args()
    try:
        seeds = [None if s == "own" else int(s) for s in a.seeds.split(",") if s]
    except ValueError:
        print(f"--seeds {a.seeds!r}: expected comma-separated integers or 'own'", file=sys.stderr)
        return 2
    if a.against:
        require_tree(a.against)
    mine = digests(seeds)
    if a.json:
        print(json.dumps(mine))
        return 0
    if not a.against:
        for k, v in mine.items():
            print(f"{v}  {k}")
        return 0
    out = subprocess.run([sys.executable, __file__, "--json", f"--seeds={a.seeds}",
                          "--tree", a.against], check=True, capture_output=True, text=True)
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    bad = [k for k in mine if mine[k] != theirs.get(k)]
    for k in mine:
        print(f"{'SAME' if k not in bad else 'DIFF'}  {mine[k]}  {theirs.get(k)}  {k}")
    print(f"{len(mine) - len(bad)} of {len(mine)} identical to {a.against}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
