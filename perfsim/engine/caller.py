"""The mremap caller actor: takes ``mmap_lock`` for write, replays one plan's rows.

Rows are advanced segment by segment (:mod:`perfsim.engine.coalesce`): a run of uncontended
rows is one timeout; a contended row takes its rmap rwsems (write) and page-table spinlocks
for real, in the kernel's order (``i_mmap_rwsem`` then ``anon_vma``, source PTL then the
destination's nested), holds them for the row's cost — its TLB flush included — and drops
them in reverse.
"""

from __future__ import annotations

import numpy as np

from perfsim.cost.model import CATEGORIES, row_costs
from perfsim.engine.coalesce import contended_rows, segments
from perfsim.engine.machine import Machine
from perfsim.engine.spec import CallerSpec
from perfsim.planner import steps as S


def _plan_stream(spec: CallerSpec):
    if spec.repeat == 1:
        yield from spec.plans
        return
    items = list(spec.plans)
    for _ in range(spec.repeat):
        yield from items


def _resolve(item, mm, target):
    """(steps, errno) for a plan-stream item; plans a MoveRequest against the mm's space."""
    if isinstance(item, S.Steps):
        return item, None
    if hasattr(item, "steps") and hasattr(item, "errno"):
        return item.steps, item.errno
    from perfsim.planner import MoveRequest, plan_mremap

    if isinstance(item, MoveRequest):
        if mm.space is None:
            raise ValueError(f"mm {mm.spec.name!r} has no address space to plan requests against")
        plan = plan_mremap(mm.space, item, target)
        if plan.errno is None:
            mm.space = plan.after
        return plan.steps, plan.errno
    raise TypeError(f"cannot simulate a {type(item).__name__}; give MovePlan, Steps or MoveRequest")


def caller(m: Machine, spec: CallerSpec, rng: np.random.Generator):
    """SimPy process of one caller."""
    env, rec = m.env, m.rec
    mm = m.mms[spec.mm]
    cpu = spec.cpu
    others = [c for c in mm.spec.cpus if c != cpu]
    if spec.start_ns:
        yield env.timeout(spec.start_ns)
    for k, item in enumerate(_plan_stream(spec)):
        if k and spec.interval_ns:
            yield env.timeout(spec.interval_ns)
        t_req = env.now
        lock = mm.mmap_lock
        if not lock.try_write(spec.name):
            yield lock.wait_write(spec.name)
        t_start = env.now
        steps, errno = _resolve(item, mm, m.target)
        rc = row_costs(steps, m.profile, cpus=mm.ncpus, rng=rng)
        hot_sets = np.array([any(n in m.hot_locks for n in ls) for ls in steps.lock_sets], bool)
        hot = contended_rows(steps, hot_sets, m.ptl_hot_rows(mm, steps))
        starts, ends, hots = segments(hot)
        cum = np.zeros(len(steps) + 1, np.int64)
        np.cumsum(rc.total, out=cum[1:])
        rmap_wait = ptl_wait = 0
        if hots.any():
            # Python lists for the per-row path (numpy scalar indexing is slow).
            total = rc.total.tolist()
            set_of = steps.lock_set.tolist()
            rmap_n = steps.rmap.tolist()
        for a, b, h in zip(starts.tolist(), ends.tolist(), hots.tolist(), strict=False):
            if not h:
                _record_segment(m, spec, k, steps, rc, cum, a, b, env.now, others)
                d = int(cum[b] - cum[a])
                if d:
                    yield env.timeout(d)
                continue
            # One contended row: real acquisitions.
            i = a
            names = steps.lock_sets[set_of[i]] if rmap_n[i] else ()
            t0 = env.now
            held = []
            for name in names:
                sem = m.rmap(name)
                if not sem.try_write(spec.name):
                    yield sem.wait_write(spec.name)
                held.append(sem)
            t_acq = env.now
            rmap_wait += t_acq - t0
            spins = [m.ptl(mm, key) for key in m.ptl_keys(steps, i)]
            for sp in spins:
                if not sp.try_lock():
                    yield sp.wait_lock()
            ptl_wait += env.now - t_acq
            d = total[i]
            if d:
                yield env.timeout(d)
            _record_flush_row(m, spec, k, steps, rc, i, env.now, others)
            for sp in reversed(spins):
                sp.unlock()
            for sem in reversed(held):
                sem.release_write()
            for name in names:
                rec.holds.add(name, spec.name, "write", k, i, t0, t_acq, t_acq - t0, env.now - t_acq)
        lock.release_write()
        t_end = env.now
        cost = rc.category_sums()
        kind = steps.kind
        rec.calls.add(
            spec.name, spec.mm, cpu, k, errno or "", t_req, t_end, t_end - t_req,
            t_start - t_req, rmap_wait, ptl_wait, len(steps), len(starts),
            int(steps.ptes[kind == S.K_PTE_MOVE].sum()),
            int(np.count_nonzero(kind == S.K_PMD_MOVE)),
            int(np.count_nonzero(np.isin(kind, (S.K_PUD_MOVE, S.K_HUGE_PUD_MOVE)))),
            int(np.count_nonzero(kind == S.K_THP_MOVE)),
            int(steps.flushes.sum()), int(rc.ipis.sum()), int(np.count_nonzero(steps.rmap > 0)),
            int(steps.alloc_p4d.sum() + steps.alloc_pud.sum() + steps.alloc_pmd.sum()
                + steps.alloc_pte.sum()),
            int(steps.freed.sum()),
            *(cost[c] for c in CATEGORIES),
        )
        m.settle_users(env.now)
        if m.progress is not None:
            m.progress.call_done(env.now)


