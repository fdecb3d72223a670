"""Simulation state: the environment, CPUs, mms and their locks, shared rmap rwsems.

Holds no model decisions; actors (:mod:`perfsim.engine.actors`) use it. Everything lives on
one instance, so two simulations in one process never interfere.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np
import simpy

from perfsim.engine.locks import RwSem, SpinLock
from perfsim.engine.plan_cache import PlanCache
from perfsim.engine.pricing import TemplateCache
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
        """``credit(t, stolen)`` for each pair of a time-sorted list, in order."""
        if credits:
            self.credit_parts(((0, credits, 0, len(credits)),))

    def credit_parts(self, parts) -> None:
        """``credit(t0 + offset, stolen)`` for each ``(offset, stolen)`` of
        ``credits[i:j]``, for each ``(t0, credits, i, j)`` of ``parts``, in order; the
        times must not decrease (the same state as one ``credit`` per pair, fewer steps).

        The loop keeps the current quantum's end relative to the part's ``t0``, so a credit
        that lands inside the quantum costs one comparison and two additions; the quantum's
        delay is that end minus the quantum's undisturbed end."""
        q = self.spec.quantum_ns
        q_start, quanta, max_delay = self.q_start, self.quanta, self.max_delay
        end = q_start + q + self.q_delay
        total = count = 0
        for t0, credits, i, j in parts:
            count += j - i
            e = end - t0
            for o, s in (credits if i == 0 and j == len(credits) else credits[i:j]):
                if o >= e:  # advance_to(t0 + o)
                    end = e + t0
                    delay = end - q_start - q
                    if delay > max_delay:
                        max_delay = delay
                    k = (o - e) // q
                    quanta += 1 + k
                    q_start = end + k * q
                    e = q_start + q - t0
                e += s
                total += s
            end = e + t0
        self.q_start, self.q_delay, self.quanta, self.max_delay = (
            q_start, end - q_start - q, quanta, max_delay)
        self.stolen += total
        self.interrupts += count

    def state(self) -> tuple:
        """Everything ``credit_parts`` reads: equal states given equal credits end equal."""
        return (self.spec.quantum_ns, self.q_start, self.q_delay, self.quanta, self.max_delay)


SETTLE_RUNS = 1024
"""Credit runs a machine lets wait before settling its user threads (memory bound only)."""

_NO_LATER = float("inf")  # (offset, _NO_LATER) sorts after every (offset, stolen) pair


@dataclass
class Cpu:
    """One CPU: the user threads on it and the IPI credits not yet applied.

    Coalesced segments credit IPIs ahead of the simulation clock, so credits wait in
    ``pending`` until they are applied: a list of *runs*, each ``[t0, credits, next]`` with
    ``credits`` a time-sorted sequence of ``(offset_ns, stolen_ns)``, one credit at
    ``t0 + offset_ns`` each (one run per replayed segment or contended row; a template's
    credits are shared, not copied). Credits at equal times commute (each only lengthens the
    quantum containing that instant), so applying them in time order is all that matters.
    Nothing reads a user thread before the run ends, so runs may wait for several calls
    (:meth:`Machine.settle_users`); a credit is never added before the clock, so settling
    at the clock's time is always exact."""

    index: int
    users: list[UserThread] = field(default_factory=list)
    pending: list[list] = field(default_factory=list)
    ipis: int = 0
    stolen: int = 0
    groups: int = 0  # bits of the machine's CreditGroups this CPU belongs to

    def credit(self, t: int, stolen: int) -> None:
        self.ipis += 1
        self.stolen += stolen
        if self.users:
            self.pending.append([t, ((0, stolen),), 0])

    def credit_many(self, credits: list[tuple[int, int]], stolen_ns: int | None = None) -> None:
        """Credit each ``(time_ns, stolen_ns)`` of a time-sorted list (``stolen_ns``: their
        stolen times' sum, when the caller has it already)."""
        if not credits:
            return
        self.credit_run(0, credits, sum(s for _, s in credits) if stolen_ns is None
                        else stolen_ns)

    def credit_run(self, t0: int, credits, stolen_ns: int) -> None:
        """Credit each ``(offset_ns, stolen_ns)`` of a time-sorted sequence at ``t0 +
        offset_ns`` (``stolen_ns``: their stolen times' sum). ``credits`` is kept, not
        copied: it must not change."""
        if not credits:
            return
        self.ipis += len(credits)
        self.stolen += stolen_ns
        if self.users:
            self.pending.append([t0, credits, 0])

    def due(self, now: int) -> list[tuple]:
        """Take the credits at or before ``now`` out of ``pending``: ``(t0, credits, i,
        j)`` per run that has some (``credits[i:j]``), in ``pending`` order."""
        parts, self.pending = _take_due(self.pending, now)
        return parts

    def settle(self, now: int, memo: dict | None = None) -> None:
        """Apply every credit at or before ``now`` (no later credit can predate ``now``);
        ``memo`` as :func:`roll_users`'s."""
        if not self.pending:
            return
        parts = self.due(now)
        if parts and self.users:
            roll_users(self.users, parts, {} if memo is None else memo)


