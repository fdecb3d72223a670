"""Run a planned sweep: skip finished points, batch the rest over an executor, store rows.

::

    sweep = load_sweep("sweeps/gc_realign.toml")
    points = plan_sweep(sweep)                       # pure
    report = run_sweep(sweep, "results")             # → results/<name>/part-*.parquet
    df = load_results(report.path)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import perfsim
from perfsim.batch.executors import SerialExecutor, make_executor, parse_executor, prefetch_imports
from perfsim.batch.runner import run_batch
from perfsim.batch.stats import paired_table
from perfsim.batch.store import ResultStore, load_results, schema_for
from perfsim.batch.sweep import Point, Sweep, plan_sweep
from perfsim.errors import PerfsimError

FLUSH_ROWS = 256
"""Write a part once this many rows are buffered..."""
FLUSH_SECONDS = 5.0
"""...or this long after the last write, so a crash loses little work."""
WRITER_IMPORTS = ("pandas", "pyarrow.pandas_compat")
"""What the first write of a part imports besides the store's own modules: ``pyarrow.array``
of Python lists loads pyarrow's pandas integration, i.e. pandas itself (about 0.3-0.5 s of
CPU on this machine, 2026-12-02). A pool's sweep imports them while the workers simulate
(:func:`~perfsim.batch.executors.prefetch_imports`), not after the last result."""


@dataclass
class SweepReport:
    path: Path
    planned: int
    skipped: int
    ran: int
    failed: int
    wall_s: float
    executor: str
    workers: int
    paired: list = field(default_factory=list)


def batches(points: list[Point], size: int) -> list[list[Point]]:
    return [points[i:i + size] for i in range(0, len(points), size)]


def auto_batch_size(n: int, workers: int) -> int:
    """About four tasks per worker, at most 64 simulations per task."""
    return max(1, min(64, math.ceil(n / max(1, 4 * workers))))


def run_sweep(sweep: Sweep, out: str | Path = "results", *, executor=None,
              batch_size: int | None = None, quiet: bool = False, retry_failed: bool = False,
              points: list[Point] | None = None) -> SweepReport:
    """Run every unfinished point of ``sweep`` into ``out/<name>/``; return a report.

    ``executor``: an executor object or an ``--executor`` string (default: process pool on
    all cores). Already stored points are skipped (failed ones too, unless ``retry_failed``).
    """
    t0 = time.perf_counter()
    own = not hasattr(executor, "map_unordered")
    if own:
        parse_executor(executor)  # a bad --executor fails before anything is written
    if batch_size is not None and batch_size < 1:
        raise PerfsimError(f"batch size {batch_size}: must be >= 1")
    points = plan_sweep(sweep) if points is None else points
    store = ResultStore(Path(out) / sweep.spec.name, schema_for(sweep.spec.grid))
    store.write_meta("_sweep.json", {
        "sweep": sweep.spec.model_dump(mode="json"), "origin": sweep.origin,
        "perfsim_version": perfsim.__version__, "points": len(points),
        "workloads": {k: v[1] for k, v in sweep.workloads.items()},
    })
    done = store.done(include_failed=not retry_failed)
    todo = [p for p in points if p.key not in done]
    if own:
        ex = make_executor(executor) if todo else SerialExecutor()
    else:
        ex = executor
    ran = failed = 0
    # Only beside a pool whose workers exist (a fork pool forks in its constructor); a
    # serial sweep computes in this thread: nothing to overlap, and no import to race.
    pool = getattr(ex, "name", None) in ("process", "dask")
    loader = prefetch_imports(WRITER_IMPORTS) if todo and pool else None
    try:
        size = batch_size or sweep.spec.batch_size or auto_batch_size(len(todo), ex.workers)
        bar = _progress(len(todo), quiet, sweep.spec.name)
        buf: list[dict] = []
        last = time.monotonic()
        for rows in ex.map_unordered(run_batch, batches(todo, size)):
            buf.extend(rows)
            ran += len(rows)
            failed += sum(r["status"] != "ok" for r in rows)
            if bar is not None:
                bar.update(len(rows))
                if failed:
                    bar.set_postfix(failed=failed)
            if len(buf) >= FLUSH_ROWS or time.monotonic() - last > FLUSH_SECONDS:
                store.write(buf)
                buf, last = [], time.monotonic()
        store.write(buf)
        if bar is not None:
            bar.close()
    finally:
        if own:
            ex.close()
    if loader is not None:
        # Stopped only after a completed sweep, as run_tune's loader: after a Ctrl-C or an
        # error the daemon thread is left to the process's exit (an interrupt landing in its
        # import machinery can leave the import lock taken; waiting could never end).
        loader.stop()
    report = SweepReport(store.path, len(points), len(points) - len(todo), ran, failed,
                         time.perf_counter() - t0, getattr(ex, "name", "?"),
                         getattr(ex, "workers", 1))
    if sweep.spec.paired:
        report.paired = analyze(sweep, store.path)
    return report


def analyze(sweep: Sweep, path: Path) -> list:
    """The sweep's paired comparisons as DataFrames (also written to ``_paired.csv``)."""
    import pandas as pd

    df = load_results(path)
    if df.empty:
        return []
    tables = [paired_table(df, pr.axis, pr.a, pr.b, pr.metric, pr.confidence, pr.precision)
              for pr in sweep.spec.paired]
    if tables:
        allt = pd.concat(tables, ignore_index=True)
        tmp = path / ".tmp-_paired.csv"
        allt.to_csv(tmp, index=False)
        tmp.replace(path / "_paired.csv")
    return tables


def _progress(total: int, quiet: bool, name: str):
    if quiet or total == 0:
        return None
    from perfsim.progress import progress

    return progress(total, desc=name, unit="sim", smoothing=0.1)
