"""Run a simulation: ``simulate(spec_or_scenario) -> SimResult`` (DataFrames).

Seeding: one ``numpy.random.SeedSequence(seed)`` per run, spawned once per actor in spec order
(callers, then walkers; :class:`~perfsim.engine.caller.ChildSeed`, the ``i``-th child made
only when its actor draws); each actor draws only from its own generator, so results do not
depend on event interleaving and the same inputs and seed give identical records.
"""

from __future__ import annotations

import gc
import itertools
from operator import attrgetter
from pathlib import Path

import numpy as np
import simpy

from perfsim.engine.arrivals import CallersDone, start_callers
from perfsim.engine.caller import ChildSeed, caller
from perfsim.engine.machine import Machine
from perfsim.engine.records import RECORDER_TABLES, Recorder, RecordTables, UserRecord
from perfsim.engine.spec import SimSpec
from perfsim.engine.walker import walker
from perfsim.errors import PerfsimError


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts scheduled events (a run summary's
    ``scheduled_events``).

    SimPy numbers every scheduled event from a counter (``_eid``, an ``itertools.count``
    from 0), so the count is read from it at the end instead of adding a Python call to
    every event; a SimPy without that counter gets the counting override."""

    def __init__(self, initial_time=0):
        super().__init__(initial_time)
        self._counted = 0
        self._fallback = not isinstance(getattr(self, "_eid", None), itertools.count)
        if self._fallback:  # pragma: no cover
            self.schedule = self._counting_schedule

    def _counting_schedule(self, event, priority=1, delay=0):  # pragma: no cover
        self._counted += 1
        simpy.Environment.schedule(self, event, priority, delay)

    @property
    def scheduled(self) -> int:
        """Events scheduled so far."""
        if self._fallback:  # pragma: no cover
            return self._counted
        n = next(self._eid)  # the next id is the number handed out so far...
        self._eid = itertools.count(n)  # ...and is given back
        return n

    def close(self) -> None:
        """Drop the events still queued once the run is over (the event that ended it, a
        duration run's pending timeouts): each refers back to the environment, and the cycle
        would leave the environment and its events to the garbage collector instead of being
        freed when the run's machine is."""
        queue = getattr(self, "_queue", None)
        if isinstance(queue, list):
            queue.clear()


#: dtype kinds of a record table's column that :meth:`SimResult.columns` gives as they are:
#: the kinds a DataFrame column keeps as the same numpy array (integers, floats, booleans),
#: and text (``errno``).
AS_IS_KINDS = frozenset("iufbU")


class SimResult:
    """Records of one run as DataFrames, plus what produced them.

    ``calls``: one row per mremap call; ``holds``: one row per rmap-lock hold; ``flushes``: one
    row per TLB flush; ``walker_waits``: one row per walker visit that waited; ``users``: one
    row per user thread (work done, time stolen by IPIs). Each DataFrame is built on first
    access. ``summary`` has run totals and the per-table row counts (including rows dropped
    by the memory bound); its ``events`` are those of the segment-by-segment schedule (one
    timeout per segment and contended row, whether or not the run needed to schedule it:
    a property of the model, the same with ``fold`` on or off), ``scheduled_events`` the
    SimPy events this run did schedule; ``config`` the effective configuration (digests, seed).
    """

    TABLES = ("calls", "holds", "flushes", "walker_waits", "users")

    def __init__(self, tables: dict, summary, config: dict) -> None:
        self.reuse: dict = {}  # calls whose plan / call template was reused (not results)
        self._tables = tables
        self._frames: dict = {}
        # ``summary``: the dict, or a callable making it when first read (:func:`simulate`
        # gives a :class:`RunSummary`: a caller that reads no summary pays for none)
        self._summary, self._make_summary = (None, summary) if callable(summary) else \
            (summary, None)
        self.config = config

    @property
    def summary(self) -> dict:
        if self._make_summary is not None:
            self._summary, self._make_summary = self._make_summary(), None
        return self._summary

    @summary.setter
    def summary(self, value: dict) -> None:
        self._summary, self._make_summary = value, None

    @property
    def run_totals(self) -> dict:
        """:attr:`summary` without its ``"tables"`` entry (end_ns, events,
        scheduled_events, seed, walker_visits, cpu_ipis, cpu_stolen_ns), read without
        making the tables' summaries when the summary is not made yet."""
        if self._make_summary is not None and isinstance(self._make_summary, RunSummary):
            return self._make_summary.totals()
        return {k: v for k, v in self.summary.items() if k != "tables"}

    def __getstate__(self) -> dict:
        """Pickled with its summary made (the same dict as read before pickling) and its
        tables as a dict (every one made: :class:`~perfsim.engine.records.RecordTables`)."""
        self.summary  # noqa: B018 (made now if not yet)
        state = self.__dict__.copy()
        if isinstance(state["_tables"], RecordTables):
            state["_tables"] = dict(state["_tables"].items())
        return state

    def columns(self, name: str) -> dict | None:
        """Table ``name`` as numpy columns equal to its DataFrame's, read from the record
        table (``Table._buffer_columns``, what ``Table.to_frame`` builds the DataFrame from)
        without making the DataFrame, when that gives what the DataFrame's columns would:
        no DataFrame was made of it yet, nothing was spilled to part files, and every
        column is of a kind :data:`AS_IS_KINDS`. ``{}`` for a table without rows; None when
        the DataFrame must be read instead."""
        table = self._tables.get(name)
        if name in self._frames or table is None or table.parts:
            return None
        cols = table._buffer_columns()
        if cols is None:
            return {}
        if not all(a.dtype.kind in AS_IS_KINDS for a in cols.values()):
            return None
        return cols

    def column(self, table: str, name: str) -> np.ndarray:
        """Column ``name`` of table ``table`` as a numpy array: from :meth:`columns` when it
        can give it (no DataFrame made), else from the DataFrame; an empty array for a
        table without rows."""
        cols = self.columns(table)
        if cols is None:
            df = self.frame(table)
            return df[name].to_numpy() if len(df) else np.zeros(0)
        return cols[name] if cols else np.zeros(0)

    def frame(self, name: str):
        if name not in self._frames:
            self._frames[name] = self._tables[name].to_frame()
        return self._frames[name]

    calls = property(lambda self: self.frame("calls"))
    holds = property(lambda self: self.frame("holds"))
    flushes = property(lambda self: self.frame("flushes"))
    walker_waits = property(lambda self: self.frame("walker_waits"))
    users = property(lambda self: self.frame("users"))

    def frames(self) -> dict:
        return {n: self.frame(n) for n in self.TABLES}


def _validate(spec: SimSpec) -> None:
    n = spec.cpus
    mms = {}
    for m in spec.mms:
        mms.setdefault(m.name, m)  # (the first mm of a name, as a search in order finds)
        for c in m.cpus:
            if not 0 <= c < n:
                raise PerfsimError(f"mm {m.name!r}: cpu {c} out of range 0..{n - 1}")
    for a in (*spec.callers, *spec.users):
        if a.mm not in mms:
            raise PerfsimError(f"{a.name!r}: unknown mm {a.mm!r}; known: {', '.join(sorted(mms))}")
    for a in (*spec.callers, *spec.walkers, *spec.users):
        if not 0 <= a.cpu < n:
            raise PerfsimError(f"{a.name!r}: cpu {a.cpu} out of range 0..{n - 1}")
    for c in spec.callers:
        mm = mms[c.mm]
        if c.cpu not in mm.cpus:
            raise PerfsimError(f"caller {c.name!r}: cpu {c.cpu} is not in mm {c.mm!r}'s cpus {list(mm.cpus)}")
    if spec.duration_ns is None and not spec.callers:
        raise PerfsimError("a run needs callers or a duration")


def check_seed(seed) -> int:
    """A run seed: an integer >= 0 (what ``numpy.random.SeedSequence`` accepts)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PerfsimError(f"seed {seed!r}: must be an integer >= 0")
    return int(seed)


def expected_calls(spec: SimSpec) -> int | None:
    """How many mremap calls ``spec`` makes, when every caller's plan list has a length."""
    n = 0
    for c in spec.callers:
        if not hasattr(c.plans, "__len__"):
            return None
        n += len(c.plans) * c.repeat
    return n


class CallProgress:
    """Progress of one run for a person waiting on it (:func:`perfsim.progress.progress`: a
    bar on a terminal, a line every few seconds in a log): calls done out of ``total_calls``
    when that is known, else simulated milliseconds out of the run's duration."""

    def __init__(self, desc: str, total_calls: int | None, duration_ns: int | None) -> None:
        from perfsim.progress import progress

        self.by_calls = total_calls is not None or duration_ns is None
        total = (total_calls or 0) if self.by_calls else -(-duration_ns // 1_000_000)
        self.bar = progress(total, desc=desc, unit="calls" if self.by_calls else "sim-ms")
        self.done_ms = 0

    def call_done(self, now_ns: int) -> None:
        if self.by_calls:
            self.bar.update(1)
            return
        ms = now_ns // 1_000_000
        if ms > self.done_ms:
            self.bar.update(ms - self.done_ms)
            self.done_ms = ms

    def close(self) -> None:
        self.bar.close()


def is_lone_caller(spec: SimSpec) -> bool:
    """Whether ``spec`` is one mremap caller and nothing else, run until it finishes: no
    walker, no user thread, no duration. Its caller then never waits (it is the only
    taker of its mm's ``mmap_lock``; no rmap lock or page-table spinlock is contended
    without a walker or a second mm's caller, ``Machine.hot_locks``), so its process only
    ever yields timeouts, and :func:`run` drives it without SimPy (:class:`LoneClock`)."""
    return (spec.duration_ns is None and len(spec.callers) == 1 and not spec.walkers
            and not spec.users)


class LoneClock:
    """The environment a lone caller's process runs against (:func:`is_lone_caller`):
    the clock, and the count of events SimPy would schedule for the same run.

    With one process and nothing else, SimPy's queue holds at most the event the process
    waits for, so ``peek()`` (the next *other* event, what lets a caller fold segments) is
    always infinity, and every event is one of: the process's start (``Initialize``), a
    ``timeout()`` it yields (one scheduled event each, fired ``delay`` later), its own
    event when it ends, and the ``AllOf`` :func:`run` waits on, triggered by that end
    (scheduled twice: once triggered, once more when processing it stops the run).
    :func:`_run_lone` counts them as SimPy would schedule them; ``tests/test_t13c_run_lone.py``
    holds records, ``end_ns``, ``events`` and ``scheduled_events`` to the SimPy run of
    the same specs. Nothing here waits: :meth:`event` (a lock's slow path) is never
    reached by a lone caller, and raises if it is."""

    __slots__ = ("now", "scheduled")

    def __init__(self) -> None:
        self.now = 0
        self.scheduled = 1  # the process's Initialize event

    @staticmethod
    def peek() -> float:
        return float("inf")

    def timeout(self, delay: int) -> int:
        """One scheduled timeout of ``delay`` ns (SimPy's rule for a negative one), given
        to the driver as its delay."""
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        self.scheduled += 1
        return delay

    def event(self):
        raise RuntimeError("a lone caller waited for a lock: is_lone_caller is wrong")


def _run_lone(spec: SimSpec, recorder: Recorder, progress, *, reuse: bool, caches,
              fold: bool) -> Machine:
    """:func:`run` of a lone caller (:func:`is_lone_caller`): its process (the same
    :func:`~perfsim.engine.caller.caller` generator) stepped by a loop that moves the
    clock by each timeout it yields, as SimPy's event loop would with nothing else queued."""
    clock = LoneClock()
    m = Machine(spec, recorder, clock, reuse=reuse, caches=caches)
    m.fold = fold
    m.progress = progress
    for delay in caller(m, spec.callers[0], ChildSeed(spec.seed, 0)):
        clock.now += delay
    # the process's own event when it ended; the AllOf it triggered; that AllOf again:
    # processing it stops the run (StopSimulation), and SimPy schedules an event again
    # when one of its callbacks stops the simulation (Environment.step)
    clock.scheduled += 3
    m.end_ns = end = clock.now
    m.settle_users(end)  # (no user thread: applies nothing, as in run())
    m.scheduled_events = clock.scheduled
    m.events = m.scheduled_events + m.folded_events
    return m


def run(spec: SimSpec, recorder: Recorder, progress: CallProgress | None = None, *,
        reuse: bool = True, caches=None, fold: bool = True, lone: bool = True,
        late: bool = True) -> Machine:
    """Run ``spec`` to completion, recording into ``recorder``; return the final machine
    (its environment closed: nothing left queued, :meth:`CountingEnvironment.close`).
    ``reuse=False`` plans and prices every call afresh (the records are the same; for tests).
    ``caches``: a :class:`~perfsim.engine.reuse.RunCaches` shared with other runs.
    ``fold=False`` gives every segment and contended row its own timeout (the records and
    ``events`` are the same, only ``scheduled_events`` grows; for tests). A lone caller
    (:func:`is_lone_caller`) runs without SimPy (:func:`_run_lone`: the same records and
    summary figures); ``lone=False`` runs it through SimPy (for tests). A caller whose first
    call comes after time 0 gets its process when that call comes
    (:mod:`perfsim.engine.arrivals`; SimPy's order of events, the same records and summary);
    ``late=False`` makes every caller's process before the clock starts (for tests)."""
    _validate(spec)
    check_seed(spec.seed)
    if lone and is_lone_caller(spec):
        return _run_lone(spec, recorder, progress, reuse=reuse, caches=caches, fold=fold)
    env = CountingEnvironment()
    m = Machine(spec, recorder, env, reuse=reuse, caches=caches)
    m.fold = fold
    m.progress = progress
    # each caller's generator (and seed sequence) made only if it draws; a caller whose
    # first call comes later is made when it comes (perfsim.engine.arrivals)
    done = None if spec.duration_ns is not None else CallersDone(env, len(spec.callers))
    start_callers(env, m, done, late=late)
    for j, w in enumerate(spec.walkers, len(spec.callers)):
        env.process(walker(m, w, np.random.default_rng(ChildSeed(spec.seed, j).sequence())))
    env.run(until=spec.duration_ns if done is None else done)
    end = int(env.now)
    m.settle_users(end)
    for u in m.users:
        u.advance_to(end)
        recorder.users.add(*UserRecord(thread=u.spec.name, mm=u.spec.mm, cpu=u.spec.cpu,
                                       quanta=u.quanta, work_ns=u.quanta * u.spec.quantum_ns,
                                       stolen_ns=u.stolen, interrupts=u.interrupts,
                                       max_quantum_delay_ns=max(u.max_delay, u.q_delay)))
    m.end_ns = end
    m.scheduled_events = env.scheduled
    m.events = m.scheduled_events + m.folded_events
    env.close()
    return m


_IPIS, _STOLEN = attrgetter("ipis"), attrgetter("stolen")  # of a machine.Cpu


class RunSummary:
    """A finished run's summary (:attr:`SimResult.summary`), made when called: the run's
    own figures are taken at the end of the run (they are a few integers), its tables'
    summaries (:meth:`~perfsim.engine.records.Table.summary`: their sums, maxima and row
    counts) only when the summary is first read, from the same tables, which do not change
    once the run is over. The same dict, in the same key order, as made at once."""

    __slots__ = ("head", "seed", "rec", "walker_visits", "cpu_ipis", "cpu_stolen_ns")

    def __init__(self, m: Machine, seed: int, rec: Recorder) -> None:
        self.head = (m.end_ns, m.events, m.scheduled_events)
        self.seed = seed
        self.rec = rec  # its tables' summaries (Recorder.summary_of: a table never made is empty)
        self.walker_visits = rec.walker_visits
        self.cpu_ipis = list(map(_IPIS, m.cpus))
        self.cpu_stolen_ns = list(map(_STOLEN, m.cpus))

    def __call__(self) -> dict:
        end_ns, events, scheduled = self.head
        return {
            "end_ns": end_ns, "events": events, "scheduled_events": scheduled,
            "seed": self.seed,
            "tables": {k: self.rec.summary_of(k) for k in RECORDER_TABLES},
            "walker_visits": dict(self.walker_visits),
            "cpu_ipis": self.cpu_ipis, "cpu_stolen_ns": self.cpu_stolen_ns,
        }

    def totals(self) -> dict:
        """The summary without its ``"tables"`` (:attr:`SimResult.run_totals`)."""
        end_ns, events, scheduled = self.head
        return {"end_ns": end_ns, "events": events, "scheduled_events": scheduled,
                "seed": self.seed, "walker_visits": dict(self.walker_visits),
                "cpu_ipis": list(self.cpu_ipis), "cpu_stolen_ns": list(self.cpu_stolen_ns)}


GC_YOUNG_THRESHOLD = 20_000
"""Allocations between two collections of the youngest generation while a run simulates
(CPython's default is 700). A run makes and drops many small objects (plans, rows,
records) and few reference cycles, so collecting every 700 allocations spent about a tenth
of a run scanning live objects (measured 2026-12-01 over every shipped workload); with
20,000 the same run takes 13-17% less CPU. The garbage collector only frees memory, so the
records are the same either way (``tests/test_engine_gc.py``)."""


class fewer_collections:  # noqa: N801 (used as a context manager, like contextlib's)
    """Raise the interpreter's youngest-generation collection threshold to at least
    ``young`` (default :data:`GC_YOUNG_THRESHOLD`) for the duration, and restore the
    previous thresholds after (a user's own higher setting, or a threshold of 0, is left as
    it is). A plain context manager (no generator: one is entered per run)."""

    __slots__ = ("young", "before")

    def __init__(self, young: int | None = None) -> None:
        self.young = GC_YOUNG_THRESHOLD if young is None else young
        self.before = None

    def __enter__(self) -> None:
        before = gc.get_threshold()
        if before[0] == 0 or before[0] >= self.young:
            return
        self.before = before
        gc.set_threshold(self.young, *before[1:])

    def __exit__(self, *exc) -> None:
        if self.before is not None:
            gc.set_threshold(*self.before)
            self.before = None


def simulate(spec_or_scenario, *, seed: int | None = None, max_rows: int = 1_000_000,
             spill_dir: str | Path | None = None, record_zero_waits: bool = False,
             progress: bool = False, progress_calls: int | None = None,
             reuse: bool = True, caches=None, fold: bool = True,
             lone: bool = True, late: bool = True) -> SimResult:
    """Simulate a :class:`SimSpec`, a :class:`~perfsim.engine.scenario.Scenario` or a scenario
    TOML path, and return its records as DataFrames.

    ``seed`` overrides the spec's seed. ``max_rows`` bounds each table's in-memory rows; past
    it rows are spilled to ``spill_dir`` (then read back here) or dropped and only counted.
    ``progress=True`` reports progress on stderr (:class:`CallProgress`; off by default, for
    library use and workers); ``progress_calls`` is the number of calls to expect when the
    callers' plans are generators (:func:`expected_calls` counts them otherwise).
    ``reuse=False`` turns off the reuse of plans and call templates within the run
    (:mod:`perfsim.engine.plan_cache`, :mod:`perfsim.engine.pricing`): same records, slower.
    ``caches``: a :class:`~perfsim.engine.reuse.RunCaches` to share plans and call templates
    with the other runs it is given to (same records; :mod:`perfsim.engine.reuse`).
    ``fold=False`` schedules a timeout for every segment and contended row even where no
    other event could come between them (:mod:`perfsim.engine.caller`; same records).
    ``lone=False`` runs a lone caller through SimPy (:func:`is_lone_caller`; same records
    and summary). ``late=False`` makes every caller's process before the clock starts
    instead of when its first call comes (:mod:`perfsim.engine.arrivals`; same records and
    summary).
    """
    spec = spec_or_scenario
    if not isinstance(spec, SimSpec):
        from perfsim.engine.scenario import Scenario, build_spec, load_scenario

        if isinstance(spec, (str, Path)):
            spec = load_scenario(spec)
        if isinstance(spec, Scenario):
            spec = build_spec(spec)
        if not isinstance(spec, SimSpec):
            raise PerfsimError(f"cannot simulate a {type(spec).__name__}")
    if seed is not None:
        from dataclasses import replace

        spec = replace(spec, seed=check_seed(seed))
    # (run() checks the spec and its seed before anything is simulated)
    rec = Recorder(max_rows=max_rows, spill_dir=Path(spill_dir) if spill_dir else None,
                   record_zero_waits=record_zero_waits)
    bar = None
    if progress:
        # (checked here too, so a bad spec is its one error, not a progress line first)
        _validate(spec)
        check_seed(spec.seed)
        name = spec.meta.get("workload") or spec.meta.get("scenario") or "simulate"
        total = progress_calls if progress_calls is not None else expected_calls(spec)
        bar = CallProgress(str(name), total, spec.duration_ns)
    try:
        with fewer_collections():
            m = run(spec, rec, bar, reuse=reuse, caches=caches, fold=fold, lone=lone,
                    late=late)
    finally:
        if bar is not None:
            bar.close()
    summary = RunSummary(m, spec.seed, rec)
    config = {"seed": spec.seed, "cpus": spec.cpus, "cost_profile": spec.profile.name,
              "cost_profile_digest": spec.profile.digest, "target_digest": spec.target.digest,
              **spec.meta}
    res = SimResult(RecordTables(rec), summary, config)
    res.reuse = {"plans_reused": m.plans.hits - m.plan_hits_before if m.plans else 0,
                 "templates_reused": m.templates.hits}
    return res
