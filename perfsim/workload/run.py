"""Run one workload once: compile it, simulate it with the engine, summarise the records.

:func:`summarize` turns the engine's tables into one flat dict of metrics with a fixed set of
keys and types (:data:`METRICS`), which is what the batch layer stores per run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfsim.cost import CATEGORIES, load_cost_profile
from perfsim.errors import PerfsimError
from perfsim.profiles import resolve_target
from perfsim.shipped import data_dir
from perfsim.workload.generate import compile_workload
from perfsim.workload.schema import Workload, load_workload

WORKLOAD_DIR = data_dir("workloads")
"""The shipped workloads: the checkout's ``workloads/``, or their installed copy."""
"""The shipped named workloads (``workloads/*.toml`` at the top of the source tree)."""

# name -> numpy dtype kind ("i" int64, "f" float64)
METRICS: dict[str, str] = {
    "calls": "i", "errors": "i", "realigned_calls": "i",
    "lat_mean_ns": "f", "lat_p50_ns": "f", "lat_p90_ns": "f", "lat_p99_ns": "f",
    "lat_max_ns": "i", "lat_total_ns": "i",
    "mmap_lock_wait_mean_ns": "f", "rmap_wait_mean_ns": "f", "rmap_wait_max_ns": "i",
    "ptl_wait_mean_ns": "f",
    "ptes_moved": "i", "pmd_moves": "i", "pud_moves": "i", "thp_moves": "i",
    "tlb_flushes": "i", "ipis": "i", "rmap_holds": "i",
    "sim_end_ns": "i", "calls_per_sim_s": "f", "events": "i",
    "walker_visits": "i", "walker_waits": "i", "walker_wait_mean_ns": "f",
    "walker_wait_max_ns": "i", "user_stolen_ns": "i", "user_interrupts": "i",
    **{f"cost_{c}_ns": "i" for c in CATEGORIES},
}


def workload_names() -> list[str]:
    """Names of the shipped workloads."""
    if not WORKLOAD_DIR.is_dir():
        return []
    return sorted(p.stem for p in WORKLOAD_DIR.glob("*.toml"))


def resolve_workload(name_or_path: str | Path, base: Path | None = None) -> Path:
    """A workload file by path (absolute, or relative to ``base`` or the working directory)
    or by shipped name (``allocator_realloc``)."""
    p = Path(name_or_path)
    for cand in ([base / p] if base is not None else []) + [p]:
        if cand.suffix == ".toml" and cand.is_file():
            return cand.resolve()
    named = WORKLOAD_DIR / f"{name_or_path}.toml"
    if named.is_file():
        return named
    raise PerfsimError(f"unknown workload {str(name_or_path)!r}; shipped names: "
                       f"{', '.join(workload_names())} (or a path to a .toml file)")


class Tally:
    """Wraps a plan iterator, counting what the engine's records do not carry."""

    def __init__(self):
        self.realigned = 0

    def wrap(self, it):
        for plan in it:
            if getattr(plan, "realigned", False):
                self.realigned += 1
            yield plan


#: The integer columns of the calls table that :func:`summarize` reduces.
_CALL_INT_COLUMNS = ("latency_ns", "mmap_lock_wait_ns", "rmap_wait_ns", "ptl_wait_ns",
                     "ptes_moved", "pmd_moves", "pud_moves", "thp_moves", "tlb_flushes", "ipis",
                     "rmap_holds", *(f"cost_{c}_ns" for c in CATEGORIES))


