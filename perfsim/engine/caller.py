"""The mremap caller actor: takes ``mmap_lock`` for write, replays one plan's rows.

Each call's plan is priced and segmented once (:mod:`perfsim.engine.pricing`; reused for
identical plans when the cost profile has no jitter). Rows are advanced segment by segment
(:mod:`perfsim.engine.coalesce`): a run of uncontended rows is one timeout; a contended row
takes its rmap rwsems (write) and page-table spinlocks for real, in the kernel's order
(``i_mmap_rwsem`` then ``anon_vma``, source PTL then the destination's nested), holds them
for the row's cost — its TLB flush included — and drops them in reverse.

**The caller's clock runs ahead while nothing else can happen.** A caller keeps its own
time ``t`` and lets SimPy's clock lag behind it only while every other pending event is
later than ``t`` (``Environment.peek()``): then no other actor runs before ``t``, no lock
changes hands, no record is written by anyone else, and whatever the caller does at ``t``
(take a free lock, queue on a held one, replay a segment's records, credit IPIs) is what it
would do with SimPy's clock at ``t``. A segment or contended row that ends before the next
other event is *folded* (no timeout); otherwise one timeout brings SimPy to its end, and
that timeout fires in the same order among the other events as the last of the timeouts
it replaces (no other actor scheduled anything in between). The clock is brought level
before anything that wakes another actor (releasing a lock someone waits for, ``mmap_lock``
included) and before the caller's process ends. So calls and their contended rows that
meet no other event cost no event (a lone caller's whole stream is one timeout), and the
records are those of stepping every segment (``simulate(..., fold=False)``;
``tests/test_t13_engine_fold.py``). The run summary's ``events`` count the folded timeouts
too.
"""

from __future__ import annotations

from operator import itemgetter

import numpy as np

from perfsim.cost.batching import folio_batching_of_plan
from perfsim.engine.machine import Machine
from perfsim.engine.records import CALL_STAT_COLUMNS, CallHead, FlushRecord, HoldRecord
from perfsim.engine.spec import CallerSpec, ColdCall
from perfsim.planner import steps as S

_second = itemgetter(1)
_FIXED = CALL_STAT_COLUMNS.index("cost_fixed_ns")  # (where a call's fixed cost is in its stats)


def _with_fixed(stats: tuple, ns: int) -> tuple:
    """A call record's stats columns with ``ns`` more of fixed cost (a :class:`ColdCall`)."""
    return (*stats[:_FIXED], stats[_FIXED] + ns, *stats[_FIXED + 1:])


def _no_fold() -> int:  # Environment.peek when nothing may fold: always "now"
    return -1


def _plan_stream(spec: CallerSpec):
    if spec.repeat == 1:
        yield from spec.plans
        return
    items = list(spec.plans)
    for _ in range(spec.repeat):
        yield from items


def _resolve(item, mm, target, plans=None):
    """(steps, errno, folio) for a plan-stream item; plans a MoveRequest against the mm's
    space (through ``plans``, a :class:`~perfsim.engine.plan_cache.PlanCache`, when given).
    ``folio``: the source VMA's large-folio mechanisms the cost model charges
    (:func:`~perfsim.cost.batching.folio_batching_of_plan`; None for bare Steps)."""
    if isinstance(item, S.Steps):
        return item, None, None
    if hasattr(item, "steps") and hasattr(item, "errno"):
        return item.steps, item.errno, folio_batching_of_plan(item, target)
    from perfsim.planner import MoveRequest, plan_mremap

    if isinstance(item, MoveRequest):
        if mm.space is None:
            raise ValueError(f"mm {mm.spec.name!r} has no address space to plan requests against")
        plan = plans.plan(mm.space, item, target) if plans is not None else \
            plan_mremap(mm.space, item, target)
        if plan.errno is None:
            mm.space = plan.after
        return plan.steps, plan.errno, folio_batching_of_plan(plan, target)
    raise TypeError(f"cannot simulate a {type(item).__name__}; give MovePlan, Steps or MoveRequest")


class ChildSeed:
    """The ``index``-th child of ``numpy.random.SeedSequence(seed)``: what
    ``SeedSequence(seed).spawn(n)[index]`` is, for any ``n > index`` (a spawned child is
    the parent's entropy with spawn key ``(index,)``), made only when :meth:`sequence` is
    called (a caller of a jitter-free profile never draws)."""

    __slots__ = ("seed", "index")

    def __init__(self, seed: int, index: int) -> None:
        self.seed, self.index = seed, index

    def sequence(self) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(self.index,))


