"""Unmapping a range: ``unmap_vmas`` (zap), ``free_pgtables`` and the ``mmu_gather`` flush.

Used for ``do_munmap`` of a mapped ``MREMAP_FIXED`` destination, the tail of a shrink, the
source after a successful move (``unmap_source_vma``, R22.6.5) and the exec stack's
``free_pgd_range`` (R21.6). Page-table pages are freed only where their whole span lies
between ``floor`` (the end of the previous VMA) and ``ceiling`` (the start of the next),
rounded the way ``free_pgd_range`` rounds at each level.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.mm.pagetable import (
    PMD_LEAF,
    PMD_NONE,
    PMD_TABLE,
    PUD_LEAF,
    PUD_NONE,
    Window,
    range_mask,
)
from perfsim.planner import steps as S
from perfsim.planner.options import DEFAULT, PlanOptions
from perfsim.planner.tlb import flush_range
from perfsim.profiles import Target

PTE_TABLE, PMD_TABLE_PAGE, PUD_TABLE_PAGE = 1, 2, 3
"""Levels of a freed page-table page: a PTE table (freed with ``pte_free_tlb``, which marks
``cleared_pmds``), a PMD table (``pmd_free_tlb``, ``cleared_puds``), a PUD table
(``pud_free_tlb``, ``cleared_p4ds``)."""


def table_batch_capacity(target: Target) -> int:
    """``MAX_TABLE_BATCH``: page-table pages one ``mmu_table_batch`` page holds (a page of
    pointers after a 24-byte header). When a batch fills, the gathered range is flushed
    before the tables are handed to RCU: 509 on 4 KiB pages. Seen on this machine's
    6.18 kernel: E4 at 1 GiB frees 515 tables with 2 flushes, at 2 GiB 1028 with 3
    (docs/host-measurements.md)."""
    return (target.arch.page_size - 24) // 8


def table_order_key(target: Target, addrs, levels):
    """Sort key putting freed tables in the order ``free_pgd_range`` frees them: per PUD
    entry its PTE tables then its PMD table; the PUD table after all its PUD entries."""
    a = target.arch
    kpp = a.pud_shift - a.pmd_shift
    ktop = a.p4d_shift - a.pmd_shift
    import numpy as np

    lv = np.asarray(levels)
    if len(lv) and lv.min() == lv.max():  # one level: one formula, no masks
        if lv[0] == PTE_TABLE:
            return (addrs >> a.pmd_shift) * 4
        if lv[0] == PMD_TABLE_PAGE:
            return (((addrs >> a.pud_shift) + 1) << kpp) * 4 - 2
        return (((addrs >> a.p4d_shift) + 1) << ktop) * 4 - 1
    pte = (addrs >> a.pmd_shift) * 4
    pmd = (((addrs >> a.pud_shift) + 1) << kpp) * 4 - 2
    pud = (((addrs >> a.p4d_shift) + 1) << ktop) * 4 - 1
    return (lv == PTE_TABLE) * pte + (lv == PMD_TABLE_PAGE) * pmd + (lv == PUD_TABLE_PAGE) * pud


def merge_free_order(target: Target, addrs: list, levels: list):
    """Merge per-level lists of freed tables (each sorted by address) into kernel free
    order. The largest list (the PTE tables) is taken as is and the few others are inserted
    by binary search, so a million freed tables cost one pass, not a sort."""
    import numpy as np

    big = max(range(len(addrs)), key=lambda i: len(addrs[i]))
    out_a = np.asarray(addrs[big], np.int64)
    out_l = np.asarray(levels[big], np.int8)
    rest = [i for i in range(len(addrs)) if i != big and len(addrs[i])]
    if not rest:
        return out_a, out_l
    a_ = np.concatenate([np.asarray(addrs[i], np.int64) for i in rest])
    l_ = np.concatenate([np.asarray(levels[i], np.int8) for i in rest])
    k_ = table_order_key(target, a_, l_)
    order = np.argsort(k_, kind="stable")
    pos = np.searchsorted(table_order_key(target, out_a, out_l), k_[order], side="right")
    out_a = np.insert(out_a, pos, a_[order])
    out_l = np.insert(out_l, pos, l_[order])
    return out_a, out_l


class Gather:
    """An ``mmu_gather``: the zapped range and its cleared levels, plus the page-table
    pages freed, in the order they were freed (:func:`finish` turns them into flushes)."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.end = 0
        self.cleared_ptes = False
        self.cleared_pmds = False
        self.cleared_puds = False
        self.freed_tables = False
        self.tables: list[tuple[int, int]] = []
        self.table_arrays = None  # (addrs, levels) numpy arrays in free order, if set

    def adjust(self, start: int, end: int) -> None:
        self.start = start if self.start is None else min(self.start, start)
        self.end = max(self.end, end)

    def free_table(self, addr: int, level: int) -> None:
        self.tables.append((addr, level))
        self.freed_tables = True

    def freed(self, target: Target):
        """``(addrs, levels)`` of every freed table, in kernel free order."""
        import numpy as np

        if self.table_arrays is not None:
            return self.table_arrays
        if not self.tables:
            return np.zeros(0, np.int64), np.zeros(0, np.int8)
        addrs = np.array([t[0] for t in self.tables], np.int64)
        levels = np.array([t[1] for t in self.tables], np.int8)
        order = np.argsort(table_order_key(target, addrs, levels), kind="stable")
        return addrs[order], levels[order]

    def zap_shift(self, target: Target) -> int | None:
        """``tlb_get_unmap_shift`` for what the zap cleared, or None if it cleared nothing."""
        a = target.arch
        if self.cleared_ptes:
            return a.page_shift
        if self.cleared_pmds:
            return a.pmd_shift
        if self.cleared_puds:
            return a.pud_shift
        return None


