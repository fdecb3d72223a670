"""Run a tuning: resolve settings into simulation points, evaluate them (seeded, common
random numbers across settings), search (exhaustive grid or optuna), and analyse.

Every setting is a sweep cell of :mod:`perfsim.batch.sweep` (so knob keys, validation and
errors are the sweep's), run ``replications`` times with the seeds ``(seed, workload seed,
r)``: replication *r* of every setting sees the same request stream, which makes the
comparison of two settings a paired one.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from perfsim.batch.stats import mean_ci, paired, t_quantile
from perfsim.batch.sweep import Inputs, Point, parse_sweep, plan_sweep
from perfsim.errors import PerfsimError
from perfsim.tune.spec import EXTRA_METRICS, TuneSpec
from perfsim.workload.run import expected_calls

if TYPE_CHECKING:  # pandas is imported where a table is made: a pool's workers need none
    import pandas as pd


# --------------------------------------------------------------------------- evaluation
def run_metrics(res, metrics: dict) -> dict:
    """The tune's extra metrics from a SimResult: rmap-hold and walker-wait percentiles
    (walker waits over *all* visits, the ones that did not wait counting 0), IPIs, flushes
    and stolen user time per call."""
    # (SimResult.column: the record table's own columns, so a pool worker makes no
    # DataFrame and needs no pandas; the DataFrame's where they would differ)
    holds = np.asarray(res.column("holds", "hold_ns"), float)
    waits = np.asarray(res.column("walker_waits", "wait_ns"), float)
    visits = int(sum(res.run_totals.get("walker_visits", {}).values()))
    if visits > len(waits):
        waits = np.concatenate([waits, np.zeros(visits - len(waits))])
    n = max(1, int(metrics.get("calls", 0)))
    out = {
        "rmap_hold_p50_ns": float(np.percentile(holds, 50)) if len(holds) else 0.0,
        "rmap_hold_p99_ns": float(np.percentile(holds, 99)) if len(holds) else 0.0,
        "walker_wait_p50_ns": float(np.percentile(waits, 50)) if len(waits) else 0.0,
        "walker_wait_p99_ns": float(np.percentile(waits, 99)) if len(waits) else 0.0,
        "ipis_per_call": metrics.get("ipis", 0) / n,
        "flushes_per_call": metrics.get("tlb_flushes", 0) / n,
        "user_stolen_per_call_ns": metrics.get("user_stolen_ns", 0) / n,
    }
    assert set(out) == set(EXTRA_METRICS)
    return out


def evaluate_point(p: Point, caches=None) -> dict:
    """Simulate one point; a failure comes back as a row with ``status = "failed"``.
    ``caches``: a :class:`~perfsim.engine.reuse.RunCaches` shared by one batch's points."""
    from perfsim.workload.run import run_workload

    row = {"key": p.key, "cell": p.index, "replication": p.replication, **p.params}
    t0 = time.perf_counter()
    try:
        res, m, _ = run_workload(p.workload, target=p.target, profile=p.profile,
                                 seed=np.random.SeedSequence(list(p.seed_entropy)),
                                 max_rows=p.max_rows, caches=caches)
        row.update(status="ok", error="", **m, **run_metrics(res, m))
    except Exception as exc:  # noqa: BLE001 - failures are data
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}{where}")
    row["wall_s"] = time.perf_counter() - t0
    return row


def evaluate_batch(points: list[Point]) -> list[dict]:
    """Simulate the points of one task; they share plans and call templates (same rows).
    numpy.random is loaded here, before the first point's ``try``: a Ctrl-C that lands while
    one of its compiled modules initialises can come out as an ImportError, which
    :func:`evaluate_point` would record as a failed run, losing the interrupt (as
    :mod:`perfsim.batch.runner` loads it for a sweep)."""
    import numpy.random  # noqa: F401

    from perfsim.engine.reuse import RunCaches

    caches = RunCaches()
    return [evaluate_point(p, caches) for p in points]


