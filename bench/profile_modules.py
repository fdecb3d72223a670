#!/usr/bin/env python3
"""Where the CPU of the shipped workloads goes, module by module.

    python bench/profile_modules.py [--top 30] [--workload NAME ...]

Runs every shipped workload (or those given) once to warm the process (imports, caches a
run may keep), then once more under ``cProfile``, and prints each module's share of the
profiled run's own time (``tottime``: the time spent in the module's functions, not in what
they call), largest first: ``perfsim/<package>/<module>.py``, ``builtin`` (C functions
called from Python: ``len``, ``dict.get``, ``list.append``, ...), ``numpy``, ``simpy``,
``other``. The shares are what the figure is for: cProfile's own overhead inflates every
Python call alike, so the total is larger than an unprofiled run's and the split is
approximate. A profile whose top module holds a small share says that no single module,
made faster, can speed up a call much (issue 13, docs/throughput.md).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one, use_tree  # noqa: E402

ROOT = use_tree(__file__)


def _module_of(filename: str) -> str:
    """The row a function's file is counted under."""
    if filename == "~":
        return "builtin"
    path = Path(filename)
    parts = path.parts
    if "perfsim" in parts and "site-packages" not in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("perfsim"):])
    for lib in ("numpy", "simpy", "pandas"):
        if lib in parts:
            return lib
    return "other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=at_least_one, default=30, help="rows to print (30)")
    ap.add_argument("--workload", action="append", metavar="NAME",
                    help="a shipped workload (repeatable; default: all of them)")
    args = ap.parse_args(argv)
    from perfsim.workload import run_workload, workload_names

    names = args.workload or list(workload_names())
    unknown = sorted(set(names) - set(workload_names()))
    if unknown:
        ap.error(f"unknown workload {unknown[0]!r}; shipped: {', '.join(workload_names())}")
    calls = 0
    for n in names:  # the warm-up run
        run_workload(n)
    prof = cProfile.Profile()
    prof.enable()
    for n in names:
        _, metrics, _ = run_workload(n)
        calls += metrics["calls"]
    prof.disable()
    share: collections.Counter = collections.Counter()
    for (filename, _line, _fn), (_cc, _nc, tottime, _ct, _callers) in \
            pstats.Stats(prof).stats.items():
        share[_module_of(filename)] += tottime
    total = sum(share.values())
    print(f"tree: {ROOT}; {len(names)} workloads, {calls} simulated calls, "
          f"{total:.3f} s profiled (own time of every function)")
    for module, t in share.most_common(args.top):
        print(f"  {module:42s} {t * 1e3:9.1f} ms {t / total * 100:6.1f} %")
    rest = len(share) - min(len(share), args.top)
    if rest:
        print(f"  ({rest} more rows)")
    ours = [(m, t) for m, t in share.most_common() if m.startswith("perfsim/")]
    if ours and total:
        print(f"largest perfsim module: {ours[0][0]}, {ours[0][1] / total * 100:.1f} % of the "
              f"profiled time; {len(ours)} perfsim modules took part")
    return 0


if __name__ == "__main__":
    sys.exit(main())