def zap_range(target: Target, win: Window, start: int, end: int, tlb: Gather) -> int:
    """``unmap_vmas`` over ``[start, end)``: clear present entries; return pages zapped."""
    a = target.arch
    zapped = 0
    for slot in range(start >> a.pmd_shift, ((end - 1) >> a.pmd_shift) + 1):
        base = slot << a.pmd_shift
        pud = win.pud.get(base >> a.pud_shift, PUD_NONE)
        if pud == PUD_LEAF:
            continue  # handled per PUD below
        kind, mask = win.pmd.get(slot, (PMD_NONE, 0))
        if kind == PMD_NONE:
            continue
        lo = (max(start, base) - base) >> a.page_shift
        hi = (min(end, base + a.pmd_size) - base) >> a.page_shift
        if kind == PMD_LEAF:
            if lo == 0 and hi == a.ptrs_per_pte:
                win.pmd.pop(slot)
                zapped += a.ptrs_per_pte
                tlb.cleared_pmds = True
                tlb.adjust(base, base + a.pmd_size)
                continue
            kind, mask = PMD_TABLE, (1 << a.ptrs_per_pte) - 1  # split, then zap the PTEs
        hit = mask & range_mask(lo, hi)
        if hit:
            zapped += hit.bit_count()
            win.pmd[slot] = (PMD_TABLE, mask & ~hit)
            tlb.cleared_ptes = True
            tlb.adjust(base + (lo << a.page_shift), base + (hi << a.page_shift))
        else:
            win.pmd[slot] = (kind, mask)
    for pslot in range(start >> a.pud_shift, ((end - 1) >> a.pud_shift) + 1):
        if win.pud.get(pslot, PUD_NONE) == PUD_LEAF:
            base = pslot << a.pud_shift
            if start <= base and base + a.pud_size <= end:
                win.pud.pop(pslot)
                zapped += 1 << (a.pud_shift - a.page_shift)
                tlb.cleared_puds = True
                tlb.adjust(base, base + a.pud_size)
    return zapped


