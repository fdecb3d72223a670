"""Run points: one point → one flat result row; failures come back as rows too.

These functions run inside workers (process pool, Dask), so they take and return only
picklable data, touch no global state, and depend on nothing but the point: the same point
gives the same row (apart from ``wall_s`` and ``cpu_s``) on any executor and any number of workers.
"""

from __future__ import annotations

import time
import traceback

import numpy as np

# Loaded here, not by the first point: numpy imports numpy.random on first use, and a Ctrl-C
# that lands while one of its compiled modules initialises can come out as an ImportError
# (seen 2026-12-02: "Failed to import 'zlib.decompress' - cannot initialise module
# strings"), which run_point would record as a failed point and go on: the interrupt lost.
import numpy.random  # noqa: F401

import perfsim
from perfsim.batch.sweep import Point
from perfsim.workload.run import METRICS, run_workload


def run_point(p: Point, caches=None) -> dict:
    """Simulate one point. Never raises for a problem of the point itself: the row then has
    ``status = "failed"`` and ``error`` says why. ``caches``: a
    :class:`~perfsim.engine.reuse.RunCaches` shared by the points of one batch."""
    row = {"key": p.key, "cell": p.index, **p.identity, "perfsim_version": perfsim.__version__,
           **{f"p:{k}": v for k, v in p.params.items()}}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        root = np.random.SeedSequence(list(p.seed_entropy))
        _, metrics, notes = run_workload(p.workload, target=p.target, profile=p.profile,
                                         seed=root, max_rows=p.max_rows, caches=caches)
        row.update(status="ok", error="", notes="; ".join(notes), **metrics)
    except Exception as exc:  # noqa: BLE001 - failures are data (desmod)
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}{where}", notes="",
                   **{m: (np.nan if t == "f" else 0) for m, t in METRICS.items()})
    row["wall_s"] = time.perf_counter() - t0
    row["cpu_s"] = time.process_time() - c0
    return row


def run_batch(points: list[Point]) -> list[dict]:
    """Run many points in one task (amortises scheduling and pickling); they share one
    :class:`~perfsim.engine.reuse.RunCaches` (plans and call templates; same rows)."""
    from perfsim.engine.reuse import RunCaches

    caches = RunCaches()
    return [run_point(p, caches) for p in points]