def _record_segment(m: Machine, spec: CallerSpec, call: int, steps, rc, cum, a: int, b: int,
                    t0: int, others) -> None:
    """Holds and flushes of the uncontended rows ``a:b`` starting at ``t0``, from prefix sums."""
    base = cum[a]
    rm = np.flatnonzero(steps.rmap[a:b] > 0) + a
    if len(rm):
        acq = t0 + (cum[rm] - base)
        hold = rc.total[rm]
        sets = steps.lock_set[rm]
        for sid in np.unique(sets).tolist():
            sel = sets == sid
            for name in steps.lock_sets[sid]:
                nsel = int(sel.sum())
                m.rec.holds.add_columns({
                    "lock": np.full(nsel, name, dtype=object),
                    "holder": np.full(nsel, spec.name, dtype=object),
                    "mode": np.full(nsel, "write", dtype=object),
                    "call": np.full(nsel, call, np.int64),
                    "step": rm[sel].astype(np.int64),
                    "request_ns": acq[sel], "acquire_ns": acq[sel],
                    "wait_ns": np.zeros(nsel, np.int64), "hold_ns": hold[sel],
                })
    fl = np.flatnonzero(steps.flushes[a:b]) + a
    if len(fl):
        _record_flushes(m, spec, call, steps, rc, fl, t0 + (cum[fl + 1] - base), others)


def _record_flush_row(m: Machine, spec: CallerSpec, call: int, steps, rc, i: int, t: int,
                      others) -> None:
    """The flush of one row (if it has one), as a plain record, and its IPI credits."""
    if not steps.flushes[i]:
        return
    ipis, stolen = int(rc.ipis[i]), int(rc.stolen[i])
    m.rec.flushes.add(spec.name, call, i, t, bool(steps.flush_full[i]),
                      int(steps.flush_pages[i]), ipis, stolen)
    for c in others[:ipis]:
        m.cpus[c].credit(t, stolen)


def _record_flushes(m: Machine, spec: CallerSpec, call: int, steps, rc, rows, times, others) -> None:
    """One record per flush; each IPI target CPU is credited its stolen time at the flush."""
    rows = np.asarray(rows)
    times = np.asarray(times, np.int64)
    if not len(rows) or not steps.flushes[rows].any():
        return
    n = len(rows)
    m.rec.flushes.add_columns({
        "caller": np.full(n, spec.name, dtype=object),
        "call": np.full(n, call, np.int64),
        "step": rows.astype(np.int64),
        "time_ns": times,
        "full": steps.flush_full[rows].astype(bool),
        "pages": steps.flush_pages[rows].astype(np.int64),
        "targets": rc.ipis[rows],
        "stolen_ns": rc.stolen[rows],
    })
    ipis = rc.ipis[rows]
    if ipis.any():
        for j in np.flatnonzero(ipis).tolist():
            for c in others[: int(ipis[j])]:
                m.cpus[c].credit(int(times[j]), int(rc.stolen[rows[j]]))
