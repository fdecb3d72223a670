"""Time the default report end to end (the issue's budget: < 3 minutes on 2 cores).

    python bench/bench_report.py [--workers 2] [--out /tmp/perfsim-bench]

Prints the wall time of the simulations (per task kind) and of writing the report.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=at_least_one, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from perfsim.report import default_study, plan_tasks, run_study, write_report

    study = default_study()
    kinds = Counter(type(t).__name__ for t in plan_tasks(study))
    t0 = time.perf_counter()
    res = run_study(study, executor=f"process:{args.workers}", quiet=True)
    t1 = time.perf_counter()
    out = args.out or tempfile.mkdtemp(prefix="perfsim-bench-")
    write_report(res, f"{out}/default")
    t2 = time.perf_counter()
    print(f"tasks: {dict(kinds)} + {len(study.tune)} tuning(s)")
    print(f"simulate: {t1 - t0:6.1f} s on {args.workers} worker(s)")
    print(f"write:    {t2 - t1:6.1f} s  → {out}/default/index.html")
    print(f"total:    {t2 - t0:6.1f} s  (budget 180 s)")


if __name__ == "__main__":
    main()
