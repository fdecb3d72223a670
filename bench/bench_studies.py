#!/usr/bin/env python3
"""Wall time of the two study commands the speed targets name, measured in one run.

    python bench/bench_studies.py [--workers 2] [--skip-report] [--skip-tune]

* ``perfsim tune studies/tune_flush_ceiling.toml``: :func:`perfsim.tune.run_tune` on a
  ``process:W`` pool (pool start included, as the command pays it);
* ``perfsim report`` (the default study): :func:`perfsim.report.run_study` plus
  :func:`perfsim.report.write_report` into a throw-away directory (target <= 20 s on 2 cores).

Prints each wall time, the CPU time of this process and its children, and the host's load
average before and after (the machine may be shared: compare figures from one run, or
before/after runs made back to back).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def bench_tune(workers: int) -> float:
    from perfsim.tune import load_tune, run_tune

    spec = load_tune(ROOT / "studies" / "tune_flush_ceiling.toml")
    t0 = time.perf_counter()
    res = run_tune(spec, executor=f"process:{workers}", quiet=True)
    wall = time.perf_counter() - t0
    print(f"tune flush_ceiling: {wall:7.2f} s wall on {workers} worker(s), "
          f"{len(res.runs)} runs")
    return wall


def bench_report(workers: int) -> float:
    from perfsim.report import default_study, run_study, write_report

    t0 = time.perf_counter()
    res = run_study(default_study(), executor=f"process:{workers}", quiet=True)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_report(res, f"{out}/default")
    t2 = time.perf_counter()
    print(f"report (default study): simulate {t1 - t0:6.2f} s + write {t2 - t1:6.2f} s = "
          f"{t2 - t0:6.2f} s on {workers} worker(s) (target <= 20 s on 2 cores)")
    return t2 - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--skip-tune", action="store_true")
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    c0 = _cpu()
    if not a.skip_tune:
        bench_tune(a.workers)
    if not a.skip_report:
        bench_report(a.workers)
    print(f"CPU time (this process + children): {_cpu() - c0:.1f} s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