@dataclass(eq=False)
class CreditGroup:
    """CPUs that the same flushes interrupt together: the other CPUs of a caller's mm, or
    the first ``t`` of them (a flush with ``t`` targets). A :class:`Machine` queues a
    replayed segment's credits once per group, not once per CPU, and counts the group's
    IPIs and stolen time once; :meth:`Machine.settle_users` hands both to the CPUs."""

    cpus: tuple[Cpu, ...]
    bit: int  # this group's bit in Cpu.groups of each of its CPUs
    users: bool  # some CPU of the group has user threads (else no run is queued)
    ipis: int = 0
    stolen: int = 0


def _take_due(runs: list[list], now: int) -> tuple[list[tuple], list[list]]:
    """The credits at or before ``now`` of ``runs`` (each ``[t0, credits, next, ...]``):
    ``(t0, credits, i, j, *rest)`` per run that has some (``credits[i:j]``), in order, and
    the runs that keep credits for later (their ``next`` advanced)."""
    parts = []
    keep = []
    for run in runs:
        t0, credits, i = run[0], run[1], run[2]
        x = now - t0
        n = len(credits)
        if credits[-1][0] <= x:
            j = n
        elif credits[i][0] > x:
            j = i
        else:
            j = bisect_right(credits, (x, _NO_LATER), i)
        if j > i:
            parts.append((t0, credits, i, j, *run[3:]))
        if j < n:
            run[2] = j
            keep.append(run)
    return parts, keep


def roll_users(users, parts, memo: dict) -> None:
    """Apply the credits of ``parts`` (``(t0, credits, i, j)``, in queueing order) to each
    of ``users``, in time order.

    ``memo`` (shared by the CPUs of one settle) maps a user state and the exact credits
    applied to it (the runs' identities and ranges) to the state they lead to: users that
    received the same credits in the same state (on every other CPU of a cpumask, all the
    threads of one CPU) are rolled forward once."""
    if len(parts) > 1 and not _in_time_order(parts):
        batch = [(t0 + o, s) for t0, credits, i, j in parts for o, s in credits[i:j]]
        batch.sort()  # equal times commute, so the order among them does not matter
        parts = [(0, batch, 0, len(batch))]
    runs = tuple((id(c), t0, i, j) for t0, c, i, j in parts)
    for u in users:
        key = (u.state(), runs)
        hit = memo.get(key)
        if hit is None:
            stolen, interrupts = u.stolen, u.interrupts
            u.credit_parts(parts)
            # ``parts`` is kept so that no id in ``runs`` is reused while memo lives
            memo[key] = (u.q_start, u.q_delay, u.quanta, u.max_delay,
                         u.stolen - stolen, u.interrupts - interrupts, parts)
        else:
            u.q_start, u.q_delay, u.quanta, u.max_delay = hit[:4]
            u.stolen += hit[4]
            u.interrupts += hit[5]


