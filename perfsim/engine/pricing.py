"""Call templates: everything about replaying one plan that does not depend on the clock.

For every call the caller needs the plan's row costs (:func:`perfsim.cost.model.row_costs`),
which rows are contended, the coalesced segments and their durations, the holds and flushes
each uncontended segment records (relative to the segment's start), and the call's totals
(PTEs moved, flushes, cost per category...). A :class:`CallTemplate` holds all of it, built
once with numpy; replaying it costs a few Python operations per segment.

**Reuse.** Within one run, calls whose plans have the same *signature* share one template
(:class:`TemplateCache`, one per :class:`~perfsim.engine.machine.Machine`, so runs never
share state). The signature is every column the template is computed from: the plan's
length, every column of its ``Steps`` the template is computed from (:data:`SIGNATURE_COLUMNS`:
the non-address columns but ``length``: kind, phase, counts, flushes, IPIs, rmap and PTL
counts) with its dtype, the per-row lock-set ids and the lock-set names, and the mm's CPU
count. Calls in an mm whose
page-table spinlocks a walker takes are never reused (which of their rows are contended
depends on their addresses and that mm's walkers). Templates are reused only when the cost of a plan is a pure
function of the plan, i.e. the cost profile has no jitter: :func:`row_costs` then draws
nothing from the run's generator, so skipping it leaves every later draw unchanged. With
jitter a template is built per call from that call's draws, exactly as before.

The cost model reads no address column (its counts come from the columns above), which is
what makes the signature sufficient; ``tests/test_plan_cache.py`` holds cached and fresh
templates to the same values over many random plans and translated copies of them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from perfsim.cost.model import CATEGORIES, row_costs
from perfsim.engine.coalesce import contended_rows, segments
from perfsim.engine.records import CallStats
from perfsim.planner import steps as S

_I64 = np.int64
_PUD_MOVES = (S.K_PUD_MOVE, S.K_HUGE_PUD_MOVE)
#: Columns whose whole-plan totals a call record carries (:func:`build_template`).
_STAT_SUM_COLUMNS = ("flushes", "alloc_p4d", "alloc_pud", "alloc_pmd", "alloc_pte", "freed")

#: The columns a call template is computed from: every non-address column except
#: ``length`` (a row's byte length is priced through its counts, never directly: the
#: syscall row's length is the request's, which differs from call to call).
#: ``tests/test_plan_cache.py`` holds templates of plans differing only in the other
#: columns to equal ones.
SIGNATURE_COLUMNS = tuple(c for c in S.INT_COLUMNS if c != "length")


@dataclass(frozen=True, eq=False)
class SegmentRecords:
    """What one uncontended segment records, relative to its start time ``t0``.

    ``holds``: one entry per (lock set, lock name), in the order the engine writes them:
    ``(name, steps, offsets_ns, holds_ns)``; a hold starts (is requested and acquired) at
    ``t0 + offset``. ``flush``: ``(steps, offsets_ns, full, pages, targets, stolen_ns)`` or
    None; a flush happens at ``t0 + offset``. ``credits``: for the *j*-th other CPU of the
    mm (in cpumask order), the ``(offset_ns, stolen_ns)`` of every flush that interrupts it
    (a flush with ``targets = t`` interrupts the first ``t``)."""

    holds: tuple
    flush: tuple | None
    credits: tuple


@dataclass(frozen=True, eq=False)
class CallTemplate:
    """One plan, priced and segmented (module docstring).

    ``segments``: ``(first row, end row, contended, duration_ns)`` per segment; ``records``:
    a :class:`SegmentRecords` per uncontended segment (None for contended ones); ``row_*``:
    per-row Python lists the contended rows need; ``stats``: the call record's columns from
    ``steps`` to the last cost category."""

    rc: object
    segments: tuple
    records: tuple
    any_contended: bool
    row_total: list
    row_lock_set: list
    row_rmap: list
    row_flush: list
    stats: tuple


def _segment_records(steps, cols, rc, cum, a: int, b: int) -> SegmentRecords:
    base = cum[a]
    holds = []
    rm = np.flatnonzero(cols["rmap"][a:b] > 0) + a
    if len(rm):
        off = cum[rm] - base
        hold = rc.total[rm]
        sets = steps.lock_set[rm]
        for sid in np.unique(sets).tolist():
            sel = sets == sid
            rows, o, h = rm[sel].astype(_I64), off[sel], hold[sel]
            for name in steps.lock_sets[sid]:
                holds.append((name, rows, o, h))
    flush = None
    credits = ()
    fl = np.flatnonzero(cols["flushes"][a:b]) + a
    if len(fl):
        off = (cum[fl + 1] - base).astype(_I64)
        targets = rc.ipis[fl]
        stolen = rc.stolen[fl]
        flush = (fl.astype(_I64), off, cols["flush_full"][fl].astype(bool),
                 cols["flush_pages"][fl].astype(_I64), targets, stolen)
        tl, ol, sl = targets.tolist(), off.tolist(), stolen.tolist()
        cr = []
        counts = set(tl)
        for j in range(max(tl, default=0)):
            if j and j not in counts:
                # no flush interrupts exactly j CPUs: the flushes that reach the j-th CPU
                # (those with more than j targets) are the ones that reached the previous
                cr.append(cr[-1])
                continue
            cr.append(tuple((o, s) for o, t, s in zip(ol, tl, sl, strict=True) if t > j))
        credits = tuple(cr)
    return SegmentRecords(tuple(holds), flush, credits)


def build_template(steps, profile, cpus: int, rng, hot_locks, ptl_hot,
                   folio=None) -> CallTemplate:
    """Price and segment one plan (``ptl_hot``: rows a walker's spinlock may hit, or None;
    ``folio``: the source VMA's large-folio mechanisms, :func:`row_costs`'s ``folio``)."""
    rc = row_costs(steps, profile, cpus=cpus, rng=rng, folio=folio)
    n = len(steps)
    hot_sets = [any(nm in hot_locks for nm in ls) for ls in steps.lock_sets]
    if n and ptl_hot is None and not any(hot_sets):
        bounds = [(0, n, False)]  # what segments() gives when no row is contended
    else:
        starts, ends, hots = segments(contended_rows(steps, np.array(hot_sets, bool), ptl_hot))
        bounds = list(zip(starts.tolist(), ends.tolist(), hots.tolist(), strict=True))
    cum = np.zeros(n + 1, _I64)
    np.cumsum(rc.total, out=cum[1:])
    segs, recs = [], []
    cols = steps.cols
    cum_l = cum.tolist()
    for a, b, h in bounds:
        segs.append((a, b, h, cum_l[b] - cum_l[a]))
        recs.append(None if h else _segment_records(steps, cols, rc, cum, a, b))
    any_hot = any(h for _a, _b, h in bounds)
    kind = cols["kind"]
    kinds = np.bincount(kind, minlength=len(S.KIND_NAMES)).tolist()
    cost = rc.category_sums()
    # the column totals the record needs, in one reduction (int64: the same integers)
    flushes, p4d, pud, pmd, pte, freed = np.array(
        [cols[c] for c in _STAT_SUM_COLUMNS], _I64).sum(axis=1).tolist()
    stats = tuple(CallStats(
        steps=n, segments=len(bounds),
        ptes_moved=int(cols["ptes"][kind == S.K_PTE_MOVE].sum()),
        pmd_moves=kinds[S.K_PMD_MOVE],
        pud_moves=sum(kinds[k] for k in _PUD_MOVES),
        thp_moves=kinds[S.K_THP_MOVE],
        tlb_flushes=flushes, ipis=int(rc.ipis.sum()),
        rmap_holds=int(np.count_nonzero(cols["rmap"] > 0)),
        tables_allocated=p4d + pud + pmd + pte,
        tables_freed=freed,
        **{f"cost_{c}_ns": cost[c] for c in CATEGORIES},
    ))
    if any_hot:
        row_flush = [None] * n
        fl = np.flatnonzero(cols["flushes"])
        for i, full, pages, ipis, stolen in zip(
                fl.tolist(), cols["flush_full"][fl].tolist(), cols["flush_pages"][fl].tolist(),
                rc.ipis[fl].tolist(), rc.stolen[fl].tolist(), strict=True):
            row_flush[i] = (bool(full), int(pages), int(ipis), int(stolen))
        lists = (rc.total.tolist(), steps.lock_set.tolist(), cols["rmap"].tolist(), row_flush)
    else:
        lists = ([], [], [], [])
    return CallTemplate(rc, tuple(segs), tuple(recs), any_hot, *lists, stats)


def _dense_key(part) -> tuple:
    cols = part.cols
    key = [part.lock_sets, part.lock_set.dtype.str, part.lock_set.tobytes()]
    for c in SIGNATURE_COLUMNS:
        v = cols[c]
        key.append(v.dtype.str)
        key.append(v.tobytes())  # C-order bytes whatever the strides
    return tuple(key)


def signature(steps, cpus: int) -> tuple | None:
    """Everything :func:`build_template` reads from a plan, as a hashable key; None for a
    plan that is not worth keying.

    Computed part by part (``Steps.parts()``: the dense tables and periodic blocks the
    planner assembled the plan from), so a plan whose template is reused is never
    materialised. A dense part contributes its non-address columns with dtypes, lock-set
    ids and names. A plan with a periodic block
    (a large regular move, thousands of rows) gets None: such plans practically never
    repeat within a run, and keying one would cost more than the reuse could save. The
    same rows split into parts differently give different keys: a miss, never a wrong hit.
    """
    key = [len(steps), cpus]
    for part in steps.parts():
        if not (isinstance(part, S.Steps) and part.parts() == [part]):
            return None
        key.append(_dense_key(part))
    return tuple(key)


class TemplateCache:
    """Templates of one run, keyed by :func:`signature` (LRU, at most ``max_entries``;
    plans of more than ``max_rows`` rows are not kept).

    ``enabled`` only for a jitter-free cost profile (module docstring). ``store``: a
    :class:`~perfsim.engine.reuse.TemplateStore` shared with other runs, used instead of
    this run's own entries; its keys add what a template depends on besides the plan (the
    profile's content digest and the contended lock names; the CPU count is in the
    signature)."""

    def __init__(self, profile, hot_locks, max_entries: int = 1024, enabled: bool = True,
                 max_rows: int = 65536, store=None) -> None:
        self.profile = profile
        self.max_rows = max_rows
        self.hot_locks = hot_locks
        # A jitter-free profile draws nothing from a generator (row_costs prices it at its
        # medians either way): decided once here instead of per call.
        self.fixed = bool(profile.is_fixed)
        self.enabled = enabled and self.fixed
        self.max_entries = max_entries
        self.entries: OrderedDict = OrderedDict()
        self.store = store if self.enabled else None
        self.scope = (profile.digest, tuple(sorted(hot_locks))) if self.store is not None else None
        self.hits = 0
        self.misses = 0

    def get(self, steps, cpus: int, rng, ptl_hot_of=None, folio=None) -> CallTemplate:
        """The template of ``steps`` in an mm of ``cpus`` CPUs. ``ptl_hot_of(steps)`` gives
        the rows a walker's spinlock may hit; None when no walker takes the mm's PTLs.
        Calls in an mm whose PTLs a walker takes are never reused: which of their rows are
        contended depends on their addresses and on that mm's walkers. ``folio``: the
        source VMA's large-folio mechanisms (part of the key: the same rows cost more when
        the kernel looks up or unfolds large folios)."""
        if self.fixed:
            rng = None
        if ptl_hot_of is not None:
            return build_template(steps, self.profile, cpus, rng, self.hot_locks,
                                  ptl_hot_of(steps), folio)
        if not self.enabled or len(steps) > self.max_rows:
            return build_template(steps, self.profile, cpus, rng, self.hot_locks, None, folio)
        key = signature(steps, cpus)
        if key is None:
            return build_template(steps, self.profile, cpus, rng, self.hot_locks, None, folio)
        if folio is not None:
            key = (key, folio)
        if self.store is not None:
            key = (self.scope, key)
            t = self.store.get(key)
            if t is not None:
                self.hits += 1
                return t
            self.misses += 1
            t = build_template(steps, self.profile, cpus, rng, self.hot_locks, None, folio)
            self.store.put(key, t, len(steps))
            return t
        t = self.entries.get(key)
        if t is not None:
            self.hits += 1
            self.entries.move_to_end(key)
            return t
        self.misses += 1
        t = build_template(steps, self.profile, cpus, rng, self.hot_locks, None, folio)
        self.entries[key] = t
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return t
