"""What ``madvise(MADV_DONTNEED)`` leaves in the page tables a later mremap walks.

``madvise(addr, len, MADV_DONTNEED)`` (mm/madvise.c) walks the VMAs of the range
(``madvise_walk_vmas``) and, for each, zaps the part of it the range covers
(``madvise_dontneed_single_vma`` → ``zap_vma_range_batched`` → ``unmap_page_range``):
present PTEs are cleared, a huge PMD the part covers whole is zapped whole and one it
covers partly is split first, as a munmap's zap does (:func:`perfsim.planner.unmap.
zap_range`). The VMAs stay, and so, unlike a munmap (no ``free_pgtables``), do the page
tables, with one exception (R27, :attr:`perfsim.profiles.KernelProfile.pt_reclaim`):

* with ``CONFIG_PT_RECLAIM`` the zap is told it may reclaim (``zap_details.reclaim_pt``),
  and ``zap_pte_range``, called per PMD with the range clipped to the PMD and to the VMA,
  frees the PTE table when that clipped range is the table's whole PMD (``end - start >=
  PMD_SIZE``: ``pte_table_reclaim_possible``) and every entry is none afterwards (it
  clears the PMD entry under the PMD lock, ``zap_empty_pte_table``, or rechecks the
  entries, ``zap_pte_table_if_empty``, and frees the page through the gather). A table
  the range covers only partly stays, even if the zap leaves it empty, and so does one
  emptied by two calls that each cover part of it. So a program that hands back whole
  2 MiB runs of a buffer before moving it leaves ``pmd_none`` slots there, which the
  move skips (no PMD move, no flush), where a kernel without it moves an empty table.

``MADV_DONTNEED_LOCKED`` is the same zap on ``VM_LOCKED`` VMAs. ``MADV_FREE`` changes no
entry at once (the pages stay mapped until reclaim takes them), so it leaves the tables
as they are. A hugetlb VMA is zapped by its own path (``__unmap_hugepage_range``) and
only for whole huge pages: :func:`madvise_dontneed` leaves such a VMA as it is and says so.

``MADV_HUGEPAGE`` / ``MADV_NOHUGEPAGE`` change no entry either: they set ``VM_HUGEPAGE``
(clearing ``VM_NOHUGEPAGE``) or the reverse on each VMA of the range
(``madvise_vma_behavior`` → ``hugepage_madvise``, then ``madvise_update_vma`` →
``vma_modify_flags``: split at the range's ends, merged with a neighbour it now continues;
:func:`perfsim.planner.mprotect.vma_modify_flags`), which decides what later faults map:
with ``VM_HUGEPAGE`` an anonymous fault in a PMD range the VMA covers whole maps a THP
(``do_huge_pmd_anonymous_page``), so memory written after the advice is PMD-mapped and a
later move takes it as a huge PMD or splits it. That is what glibc's ``malloc`` does with
``glibc.malloc.hugetlb=1``: every block it maps (and every ``mremap`` it grows one with) is
advised MADV_HUGEPAGE. :attr:`perfsim.mm.vma.Vma.thp` is ``VM_HUGEPAGE``,
:attr:`~perfsim.mm.vma.Vma.nohugepage` ``VM_NOHUGEPAGE``. Whether a fault maps a THP also
depends on the system's ``/sys/kernel/mm/transparent_hugepage/enabled``
(:func:`thp_vma_allowable`). khugepaged's later collapses are not modelled.

Only the state matters: the flushes of the madvise belong to that call, not to any
mremap, and are not planned.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.mm.pagetable import PMD_TABLE
from perfsim.mm.space import AddressSpace
from perfsim.planner.checks import page_align
from perfsim.planner.gather import MmuGather
from perfsim.planner.mprotect import vma_modify_flags
from perfsim.planner.unmap import large_folio_spans, not_anon_spans, zap_range
from perfsim.profiles import Target

#: The advice names that zap (:func:`madvise_dontneed`), those that set the VMAs' huge-page
#: flags (:func:`madvise_hugepage`), and those known to change nothing a move reads. Any
#: other advice is not replayed.
ZAPPING_ADVICE = ("MADV_DONTNEED", "MADV_DONTNEED_LOCKED")
HUGEPAGE_ADVICE = ("MADV_HUGEPAGE", "MADV_NOHUGEPAGE")
NEUTRAL_ADVICE = ("MADV_FREE", "MADV_NORMAL", "MADV_RANDOM", "MADV_SEQUENTIAL",
                  "MADV_WILLNEED", "MADV_COLD", "MADV_PAGEOUT")
"""Advice that leaves the entries and the VMAs as a move sees them (``MADV_COLD`` and
``MADV_PAGEOUT`` only age or reclaim pages later; ``MADV_FREE`` frees them lazily)."""
REPLAYED_ADVICE = ZAPPING_ADVICE + HUGEPAGE_ADVICE + NEUTRAL_ADVICE
"""Every advice a trace replay models (the rest it counts and leaves alone)."""


@dataclass(frozen=True)
class MadviseResult:
    """The space after the call, and what of it was not modelled."""

    space: AddressSpace
    tables_freed: int
    """PTE tables ``CONFIG_PT_RECLAIM`` freed."""
    skipped_hugetlb: int
    """hugetlb VMAs of the range, left as they were (not modelled)."""


def pte_table_reclaim_possible(target: Target, lo: int, hi: int, slot: int) -> bool:
    """``pte_table_reclaim_possible``: may the zap of ``[lo, hi)`` (one VMA's part of the
    range) free the PTE table of PMD ``slot``? Only on a kernel and arch with
    ``CONFIG_PT_RECLAIM``, and only when the part covers the slot's whole PMD."""
    if not target.pt_reclaim:
        return False
    base = slot << target.arch.pmd_shift
    return lo <= base and base + target.arch.pmd_size <= hi