def caller(m: Machine, spec: CallerSpec, rng, started: bool = False):
    """SimPy process of one caller. ``rng``: its ``numpy.random.Generator``, or the
    ``SeedSequence`` (or :class:`ChildSeed`) to make it from (made only if the cost profile
    draws: a jitter-free profile's templates draw nothing,
    :class:`~perfsim.engine.pricing.TemplateCache`). ``started``: the process is resumed at
    ``spec.start_ns`` already (:mod:`perfsim.engine.arrivals`), so it does not wait for it."""
    env, rec = m.env, m.rec
    if isinstance(rng, ChildSeed):
        rng = None if m.templates.fixed else np.random.default_rng(rng.sequence())
    elif isinstance(rng, np.random.SeedSequence):
        rng = None if m.templates.fixed else np.random.default_rng(rng)
    mm = m.mms[spec.mm]
    cpu = spec.cpu
    groups = CallerGroups(m, [c for c in mm.spec.cpus if c != cpu])
    ncpus = mm.ncpus
    templates = m.templates
    ptl_hot_of = (lambda st: m.ptl_hot_rows(mm, st)) if mm.ptl_ranges else None
    calls_add = rec.calls.add_row  # (the holds table is made only if a row is contended)
    rmap = m.rmap
    peek = env.peek if m.fold else _no_fold  # without folding every timeout is scheduled
    if spec.start_ns and not started:
        yield env.timeout(spec.start_ns)
    lock = mm.mmap_lock
    # The caller's own clock: ahead of env.now only while no other event is due until
    # then (module docstring), so calls, segments and contended rows that nothing else
    # could interleave with cost no event.
    t = env.now
    for k, item in enumerate(spec.plans if spec.repeat == 1 else _plan_stream(spec)):
        if k and spec.interval_ns:
            t += spec.interval_ns
            if t >= peek():
                yield env.timeout(t - env.now)
            else:
                m.folded_events += 1
        t_req = t
        if not lock.try_write(spec.name):
            yield lock.wait_write(spec.name)
            t = env.now
        t_start = t
        cold = 0
        if type(item) is ColdCall:
            item, cold = item
        steps, errno, folio = _resolve(item, mm, m.target, m.plans)
        tp = templates.get(steps, ncpus, rng, ptl_hot_of, folio)
        if cold:  # (the caches refilled: once, before the call's first row)
            t += cold
            if t >= peek():
                yield env.timeout(t - env.now)
            else:
                m.folded_events += 1
        rmap_wait = ptl_wait = 0
        # A walker that takes this mm's page-table spinlocks is the only other taker (the
        # mm's other callers wait for mmap_lock): without one, a row's PTLs are always
        # free, taken and dropped at once, and nothing can observe them.
        ptl_keys = m.ptl_keys_of_rows(steps, (a for a, _b, h, _d in tp.segments if h)) \
            if tp.any_contended and ptl_hot_of is not None else None
        for (a, _b, h, d), recs in zip(tp.segments, tp.records, strict=True):
            if not h:
                _replay_segment(m, spec, k, recs, t, groups)
                if d:
                    t += d
                    if t >= peek():
                        yield env.timeout(t - env.now)
                    else:
                        m.folded_events += 1
                continue
            # One contended row: real acquisitions.
            i = a
            names = steps.lock_sets[tp.row_lock_set[i]] if tp.row_rmap[i] else ()
            t0 = t
            held = []
            for name in names:
                sem = rmap(name)
                if not sem.try_write(spec.name):
                    yield sem.wait_write(spec.name)
                    t = env.now
                held.append(sem)
            t_acq = t
            rmap_wait += t_acq - t0
            spins = [m.ptl(mm, key) for key in ptl_keys[i]] if ptl_keys is not None else ()
            for sp in spins:
                if not sp.try_lock():
                    yield sp.wait_lock()
                    t = env.now
            ptl_wait += t - t_acq
            d = tp.row_total[i]
            if d:
                t += d
                if t >= peek():
                    yield env.timeout(t - env.now)
                else:
                    m.folded_events += 1
            fl = tp.row_flush[i]
            if fl is not None:
                _record_flush_row(m, spec, k, i, fl, t, groups)
            if t > env.now and (any(sem.queue for sem in held) or any(sp.queue for sp in spins)):
                m.folded_events -= 1  # this timeout stands for the last folded one
                yield env.timeout(t - env.now)  # a release wakes its waiters at env.now
            for sp in reversed(spins):
                sp.unlock()
            for sem in reversed(held):
                sem.release_write()
            for name in names:
                rec.holds.add_row(HoldRecord(lock=name, holder=spec.name, mode="write", call=k,
                                     step=i, request_ns=t0, acquire_ns=t_acq,
                                     wait_ns=t_acq - t0, hold_ns=t - t_acq))
        if t > env.now and lock.queue:
            m.folded_events -= 1  # this timeout stands for the last folded one
            yield env.timeout(t - env.now)  # the release wakes the next caller at env.now
        lock.release_write()
        t_end = t
        calls_add((*CallHead(caller=spec.name, mm=spec.mm, cpu=cpu, call=k, errno=errno or "",
                             start_ns=t_req, end_ns=t_end, latency_ns=t_end - t_req,
                             mmap_lock_wait_ns=t_start - t_req, rmap_wait_ns=rmap_wait,
                             ptl_wait_ns=ptl_wait),
                   *(tp.stats if not cold else _with_fixed(tp.stats, cold))))
        if len(m.runs) > m.settle_runs:
            m.settle_users(t)  # no credit can be queued before t by anyone else either
        if m.progress is not None:
            m.progress.call_done(t)
    if t > env.now:  # the process ends (and the run may) at the caller's own time
        m.folded_events -= 1  # this timeout stands for the last folded one
        yield env.timeout(t - env.now)