def settings_points(spec: TuneSpec, settings: list[dict]) -> list[Point]:
    """Resolve settings (``{knob: value}``) into points, ``replications`` per setting, via
    the sweep planner (unknown knobs and bad values fail here, naming them). The workload
    file is read once and every workload, target and cost profile is validated once for
    all the settings (:class:`~perfsim.batch.sweep.Inputs`)."""
    base = Path(spec.base_dir) if spec.base_dir else Path.cwd()
    out: list[Point] = []
    inputs = Inputs()
    read: dict = {}
    for i, s in enumerate(settings):
        grid = {k: [v] for k, v in {**spec.set, **s}.items()}
        data = {"name": spec.name, "seed": spec.seed, "replications": spec.replications,
                "max_rows": spec.max_rows,
                "base": {k: v for k, v in (("workload", spec.workload), ("kernel", spec.kernel),
                                           ("arch", spec.arch),
                                           ("cost_profile", spec.cost_profile)) if v},
                "grid": grid}
        sweep = parse_sweep(data, base, f"tune {spec.name!r}", read)
        read.update(sweep.workloads)
        for p in plan_sweep(sweep, inputs):
            out.append(Point(p.key, i, p.replication, dict(s), p.workload, p.target, p.profile,
                             p.seed_entropy, p.max_rows))
    return out


def objective_of(spec: TuneSpec, df) -> np.ndarray:
    """The objective of every run (row) of ``df``: its terms' weighted sum."""
    return objective_of_columns(spec, len(df), lambda col: df[col].to_numpy(float))


def objective_of_columns(spec: TuneSpec, n: int, column) -> np.ndarray:
    """:func:`objective_of` of ``n`` runs whose metric ``col`` is the float array
    ``column(col)`` (a DataFrame's column, or the same values gathered from rows)."""
    val = np.zeros(n)
    for col, w in spec.objective.terms().items():
        val = val + w * column(col)
    return val


# --------------------------------------------------------------------------- results
@dataclass
class TuneResult:
    """What a tuning produced (all DataFrames; see :func:`analyze`)."""

    spec: TuneSpec
    method: str
    runs: pd.DataFrame
    """One row per (setting, replication): knobs, objective, every metric."""
    settings: pd.DataFrame
    """One row per setting: knobs, objective mean and CI, feasibility, metric means."""
    best: pd.DataFrame
    sensitivity: pd.DataFrame
    baseline: dict = field(default_factory=dict)
    wall_s: float = 0.0
    storage: str = ""

    @property
    def knobs(self) -> list[str]:
        return list(self.spec.knobs)


def _setting_label(s: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in s.items()) or "(baseline)"


def _restore(spec: TuneSpec, knob: str, v):
    """A knob value as the spec wrote it (DataFrames turn ints into floats next to NaN)."""
    from perfsim.tune.spec import KnobRange

    k = spec.knobs[knob]
    if isinstance(k, KnobRange):
        return int(round(float(v))) if k.type == "int" else float(v)
    for orig in k:
        try:
            if orig == v or (not isinstance(orig, str) and float(orig) == float(v)):
                return orig
        except (TypeError, ValueError):
            continue
    return v


