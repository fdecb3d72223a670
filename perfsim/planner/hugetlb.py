"""``move_hugetlb_page_tables`` (mm/hugetlb.c): the hugetlb path (rule R20), as modelled for
every kernel profile here (6.6–6.18; the function took ``(vma, new_vma, old_addr, new_addr,
len)`` throughout, also after 6.15 moved the rest of the loop onto
``pagetable_move_control``).

No realignment and none of the PUD/PMD/PTE rules apply. ``i_mmap_rwsem`` and the hugetlb
VMA lock are held for writing across the whole loop; each present huge entry is moved
under its page-table locks; one TLB flush covers the range at the end, with the huge page
size as stride. Shared-PMD unsharing (``huge_pmd_unshare``) is not modelled: perfsim's
hugetlb mappings are private to one mm.
"""

from __future__ import annotations

from perfsim.mm.pagetable import PMD_LEAF, PMD_NONE, PUD_LEAF, PUD_NONE, PUD_TABLE
from perfsim.planner import steps as S
from perfsim.planner.realign import PageTableMoveControl
from perfsim.planner.reference import MoveContext
from perfsim.planner.tlb import flush_range


def move_hugetlb_page_tables(ctx: MoveContext, pmc: PageTableMoveControl) -> int:
    """Move every huge entry of ``[old_addr, old_end)``; one row for the whole locked loop."""
    t, win = ctx.target, ctx.win
    arch = t.arch
    hsize = pmc.old.hugepage_size or arch.pmd_size
    pud_level = hsize == arch.pud_size
    shift = arch.pud_shift if pud_level else arch.pmd_shift
    old_addr, new_addr, old_end = pmc.old_addr, pmc.new_addr, pmc.old_end
    counts: dict = {}
    moved = walked = 0
    failed = False
    while old_addr < old_end:
        walked += 1
        if pud_level:
            src = win.pud.get(old_addr >> shift, PUD_NONE)
            present = src == PUD_LEAF
        else:
            has_table = win.pud.get(old_addr >> arch.pud_shift, PUD_NONE) == PUD_TABLE
            if not has_table:
                # No source page table: skip to the end of what that table would map.
                step = arch.pud_size - old_addr % arch.pud_size
                old_addr += step
                new_addr += step
                continue
            src = win.pmd.get(old_addr >> shift, (PMD_NONE, 0))[0]
            present = src == PMD_LEAF
        if present:
            ok = ctx.alloc_new_pud(new_addr, counts) if pud_level else ctx.alloc_new_pmd(new_addr, counts)
            if not ok:
                failed = True
                break
            if pud_level:
                win.pud[new_addr >> shift] = win.pud.pop(old_addr >> shift)
            else:
                win.pmd[new_addr >> shift] = win.pmd.pop(old_addr >> shift)
            moved += 1
        old_addr += hsize
        new_addr += hsize
    locks = pmc.old.rmap_locks() + (f"hugetlb_vma:{pmc.old.file_id or pmc.old.name or hex(pmc.old.start)}",)
    flush = flush_range(t, pmc.old_addr, pmc.old_end, stride_shift=shift, cpus=ctx.cpus,
                        lazy_cpus=ctx.lazy_cpus)
    ctx.log.add(ctx.phase, S.K_HUGETLB_MOVE, pmc.old_addr, pmc.new_addr, pmc.len_in,
                ptes=moved, slots=walked, flush=flush, rmap=locks, ptl=2 * moved, notifier=1,
                **counts)
    if failed:
        ctx.log.add(ctx.phase, S.K_ALLOC_FAIL, old_addr, new_addr, 0)
    return pmc.len_in + old_addr - old_end
