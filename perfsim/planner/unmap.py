"""Unmapping a range: ``unmap_vmas`` (zap), ``free_pgtables`` and the ``mmu_gather`` flush.

Used for ``do_munmap`` of a mapped ``MREMAP_FIXED`` destination, the tail of a shrink, the
source after a successful move (``unmap_source_vma``, R22.6.5) and the exec stack's
``free_pgd_range`` (R21.6). Page-table pages are freed only where their whole span lies
between ``floor`` (the end of the previous VMA) and ``ceiling`` (the start of the next),
rounded the way ``free_pgd_range`` rounds at each level.
"""

from __future__ import annotations

from perfsim.mm.pagetable import PMD_LEAF, PMD_NONE, PMD_TABLE, PUD_LEAF, PUD_NONE, Window, range_mask
from perfsim.planner import steps as S
from perfsim.planner.tlb import flush_range
from perfsim.profiles import Target


class Gather:
    """An ``mmu_gather``: the range to flush and what kind of entries were cleared."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.end = 0
        self.cleared_ptes = False
        self.cleared_pmds = False
        self.cleared_puds = False
        self.freed_tables = False

    def adjust(self, start: int, end: int) -> None:
        self.start = start if self.start is None else min(self.start, start)
        self.end = max(self.end, end)

    def stride_shift(self, target: Target) -> int:
        """``tlb_get_unmap_shift``: the smallest level with cleared entries."""
        a = target.arch
        if self.cleared_ptes:
            return a.page_shift
        if self.cleared_pmds:
            return a.pmd_shift
        return a.pud_shift


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
            tlb.cleared_pmds = True
            tlb.freed_tables = True
            tlb.adjust(slot << a.pmd_shift, (slot << a.pmd_shift) + a.page_size)
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
                tlb.cleared_puds = True
                tlb.freed_tables = True
                tlb.adjust(pslot << a.pud_shift, (pslot << a.pud_shift) + a.page_size)
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
                    tlb.freed_tables = True
                    tlb.adjust(top << a.p4d_shift, (top << a.p4d_shift) + a.page_size)
    return freed


def finish(target: Target, tlb: Gather, log: S.StepLog, phase: int, start: int, end: int,
           zapped: int, freed: int, *, cpus: int, lazy_cpus: int) -> None:
    """Record the zap and ``tlb_finish_mmu``: one flush of the gathered range, if any."""
    if zapped:
        log.add(phase, S.K_ZAP, start, 0, end - start, ptes=zapped)
    flush = None
    if tlb.start is not None:
        shift = tlb.stride_shift(target)
        span = tlb.end - tlb.start
        # flush_tlb_func invalidates one stride per loop iteration: round the count up.
        end_rounded = tlb.start + ((span + (1 << shift) - 1) >> shift << shift)
        flush = flush_range(target, tlb.start, end_rounded, stride_shift=shift, cpus=cpus,
                            lazy_cpus=lazy_cpus, freed_tables=tlb.freed_tables)
    if freed or flush is not None:
        log.add(phase, S.K_FREE_TABLES, start, 0, end - start, freed=freed, flush=flush)