def analyze(spec: TuneSpec, method: str, runs: pd.DataFrame, confidence: float = 0.95,
            quantile=t_quantile) -> TuneResult:
    """Per-setting objective means with t intervals, feasibility under the constraints, the
    best settings with their paired ratio to the baseline (same seeds), and the sensitivity
    of the objective to each knob (the spread of its marginal means). ``quantile``: where
    the t quantiles come from (:func:`~perfsim.batch.stats.t_quantile`'s values)."""
    import pandas as pd

    knobs = list(spec.knobs)
    ok = runs[runs["status"] == "ok"].copy()
    if ok.empty:
        raise PerfsimError(f"tune {spec.name!r}: every run failed; first error: "
                           f"{runs['error'].iloc[0] if len(runs) else '(no runs)'}")
    ok["objective"] = objective_of(spec, ok)
    sign = 1.0 if spec.objective.direction == "minimize" else -1.0
    rows = []
    base_runs = ok[ok["cell"] == -1]
    for cell, g in ok.groupby("cell", sort=True):
        m, lo, hi = mean_ci(g["objective"], confidence, quantile)
        vals = {k: (None if cell == -1 or k not in g else _restore(spec, k, g[k].iloc[0]))
                for k in knobs}
        r = {"setting": int(cell), **vals,
             "label": "(baseline)" if cell == -1 else _setting_label(vals),
             "n": len(g), "objective": m, "objective_lo": lo, "objective_hi": hi}
        viol = 0.0
        for c in spec.constraints:
            from perfsim.tune.spec import metric_column

            viol = max(viol, c.violation(float(g[metric_column(c.metric)].mean())))
        r["feasible"] = viol <= 0
        for col in sorted(set(spec.objective.terms()) | {"lat_mean_ns", "lat_p99_ns",
                                                          "ipis_per_call",
                                                          "rmap_hold_p99_ns",
                                                          "walker_wait_p99_ns"}):
            r[col] = float(g[col].mean())
        if len(base_runs) and cell != -1:
            a = g.set_index("replication")["objective"]
            b = base_runs.set_index("replication")["objective"]
            reps = a.index.intersection(b.index).sort_values()
            pr = paired(a.loc[reps].to_numpy(), b.loc[reps].to_numpy(), confidence,
                        quantile=quantile, needed=False)  # only the ratio is kept
            r.update(vs_baseline=pr["ratio"], vs_baseline_lo=pr["ratio_lo"],
                     vs_baseline_hi=pr["ratio_hi"])
        else:
            r.update(vs_baseline=1.0 if cell == -1 else math.nan, vs_baseline_lo=math.nan,
                     vs_baseline_hi=math.nan)
        rows.append(r)
    settings = pd.DataFrame(rows)
    for k in knobs:  # keep knob values as written (ints stay ints next to the baseline's None)
        settings[k] = pd.Series([r[k] for r in rows], dtype=object)
    cand = settings[(settings["setting"] >= 0) & settings["feasible"]]
    best = cand.assign(_k=sign * cand["objective"]).sort_values(["_k", "setting"]).drop(
        columns="_k").head(5).reset_index(drop=True)
    best.insert(0, "rank", range(1, len(best) + 1))
    sens = []
    trial = settings[settings["setting"] >= 0]
    overall = float(trial["objective"].mean()) if len(trial) else math.nan
    for k in knobs:
        col = trial[k]
        if isinstance(spec.knobs[k], list) or col.nunique() <= 8:
            grp = trial.groupby(col.astype(str), sort=False)["objective"].mean()
        else:
            bins = pd.qcut(col.astype(float), q=min(5, col.nunique()), duplicates="drop")
            grp = trial.groupby(bins, observed=True)["objective"].mean()
        lo_v, hi_v = grp.idxmin(), grp.idxmax()
        spread = float(grp.max() - grp.min()) if len(grp) else math.nan
        sens.append({"knob": k, "values": len(grp), "min_objective": float(grp.min()),
                     "at": str(lo_v), "max_objective": float(grp.max()), "at_max": str(hi_v),
                     "spread": spread,
                     "spread_rel": spread / abs(overall) if overall else math.nan})
    sensitivity = pd.DataFrame(sens).sort_values("spread", ascending=False,
                                                 ignore_index=True)
    baseline = {}
    if len(base_runs):
        b = settings[settings["setting"] == -1].iloc[0]
        baseline = {"objective": float(b["objective"]), "lo": float(b["objective_lo"]),
                    "hi": float(b["objective_hi"])}
    ok_cols = ["cell", "replication", *knobs, "objective"]
    runs = runs.merge(ok[["cell", "replication", "objective"]], on=["cell", "replication"],
                      how="left") if "objective" not in runs else runs
    del ok_cols
    return TuneResult(spec, method, runs, settings, best, sensitivity, baseline)