def _replay_segment(m: Machine, spec: CallerSpec, call: int, recs, t0: int,
                    groups: CallerGroups) -> None:
    """Holds and flushes of one uncontended segment starting at ``t0``, from its template."""
    rec = m.rec
    if recs.holds:
        holds, block = rec.holds, rec.segment_holds
        for name, rows, off, hold in recs.holds:
            holds.add_block(block, len(rows), (name, spec.name, "write", call, 0), (rows, hold),
                            (off, off), t0)
    if recs.flush is not None:
        rows, off, full, pages, targets, stolen = recs.flush
        rec.flushes.add_block(rec.segment_flushes, len(rows), (spec.name, call),
                              (rows, full, pages, targets, stolen), (off,), t0)
        credits = recs.credits
        n = len(credits)
        if not n:
            return
        lo = 0
        while lo < n:  # a run of CPUs interrupted by the same flushes: one credit group
            cr = credits[lo]  # (usually one run: every other CPU takes every flush)
            hi = lo + 1
            while hi < n and credits[hi] == cr:
                hi += 1
            _credit(m, groups, lo, hi, t0, cr)
            lo = hi


def _credit(m: Machine, groups, lo: int, hi: int, t0: int, credits, stolen=None) -> None:
    """Credit ``(offset_ns, stolen_ns)`` pairs at ``t0 + offset_ns`` to each of the caller's
    other CPUs ``lo..hi`` (``groups``: the caller's :class:`CallerGroups`; ``stolen``:
    the pairs' stolen sum, when known)."""
    g = groups.get((lo, hi))
    if g is None:
        g = groups.make(lo, hi)
    g.ipis += len(credits)
    g.stolen += sum(map(_second, credits)) if stolen is None else stolen
    if g.users:
        m.runs.append([t0, credits, 0, g])


class CallerGroups(dict):
    """A caller's :class:`~perfsim.engine.machine.CreditGroup` per range ``(lo, hi)`` of
    its other CPUs (``others[lo:hi]``), made on first use."""

    def __init__(self, m: Machine, others: list[int]) -> None:
        self.m, self.others = m, others  # (an empty dict: no dict.__init__ to call)

    def make(self, lo: int, hi: int):
        g = self[(lo, hi)] = self.m.credit_group(tuple(self.others[lo:hi]))
        return g


def _record_flush_row(m: Machine, spec: CallerSpec, call: int, i: int, flush, t: int,
                      groups: CallerGroups) -> None:
    """The flush of one contended row, as a plain record, and its IPI credits."""
    full, pages, ipis, stolen = flush
    m.rec.flushes.add_row(FlushRecord(caller=spec.name, call=call, step=i, time_ns=t,
                                      full=full, pages=pages, targets=ipis, stolen_ns=stolen))
    if ipis:
        _credit(m, groups, 0, ipis, t, ((0, stolen),), stolen)