def _int_columns(frame, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``{name: frame[name].to_numpy()}`` of those of ``names`` the frame has, read as one
    2-D block when they are all int64 (one pandas selection instead of one per column);
    empty when they are not (each column is then read on its own)."""
    have = [k for k in names if k in frame.columns]
    sub = frame.reindex(columns=have)
    if not all(dt == np.int64 for dt in sub.dtypes):
        return {}
    rows = np.ascontiguousarray(sub.to_numpy().T)  # one contiguous row per column
    return dict(zip(have, rows, strict=True))


def _mean(a: np.ndarray) -> float:
    """``pandas.Series(a).mean()``, as pandas computes it (``nanops.nanmean``): the sum in
    float64 (of a float column, NaNs read as 0 and not counted) over the count, in float64;
    NaN when nothing is counted."""
    if a.dtype.kind == "f":
        keep = ~np.isnan(a)
        count = np.float64(np.count_nonzero(keep))
        the_sum = np.where(keep, a, 0).sum(dtype=np.float64 if a.dtype == np.float16 else a.dtype)
    else:
        count = np.float64(len(a))
        the_sum = a.sum(dtype=np.float64)
    return float(the_sum / count) if count > 0 else float("nan")


def _sum(a: np.ndarray) -> int:
    """``int(pandas.Series(a).sum())`` (NaNs read as 0)."""
    if a.dtype.kind == "f":
        a = np.where(np.isnan(a), 0, a)
    return int(a.sum())


def _max(a: np.ndarray) -> int:
    """``int(pandas.Series(a).max())`` of a non-empty column."""
    if a.dtype.kind == "f":
        return int(np.nanmax(a))
    return int(a.max())


def summarize(res, realigned: int = 0) -> dict:
    """One flat dict of :data:`METRICS` from a :class:`~perfsim.engine.SimResult`.

    Each column is read once as a numpy array and reduced as pandas reduces a column
    (:func:`_mean`, :func:`_sum`, :func:`_max`): the same values, without a Series per
    figure (``tests/test_t13b_pop_paths.py`` holds them to pandas'). The tables are read
    as numpy columns (:meth:`~perfsim.engine.SimResult.columns`) when no DataFrame of them
    was made, and the run's figures from its ``run_totals`` (no table summaries); the
    DataFrames are made only when that cannot be done (``res.calls`` and the others are
    still built on first access, as before)."""
    raw = res.columns("calls")
    if raw is not None:
        n = len(raw["latency_ns"]) if raw else 0
        cols = raw
        c_has = set(raw) if raw else set()
    else:
        c = res.calls
        n = len(c)
        cols = _int_columns(c, _CALL_INT_COLUMNS) if n else {}
        c_has = set(c.columns)

    def col(name: str) -> np.ndarray:
        got = cols.get(name)
        return got if got is not None else c[name].to_numpy()

    lat = col("latency_ns").astype(np.int64, copy=False) if n else np.zeros(0, np.int64)
    p50, p90, p99 = (np.percentile(lat, (50, 90, 99)).tolist() if n
                     else (float("nan"),) * 3)
    w_wait = res.column("walker_waits", "wait_ns")
    n_w = len(w_wait)
    u_stolen = res.column("users", "stolen_ns")
    n_u = len(u_stolen)
    totals = res.run_totals
    end = int(totals.get("end_ns", 0))
    rmap_wait = col("rmap_wait_ns") if n else None
    out = {
        "calls": n,
        "errors": int(np.count_nonzero(col("errno") != "")) if n else 0,
        "realigned_calls": int(realigned),
        "lat_mean_ns": _mean(lat) if n else float("nan"),
        "lat_p50_ns": p50, "lat_p90_ns": p90, "lat_p99_ns": p99,
        "lat_max_ns": int(lat.max()) if n else 0,
        "lat_total_ns": int(lat.sum()),
        "mmap_lock_wait_mean_ns": _mean(col("mmap_lock_wait_ns")) if n else float("nan"),
        "rmap_wait_mean_ns": _mean(rmap_wait) if n else float("nan"),
        "rmap_wait_max_ns": _max(rmap_wait) if n else 0,
        "ptl_wait_mean_ns": _mean(col("ptl_wait_ns")) if n else float("nan"),
        "sim_end_ns": end,
        "calls_per_sim_s": n / (end / 1e9) if end else float("nan"),
        "events": int(totals.get("events", 0)),
        "walker_visits": int(sum(totals.get("walker_visits", {}).values())),
        "walker_waits": n_w,
        "walker_wait_mean_ns": _mean(w_wait) if n_w else 0.0,
        "walker_wait_max_ns": _max(w_wait) if n_w else 0,
        "user_stolen_ns": _sum(u_stolen) if n_u else 0,
        "user_interrupts": _sum(res.column("users", "interrupts")) if n_u else 0,
    }
    for k in ("ptes_moved", "pmd_moves", "pud_moves", "thp_moves", "tlb_flushes", "ipis",
              "rmap_holds"):
        out[k] = _sum(col(k)) if n else 0
    for cat in CATEGORIES:
        name = f"cost_{cat}_ns"
        out[name] = _sum(col(name)) if n and name in c_has else 0
    assert set(out) == set(METRICS), set(out) ^ set(METRICS)
    return out


def expected_calls(w: Workload) -> int | None:
    """Calls a run of ``w`` makes when every stream has a ``count`` (else None)."""
    counts = [getattr(s, "count", None) for s in w.streams]
    return sum(counts) if all(c is not None for c in counts) else None


def run_workload(workload: Workload | str | Path, *, target=None, profile=None, seed=None,
                 max_rows: int = 1_000_000, progress: bool = False, caches=None):
    """Simulate a workload once. ``target``/``profile`` default to the workload's own
    ``kernel``/``arch``/``cost_profile``; ``seed`` (int >= 0 or SeedSequence) to its
    ``seed``. ``progress=True`` reports progress on stderr (a bar on a terminal, a line
    every few seconds in a log; off by default). ``caches``: a
    :class:`~perfsim.engine.reuse.RunCaches` shared with other runs of a batch (same
    results). Returns ``(SimResult, metrics dict, notes)``."""
    from perfsim.engine import simulate
    from perfsim.engine.simulate import check_seed

    if seed is not None and not isinstance(seed, np.random.SeedSequence):
        seed = check_seed(seed)
    w = workload if isinstance(workload, Workload) else load_workload(resolve_workload(workload))
    target = target or resolve_target(w.kernel, w.arch)
    profile = load_cost_profile(profile or w.cost_profile)
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(
        w.seed if seed is None else int(seed))
    tally = Tally()
    comp = compile_workload(w, target, profile, root, wrap_plans=tally.wrap)
    res = simulate(comp.spec, max_rows=max_rows, progress=progress, progress_calls=expected_calls(w),
                   caches=caches)
    return res, summarize(res, tally.realigned), comp.notes