def early_plot_numbers(spec: TuneSpec, rows: list[dict], confidence: float = 0.95,
                       quantile=t_quantile) -> tuple[list[tuple[dict, float, float, float]],
                                                      float] | None:
    """What the tuning figure shows, from the search's rows alone (no pandas, no
    :func:`analyze`): for each trial setting with a successful run, in setting order, its
    knob values as :func:`analyze` restores them and its paired ratio to the baseline with
    the ratio's CI (``vs_baseline``, ``_lo``, ``_hi``; NaN without baseline runs); and the
    baseline's objective mean (NaN without). The same functions on the same values in the
    same order as :func:`analyze` (:func:`objective_of_columns`, ``paired``, ``mean_ci``), so
    the figure can be drawn while pandas and the analysis are still to come;
    :meth:`perfsim.report.figure_process.FigureProcess.draw` uses such a drawing only if the
    figure of the analysis turns out equal. None when no run succeeded."""
    ok = sorted((r for r in rows if r["status"] == "ok"),
                key=lambda r: (r["cell"], r["replication"]))
    if not ok:
        return None
    obj = objective_of_columns(spec, len(ok),
                               lambda col: np.array([r[col] for r in ok], float))
    by_cell: dict[int, list[tuple[dict, float]]] = {}
    for r, o in zip(ok, obj, strict=True):
        by_cell.setdefault(int(r["cell"]), []).append((r, o))
    base = {r["replication"]: o for r, o in by_cell.get(-1, [])}
    base_mean = (mean_ci(np.array([o for _, o in by_cell[-1]]), confidence, quantile)[0]
                 if base else math.nan)
    out = []
    for cell in sorted(c for c in by_cell if c >= 0):
        got = by_cell[cell]
        first = got[0][0]
        vals = {k: (_restore(spec, k, first[k]) if k in first else None) for k in spec.knobs}
        if base:
            a = {r["replication"]: o for r, o in got}
            reps = sorted(set(a) & set(base))
            pr = paired(np.array([a[x] for x in reps]), np.array([base[x] for x in reps]),
                        confidence, quantile=quantile, needed=False)
            out.append((vals, pr["ratio"], pr["ratio_lo"], pr["ratio_hi"]))
        else:
            out.append((vals, math.nan, math.nan, math.nan))
    return out, base_mean


# --------------------------------------------------------------------------- search
def _progress(total: int, quiet: bool, desc: str):
    if quiet or total == 0:
        return None
    from perfsim.progress import progress

    return progress(total, desc=desc, unit="sim")


def simulation_key(p: Point) -> tuple:
    """Everything a point's simulation is computed from (``run_workload``'s inputs): the
    workload, target and cost profile by content digest, the seed and the row limit. Two
    points with equal keys simulate the same thing and get the same metrics; the setting
    that produced them (``params``, ``cell``, ``key``) is not part of it."""
    return (p.workload.digest, p.target.digest, p.profile.digest, tuple(p.seed_entropy),
            p.max_rows)


def simulation_keys(points: list[Point]) -> list[tuple]:
    """:func:`simulation_key` of every point, each distinct workload, target and cost
    profile object's digest computed once (a workload's digest hashes its whole model, a
    third of a millisecond; a tuning's points share a few such objects)."""
    digests: dict[int, tuple] = {}  # id -> (object, digest); the object keeps its id unique

    def digest(obj) -> str:
        got = digests.get(id(obj))
        if got is None:
            got = digests[id(obj)] = (obj, obj.digest)
        return got[1]

    return [(digest(p.workload), digest(p.target), digest(p.profile), tuple(p.seed_entropy),
             p.max_rows) for p in points]


_SETTING_FIELDS = ("key", "cell", "replication")


def _relabel(row: dict, p: Point) -> dict:
    """``row`` (the result of a point with the same :func:`simulation_key`) as ``p``'s row."""
    out = {k: v for k, v in row.items() if k not in _SETTING_FIELDS and k not in row["_params"]}
    del out["_params"]
    return {"key": p.key, "cell": p.index, "replication": p.replication, **p.params, **out}


MAX_CHUNK = 16
"""At most this many simulations per task (progress and a failure's reach stay small)."""


def chunk_points(points: list[Point], workers: int) -> list[list[Point]]:
    """``points`` in consecutive tasks: a multiple of ``workers`` tasks of at most
    :data:`MAX_CHUNK` points, their sizes differing by at most one. A task's points share
    plans and call templates (one :class:`~perfsim.engine.reuse.RunCaches`), so few large
    tasks do less work than many small ones; equal sizes finish together. Which task a point
    is in changes nothing in its row."""
    n = len(points)
    if n == 0:
        return []
    w = max(1, int(workers))
    tasks = min(n, w * math.ceil(n / (w * MAX_CHUNK)))
    q, r = divmod(n, tasks)
    out, i = [], 0
    for t in range(tasks):
        k = q + (t < r)
        out.append(points[i:i + k])
        i += k
    return out