def _in_time_order(parts) -> bool:
    """Whether the credits of ``parts`` taken one part after the other are time-sorted."""
    last = None
    for p in parts:
        t0, credits, i, j = p[0], p[1], p[2], p[3]
        if last is not None and t0 + credits[i][0] < last:
            return False
        last = t0 + credits[j - 1][0]
    return True


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

    # What every run starts from (class attributes; set on the instance when they change)
    end_ns = 0
    events = 0
    # Timeouts the segment-by-segment schedule has and this run did not need to schedule
    # (a caller's clock ran ahead, caller.py): events = scheduled + folded.
    folded_events = 0
    scheduled_events = 0
    fold = True  # callers may run their clock ahead (caller.py); off for tests
    progress = None  # a simulate.CallProgress, told of every finished call
    settle_runs = SETTLE_RUNS

    def __init__(self, spec: SimSpec, recorder: Recorder,
                 env: simpy.Environment | None = None, *, reuse: bool = True,
                 caches=None) -> None:
        self.spec = spec
        self.env = env if env is not None else simpy.Environment()
        self.rec = recorder
        self.profile = spec.profile
        self.target = spec.target
        self.pmd_shift = spec.target.arch.pmd_shift
        self.cpus = list(map(Cpu, range(spec.cpus)))
        self.mms: dict[str, Mm] = {}
        for m in spec.mms:
            self.mms[m.name] = Mm(m, RwSem(self.env, f"mmap_lock:{m.name}"), m.space)
        self.rmap_locks: dict[str, RwSem] = {}
        # Locks some actor other than one mm's mremap callers takes: rows on them are contended.
        self.hot_locks: set[str] = {w.lock for w in spec.walkers} if spec.walkers else set()
        for w in spec.walkers:
            if w.ptl_mm is not None and w.ptl_range is not None:
                lo, hi = w.ptl_range
                self.mms[w.ptl_mm].ptl_ranges.append((lo >> self.pmd_shift,
                                                      ((hi - 1) >> self.pmd_shift) + 1))
        if len(spec.callers) > 1:  # (one caller's mm shares no lock with another's)
            self.hot_locks |= self._shared_locks()
        # Reuse of plans and call templates within this run (see those modules), or across
        # the runs given the same ``caches`` (a perfsim.engine.reuse.RunCaches); off only
        # to check that reuse changes nothing.
        shared = caches if reuse else None
        self.templates = TemplateCache(spec.profile, self.hot_locks, enabled=reuse,
                                       store=shared.templates if shared else None,
                                       single=_one_call(spec))
        self.plans = (shared.plans if shared else PlanCache()) if reuse else None
        self.plan_hits_before = self.plans.hits if self.plans else 0
        self.users = []
        # Credit runs of CreditGroups not yet applied, in queueing order, each
        # [t0, credits, next, group]; the caller settles when there are more than
        # settle_runs (any bound gives the same records: it only bounds memory).
        self.groups: dict[tuple[int, ...], CreditGroup] = {}
        self.runs: list[list] = []
        for u in spec.users:
            ut = UserThread(u)
            self.cpus[u.cpu].users.append(ut)
            self.users.append(ut)

    def _shared_locks(self) -> set[str]:
        """rmap locks that callers of two different mms can take (shared file / anon_vma)."""
        seen: dict[str, set[str]] = {}
        callers_mms = {c.mm for c in self.spec.callers}
        if len(callers_mms) < 2:
            return set()  # every lock is taken by one mm's callers at most
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

    def credit_group(self, cpus: tuple[int, ...]) -> CreditGroup:
        """The :class:`CreditGroup` of these CPUs (one per distinct tuple)."""
        g = self.groups.get(cpus)
        if g is None:
            members = tuple(self.cpus[c] for c in cpus)
            g = self.groups[cpus] = CreditGroup(members, 1 << len(self.groups),
                                                any(c.users for c in members))
            for c in members:
                c.groups |= g.bit
        return g

    def settle_users(self, now: int) -> None:
        """Apply every IPI credit at or before ``now`` to the user threads, and the
        groups' IPI counts to their CPUs.

        The due credits are taken from the queued runs once; the CPUs that belong to the
        same groups get the same credits in the same order, so each such set is sorted out
        once and its users rolled forward through one memo (:func:`roll_users`). A CPU's
        own pending runs (:meth:`Cpu.credit_run`) are applied after its groups' if both
        are queued (in time order: :func:`roll_users` sorts when needed)."""
        for g in self.groups.values():
            if g.ipis:
                for c in g.cpus:
                    c.ipis += g.ipis
                    c.stolen += g.stolen
                g.ipis = g.stolen = 0
        if not self.users:
            return  # no credit is queued for CPUs without user threads (Cpu.credit_run)
        memo: dict = {}
        parts = ()
        if self.runs:
            parts, self.runs = _take_due(self.runs, now)
        by_groups: dict[int, list] = {}
        for c in self.cpus:
            if not c.users:
                continue
            if c.pending:
                own = c.due(now)
                if own:
                    mine = [p[:4] for p in parts if p[4].bit & c.groups]
                    roll_users(c.users, mine + own, memo)
                    continue
            if parts and c.groups:
                by_groups.setdefault(c.groups, []).append(c)
        for bits, cpus in by_groups.items():
            mine = [p[:4] for p in parts if p[4].bit & bits]
            if mine:
                roll_users([u for c in cpus for u in c.users], mine, memo)


def _one_call(spec: SimSpec) -> bool:
    """Whether ``spec`` makes exactly one mremap call (one caller, one item of a plan
    list, not repeated)."""
    if len(spec.callers) != 1:
        return False
    c = spec.callers[0]
    return c.repeat == 1 and isinstance(c.plans, (tuple, list)) and len(c.plans) == 1


from perfsim.planner import steps as _S  # noqa: E402

_PUD_KINDS = (_S.K_PUD_MOVE, _S.K_HUGE_PUD_MOVE, _S.K_PUD_MOVE_FAILED)