def _level_bounds(addr: int, end: int, floor: int, ceiling: int, size: int) -> tuple[int, int] | None:
    """Round ``[addr, end)`` inward to whole ``size`` units that lie in ``[floor, ceiling)``
    (``ceiling == 0`` means the top of the address space), as ``free_pgd_range`` does."""
    a = addr - addr % size
    if a < floor:
        a += size
    if ceiling:
        c = ceiling - ceiling % size
        if c == 0:
            return None
        if end - 1 > c - 1:
            end = c
    if a >= end:
        return None
    return a, end


def free_pgd_range(target: Target, win: Window, addr: int, end: int, floor: int, ceiling: int,
                   tlb: Gather) -> int:
    """Free the page-table pages of ``[addr, end)`` that no neighbour can be using; return
    how many pages were freed. Lower levels first, like the kernel."""
    a = target.arch
    freed = 0
    b = _level_bounds(addr, end, floor, ceiling, a.pmd_size)
    if b is None:
        return 0
    lo, hi = b
    for slot in range(lo >> a.pmd_shift, ((hi - 1) >> a.pmd_shift) + 1):
        kind, _ = win.pmd.get(slot, (PMD_NONE, 0))
        if kind == PMD_TABLE:
            win.pmd.pop(slot)
            freed += 1
            tlb.free_table(slot << a.pmd_shift, PTE_TABLE)
    # PMD tables: the whole PUD span must be inside [floor, ceiling).
    b = _level_bounds(addr, end, floor, ceiling, a.pud_size)
    if b is not None:
        lo, hi = b
        for pslot in range(lo >> a.pud_shift, ((hi - 1) >> a.pud_shift) + 1):
            if win.pud.get(pslot, PUD_NONE) not in (PUD_NONE, PUD_LEAF):
                shift = a.pud_shift - a.pmd_shift
                if any((s >> shift) == pslot for s in win.pmd):
                    continue  # still maps something (should not happen inside the span)
                win.pud.pop(pslot)
                freed += 1
                tlb.free_table(pslot << a.pud_shift, PMD_TABLE_PAGE)
    # PUD tables: the whole top-level span must be inside [floor, ceiling).
    if not a.pud_folded:
        b = _level_bounds(addr, end, floor, ceiling, 1 << a.p4d_shift)
        if b is not None:
            lo, hi = b
            shift = a.p4d_shift - a.pud_shift
            for top in range(lo >> a.p4d_shift, ((hi - 1) >> a.p4d_shift) + 1):
                if top in win.pud_tables and not any((s >> shift) == top for s in win.pud):
                    win.pud_tables.discard(top)
                    freed += 1
                    tlb.free_table(top << a.p4d_shift, PUD_TABLE_PAGE)
    return freed


def finish(target: Target, tlb: Gather, log: S.StepLog, phase: int, start: int, end: int,
           zapped: int, freed: int, *, cpus: int, lazy_cpus: int) -> None:
    """Record the zap and the flushes of the gather: one each time a table batch fills
    (:func:`table_batch_capacity`), and one in ``tlb_finish_mmu`` for what is left. Each
    flush covers the range gathered since the previous one, with the stride of the lowest
    level cleared in it (``tlb_get_unmap_shift``)."""
    import numpy as np

    a = target.arch
    if zapped:
        log.add(phase, S.K_ZAP, start, 0, end - start, ptes=zapped)
    addrs, levels = tlb.freed(target)
    n = len(addrs)
    zap_shift = tlb.zap_shift(target)
    if n == 0:
        if tlb.start is not None and zap_shift is not None:
            flush = flush_range(target, tlb.start, tlb.end, stride_shift=zap_shift, cpus=cpus,
                                lazy_cpus=lazy_cpus, freed_tables=False)
            log.add(phase, S.K_FREE_TABLES, start, 0, end - start, freed=0, flush=flush)
        return
    cap = table_batch_capacity(target)
    cuts = np.arange(0, n, cap)
    lo = np.minimum.reduceat(addrs, cuts)
    hi = np.maximum.reduceat(addrs, cuts) + a.page_size
    lvl = np.minimum.reduceat(levels, cuts)
    counts = np.diff(np.append(cuts, n))
    shift_of = {PTE_TABLE: a.pmd_shift, PMD_TABLE_PAGE: a.pud_shift, PUD_TABLE_PAGE: a.p4d_shift}
    for i, (s_, e_, lv, k) in enumerate(zip(lo.tolist(), hi.tolist(), lvl.tolist(), counts.tolist())):
        shift = shift_of[lv]
        if i == 0 and tlb.start is not None and zap_shift is not None:
            s_, e_ = min(s_, tlb.start), max(e_, tlb.end)
            shift = min(shift, zap_shift)
        flush = flush_range(target, s_, e_, stride_shift=shift, cpus=cpus, lazy_cpus=lazy_cpus,
                            freed_tables=True)
        log.add(phase, S.K_FREE_TABLES, start, 0, end - start, freed=k, flush=flush)


