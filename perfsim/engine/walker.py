"""The rmap walker actor (reclaim / migration style): read-locks one rmap rwsem now and then.

Each visit: wait a gap, ``down_read`` the lock (queueing behind a writer like the kernel's
rwsem), optionally take one PTE-table spinlock inside (``page_vma_mapped_walk``), hold, release.
One record per visit that waited (or every visit with ``record_zero_waits``).
"""

from __future__ import annotations

import numpy as np

from perfsim.engine.machine import Machine
from perfsim.engine.records import WalkerWaitRecord
from perfsim.engine.spec import WalkerSpec


def walker(m: Machine, spec: WalkerSpec, rng: np.random.Generator):
    """SimPy process of one walker. Like a caller (:mod:`perfsim.engine.caller`) it keeps
    its own clock ``t``, ahead of SimPy's only while every other pending event is later
    (no timeout is scheduled for a gap or hold nothing else could come between), and brings
    SimPy level before a release wakes a waiter."""
    env, rec = m.env, m.rec
    sem = m.rmap(spec.lock)
    mm = m.mms.get(spec.ptl_mm) if spec.ptl_mm else None
    if mm is not None and spec.ptl_range:
        lo = spec.ptl_range[0] >> m.pmd_shift
        hi = ((spec.ptl_range[1] - 1) >> m.pmd_shift) + 1
    peek = env.peek if m.fold else _no_fold
    if spec.start_ns:
        yield env.timeout(spec.start_ns)
    t = env.now
    while True:
        if spec.poisson:
            gap = int(rng.exponential(spec.interval_ns))
        else:
            gap = spec.interval_ns
        if gap:
            t += gap
            if t >= peek():
                yield env.timeout(t - env.now)
            else:
                m.folded_events += 1
        t_req = t
        if not sem.try_read():
            yield sem.wait_read(spec.name)
            t = env.now
        t_acq = t
        hold = spec.hold_ns
        if spec.hold_sigma > 0:
            hold = int(round(spec.hold_ns * float(np.exp(spec.hold_sigma * rng.standard_normal()))))
        ptl_wait = 0
        if mm is not None and spec.ptl_range and spec.ptl_hold_ns:
            pre = max(hold - spec.ptl_hold_ns, 0) // 2
            if pre:
                t += pre
                if t >= peek():
                    yield env.timeout(t - env.now)
                else:
                    m.folded_events += 1
            sp = m.ptl(mm, ("pmd", int(rng.integers(lo, hi))))
            t_p = t
            if not sp.try_lock():
                yield sp.wait_lock()
                t = env.now
            ptl_wait = t - t_p
            t += spec.ptl_hold_ns
            if t >= peek():
                yield env.timeout(t - env.now)
            else:
                m.folded_events += 1
            if sp.queue and t > env.now:
                m.folded_events -= 1  # this timeout stands for the last folded one
                yield env.timeout(t - env.now)  # the unlock hands the lock on at env.now
            sp.unlock()
            rest = hold - pre - spec.ptl_hold_ns
            if rest > 0:
                t += rest
                if t >= peek():
                    yield env.timeout(t - env.now)
                else:
                    m.folded_events += 1
        elif hold:
            t += hold
            if t >= peek():
                yield env.timeout(t - env.now)
            else:
                m.folded_events += 1
        if sem.queue and sem.readers == 1 and t > env.now:
            m.folded_events -= 1  # this timeout stands for the last folded one
            yield env.timeout(t - env.now)  # the release wakes the queue at env.now
        sem.release_read()
        wait = t_acq - t_req
        if wait or ptl_wait or rec.record_zero_waits:
            rec.walker_waits.add_row(WalkerWaitRecord(walker=spec.name, lock=spec.lock,
                                                      cpu=spec.cpu, request_ns=t_req,
                                                      wait_ns=wait, hold_ns=t - t_acq,
                                                      ptl_wait_ns=ptl_wait))
        rec.walker_visits[spec.name] = rec.walker_visits.get(spec.name, 0) + 1


def _no_fold() -> int:  # Environment.peek when nothing may fold: always "now"
    return -1
