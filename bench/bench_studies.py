#!/usr/bin/env python3
"""Wall time of the two study commands the speed targets name, measured in one run.

    python bench/bench_studies.py [--workers 2] [--skip-report] [--skip-tune]

* ``perfsim tune studies/tune_flush_ceiling.toml``: :func:`perfsim.tune.run_tune` on a
  ``process:W`` pool (pool start included, as the command pays it);
* ``perfsim report`` (the default study): :func:`perfsim.report.run_study` plus
  :func:`perfsim.report.write_report` into a throw-away directory (target <= 20 s on 2 cores).

Prints each wall time and the host's load average before and after (the machine may be
shared: compare figures from one run, or before/after runs made back to back). With
``--cpu`` both run in this process instead (``serial`` executor) and the CPU time they take
is printed too: a figure that depends much less on other load than wall time does.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _executor(workers: int, cpu: bool) -> str:
    return "serial" if cpu else f"process:{workers}"


def bench_tune(workers: int, cpu: bool = False) -> float:
    from perfsim.tune import load_tune, run_tune

    spec = load_tune(ROOT / "studies" / "tune_flush_ceiling.toml")
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_tune(spec, executor=_executor(workers, cpu), quiet=True)
    wall, used = time.perf_counter() - t0, time.process_time() - c0
    where = f"{used:7.2f} s CPU in this process" if cpu else f"on {workers} worker(s)"
    print(f"tune flush_ceiling: {wall:7.2f} s wall {where}, {len(res.runs)} runs")
    return wall


def bench_report(workers: int, cpu: bool = False) -> float:
    from perfsim.report import default_study, run_study, write_report

    t0, c0 = time.perf_counter(), time.process_time()
    res = run_study(default_study(), executor=_executor(workers, cpu), quiet=True)
    t1, c1 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as out:
        write_report(res, f"{out}/default")
    t2, c2 = time.perf_counter(), time.process_time()
    if cpu:
        print(f"report (default study): simulate {c1 - c0:6.2f} s CPU + write {c2 - c1:6.2f} s "
              f"CPU = {c2 - c0:6.2f} s CPU in this process ({t2 - t0:.1f} s wall)")
    else:
        print(f"report (default study): simulate {t1 - t0:6.2f} s + write {t2 - t1:6.2f} s = "
              f"{t2 - t0:6.2f} s on {workers} worker(s) (target <= 20 s on 2 cores)")
    return t2 - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--skip-tune", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="run serially, print CPU time")
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    if not a.skip_tune:
        bench_tune(a.workers, a.cpu)
    if not a.skip_report:
        bench_report(a.workers, a.cpu)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
