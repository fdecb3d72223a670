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
    env, rec = m.env, m.rec
    sem = m.rmap(spec.lock)
    mm = m.mms.get(spec.ptl_mm) if spec.ptl_mm else None
    if mm is not None and spec.ptl_range:
        lo = spec.ptl_range[0] >> m.pmd_shift
        hi = ((spec.ptl_range[1] - 1) >> m.pmd_shift) + 1
    if spec.start_ns:
        yield env.timeout(spec.start_ns)
    while True:
        if spec.poisson:
            gap = int(rng.exponential(spec.interval_ns))
        else:
            gap = spec.interval_ns
        if gap:
            yield env.timeout(gap)
        t_req = env.now
        if not sem.try_read():
            yield sem.wait_read(spec.name)
        t_acq = env.now
        hold = spec.hold_ns
        if spec.hold_sigma > 0:
            hold = int(round(spec.hold_ns * float(np.exp(spec.hold_sigma * rng.standard_normal()))))
        ptl_wait = 0
        if mm is not None and spec.ptl_range and spec.ptl_hold_ns:
            pre = max(hold - spec.ptl_hold_ns, 0) // 2
            if pre:
                yield env.timeout(pre)
            sp = m.ptl(mm, ("pmd", int(rng.integers(lo, hi))))
            t_p = env.now
            if not sp.try_lock():
                yield sp.wait_lock()
            ptl_wait = env.now - t_p
            yield env.timeout(spec.ptl_hold_ns)
            sp.unlock()
            rest = hold - pre - spec.ptl_hold_ns
            if rest > 0:
                yield env.timeout(rest)
        elif hold:
            yield env.timeout(hold)
        sem.release_read()
        wait = t_acq - t_req
        if wait or ptl_wait or rec.record_zero_waits:
            rec.walker_waits.add_row(WalkerWaitRecord(walker=spec.name, lock=spec.lock,
                                                   cpu=spec.cpu, request_ns=t_req, wait_ns=wait,
                                                   hold_ns=env.now - t_acq,
                                                   ptl_wait_ns=ptl_wait))
        rec.walker_visits[spec.name] = rec.walker_visits.get(spec.name, 0) + 1
