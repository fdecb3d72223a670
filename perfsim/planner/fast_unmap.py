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
"""

from __future__ import annotations

import numpy as np

from perfsim.mm.pagetable import PMD_TABLE, PUD_LEAF, PageTables
from perfsim.planner.bitmaps import filled, insert_sorted
from perfsim.planner.gather import PMD_TABLE_PAGE, PTE_TABLE, PUD_TABLE_PAGE, MmuGather, table_order_key
from perfsim.planner.unmap import free_pmd_table, free_pte_table, free_pud_table, free_range_bounds
from perfsim.profiles import Target


def _empty_run(pt: PageTables, s0: int, s1: int) -> tuple[int, int] | None:
    """``(i0, i1)``: the entries of PMD slots ``[s0, s1]`` when they are PTE tables with no
    present PTE in consecutive slots (and at least one); else None."""
    i0, i1 = pt.pmd_idx.searchsorted((s0, s1 + 1)).tolist()
    n = i1 - i0
    if n == 0 or int(pt.pmd_idx[i1 - 1]) - int(pt.pmd_idx[i0]) != n - 1:
        return None
    if np.count_nonzero(pt.pmd_kind[i0:i1] != PMD_TABLE):
        return None
    if np.count_nonzero(pt.mask_pop[pt.pmd_mask[i0:i1]]):
        return None
    return i0, i1


def unmap_moved_source(target: Target, pt: PageTables, start: int, end: int, floor: int,
                       ceiling: int, win_start: int, win_end: int, tlb: MmuGather):
    """:func:`~perfsim.planner.unmap.unmap_arrays` of ``[start, end)`` when every PMD entry
    in it is an empty PTE table, in consecutive slots, and no huge PUD lies in it: nothing
    is zapped (``zapped`` 0, the gather's range untouched) and the tables
    ``free_pgd_range`` frees are computed from the run's bounds. Returns ``(new page
    tables, 0, tables freed)`` with ``tlb`` updated as the array driver updates it, or None
    for any other shape."""
    a = target.arch
    ms, us = a.pmd_shift, a.pud_shift
    if end <= start or not free_pte_table(PMD_TABLE):
        return None
    run = _empty_run(pt, start >> ms, (end - 1) >> ms)
    if run is None:
        return None
    i0, i1 = run
    j0, j1 = pt.pud_idx.searchsorted((start >> us, ((end - 1) >> us) + 1)).tolist()
    if np.count_nonzero(pt.pud_kind[j0:j1] == PUD_LEAF):
        return None
    b = free_range_bounds(start, end, floor, ceiling, a.pmd_size)
    if b is None:
        return None
    first = int(pt.pmd_idx[i0])
    k0 = i0 + min(max((b[0] >> ms) - first, 0), i1 - i0)
    k1 = i0 + min(max((((b[1] - 1) >> ms) + 1) - first, 0), i1 - i0)
    n = k1 - k0
    if n == 0:
        return None
    f = first + (k0 - i0)  # the first freed PTE table's slot; the run is f .. f + n - 1
    pmd_idx = np.concatenate((pt.pmd_idx[:k0], pt.pmd_idx[k1:]))
    pmd_kind = np.concatenate((pt.pmd_kind[:k0], pt.pmd_kind[k1:]))
    pmd_row = np.concatenate((pt.pmd_mask[:k0], pt.pmd_mask[k1:]))
    pud_idx, pud_kind = pt.pud_idx, pt.pud_kind
    others: list[tuple[int, int]] = []  # (address, level) of the PMD and PUD tables freed
    bp = free_range_bounds(start, end, floor, ceiling, a.pud_size)
    if bp is not None:
        q0, q1 = pud_idx.searchsorted((bp[0] >> us, ((bp[1] - 1) >> us) + 1)).tolist()
        if q1 > q0:
            cand = pud_idx[q0:q1]
            k_pp = us - ms
            left = (pmd_idx.searchsorted((cand + 1) << k_pp) - pmd_idx.searchsorted(cand << k_pp))
            free_p = free_pmd_table(pud_kind[q0:q1], left)
            if np.count_nonzero(free_p):
                others += [(c << us, PMD_TABLE_PAGE) for c in cand[free_p].tolist()]
                keep = filled(len(pud_idx), True, bool)
                keep[q0:q1] = ~free_p
                pud_idx, pud_kind = pud_idx[keep], pud_kind[keep]
    tops = pt.pud_tables
    bt = None if a.pud_folded else free_range_bounds(start, end, floor, ceiling, 1 << a.p4d_shift)
    if bt is not None:
        w0, w1 = win_start >> us, ((win_end - 1) >> us) + 1
        shift = a.p4d_shift - us
        live = set(tops)
        for top in range(bt[0] >> a.p4d_shift, ((bt[1] - 1) >> a.p4d_shift) + 1):
            # the PUD entries left under it that the window sees (pud_idx is sorted)
            x, y = pud_idx.searchsorted((max(w0, top << shift),
                                         max(w0, min(w1, (top + 1) << shift)))).tolist()
            if free_pud_table(top in live, y - x):
                live.discard(top)
                others.append((top << a.p4d_shift, PUD_TABLE_PAGE))
        tops = frozenset(live)
    addrs = (np.arange(f, f + n, dtype=np.int64) << ms)
    levels = filled(n, PTE_TABLE, np.int8)
    if others:
        keys = [table_order_key(target, ad, lv) for ad, lv in others]
        order = sorted(range(len(others)), key=keys.__getitem__)  # stable, as argsort's
        run_keys = table_order_key(target, addrs, PTE_TABLE)  # non-decreasing along the run
        pos = run_keys.searchsorted([keys[i] for i in order], side="right")
        addrs, levels = insert_sorted(
            (addrs, levels), pos,
            (np.array([others[i][0] for i in order], np.int64),
             np.array([others[i][1] for i in order], np.int8)))
    tlb.table_arrays = (addrs, levels)
    tlb.freed_tables = True
    new_pt = PageTables(a, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_row, pt.masks,
                        pt.mask_pop)
    return new_pt, 0, n + len(others)

