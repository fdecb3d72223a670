"""Closed form of the source's unmap after a vectorised move: a contiguous run of empty PTE
tables (``do_munmap`` of the old range once ``move_page_tables`` has emptied it).

After a move of a fully populated range every PMD entry of the source range is a PTE table
with no present PTE, in consecutive PMD slots, and there is no huge PUD: ``unmap_vmas``
zaps nothing, and ``free_pgtables`` frees one contiguous run of PTE tables (the PMD slots
``free_range_bounds`` keeps), the PMD tables of the PUD entries left without PMD entries
and the PUD tables of the top-level entries left without PUD entries. The free order
(``free_pgd_range``: per PUD entry its PTE tables then its PMD table, the PUD table last)
is the PTE run with the few other tables inserted where their
:func:`~perfsim.planner.gather.table_order_key` puts them among the run's own keys (one
binary search, no sort).

:func:`unmap_moved_source` does what :func:`~perfsim.planner.unmap.unmap_arrays` does for
that shape, with the same predicates (``free_range_bounds``, ``free_pte_table``,
``free_pmd_table``, ``free_pud_table``, ``table_order_key``) and returns None for any other
shape (something present in the range, a huge PMD or PUD, a gap in the run), where the
array driver runs as before. tests/test_t13_big2_unmap.py holds the two to each other.

What it reads of a made state goes through :class:`_ArraysView` (searches of the state's
arrays). After a closed-form move the state is a
:class:`~perfsim.planner.fast_closed.MovedTables` not made yet, and :func:`_unmap_pending`
takes the same steps with the answers read from the state before the move and the move's
shape (the source slots emptied, the destination slots and PMD tables added), inline (a
Python call per question cost more than the question), so the unmap makes neither that
state nor its own: the result is a :class:`~perfsim.planner.fast_closed.DeferredTables`
that makes the moved state and then removes what was freed (:func:`_without`, what the
unmap of a made state returns), and the freed tables are a
:class:`~perfsim.planner.gather.FreedRun`. tests/test_t13b_gplan_unmap.py,
tests/test_t13c_plan1g_paths.py and tests/test_t13d_plan1g7_paths.py hold the two to each
other.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from perfsim.mm.pagetable import PMD_TABLE, PUD_LEAF, PageTables
from perfsim.planner.bitmaps import filled
from perfsim.planner.fast_closed import DeferredTables, MovedTables
from perfsim.planner.gather import (
    PMD_TABLE_PAGE,
    PTE_TABLE,
    PUD_TABLE_PAGE,
    FreedRun,
    MmuGather,
    table_order_key,
)
from perfsim.planner.unmap import free_pmd_table, free_pte_table, free_pud_table, free_range_bounds
from perfsim.profiles import Target


class _ArraysView:
    """What the unmap reads of a made state, from its arrays."""

    def __init__(self, pt: PageTables) -> None:
        self.pt = pt
        self.tops = pt.pud_tables

    def empty_run(self, s0: int, s1: int) -> tuple[int, int] | None:
        """``(first slot, entries)``: the entries of PMD slots ``[s0, s1]`` when they are PTE
        tables with no present PTE in consecutive slots (and at least one); else None."""
        pt = self.pt
        i0, i1 = pt.pmd_idx.searchsorted((s0, s1 + 1)).tolist()
        n = i1 - i0
        if n == 0:
            return None
        first = int(pt.pmd_idx[i0])
        if int(pt.pmd_idx[i1 - 1]) - first != n - 1:
            return None
        if np.count_nonzero(pt.pmd_kind[i0:i1] != PMD_TABLE):
            return None
        if np.count_nonzero(pt.mask_pop[pt.pmd_mask[i0:i1]]):
            return None
        return first, n

    def pud_leaf_in(self, lo: int, hi: int) -> bool:
        """A huge PUD among the PUD entries of slots ``[lo, hi)``."""
        pt = self.pt
        j0, j1 = pt.pud_idx.searchsorted((lo, hi)).tolist()
        return bool(np.count_nonzero(pt.pud_kind[j0:j1] == PUD_LEAF))

    def pud_entries(self, lo: int, hi: int) -> tuple[list[int], list[int]]:
        """The PUD entries of slots ``[lo, hi)``: slots and kinds."""
        pt = self.pt
        q0, q1 = pt.pud_idx.searchsorted((lo, hi)).tolist()
        return pt.pud_idx[q0:q1].tolist(), pt.pud_kind[q0:q1].tolist()

    def pmd_under(self, puds: list[int], k_pp: int) -> list[int]:
        """Per PUD slot of ``puds``: the PMD entries under it (``k_pp``: PMD slots per PUD
        slot, as a shift)."""
        at = self.pt.pmd_idx.searchsorted([x for c in puds for x in (c << k_pp, (c + 1) << k_pp)])
        return (at[1::2] - at[::2]).tolist()

    def pud_below(self, slots: list[int]) -> list[int]:
        """Per PUD slot of ``slots``: the PUD entries below it (up to a constant)."""
        return self.pt.pud_idx.searchsorted(slots).tolist()

    def without(self, target: Target, f: int, n: int, gone: list[int],
                tops: frozenset[int]) -> PageTables:
        return _without(self.pt, f, n, gone, tops)


#: ``free_pte_table(PMD_TABLE)``: the run's PTE tables are freed (a constant of the rule,
#: asked once).
_FREES_PTE_TABLES = bool(free_pte_table(PMD_TABLE))


def _without(pt: PageTables, f: int, n: int, gone: list[int], tops: frozenset[int]) -> PageTables:
    """``pt`` without the PMD entries of slots ``f .. f + n - 1`` and the PUD entries of
    ``gone``, with top-level tables ``tops``."""
    k0 = int(pt.pmd_idx.searchsorted(f))
    k1 = k0 + n
    pmd_idx = np.concatenate((pt.pmd_idx[:k0], pt.pmd_idx[k1:]))
    pmd_kind = np.concatenate((pt.pmd_kind[:k0], pt.pmd_kind[k1:]))
    pmd_row = np.concatenate((pt.pmd_mask[:k0], pt.pmd_mask[k1:]))
    pud_idx, pud_kind = pt.pud_idx, pt.pud_kind
    if gone:
        keep = filled(len(pud_idx), True, bool)
        keep[pud_idx.searchsorted(gone)] = False
        pud_idx, pud_kind = pud_idx[keep], pud_kind[keep]
    return PageTables(pt.arch, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_row, pt.masks,
                      pt.mask_pop)


def _freed_slots(start: int, end: int, floor: int, ceiling: int, pmd_size: int,
                 pmd_shift: int, first: int, count: int):
    """``(f, n)``: the PTE tables ``free_pgd_range`` frees of ``[start, end)`` (within
    ``floor``/``ceiling``, its bounds at the PMD level from ``free_range_bounds``) of the
    run of ``count`` emptied tables from slot ``first``: the slots ``f .. f + n - 1``; None
    when the bounds take none of them."""
    b = free_range_bounds(start, end, floor, ceiling, pmd_size)
    if b is None:
        return None
    o0 = min(max((b[0] >> pmd_shift) - first, 0), count)
    o1 = min(max((((b[1] - 1) >> pmd_shift) + 1) - first, 0), count)
    return (first + o0, o1 - o0) if o1 != o0 else None


def _inserted(target: Target, f: int, n: int, others: list[tuple[int, int]]):
    """:class:`FreedRun`'s ``inserted``: each of ``others`` (address, level), in
    :func:`table_order_key` order (ties in the order freed: a stable sort, as argsort's),
    with the number of the run's PTE tables freed before it."""
    # (plain loops: ``others`` holds a table or two, fewer than a comprehension's own call)
    ranked = []
    for i, (ad, lv) in enumerate(others):
        ranked.append((table_order_key(target, ad, lv), i))
    ranked.sort()
    keys = []
    for key, _ in ranked:
        keys.append(key)
    out = []
    for p, (_, i) in zip(_run_positions(target, f, n, keys), ranked):
        out.append((p, *others[i]))
    return out


def _run_positions(target: Target, f: int, n: int, keys: list[int]) -> list[int]:
    """For each of ``keys`` (sorted), how many PTE tables of the run ``f .. f + n - 1`` have
    a :func:`table_order_key` at most it (``searchsorted(..., side="right")`` of the run's
    keys). The key of a PTE table is affine in its slot (the run's keys are the first
    one plus a step per table), so that count is one division."""
    ms = target.arch.pmd_shift
    k0 = table_order_key(target, f << ms, PTE_TABLE)
    step = table_order_key(target, (f + 1) << ms, PTE_TABLE) - k0
    return [min(n, max(0, (k - k0) // step + 1)) for k in keys]


def unmap_moved_source(target: Target, pt: PageTables, start: int, end: int, floor: int,
                       ceiling: int, win_start: int, win_end: int, tlb: MmuGather):
    """:func:`~perfsim.planner.unmap.unmap_arrays` of ``[start, end)`` when every PMD entry
    in it is an empty PTE table, in consecutive slots, and no huge PUD lies in it: nothing
    is zapped (``zapped`` 0, the gather's range untouched) and the tables
    ``free_pgd_range`` frees are computed from the run's bounds. Returns ``(new page
    tables, 0, tables freed)`` with ``tlb`` updated as the array driver updates it (the
    freed tables as a :class:`FreedRun`), or None for any other shape."""
    if end <= start or not _FREES_PTE_TABLES:
        return None
    if type(pt) is MovedTables:
        d = pt.__dict__
        if "_make" in d:  # (pending)
            sh = d["_view_shape"]
            ext = sh.ext
            if start == ext.start and end == ext.end:
                return _unmap_pending(target, pt, sh, start, end, floor, ceiling, win_start,
                                      win_end, tlb)
    a = target.arch
    ms, us = a.pmd_shift, a.pud_shift
    v = _ArraysView(pt)
    run = v.empty_run(start >> ms, (end - 1) >> ms)
    if run is None:
        return None
    first, count = run
    if v.pud_leaf_in(start >> us, ((end - 1) >> us) + 1):
        return None
    run = _freed_slots(start, end, floor, ceiling, a.pmd_size, ms, first, count)
    if run is None:
        return None
    f, n = run  # the first freed PTE table's slot; the run is f .. f + n - 1
    others: list[tuple[int, int]] = []  # (address, level) of the PMD and PUD tables freed
    gone: list[int] = []  # the PUD entries whose PMD table is freed
    bp = free_range_bounds(start, end, floor, ceiling, a.pud_size)
    if bp is not None:
        cand, kinds = v.pud_entries(bp[0] >> us, ((bp[1] - 1) >> us) + 1)
        if cand:
            k_pp = us - ms
            for c, kind, under in zip(cand, kinds, v.pmd_under(cand, k_pp)):
                lo, hi = c << k_pp, (c + 1) << k_pp
                freed_here = max(0, min(hi, f + n) - max(lo, f))  # of the run, in this entry
                if free_pmd_table(kind, under - freed_here):
                    gone.append(c)
                    others.append((c << us, PMD_TABLE_PAGE))
    tops = v.tops
    bt = None if a.pud_folded else free_range_bounds(start, end, floor, ceiling, 1 << a.p4d_shift)
    if bt is not None:
        w0, w1 = win_start >> us, ((win_end - 1) >> us) + 1
        shift = a.p4d_shift - us
        live = set(tops)
        span = range(bt[0] >> a.p4d_shift, ((bt[1] - 1) >> a.p4d_shift) + 1)
        ends = [(max(w0, top << shift), max(w0, min(w1, (top + 1) << shift))) for top in span]
        below = v.pud_below([x for e in ends for x in e])
        for i, top in enumerate(span):
            # the PUD entries left under it that the window sees
            (x, y), bx, by = ends[i], below[2 * i], below[2 * i + 1]
            left = (by - bisect_left(gone, y)) - (bx - bisect_left(gone, x))
            if free_pud_table(top in live, left):
                live.discard(top)
                others.append((top << a.p4d_shift, PUD_TABLE_PAGE))
        tops = frozenset(live)
    inserted = _inserted(target, f, n, others) if others else []
    tlb.table_run = FreedRun(f << ms, n, a.pmd_size, inserted)
    tlb.freed_tables = True
    return v.without(target, f, n, gone, tops), 0, n + len(others)


def _unmap_pending(target: Target, moved: MovedTables, sh, start: int, end: int, floor: int,
                   ceiling: int, win_start: int, win_end: int, tlb: MmuGather):
    """:func:`unmap_moved_source` of the moved range ``[start, end)`` of ``moved``, a
    :class:`MovedTables` not made yet, answering what it reads of that state from the state
    before the move (``moved.before``) and the move's shape ``sh``
    (:class:`~perfsim.planner.fast_closed._Shape`) instead of its arrays: the source's PMD
    entries emptied (the interior fully populated moved whole; an edge slot keeps what lies
    outside the range: ``sh.left``), the destination's ``n_dst`` entries from its first
    slot and the PMD tables the move allocated (``pud_added``) added. The PUD entries it
    can read are those of the top-level entries the source spans, with the move's new ones
    (``sh.view_l``/``view_k``); the PMD entries below each bound of the source's PUD
    entries, ``sh.below`` (other slots are searched in the state before). The same
    predicates and the same steps as for a made state (``tests/test_t13b_gplan_unmap.py``
    holds the two to each other); neither state is made: the result makes the moved state
    minus what was freed when first read."""
    if sh.left:
        return None  # the move left a present PTE in an edge slot: not a run of empty tables
    (ps, ms, us, _, pmd_size, pud_size, p4d_shift, folded, _, _, _, k_pp, top_shift) = sh.consts
    # the run of emptied PTE tables is every source slot, and no huge PUD lies in it (the
    # shape found each of the source's PUD entries a PMD table; the move adds only those)
    first, count = start >> ms, sh.n_src
    run = _freed_slots(start, end, floor, ceiling, pmd_size, ms, first, count)
    if run is None:
        return None
    f, n = run  # the first freed PTE table's slot; the run is f .. f + n - 1
    others: list[tuple[int, int]] = []  # (address, level) of the PMD and PUD tables freed
    gone: list[int] = []  # the PUD entries whose PMD table is freed
    pud_l, pud_k = sh.view_l, sh.view_k
    v_lo, v_hi = sh.view
    bp = free_range_bounds(start, end, floor, ceiling, pud_size)
    if bp is not None:
        lo, hi = bp[0] >> us, ((bp[1] - 1) >> us) + 1
        assert v_lo <= lo and hi <= v_hi, "outside the PUD entries read"
        q0, q1 = bisect_left(pud_l, lo), bisect_left(pud_l, hi)
        if q0 < q1:
            d_lo = (start + sh.delta) >> ms
            d_hi = d_lo + sh.n_dst
            below = sh.below
            for c, kind in zip(pud_l[q0:q1], pud_k[q0:q1]):
                lo, hi = c << k_pp, (c + 1) << k_pp
                b_lo, b_hi = below.get(lo), below.get(hi)  # (the shape read those asked for)
                if b_lo is None or b_hi is None:
                    b_lo, b_hi = moved.__dict__["_view_before"].pmd_idx.searchsorted(
                        (lo, hi)).tolist()
                # the state before's entries and the destination's, less the source's run
                under = b_hi - b_lo + max(0, min(hi, d_hi) - max(lo, d_lo))
                freed_here = max(0, min(hi, f + n) - max(lo, f))  # of the run, in this entry
                if free_pmd_table(kind, under - freed_here):
                    gone.append(c)
                    others.append((c << us, PMD_TABLE_PAGE))
    tops = moved.__dict__["pud_tables"]
    bt = None if folded else free_range_bounds(start, end, floor, ceiling, 1 << p4d_shift)
    if bt is not None:
        w0, w1 = win_start >> us, ((win_end - 1) >> us) + 1
        live = set(tops)
        for top in range(bt[0] >> p4d_shift, ((bt[1] - 1) >> p4d_shift) + 1):
            # the PUD entries left under it that the window sees
            x, y = max(w0, top << top_shift), max(w0, min(w1, (top + 1) << top_shift))
            assert v_lo <= min(x, y) and max(x, y) <= v_hi, "outside the PUD entries read"
            left = (bisect_left(pud_l, y) - bisect_left(gone, y)) - \
                (bisect_left(pud_l, x) - bisect_left(gone, x))
            if free_pud_table(top in live, left):
                live.discard(top)
                others.append((top << p4d_shift, PUD_TABLE_PAGE))
        tops = frozenset(live)
    inserted = _inserted(target, f, n, others) if others else []
    tlb.table_run = FreedRun(f << ms, n, pmd_size, inserted)
    tlb.freed_tables = True
    out = DeferredTables(moved.__dict__["arch"], tops,
                         lambda: _without(moved.made(), f, n, gone, tops))
    return out, 0, n + len(others)