# ---------------------------------------------------------------------------- array variant
def _append_mask_rows(pt, ints: list[int]):
    """``pt.masks``/``mask_pop`` with the bitmaps ``ints`` appended; their row ids."""
    import numpy as np

    from perfsim.mm.pagetable import _int_to_words

    if not ints:
        return pt.masks, pt.mask_pop, []
    w = pt.masks.shape[1]
    rows = np.stack([_int_to_words(m, w) for m in ints])
    ids = list(range(len(pt.masks), len(pt.masks) + len(ints)))
    pop = np.bitwise_count(rows).sum(axis=1).astype(np.int32)
    return np.concatenate([pt.masks, rows]), np.concatenate([pt.mask_pop, pop]), ids


def unmap_arrays(target: Target, pt, start: int, end: int, floor: int, ceiling: int,
                 win_start: int, win_end: int, tlb: Gather):
    """:func:`zap_range` then :func:`free_pgd_range` on the arrays of ``pt``, with no Python
    work per PMD slot. ``[win_start, win_end)`` is the range the dict version's window would
    cover (its PUD-slot rounding bounds what the top-level test can see).

    Returns ``(new page tables, pages zapped, tables freed)``; ``tlb`` is updated exactly as
    the dict version updates it.
    """
    import numpy as np

    from perfsim.mm.pagetable import PUD_TABLE, PageTables, _words_to_int

    a = target.arch
    ps, ms, us = a.page_shift, a.pmd_shift, a.pud_shift
    P, ptrs, k_pp = a.pmd_size, a.ptrs_per_pte, us - ms
    pmd_idx, pmd_kind, pmd_row = pt.pmd_idx, pt.pmd_kind, pt.pmd_mask
    pud_idx, pud_kind = pt.pud_idx, pt.pud_kind
    masks, mask_pop = pt.masks, pt.mask_pop
    zapped = 0
    starts_g: list[int] = []
    ends_g: list[int] = []

    # ---------------------------------------------------------------- zap (unmap_vmas)
    s0, s1 = start >> ms, (end - 1) >> ms
    i0, i1 = (int(x) for x in np.searchsorted(pmd_idx, [s0, s1 + 1]))
    remove = None
    # Nothing to zap when every entry in range is a PTE table with no present PTE (the
    # source after a move): skip the per-entry work.
    empty = i1 == i0 or (not (pmd_kind[i0:i1] != PMD_TABLE).any()
                         and not mask_pop[pmd_row[i0:i1]].any())
    if not empty:
        idx = pmd_idx[i0:i1]
        kind = pmd_kind[i0:i1]
        row = pmd_row[i0:i1]
        j0, j1 = np.searchsorted(pud_idx, [start >> us, ((end - 1) >> us) + 1])
        leaf_puds = pud_idx[j0:j1][pud_kind[j0:j1] == PUD_LEAF]
        live = ~np.isin(idx >> k_pp, leaf_puds) if len(leaf_puds) else np.ones(len(idx), bool)
        # in-slot page range [lo, hi) of each entry: only the first and last slot are partial
        lo = np.zeros(len(idx), np.int64)
        hi = np.full(len(idx), ptrs, np.int64)
        lo[idx == s0] = (start - (s0 << ms)) >> ps
        hi[idx == s1] = (end - (s1 << ms)) >> ps
        whole = (lo == 0) & (hi == ptrs)
        leaf = live & (kind == PMD_LEAF)
        leaf_whole = leaf & whole
        table = live & (kind == PMD_TABLE)
        hits = np.zeros(len(idx), np.int64)
        tw = table & whole
        hits[tw] = mask_pop[row[tw]]
        new_row = row.copy()
        new_kind = kind.copy()
        new_row[tw & (hits > 0)] = 0
        edge_ints: list[int] = []
        edge_pos: list[int] = []
        for k in np.flatnonzero((table | leaf) & ~whole).tolist():
            m = (1 << ptrs) - 1 if kind[k] == PMD_LEAF else _words_to_int(masks[row[k]])
            r = range_mask(int(lo[k]), int(hi[k]))
            h = m & r
            hits[k] = h.bit_count()
            if h:
                edge_ints.append(m & ~h)
                edge_pos.append(k)
                new_kind[k] = PMD_TABLE
        masks, mask_pop, ids = _append_mask_rows(pt, edge_ints)
        for k, rid, m in zip(edge_pos, ids, edge_ints):
            new_row[k] = rid if m else 0
        zapped += int(hits.sum()) + int(np.count_nonzero(leaf_whole)) * ptrs
        hit_pte = hits > 0
        hit_pte &= ~leaf_whole
        base = idx << ms
        if hit_pte.any():
            tlb.cleared_ptes = True
            starts_g.append(int((base + (lo << ps))[hit_pte].min()))
            ends_g.append(int((base + (hi << ps))[hit_pte].max()))
        if leaf_whole.any():
            tlb.cleared_pmds = True
            starts_g.append(int(base[leaf_whole].min()))
            ends_g.append(int(base[leaf_whole].max()) + P)
        remove = np.zeros(len(pmd_idx), bool)
        remove[i0:i1] = leaf_whole
        pmd_kind = pmd_kind.copy()
        pmd_row = pmd_row.copy()
        pmd_kind[i0:i1] = new_kind
        pmd_row[i0:i1] = new_row
    # PUD leaves wholly inside the range
    j0, j1 = (int(x) for x in np.searchsorted(pud_idx, [start >> us, ((end - 1) >> us) + 1]))
    pslots = pud_idx[j0:j1]
    gone = (pud_kind[j0:j1] == PUD_LEAF) & ((pslots << us) >= start) & (((pslots + 1) << us) <= end)
    if gone.any():
        zapped += int(np.count_nonzero(gone)) << (us - ps)
        tlb.cleared_puds = True
        starts_g.append(int(pslots[gone].min()) << us)
        ends_g.append((int(pslots[gone].max()) + 1) << us)
        keep = np.ones(len(pud_idx), bool)
        keep[j0:j1] = ~gone
        pud_idx, pud_kind = pud_idx[keep], pud_kind[keep]
    if remove is not None and remove.any():
        keep = ~remove
        pmd_idx, pmd_kind, pmd_row = pmd_idx[keep], pmd_kind[keep], pmd_row[keep]
    for s, e in zip(starts_g, ends_g):
        tlb.adjust(s, e)

    # ---------------------------------------------------------------- free_pgd_range
    freed = 0
    ev_addr: list = []
    ev_level: list = []
    tops = pt.pud_tables
    b = _level_bounds(start, end, floor, ceiling, P)
    if b is not None:
        lo_b, hi_b = b
        f0, f1 = lo_b >> ms, (hi_b - 1) >> ms
        k0, k1 = (int(x) for x in np.searchsorted(pmd_idx, [f0, f1 + 1]))
        if k1 > k0:
            tab = pmd_kind[k0:k1] == PMD_TABLE
            n = int(np.count_nonzero(tab))
            if n:
                freed += n
                sl = pmd_idx[k0:k1][tab]
                ev_addr.append(sl << ms)
                ev_level.append(np.full(n, PTE_TABLE, np.int8))
                keep = np.ones(len(pmd_idx), bool)
                keep[k0:k1] = ~tab
                pmd_idx, pmd_kind, pmd_row = pmd_idx[keep], pmd_kind[keep], pmd_row[keep]
        b = _level_bounds(start, end, floor, ceiling, a.pud_size)
        if b is not None:
            lo_b, hi_b = b
            p0, p1 = lo_b >> us, (hi_b - 1) >> us
            q0, q1 = (int(x) for x in np.searchsorted(pud_idx, [p0, p1 + 1]))
            cand = pud_idx[q0:q1]
            is_tab = pud_kind[q0:q1] == PUD_TABLE
            first = np.searchsorted(pmd_idx, cand << k_pp)
            last = np.searchsorted(pmd_idx, (cand + 1) << k_pp)
            free_p = is_tab & (first == last)
            if free_p.any():
                fp = cand[free_p]
                freed += len(fp)
                ev_addr.append(fp << us)
                ev_level.append(np.full(len(fp), PMD_TABLE_PAGE, np.int8))
                keep = np.ones(len(pud_idx), bool)
                keep[q0:q1] = ~free_p
                pud_idx, pud_kind = pud_idx[keep], pud_kind[keep]
        if not a.pud_folded:
            b = _level_bounds(start, end, floor, ceiling, 1 << a.p4d_shift)
            if b is not None:
                lo_b, hi_b = b
                shift = a.p4d_shift - us
                w0, w1 = win_start >> us, ((win_end - 1) >> us) + 1
                in_win = pud_idx[(pud_idx >= w0) & (pud_idx < w1)] >> shift
                new_tops = set(tops)
                for top in range(lo_b >> a.p4d_shift, ((hi_b - 1) >> a.p4d_shift) + 1):
                    if top in new_tops and not (in_win == top).any():
                        new_tops.discard(top)
                        freed += 1
                        ev_addr.append(np.array([top << a.p4d_shift], np.int64))
                        ev_level.append(np.array([PUD_TABLE_PAGE], np.int8))
                tops = frozenset(new_tops)
    if ev_addr:
        tlb.table_arrays = merge_free_order(target, ev_addr, ev_level)
        tlb.freed_tables = True
    new_pt = PageTables(a, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_row, masks, mask_pop)
    return new_pt, zapped, freed


