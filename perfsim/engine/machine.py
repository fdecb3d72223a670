"""Simulation state: the environment, CPUs, mms and their locks, shared rmap rwsems.

Holds no model decisions; actors (:mod:`perfsim.engine.actors`) use it. Everything lives on
one instance, so two simulations in one process never interfere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import simpy

from perfsim.engine.locks import RwSem, SpinLock
from perfsim.engine.records import Recorder
from perfsim.engine.spec import MmSpec, SimSpec, UserSpec


@dataclass
class UserThread:
    """A thread doing user work in back-to-back quanta on one CPU, advanced lazily.

    IPIs are credited as ``(time, stolen_ns)``; a quantum that an IPI lands in finishes later
    by the stolen time. No simulation events: the timeline is rolled forward on each credit.
    """

    spec: UserSpec
    q_start: int = 0
    q_delay: int = 0
    quanta: int = 0
    stolen: int = 0
    interrupts: int = 0
    max_delay: int = 0

    def advance_to(self, t: int) -> None:
        q = self.spec.quantum_ns
        end = self.q_start + q + self.q_delay
        if t < end:
            return
        # close the current quantum, then any whole undisturbed quanta before t
        self.quanta += 1
        self.max_delay = max(self.max_delay, self.q_delay)
        k = (t - end) // q
        self.quanta += k
        self.q_start = end + k * q
        self.q_delay = 0

    def credit(self, t: int, stolen: int) -> None:
        self.advance_to(t)
        self.q_delay += stolen
        self.stolen += stolen
        self.interrupts += 1

    def credit_many(self, credits: list[tuple[int, int]]) -> None:
        """``credit(t, stolen)`` for each pair, in order (the same state, fewer calls)."""
        q = self.spec.quantum_ns
        q_start, q_delay, quanta, max_delay = self.q_start, self.q_delay, self.quanta, self.max_delay
        total = 0
        for t, s in credits:
            end = q_start + q + q_delay
            if t >= end:  # advance_to(t)
                quanta += 1
                if q_delay > max_delay:
                    max_delay = q_delay
                k = (t - end) // q
                quanta += k
                q_start = end + k * q
                q_delay = 0
            q_delay += s
            total += s
        self.q_start, self.q_delay, self.quanta, self.max_delay = q_start, q_delay, quanta, max_delay
        self.stolen += total
        self.interrupts += len(credits)


@dataclass
class Cpu:
    """One CPU: the user threads on it and the IPI credits not yet applied.

    Coalesced segments credit IPIs ahead of the simulation clock, so credits wait in
    ``pending`` until the clock reaches them: a list of *runs*, each ``[credits, next]`` with
    ``credits`` a time-sorted list of ``(time_ns, stolen_ns)`` (one run per replayed segment
    or contended row). Credits at equal times commute (each only lengthens the quantum
    containing that instant), so applying them in time order is all that matters."""

    index: int
    users: list[UserThread] = field(default_factory=list)
    pending: list[list] = field(default_factory=list)
    ipis: int = 0
    stolen: int = 0

    def credit(self, t: int, stolen: int) -> None:
        self.ipis += 1
        self.stolen += stolen
        if self.users:
            self.pending.append([[(t, stolen)], 0])

    def credit_many(self, credits: list[tuple[int, int]], stolen_ns: int | None = None) -> None:
        """Credit each ``(time_ns, stolen_ns)`` of a time-sorted list (``stolen_ns``: their
        stolen times' sum, when the caller has it already)."""
        if not credits:
            return
        self.ipis += len(credits)
        self.stolen += sum(s for _, s in credits) if stolen_ns is None else stolen_ns
        if self.users:
            self.pending.append([credits, 0])

    def settle(self, now: int) -> None:
        """Apply every credit at or before ``now`` (no later credit can predate ``now``)."""
        if not self.pending:
            return
        batch: list[tuple[int, int]] = []
        runs = 0
        keep = []
        for run in self.pending:
            credits, i = run
            j = i
            n = len(credits)
            while j < n and credits[j][0] <= now:
                j += 1
            if j > i:
                batch.extend(credits[i:j] if i or j < n else credits)
                runs += 1
            if j < n:
                run[1] = j
                keep.append(run)
        self.pending = keep
        if not batch:
            return
        if runs > 1:
            batch.sort(key=_time_of)
        for u in self.users:
            u.credit_many(batch)


def _time_of(credit: tuple[int, int]) -> int:
    return credit[0]


@dataclass
class Mm:
    """One process at run time: its cpumask, mmap_lock, page-table spinlocks and space."""

    spec: MmSpec
    mmap_lock: RwSem
    space: object | None
    ptls: dict = field(default_factory=dict)
    ptl_ranges: list[tuple[int, int]] = field(default_factory=list)  # PMD-index ranges walkers lock

    @property
    def ncpus(self) -> int:
        return len(self.spec.cpus)


class Machine:
    """Everything one run shares."""

    def __init__(self, spec: SimSpec, recorder: Recorder,
                 env: simpy.Environment | None = None, *, reuse: bool = True,
                 caches=None) -> None:
        self.spec = spec
        self.env = env if env is not None else simpy.Environment()
        self.end_ns = 0
        self.events = 0
        self.rec = recorder
        self.progress = None  # a simulate.CallProgress, told of every finished call
        self.profile = spec.profile
        self.target = spec.target
        self.pmd_shift = spec.target.arch.pmd_shift
        self.cpus = [Cpu(i) for i in range(spec.cpus)]
        self.mms: dict[str, Mm] = {}
        for m in spec.mms:
            self.mms[m.name] = Mm(m, RwSem(self.env, f"mmap_lock:{m.name}"), m.space)
        self.rmap_locks: dict[str, RwSem] = {}
        # Locks some actor other than one mm's mremap callers takes: rows on them are contended.
        self.hot_locks: set[str] = {w.lock for w in spec.walkers}
        for w in spec.walkers:
            if w.ptl_mm is not None and w.ptl_range is not None:
                lo, hi = w.ptl_range
                self.mms[w.ptl_mm].ptl_ranges.append((lo >> self.pmd_shift,
                                                      ((hi - 1) >> self.pmd_shift) + 1))
        self.hot_locks |= self._shared_locks()
        from perfsim.engine.plan_cache import PlanCache
        from perfsim.engine.pricing import TemplateCache

        # Reuse of plans and call templates within this run (see those modules), or across
        # the runs given the same ``caches`` (a perfsim.engine.reuse.RunCaches); off only
        # to check that reuse changes nothing.
        shared = caches if reuse else None
        self.templates = TemplateCache(spec.profile, self.hot_locks, enabled=reuse,
                                       store=shared.templates if shared else None)
        self.plans = (shared.plans if shared else PlanCache()) if reuse else None
        self.plan_hits_before = self.plans.hits if self.plans else 0
        self.users = []
        for u in spec.users:
            ut = UserThread(u)
            self.cpus[u.cpu].users.append(ut)
            self.users.append(ut)

    def _shared_locks(self) -> set[str]:
        """rmap locks that callers of two different mms can take (shared file / anon_vma)."""
        seen: dict[str, set[str]] = {}
        callers_mms = {c.mm for c in self.spec.callers}
        for name in callers_mms:
            space = self.mms[name].space
            for v in getattr(space, "vmas", ()):
                for lk in v.rmap_locks():
                    seen.setdefault(lk, set()).add(name)
        return {lk for lk, mms in seen.items() if len(mms) > 1}

    def rmap(self, name: str) -> RwSem:
        lk = self.rmap_locks.get(name)
        if lk is None:
            lk = self.rmap_locks[name] = RwSem(self.env, name)
        return lk

    def ptl(self, mm: Mm, key) -> SpinLock:
        lk = mm.ptls.get(key)
        if lk is None:
            lk = mm.ptls[key] = SpinLock(self.env, f"ptl:{mm.spec.name}:{key}")
        return lk

    def ptl_hot_rows(self, mm: Mm, steps) -> np.ndarray | None:
        """Rows whose page-table spinlocks a walker may hold."""
        if not mm.ptl_ranges:
            return None
        src = steps.old_addr >> self.pmd_shift
        dst = steps.new_addr >> self.pmd_shift
        hit = np.zeros(len(steps), bool)
        for lo, hi in mm.ptl_ranges:
            hit |= ((src >= lo) & (src < hi)) | ((dst >= lo) & (dst < hi))
        return hit & (steps.ptl > 0)

    def ptl_keys(self, steps, i: int) -> list:
        """Spinlocks row ``i`` takes, in order: source then destination (nested)."""
        n = int(steps.ptl[i])
        if n == 0:
            return []
        if steps.kind[i] in _PUD_KINDS:
            return [("page_table_lock",)]
        keys = [("pmd", int(steps.old_addr[i]) >> self.pmd_shift)]
        if n >= 2:
            d = ("pmd", int(steps.new_addr[i]) >> self.pmd_shift)
            if d != keys[0]:
                keys.append(d)
        return keys

    def ptl_keys_of_rows(self, steps, rows) -> dict:
        """``ptl_keys(steps, i)`` for each row ``i`` of ``rows``, reading each column once."""
        rows = list(rows)
        if not rows:
            return {}
        idx = np.asarray(rows)
        ptl = steps.ptl[idx].tolist()
        kind = steps.kind[idx].tolist()
        old = (steps.old_addr[idx] >> self.pmd_shift).tolist()
        new = (steps.new_addr[idx] >> self.pmd_shift).tolist()
        out = {}
        for i, n, k, o, d in zip(rows, ptl, kind, old, new, strict=True):
            if n == 0:
                out[i] = []
            elif k in _PUD_KINDS:
                out[i] = [("page_table_lock",)]
            elif n >= 2 and d != o:
                out[i] = [("pmd", o), ("pmd", d)]
            else:
                out[i] = [("pmd", o)]
        return out

    def settle_users(self, now: int) -> None:
        for c in self.cpus:
            if c.pending:
                c.settle(now)


from perfsim.planner import steps as _S  # noqa: E402

_PUD_KINDS = (_S.K_PUD_MOVE, _S.K_HUGE_PUD_MOVE, _S.K_PUD_MOVE_FAILED)