def madvise_dontneed(target: Target, space: AddressSpace, start: int,
                     length: int) -> MadviseResult:
    """``madvise(start, length, MADV_DONTNEED)``: the space after it (module docstring).
    ``length`` is rounded up to a page, as the kernel does; the parts of the range no VMA
    maps are skipped (the kernel returns ENOMEM for them, after zapping the rest)."""
    ms = target.arch.pmd_shift
    end = start + page_align(length, target.arch.page_size)
    pt = space.pt
    freed = skipped = 0
    for v in space.intersecting(start, end):
        if v.is_hugetlb:
            skipped += 1
            continue
        lo, hi = max(start, v.start), min(end, v.end)
        win = pt.window(lo, hi)
        zap_range(target, win, lo, hi, MmuGather(lo),
                  not_anon=not_anon_spans((v,), lo, hi),
                  folios=large_folio_spans((v,), lo, hi, target.arch.page_shift))
        for slot in range(lo >> ms, ((hi - 1) >> ms) + 1):
            ent = win.pmd.get(slot)
            if ent is not None and ent[0] == PMD_TABLE and not ent[1] and \
                    pte_table_reclaim_possible(target, lo, hi, slot):
                win.pmd.pop(slot)  # zap_empty_pte_table: pmd_clear, the page freed
                freed += 1
        pt = pt.replace_window(win)
    new = space if pt is space.pt else space.with_pt(pt)
    return MadviseResult(new, freed, skipped)


def madvise_hugepage(space: AddressSpace, start: int, length: int, advice: str) -> AddressSpace:
    """``madvise(start, length, MADV_HUGEPAGE or MADV_NOHUGEPAGE)``: the VMAs of the range
    with ``thp`` set or cleared (module docstring); the parts no VMA maps are skipped (the
    kernel's ENOMEM, after changing the rest). ``start`` is page aligned (the kernel's
    EINVAL otherwise: ValueError)."""
    if advice not in HUGEPAGE_ADVICE:
        raise ValueError(f"madvise_hugepage: {advice!r} is not one of {HUGEPAGE_ADVICE}")
    ps = space.arch.page_size
    if start % ps:
        raise ValueError(f"madvise: start {start:#x} is not page aligned")
    end = start + page_align(length, ps)
    on = advice == "MADV_HUGEPAGE"
    for v in space.intersecting(start, end):
        if (v.thp, v.nohugepage) != (on, not on) and not v.is_hugetlb:
            space = vma_modify_flags(space, v, max(start, v.start), min(end, v.end),
                                     lambda piece: piece.replaced(thp=on, nohugepage=not on))
    return space


#: ``/sys/kernel/mm/transparent_hugepage/enabled``
THP_ENABLED = ("always", "madvise", "never")


def thp_vma_allowable(vma, enabled: str) -> bool:
    """May an anonymous fault in ``vma`` map a PMD-size THP (``thp_vma_allowable_order``
    for the PMD order, ``__thp_vma_allowable_orders``)? Not for a VMA advised
    MADV_NOHUGEPAGE; with ``enabled`` ``always`` for any other private anonymous VMA, with
    ``madvise`` only for one advised MADV_HUGEPAGE, with ``never`` for none. (The PMD range
    must also lie inside the VMA and have no entry yet: the caller's test.) Anonymous
    memory only: shmem follows ``shmem_enabled``, files their filesystem."""
    if enabled not in THP_ENABLED:
        raise ValueError(f"transparent_hugepage/enabled {enabled!r}; allowed: "
                         f"{', '.join(THP_ENABLED)}")
    if vma.backing != "anon" or vma.nohugepage or enabled == "never":
        return False
    return enabled == "always" or vma.thp

