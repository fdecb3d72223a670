#!/usr/bin/env python3
"""CPU time of the engine alone per simulated call, over the shipped workloads.

    python bench/bench_engine_calls.py [--reps 3] [--against TREE]

For every shipped workload (its own seed) the callers' plan streams are drawn, laid out and
planned first (``list(plans)``: not timed), so what is timed is the SimPy engine: the
caller and walker actors, locks, IPI credits and user threads, the record tables, and the
call-template lookups. Each workload is simulated once to fill a shared
:class:`~perfsim.engine.reuse.RunCaches` (a template miss is pricing, not the engine), then
``--reps`` more times with it, reading every table (``SimResult.frames()``); the best CPU
time (``time.process_time``) of those is the engine's. Prints microseconds per call and
the SimPy events scheduled, per workload and over all of them.
``--against TREE`` (a checkout of an earlier commit) measures that tree first in a child
process (``--tree TREE``), then this one, and prints each ratio. Results are not checked
here (``bench/digests.py`` does that).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one, require_tree, use_tree  # noqa: E402

ROOT = use_tree(__file__)


def measure(reps: int) -> dict[str, tuple[int, float, int]]:
    """``{workload: (calls, best engine CPU seconds, SimPy events scheduled)}`` in this
    process's ``perfsim``."""
    from dataclasses import replace

    import numpy as np
    import pandas  # noqa: F401 - imported before timing, as in a warm worker

    from perfsim.cost import load_cost_profile
    from perfsim.engine import simulate
    from perfsim.engine.reuse import RunCaches
    from perfsim.profiles import resolve_target
    from perfsim.workload import load_workload, resolve_workload, workload_names
    from perfsim.workload.generate import compile_workload

    out = {}
    for name in workload_names():
        w = load_workload(resolve_workload(name))
        target = resolve_target(w.kernel, w.arch)
        profile = load_cost_profile(w.cost_profile)
        comp = compile_workload(w, target, profile, np.random.SeedSequence(w.seed))
        spec = replace(comp.spec, callers=tuple(replace(c, plans=list(c.plans))
                                                for c in comp.spec.callers))
        caches = RunCaches()
        res = simulate(spec, caches=caches)  # fills the template store
        calls = len(res.calls)
        best = float("inf")
        for _ in range(reps):
            c0 = time.process_time()
            res = simulate(spec, caches=caches)
            res.frames()
            best = min(best, time.process_time() - c0)
        # an older tree's summary has only "events" (then all scheduled)
        out[name] = (calls, best, res.summary.get("scheduled_events", res.summary["events"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=at_least_one, default=3)
    ap.add_argument("--against", metavar="TREE", help="measure this perfsim tree first and "
                    "print the ratios")
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    old = None
    if a.against:
        require_tree(a.against)
        old = json.loads(subprocess.run(
            [sys.executable, __file__, f"--reps={a.reps}", "--json", "--tree", a.against],
            check=True, capture_output=True, text=True).stdout)
    res = measure(a.reps)
    if a.json:
        print(json.dumps(res))
        return
    print(f"tree: {ROOT}; load average {os.getloadavg()}")
    print(f"{'workload':24} {'calls':>6} {'engine us/call':>15} {'events':>7}"
          + (f" {'before':>10} {'events':>7} {'ratio':>7}" if old else ""))
    for name, (calls, cpu, ev) in res.items():
        line = f"{name:24} {calls:6d} {cpu / calls * 1e6:15.1f} {ev:7d}"
        if old and name in old:
            oc, ocpu, oev = old[name]
            line += f" {ocpu / oc * 1e6:10.1f} {oev:7d} {ocpu / cpu:6.2f}x"
        print(line)
    calls = sum(r[0] for r in res.values())
    cpu = sum(r[1] for r in res.values())
    line = f"{'all':24} {calls:6d} {cpu / calls * 1e6:15.1f} {sum(r[2] for r in res.values()):7d}"
    if old:
        ocalls = sum(r[0] for r in old.values())
        ocpu = sum(r[1] for r in old.values())
        line += (f" {ocpu / ocalls * 1e6:10.1f} {sum(r[2] for r in old.values()):7d} "
                 f"{ocpu / cpu:6.2f}x")
    print(line)
    if old:
        print(f"RATIO engine CPU per call, {a.against} / this tree = "
              f"{(ocpu / ocalls) / (cpu / calls):.2f}x")


if __name__ == "__main__":
    main()