def _run_points(points: list[Point], executor, bar, done: dict | None = None) -> list[dict]:
    """Rows of ``points`` (in no particular order). Points that simulate the same thing
    (:func:`simulation_key`: a setting equal to the baseline, optuna asking for a setting
    again) are simulated once; ``done`` carries results between calls of one tuning."""
    done = {} if done is None else done
    keys = simulation_keys(points)
    todo: dict[tuple, Point] = {}
    for p, k in zip(points, keys, strict=True):
        if k not in done and k not in todo:
            todo[k] = p
    fresh = list(todo.values())
    chunks = chunk_points(fresh, getattr(executor, "workers", 1))
    by_key = {p.key: (k, p) for k, p in todo.items()}
    for res in executor.map_unordered(evaluate_batch, chunks):
        for r in res:
            k, p = by_key[r["key"]]
            done[k] = {**r, "_params": dict(p.params)}
        if bar is not None:
            bar.update(len(res))
    rows = []
    for p, k in zip(points, keys, strict=True):
        first = todo.get(k) is p
        row = _relabel(done[k], p)
        if not first:
            row["wall_s"] = 0.0  # not simulated again
        rows.append(row)
    if bar is not None and len(points) > len(fresh):
        bar.update(len(points) - len(fresh))
    return rows


def grid_settings(spec: TuneSpec) -> list[dict]:
    import itertools

    keys = list(spec.knobs)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(spec.knobs[k] for k in keys))]


POOL_MIN_CALLS = {"fork": 200, "forkserver": 4_000}
"""A tuning run on ``process[:N]`` starts its pool only when its simulations make at least
this many calls in all (by the pool's start method, :func:`~perfsim.batch.executors.
pick_start_method`); below, it runs them in this process. Starting a ``fork`` pool and
feeding it costs about what 100 simulated calls do (0.6 ms each on ``ipi_storm``,
2026-12-01), a ``forkserver`` pool (a fresh interpreter importing perfsim and pandas) what
1,000-2,000 do; a pool of two halves the rest. The rows are the same either way."""

WORKER_IMPORTS = ("numpy.random", "numpy.ma", "perfsim.engine.reuse", "perfsim.engine.pricing",
                  "perfsim.engine.plan_cache")
"""What a task's simulations import on first use, imported before the pool starts: a fork
pool's workers then start with them instead of each importing them (numpy.random and
numpy.ma about 0.02 CPU-s, the engine modules 0.03)."""

PREFETCH = ("scipy.special",)
"""What the analysis imports for t quantiles :mod:`~perfsim.batch.t_table` does not hold
(:func:`analysis_needs_scipy`), imported in a thread while a pool simulates."""


def analysis_needs_scipy(spec: TuneSpec, confidence: float = 0.95) -> bool:
    """Whether :func:`analyze` may ask :func:`~perfsim.batch.stats.t_quantile` for a value
    the table does not hold: its intervals have at most ``replications - 1`` degrees of
    freedom (one setting's runs; the paired ratios' replications in both)."""
    from perfsim.batch.t_table import covers

    return not covers(0.5 + confidence / 2, spec.replications - 1)


def tune_work(spec: TuneSpec, points: list[Point], trials: int | None = None
              ) -> tuple[int, int | None]:
    """The simulations a tuning will run and the calls they make in all (None when a stream
    has no ``count``): the distinct simulations of ``points`` for a grid; for optuna the
    baseline's plus ``trials`` (default ``search.trials``) × ``replications``, each making
    as many calls as the baseline's."""
    fresh = dict(zip(simulation_keys(points), points, strict=True))
    sims = len(fresh)
    per = [expected_calls(p.workload) for p in fresh.values()]
    if spec.method() == "optuna":
        extra = (spec.search.trials if trials is None else trials) * spec.replications
        sims += extra
        per += per[:1] * extra
    return sims, (None if any(c is None for c in per) else sum(per))