@dataclass(frozen=True)
class UnmapRegion:
    """One ``do_munmap`` range and its surroundings: ``[start, end)`` is unmapped; page
    tables are freed only between ``floor`` (end of the previous VMA, 0 if none) and
    ``ceiling`` (start of the next VMA, 0 if none), as ``free_pgtables`` does; ``span`` covers
    the VMAs the range touches (the part of the page tables the walk may read)."""

    start: int
    end: int
    floor: int
    ceiling: int
    span: tuple[int, int]


def unmap_region(target: Target, pt, region: UnmapRegion, log: S.StepLog, phase: int, *,
                 cpus: int, lazy_cpus: int, options: PlanOptions = DEFAULT):
    """``unmap_region``: zap the PTEs of the range, free the page tables between the
    neighbours, and flush as the ``mmu_gather`` does; returns the page tables after."""
    tlb = Gather()
    start, end = region.start, region.end
    if options.array_unmap:
        # Array variant of zap + free_pgd_range (same rows and state as the walk below,
        # without a Python object per PMD slot: the source of a 1 TiB move is 512 Ki tables).
        out, zapped, freed = unmap_arrays(target, pt, start, end, region.floor, region.ceiling,
                                          region.span[0], region.span[1], tlb)
    else:
        win = pt.window(*region.span)
        zapped = zap_range(target, win, start, end, tlb)
        freed = free_pgd_range(target, win, start, end, region.floor, region.ceiling, tlb)
        out = pt.replace_window(win)
    finish(target, tlb, log, phase, start, end, zapped, freed, cpus=cpus, lazy_cpus=lazy_cpus)
    return out
