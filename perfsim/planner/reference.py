"""``move_page_tables()`` extent by extent: the readable, exact reference planner.

This module mirrors mm/mremap.c's ``move_page_tables`` and the helpers it calls
(``get_extent``, ``alloc_new_pud``, ``alloc_new_pmd``, ``move_pgt_entry`` with
``move_normal_pud``/``move_huge_pud``/``move_normal_pmd``/``move_huge_pmd``,
``split_huge_pmd``, ``move_ptes``) rule by rule (kernel-model.md R5–R17). It walks a
mutable :class:`~perfsim.mm.pagetable.Window` of the page tables, so every effect of one
step is visible to the next: this matters when source and destination share page-table
pages, and for the exec stack's overlapping move.

Its cost is one Python iteration per extent. :mod:`perfsim.planner.fast` computes the same
rows with numpy when source and destination touch disjoint page-table pages; the tests hold
the two to identical output.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.mm.pagetable import (
    PMD_LEAF,
    PMD_NONE,
    PMD_TABLE,
    PUD_LEAF,
    PUD_NONE,
    PUD_TABLE,
    Window,
    range_mask,
)
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.batch import pte_batches
from perfsim.planner.realign import PageTableMoveControl
from perfsim.planner.tlb import flush_pmd_range, flush_pud_range, flush_range
from perfsim.profiles import Target


@dataclass
class MoveContext:
    """What one ``move_page_tables`` call needs besides the control block."""

    target: Target
    win: Window
    log: S.StepLog
    phase: int = S.MOVE
    cpus: int = 1
    lazy_cpus: int = 0
    fail_alloc_at: int | None = None
    allocations: int = 0

    # -------------------------------------------------------------- allocation
    def _allocate(self) -> bool:
        """One page-table page allocation; False when the injected failure hits it."""
        self.allocations += 1
        return self.fail_alloc_at is None or self.allocations != self.fail_alloc_at

    def alloc_new_pud(self, addr: int, counts: dict) -> bool:
        """``alloc_new_pud``: make sure a PUD table maps ``addr`` at the destination."""
        arch = self.target.arch
        if arch.pud_folded:
            return True
        top = addr >> arch.p4d_shift
        if top in self.win.pud_tables:
            return True
        if not arch.p4d_folded:
            pgd = addr >> arch.pgd_shift
            shift = arch.pgd_shift - arch.p4d_shift
            if not any((t >> shift) == pgd for t in self.win.pud_tables):
                if not self._allocate():
                    return False
                counts["alloc_p4d"] = counts.get("alloc_p4d", 0) + 1
        if not self._allocate():
            return False
        counts["alloc_pud"] = counts.get("alloc_pud", 0) + 1
        self.win.pud_tables.add(top)
        return True

    def alloc_new_pmd(self, addr: int, counts: dict) -> bool:
        """``alloc_new_pmd``: PUD table first, then a PMD table if the PUD entry is none."""
        if not self.alloc_new_pud(addr, counts):
            return False
        slot = addr >> self.target.arch.pud_shift
        if self.win.pud.get(slot, PUD_NONE) == PUD_NONE:
            if not self._allocate():
                return False
            counts["alloc_pmd"] = counts.get("alloc_pmd", 0) + 1
            self.win.pud[slot] = PUD_TABLE
        return True


def get_extent(shift: int, old_addr: int, new_addr: int, old_end: int) -> int:
    """``get_extent``: distance to the nearer of the next source and destination boundary
    of this level, capped by what is left of the range (R7)."""
    size = 1 << shift
    old_next = old_addr - old_addr % size + size
    new_next = new_addr - new_addr % size + size
    return min(old_next - old_addr, new_next - new_addr, old_end - old_addr)


def _uffd_blocks(target: Target, old: Vma, new: Vma) -> bool:
    """``vma_has_uffd_without_event_remap`` on the old VMA (and the new one, 6.17+)."""
    return old.uffd_wp or (target.kernel.uffd_checks_new_vma and new.uffd_wp)


def _normal_rmap(target: Target, pmc: PageTableMoveControl) -> tuple[str, ...]:
    """``should_take_rmap_locks`` for NORMAL_PMD/PUD: always since 2021 (R16a)."""
    if target.kernel.rmap_locks_always_for_normal_moves or pmc.need_rmap_locks:
        return pmc.old.rmap_locks()
    return ()


def _huge_rmap(pmc: PageTableMoveControl) -> tuple[str, ...]:
    return pmc.old.rmap_locks() if pmc.need_rmap_locks else ()


def move_page_tables(ctx: MoveContext, pmc: PageTableMoveControl) -> int:
    """Walk ``[pmc.old_addr, pmc.old_end)`` and move its page tables; return the progress.

    ``pmc`` must already be realigned (or not) by the caller; hugetlb VMAs go to
    :func:`perfsim.planner.hugetlb.move_hugetlb_page_tables` instead.
    """
    t = ctx.target
    arch = t.arch
    win, log, ph = ctx.win, ctx.log, ctx.phase
    old_addr, new_addr, old_end = pmc.old_addr, pmc.new_addr, pmc.old_end
    log.add(ph, S.K_NOTIFIER, old_addr, new_addr, old_end - old_addr, notifier=1)
    cpus, lazy = ctx.cpus, ctx.lazy_cpus
    pmd_shift, pud_shift, page_shift = arch.pmd_shift, arch.pud_shift, arch.page_shift
    pmds_per_pud = pud_shift - pmd_shift
    ptrs = arch.ptrs_per_pte

    while old_addr < old_end:
        counts: dict = {}
        # ---------------------------------------------------------------- PUD stage (R8)
        extent = get_extent(pud_shift, old_addr, new_addr, old_end)
        src_pud_slot = old_addr >> pud_shift
        dst_pud_slot = new_addr >> pud_shift
        src_has_table = arch.pud_folded or (old_addr >> arch.p4d_shift) in win.pud_tables
        pud_kind = win.pud.get(src_pud_slot, PUD_NONE) if src_has_table else PUD_NONE
        if pud_kind == PUD_NONE:
            log.add(ph, S.K_SKIP_PUD, old_addr, new_addr, extent)
            old_addr += extent
            new_addr += extent
            continue
        if not ctx.alloc_new_pud(new_addr, counts):
            log.add(ph, S.K_ALLOC_FAIL, old_addr, new_addr, 0, **counts)
            break
        if pud_kind == PUD_LEAF:
            if extent != arch.pud_size:
                raise NotImplementedError(
                    "partial move of a huge PUD leaf (DAX/PFNMAP only) is not modelled "
                    "(kernel-model.md §8.2)")
            # move_huge_pud: the result is ignored and the loop continues (R8.4).
            locks = _huge_rmap(pmc)
            if win.pud.get(dst_pud_slot, PUD_NONE) == PUD_NONE:
                win.pud[dst_pud_slot] = win.pud.pop(src_pud_slot)
            log.add(ph, S.K_HUGE_PUD_MOVE, old_addr, new_addr, extent, ptes=ptrs << pmds_per_pud,
                    flush=flush_pud_range(t, old_addr, cpus=cpus, lazy_cpus=lazy), rmap=locks,
                    ptl=1, **counts)
            old_addr += extent
            new_addr += extent
            continue
        if t.have_move_pud and extent == arch.pud_size:
            locks = _normal_rmap(t, pmc)
            ok = (not _uffd_blocks(t, pmc.old, pmc.new)
                  and win.pud.get(dst_pud_slot, PUD_NONE) == PUD_NONE)
            if ok:
                # move_normal_pud: reparent the PMD table under the destination PUD entry.
                win.pud.pop(src_pud_slot)
                win.pud[dst_pud_slot] = PUD_TABLE
                base_src, base_dst = src_pud_slot << pmds_per_pud, dst_pud_slot << pmds_per_pud
                moved = [s for s in win.pmd if base_src <= s < base_src + (1 << pmds_per_pud)]
                entries = {s: win.pmd.pop(s) for s in moved}
                for s, e in entries.items():
                    win.pmd[s - base_src + base_dst] = e
                log.add(ph, S.K_PUD_MOVE, old_addr, new_addr, extent,
                        flush=flush_range(t, old_addr, old_addr + arch.pud_size, cpus=cpus,
                                          lazy_cpus=lazy),
                        rmap=locks, ptl=1, **counts)
                old_addr += extent
                new_addr += extent
                continue
            log.add(ph, S.K_PUD_MOVE_FAILED, old_addr, new_addr, 0, rmap=locks, ptl=0 if locks else 0,
                    **counts)
            counts = {}
        # ---------------------------------------------------------------- PMD stage (R9)
        extent = get_extent(pmd_shift, old_addr, new_addr, old_end)
        src_slot = old_addr >> pmd_shift
        dst_slot = new_addr >> pmd_shift
        kind, mask = win.pmd.get(src_slot, (PMD_NONE, 0))
        if kind == PMD_NONE:
            log.add(ph, S.K_SKIP_PMD, old_addr, new_addr, extent, **counts)
            old_addr += extent
            new_addr += extent
            continue
        if not ctx.alloc_new_pmd(new_addr, counts):
            log.add(ph, S.K_ALLOC_FAIL, old_addr, new_addr, 0, **counts)
            break
        same_pmd_table = (src_slot >> pmds_per_pud) == (dst_slot >> pmds_per_pud)
        pmd_ptl = 1 if (same_pmd_table or not arch.split_pmd_ptlocks) else 2
        if kind == PMD_LEAF:
            # R10: a THP (or PMD swap entry) moves whole only when the extent is a full PMD.
            if extent == arch.pmd_size and win.pmd.get(dst_slot, (PMD_NONE, 0))[0] == PMD_NONE:
                win.pmd[dst_slot] = win.pmd.pop(src_slot)
                log.add(ph, S.K_THP_MOVE, old_addr, new_addr, extent, ptes=ptrs,
                        flush=flush_pmd_range(t, old_addr, cpus=cpus, lazy_cpus=lazy),
                        rmap=_huge_rmap(pmc), ptl=pmd_ptl, **counts)
                old_addr += extent
                new_addr += extent
                continue
            # split_huge_pmd: anonymous → a PTE table of the same pages; file/shmem → cleared.
            base = src_slot << pmd_shift
            if pmc.old.backing == "anon":
                win.pmd[src_slot] = (PMD_TABLE, (1 << ptrs) - 1)
            else:
                win.pmd.pop(src_slot)
            log.add(ph, S.K_THP_SPLIT, base, 0, arch.pmd_size, ptes=ptrs,
                    flush=flush_pmd_range(t, base, cpus=cpus, lazy_cpus=lazy), ptl=1, **counts)
            counts = {}
            kind, mask = win.pmd.get(src_slot, (PMD_NONE, 0))
        elif t.have_move_pmd and extent == arch.pmd_size:
            locks = _normal_rmap(t, pmc)
            ok = (not _uffd_blocks(t, pmc.old, pmc.new)
                  and win.pmd.get(dst_slot, (PMD_NONE, 0))[0] == PMD_NONE)
            if ok:
                # move_normal_pmd: reparent the PTE table under the destination PMD entry.
                win.pmd[dst_slot] = win.pmd.pop(src_slot)
                log.add(ph, S.K_PMD_MOVE, old_addr, new_addr, extent,
                        flush=flush_range(t, old_addr, old_addr + arch.pmd_size, cpus=cpus,
                                          lazy_cpus=lazy),
                        rmap=locks, ptl=pmd_ptl, **counts)
                old_addr += extent
                new_addr += extent
                continue
            log.add(ph, S.K_PMD_MOVE_FAILED, old_addr, new_addr, 0, rmap=locks, **counts)
            counts = {}
        # R12: nothing left to move here (file THP split, racing collapse).
        if kind == PMD_NONE:
            log.add(ph, S.K_SKIP_PMD, old_addr, new_addr, extent, **counts)
            old_addr += extent
            new_addr += extent
            continue
        # R13: the destination PTE table, allocated just before move_ptes.
        dst_kind, dst_mask = win.pmd.get(dst_slot, (PMD_NONE, 0))
        if dst_kind == PMD_NONE:
            if not ctx._allocate():
                log.add(ph, S.K_ALLOC_FAIL, old_addr, new_addr, 0, **counts)
                break
            counts["alloc_pte"] = 1
            dst_kind, dst_mask = PMD_TABLE, 0
        # R14/R16f: move_ptes over the extent.
        lo = (old_addr >> page_shift) & (ptrs - 1)
        n = extent >> page_shift
        dlo = (new_addr >> page_shift) & (ptrs - 1)
        bits = (mask >> lo) & ((1 << n) - 1)
        present = bits.bit_count()
        if src_slot == dst_slot:
            mask = (mask & ~range_mask(lo, lo + n)) | (bits << dlo)
            win.pmd[src_slot] = (PMD_TABLE, mask)
        else:
            win.pmd[src_slot] = (PMD_TABLE, mask & ~range_mask(lo, lo + n))
            win.pmd[dst_slot] = (PMD_TABLE, dst_mask | (bits << dlo))
        flush = flush_range(t, old_addr, old_addr + extent, cpus=cpus, lazy_cpus=lazy) if present else None
        log.add(ph, S.K_PTE_MOVE, old_addr, new_addr, extent, ptes=present, slots=n,
                batches=pte_batches(t, pmc.old, bits, old_addr, n),
                flush=flush, rmap=_huge_rmap(pmc), ptl=1 if src_slot == dst_slot else 2, **counts)
        old_addr += extent
        new_addr += extent

    return pmc.progress(old_addr)