def pool_worth_starting(sims: int, calls: int | None, workers: int, start_method: str) -> bool:
    """Whether ``sims`` simulations making ``calls`` calls (None: unknown) are worth a pool of
    ``workers`` started with ``start_method`` (:data:`POOL_MIN_CALLS`)."""
    if workers < 2 or sims < 2:
        return False
    return calls is None or calls >= POOL_MIN_CALLS[start_method]


def tune_executor(executor, spec: TuneSpec, points: list[Point], trials: int | None = None):
    """The executor a tuning runs on when given an ``--executor`` string: a process pool
    only when :func:`pool_worth_starting` says so for :func:`tune_work`, otherwise this
    process (the same rows)."""
    from perfsim.batch.executors import (
        SerialExecutor,
        cpu_count,
        make_executor,
        parse_executor,
        pick_start_method,
    )

    kind, arg = parse_executor(executor)
    if kind == "process":
        sims, calls = tune_work(spec, points, trials)
        if not pool_worth_starting(sims, calls, arg or cpu_count(), pick_start_method()):
            return SerialExecutor()
    return make_executor(executor)


def run_tune(spec: TuneSpec, *, executor=None, quiet: bool = False,
             state_dir: str | Path | None = None, trials: int | None = None,
             prefetch: tuple[str, ...] = (), quantile=None, on_rows=None) -> TuneResult:
    """Run a tuning and analyse it. ``executor``: an executor object or ``--executor``
    string (default: a process pool on all cores, or this process for a small tuning, see
    :func:`tune_executor`). ``state_dir``: where optuna keeps its SQLite storage
    (``<state_dir>/<name>-<digest>.db``); rerunning resumes it. ``prefetch``: modules the
    caller needs next (e.g. the report writer's), imported with :data:`PREFETCH` in a thread
    while a pool simulates, in that order, until the search is done (the rest is left to
    the code that needs it: list them in the order they are needed). ``quantile``: where
    the analysis's t quantiles come from (the values of
    :func:`~perfsim.batch.stats.t_quantile`, e.g. computed by a process that has scipy
    imported already: then :data:`PREFETCH` is not imported here). ``on_rows``: called
    with the search's rows (dicts) the moment the last one is in, before the pool is shut
    down and the imports stopped, e.g. to start drawing the figure
    (:func:`early_plot_numbers`) while pandas and the analysis are still to come."""
    from perfsim.batch.executors import parse_executor, paused_gc, prefetch_imports

    t0 = time.perf_counter()
    method = spec.method()
    own = not hasattr(executor, "map_unordered")
    if own:
        parse_executor(executor)  # a bad --executor fails before anything is resolved
    with paused_gc():  # resolving the points imports and validates; nothing is garbage
        # Validate every knob value before running anything (clear errors up front).
        base_pts = settings_points(spec, [{}])
        for p in base_pts:
            object.__setattr__(p, "index", -1)
        pts: list[Point] = []
        if method == "grid":
            settings = grid_settings(spec)
            pts = settings_points(spec, settings)
        import importlib

        for m in WORKER_IMPORTS:
            importlib.import_module(m)
        ex = tune_executor(executor, spec, base_pts + pts, trials) if own else executor
    loader = None
    try:
        if getattr(ex, "workers", 1) > 1:  # the pool's workers exist: a thread is safe now
            scipy = quantile is None and analysis_needs_scipy(spec)
            loader = prefetch_imports((PREFETCH if scipy else ()) + tuple(prefetch))
        if method == "grid":
            bar = _progress(len(pts) + len(base_pts), quiet, f"tune {spec.name}")
            rows = _run_points(base_pts + pts, ex, bar)
            if bar is not None:
                bar.close()
            storage = ""
        else:
            rows, storage = _run_optuna(spec, ex, base_pts, quiet, state_dir, trials)
        if on_rows is not None:
            on_rows(rows)
    finally:
        if own:
            ex.close()
    if loader is not None:
        # Stopped only once the search is done: when it stops early (Ctrl-C, an error), the
        # daemon thread is left to the process's exit. A KeyboardInterrupt can land inside
        # this thread's own import machinery while the loader imports (e.g. pandas), leaving
        # the interpreter's import lock taken, and the loader would then never end. Stopped
        # rather than waited for: what it has not imported yet (the last of ``prefetch``:
        # the report's writers) is imported by the code that needs it, after the analysis.
        loader.stop()
    import pandas as pd

    runs = pd.DataFrame(rows).sort_values(["cell", "replication"], ignore_index=True)
    res = analyze(spec, method, runs, quantile=quantile or t_quantile)
    res.wall_s = time.perf_counter() - t0
    res.storage = storage
    return res


