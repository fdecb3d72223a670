"""Run a study: every simulation it needs, as picklable tasks on one executor.

Three kinds of task, all pure functions of their arguments (same study, same numbers, on any
executor and any number of workers):

* :class:`GridTask` — the single-call grid of one (kernel, class, backing, THP): each size is
  planned once, then priced by the cost model's closed form for every cost profile and thread
  count (the engine equals the closed form exactly when nothing contends; tests/test_engine.py
  holds it to that), plus ``replications`` seeded jitter draws. Replication *r* of every cell
  draws from ``SeedSequence([seed, r])``: common random numbers, so the two arms of a paired
  ratio share their draws.
* :class:`ContentionTask` — one engine run: a caller moving a region back and forth while an
  rmap walker read-locks the region's rmap lock and the mm's other threads run user work.
* :class:`WorkloadTask` — one run of a workload scenario on one kernel arm; replication *r*
  of both arms is seeded ``(seed, workload seed, r)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from perfsim.cost import load_cost_profile, row_costs
from perfsim.cost.model import total_ns_draws
from perfsim.report.shapes import SHAPES, plan_call, space_for, target_for
from perfsim.report.study import Study

COUNTERS = ("pud_moves", "pmd_moves", "thp_moves", "thp_splits", "ptes_moved",
            "move_ptes_calls", "tlb_flushes", "tlb_full_flushes", "rmap_holds")


@dataclass(frozen=True)
class GridTask:
    kernel: str
    arch: str
    cls: str
    backing: str
    thp: bool
    populate: str
    sizes: tuple[int, ...]
    profiles: tuple[str, ...]
    threads: tuple[int, ...]
    replications: int
    seed: int


@dataclass(frozen=True)
class ContentionTask:
    arm: str
    kernel: str
    arch: str
    profile: str
    cls: str
    backing: str
    size: int
    calls: int
    interval_ns: int
    threads: int
    walker_interval_ns: int
    walker_hold_ns: int
    walker_hold_sigma: float
    replication: int
    seed: int


@dataclass(frozen=True)
class WorkloadTask:
    workload: str
    kernel: str
    replication: int
    seed: int
    max_rows: int


class TaskInputs:
    """The workloads and cost profiles tasks name, each loaded once for a chunk of tasks.
    Both are immutable models and pure functions of their name, so a task gets the same
    object it would load itself (a workload task loaded its file, and the engine the cost
    profile the workload names, once per task: 3-8 ms each)."""

    def __init__(self) -> None:
        self._workloads: dict = {}
        self._profiles: dict = {}

    def workload(self, name: str):
        if name not in self._workloads:
            from perfsim.workload import load_workload, resolve_workload

            self._workloads[name] = load_workload(resolve_workload(name))
        return self._workloads[name]

    def profile(self, name: str):
        if name not in self._profiles:
            self._profiles[name] = load_cost_profile(name)
        return self._profiles[name]


def run_task(item: tuple[int, object], caches=None, inputs: TaskInputs | None = None
             ) -> tuple[int, dict]:
    """One task's tables. ``caches``: a :class:`~perfsim.engine.reuse.RunCaches` shared by
    the simulations of one chunk (same tables); ``inputs``: a :class:`TaskInputs` shared
    by them too."""
    i, task = item
    inputs = inputs or TaskInputs()
    if isinstance(task, GridTask):
        return i, _grid(task, inputs)
    if isinstance(task, ContentionTask):
        return i, _contention(task, caches, inputs)
    return i, _workload(task, caches, inputs)


def run_tasks(items: list[tuple[int, object]]) -> list[tuple[int, dict]]:
    from perfsim.engine.reuse import RunCaches

    caches, inputs = RunCaches(), TaskInputs()
    return [run_task(x, caches, inputs) for x in items]


# --------------------------------------------------------------------------- grid
def _grid(t: GridTask, inputs: TaskInputs | None = None) -> dict:
    inputs = inputs or TaskInputs()
    target = target_for(t.kernel, t.arch)
    profiles = [inputs.profile(p) for p in t.profiles]
    rows, reps = [], []
    for size in t.sizes:
        plan = plan_call(target, t.cls, size, backing=t.backing, thp=t.thp,
                         populate=t.populate)
        m, sc = plan.move, plan.syscall
        base = {"kernel": t.kernel, "class": t.cls, "size": size, "backing": t.backing,
                "thp": t.thp, "errno": plan.errno or "", "realigned": bool(plan.realigned),
                **{c: int(getattr(m, c)) for c in COUNTERS},
                "tables_allocated": int(sum(m.tables_allocated.values())),
                "syscall_tlb_flushes": int(sc.tlb_flushes),
                "syscall_tables_freed": int(sc.tables_freed), "steps": len(plan.steps)}
        for prof in profiles:
            for k in t.threads:
                rc = row_costs(plan, prof, cpus=k)
                lat = int(rc.total.sum())
                row = {**base, "cost_profile": prof.name, "threads": k, "latency_ns": lat,
                       "ipis": int(rc.ipis.sum()),
                       "stolen_ns": int((rc.stolen * rc.ipis).sum()),
                       **{f"cost_{c}_ns": int(v) for c, v in rc.category_sums().items()}}
                if prof.is_fixed:
                    draws = np.full(t.replications, lat, np.int64)
                else:
                    draws = total_ns_draws(plan, prof, (
                        np.random.default_rng(np.random.SeedSequence([t.seed, r]))
                        for r in range(t.replications)), cpus=k)
                row.update(lat_mean_ns=float(draws.mean()), lat_sd_ns=float(draws.std(ddof=1))
                           if len(draws) > 1 else 0.0)
                rows.append(row)
                for r, v in enumerate(draws.tolist()):
                    reps.append((t.kernel, prof.name, t.cls, size, t.backing, t.thp, k, r, v))
    rep_cols = ["kernel", "cost_profile", "class", "size", "backing", "thp", "threads",
                "replication", "latency_ns"]
    return {"calls": pd.DataFrame(rows), "reps": pd.DataFrame(reps, columns=rep_cols)}


# --------------------------------------------------------------------------- contention
def contention_spec(t: ContentionTask, inputs: TaskInputs | None = None):
    """The engine input of one contention run (public so tests and users can rerun it)."""
    from perfsim.engine import CallerSpec, MmSpec, SimSpec, UserSpec, WalkerSpec
    from perfsim.report.shapes import request_for

    target = target_for(t.kernel, t.arch)
    prof = (inputs or TaskInputs()).profile(t.profile)
    sp = space_for(target, t.cls, t.size, backing=t.backing, cpus=t.threads)
    src, dst, _ = SHAPES[t.cls]
    fwd = request_for(t.cls, t.size)
    back = type(fwd)(dst, t.size, new_addr=src)
    lock = _rmap_lock(sp, t.backing)
    mm = MmSpec("app", tuple(range(t.threads)), sp)
    caller = CallerSpec("mover", "app", 0, plans=[fwd, back], repeat=t.calls // 2,
                        interval_ns=t.interval_ns)
    walker = WalkerSpec("reclaim", lock, t.threads, interval_ns=t.walker_interval_ns,
                        hold_ns=t.walker_hold_ns, hold_sigma=t.walker_hold_sigma)
    users = tuple(UserSpec(f"user{i}", "app", i) for i in range(1, t.threads))
    return SimSpec(cpus=t.threads + 1, target=target, profile=prof, mms=(mm,),
                   callers=(caller,), walkers=(walker,), users=users,
                   seed=int(np.random.SeedSequence([t.seed, t.replication]).generate_state(1)[0]),
                   meta={"arm": t.arm})


def _rmap_lock(space, backing: str) -> str:
    v = next(v for v in space.vmas if v.name == "src")
    return f"anon_vma:{v.anon_id}" if backing == "anon" else f"i_mmap:{v.file_id}"


def _contention(t: ContentionTask, caches=None, inputs: TaskInputs | None = None) -> dict:
    from perfsim.engine import simulate

    res = simulate(contention_spec(t, inputs), record_zero_waits=True, caches=caches)
    key = {"arm": t.arm, "kernel": t.kernel, "class": t.cls, "backing": t.backing,
           "threads": t.threads, "cost_profile": t.profile, "replication": t.replication}
    c = res.calls[["latency_ns", "rmap_wait_ns", "tlb_flushes", "ipis", "rmap_holds",
                   "pmd_moves", "ptes_moved"]].assign(**key)
    h = res.holds[["hold_ns", "wait_ns"]].assign(**key)
    w = res.walker_waits[["wait_ns", "hold_ns"]].assign(**key)
    return {"ccalls": c, "holds": h, "walkers": w}


# --------------------------------------------------------------------------- workloads
def _workload(t: WorkloadTask, caches=None, inputs: TaskInputs | None = None) -> dict:
    from perfsim.workload import run_workload

    inputs = inputs or TaskInputs()
    w = inputs.workload(t.workload)
    target = target_for(t.kernel, w.arch)
    t0 = time.perf_counter()
    res, metrics, notes = run_workload(w, target=target, profile=inputs.profile(w.cost_profile),
                                       seed=np.random.SeedSequence([t.seed, w.seed,
                                                                    t.replication]),
                                       max_rows=t.max_rows, caches=caches)
    key = {"workload": w.name, "kernel": t.kernel, "replication": t.replication}
    calls = res.calls[["latency_ns"]].assign(**key)
    run = {**key, "workload_digest": w.digest, "wall_s": time.perf_counter() - t0, **metrics}
    return {"wcalls": calls, "wruns": pd.DataFrame([run])}


# --------------------------------------------------------------------------- the study
@dataclass
class StudyResults:
    """Every table a report is built from (raw data; the report's tables derive from it)."""

    study: Study
    calls: pd.DataFrame
    reps: pd.DataFrame
    contention_calls: pd.DataFrame
    holds: pd.DataFrame
    walkers: pd.DataFrame
    workload_calls: pd.DataFrame
    workload_runs: pd.DataFrame
    tunes: list = field(default_factory=list)
    wall_s: float = 0.0
    executor: str = ""
    workers: int = 1


def plan_tasks(study: Study) -> list:
    """Every simulation of the study (pure)."""
    from perfsim.workload import workload_names

    s = study
    tasks: list = []
    sizes = tuple(s.calls.size_values())
    for kernel in s.kernels:
        for cls in s.calls.classes:
            for backing in s.calls.backings:
                for thp in s.calls.thp:
                    tasks.append(GridTask(kernel, s.arch, cls, backing, thp, s.calls.populate,
                                          sizes, tuple(s.cost_profiles),
                                          tuple(s.calls.threads), s.calls.replications,
                                          s.seed))
    c = s.contention
    if c.enabled:
        from perfsim.units import parse_size

        size = parse_size(c.size)
        arms = []
        for cls in c.classes:
            for kernel in s.kernels:
                arms.append((f"{cls} · {kernel}", kernel, cls))
        for arm, kernel, cls in arms:
            for prof in s.cost_profiles:
                for th in c.threads:
                    for r in range(c.replications):
                        tasks.append(ContentionTask(arm, kernel, s.arch, prof, cls, c.backing,
                                                    size, c.calls, c.interval_ns, th,
                                                    c.walker_interval_ns, c.walker_hold_ns,
                                                    c.walker_hold_sigma, r, s.seed))
    if s.workloads.enabled:
        names = s.workloads.names or workload_names()
        for name in names:
            for r in range(s.workloads.replications):
                for kernel in s.kernels:
                    tasks.append(WorkloadTask(name, kernel, r, s.seed, s.workloads.max_rows))
    return tasks


REPORT_IMPORTS = ("scipy.special", "matplotlib.figure", "matplotlib.backends.backend_agg",
                  "perfsim.report.build")
"""What writing the report imports first (t quantiles, the figures, the report writer:
about 0.8 s), loaded in a thread while a pool runs the study's simulations."""


def _cost(task) -> float:
    """Rough relative CPU time of a task, to start the long ones first: per task of the
    default study, a contention run about 30 ms, a grid cell 90-170 ms, a workload run 15-400
    ms, 190 ms on average (``run_tasks`` on each, 2026-12-01)."""
    if isinstance(task, GridTask):
        return 4.0
    if isinstance(task, WorkloadTask):
        return 6.0
    return 1.0


def study_chunks(tasks: list, workers: int) -> list[list[tuple[int, object]]]:
    """The tasks of a study as ``(index, task)`` chunks, the longest chunks first: a grid
    cell alone, contention and workload runs up to eight together (one chunk's simulations
    share plans, templates and loaded inputs). Long chunks first leave the short ones to
    fill the workers' last moments (the workload runs came last and one worker finished
    them alone). Which chunk a task is in changes nothing in its tables."""
    order = sorted(range(len(tasks)), key=lambda i: -_cost(tasks[i]))
    per = max(1, min(8, len(tasks) // max(1, 6 * workers)))
    chunks = []
    for kind in (GridTask, ContentionTask, WorkloadTask):
        idx = [i for i in order if isinstance(tasks[i], kind)]
        n = 1 if kind is GridTask else per
        chunks += [[(i, tasks[i]) for i in idx[j:j + n]] for j in range(0, len(idx), n)]
    return sorted(chunks, key=lambda c: -sum(_cost(t) for _, t in c))


WORKER_IMPORTS = ("perfsim.engine", "perfsim.engine.reuse", "perfsim.workload")
"""What the study's simulations import, imported before a pool starts: a fork pool's
workers then start with them (about 0.2 s each otherwise, paid by every worker)."""


def run_study(study: Study, *, executor=None, quiet: bool = False) -> StudyResults:
    """Run every simulation of ``study`` (progress bar on stderr unless ``quiet``)."""
    import importlib

    from perfsim.batch.executors import make_executor, prefetch_imports

    for m in WORKER_IMPORTS:
        importlib.import_module(m)
    t0 = time.perf_counter()
    tasks = plan_tasks(study)
    # Validate the workloads before spawning workers (clear one-line errors).
    from perfsim.workload import load_workload, resolve_workload

    for name in {t.workload for t in tasks if isinstance(t, WorkloadTask)}:
        load_workload(resolve_workload(name))
    own = not hasattr(executor, "map_unordered")
    ex = make_executor(executor) if own else executor
    out: dict[int, dict] = {}
    loader = None
    try:
        if getattr(ex, "workers", 1) > 1:  # the workers exist: a thread is safe now
            loader = prefetch_imports(REPORT_IMPORTS)
        chunks = study_chunks(tasks, getattr(ex, "workers", 1))
        bar = None
        if not quiet:
            from perfsim.progress import progress

            bar = progress(len(tasks), desc=f"report {study.name}", unit="sim")
        for res in ex.map_unordered(run_tasks, chunks):
            for i, d in res:
                out[i] = d
            if bar is not None:
                bar.update(len(res))
        if bar is not None:
            bar.close()
        tunes = []
        if study.tune:
            from perfsim.tune import run_tune

            for spec in study.tune:
                tunes.append(run_tune(spec, executor=ex, quiet=quiet,
                                      state_dir=".perfsim-tune"))
    finally:
        if own:
            ex.close()
        if loader is not None:
            loader.join()

    def cat(key: str) -> pd.DataFrame:
        frames = [out[i][key] for i in sorted(out) if key in out[i] and len(out[i][key])]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    return StudyResults(study, cat("calls"), cat("reps"), cat("ccalls"), cat("holds"),
                        cat("walkers"), cat("wcalls"), cat("wruns"), tunes,
                        time.perf_counter() - t0, getattr(ex, "name", "?"),
                        getattr(ex, "workers", 1))