def _run_optuna(spec: TuneSpec, ex, base_pts, quiet, state_dir, trials_override):
    try:
        import optuna
    except ImportError:
        raise PerfsimError("this tuning needs optuna (a knob is a range, or the grid is larger "
                           f"than search.max_grid = {spec.search.max_grid}): "
                           "pip install 'perfsim[tune]'") from None
    import pandas as pd

    from perfsim.tune.spec import KnobRange, metric_column

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sd = Path(state_dir or ".perfsim-tune")
    sd.mkdir(parents=True, exist_ok=True)
    db = sd / f"{spec.name}-{spec.digest}.db"
    storage = f"sqlite:///{db.resolve()}"

    def constraints(trial):
        return trial.user_attrs.get("constraint", [0.0])

    new_api = hasattr(optuna.trial.Trial, "set_constraint")  # optuna >= 5
    kw = {} if new_api else {"constraints_func": constraints}
    sampler = optuna.samplers.TPESampler(seed=spec.seed,
                                         n_startup_trials=min(10, max(2, spec.search.trials // 3)),
                                         **kw)
    direction = spec.objective.direction
    study = optuna.create_study(study_name=f"{spec.name}-{spec.digest}", storage=storage,
                                sampler=sampler, direction=direction, load_if_exists=True)
    total = spec.search.trials if trials_override is None else trials_override
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows: list[dict] = []
    for t in done:
        rows.extend(t.user_attrs.get("rows", []))
    bar = _progress((max(0, total - len(done))) * spec.replications + len(base_pts), quiet,
                    f"tune {spec.name} (optuna)")
    done_runs: dict = {}
    rows.extend(_run_points(base_pts, ex, bar, done_runs))
    n = len(done)
    while n < total:
        k = min(spec.search.batch, total - n)
        asked = [study.ask() for _ in range(k)]
        settings = []
        for tr in asked:
            s = {}
            for name, knob in spec.knobs.items():
                if isinstance(knob, KnobRange):
                    if knob.type == "int":
                        s[name] = tr.suggest_int(name, int(knob.min), int(knob.max), log=knob.log)
                    else:
                        s[name] = tr.suggest_float(name, knob.min, knob.max, log=knob.log)
                else:
                    s[name] = tr.suggest_categorical(name, list(knob))
            settings.append(s)
        pts = settings_points(spec, settings)
        for p in pts:  # the setting's index is its trial number
            object.__setattr__(p, "index", asked[p.index].number)
        got = _run_points(pts, ex, bar, done_runs)
        by_trial: dict[int, list[dict]] = {}
        for r in got:
            by_trial.setdefault(r["cell"], []).append(r)
        for tr in asked:
            trows = sorted(by_trial.get(tr.number, []), key=lambda r: r["replication"])
            okr = [r for r in trows if r["status"] == "ok"]
            clean = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                     for r in trows]
            tr.set_user_attr("rows", clean)
            if not okr:
                study.tell(tr, state=optuna.trial.TrialState.FAIL)
                rows.extend(clean)
                continue
            df = pd.DataFrame(okr)
            obj = float(objective_of(spec, df).mean())
            viol = [c.violation(float(df[metric_column(c.metric)].mean()))
                    for c in spec.constraints] or [0.0]
            tr.set_user_attr("constraint", viol)
            if new_api:
                for ci, v in enumerate(viol):
                    tr.set_constraint(f"c{ci}", float(v))
            study.tell(tr, obj)
            rows.extend(clean)
        n += k
    if bar is not None:
        bar.close()
    return rows, str(db)
