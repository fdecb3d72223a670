"""Start-address realignment: ``try_realign_addr`` and its predicates (rule R4, 6.7+).

::

      PMD boundary                       PMD boundary
      .<-- offset -->.                   .
      .              |-------------------.---------|
      .              |   source VMA      .         |
      .              |-------------------.---------|
      .              old_addr            .         old_end
      .              <------------- len_in ------->
      <-------------- PMD_SIZE ---------->

When the source and destination starts sit at the same offset inside their PMDs, the range
reaches the next PMD boundary, and nothing else is mapped between the boundary below and
either start, the move may begin at the boundary below: the head then moves as one PMD
entry instead of PTE by PTE. ``old_end`` is left alone, so only the head changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner.frozen import direct_init
from perfsim.profiles import Target


@direct_init
@dataclass
class PageTableMoveControl:
    """The state of one page-table move (``struct pagetable_move_control``, 6.15+).

    ``len_in`` is the length the caller asked for; ``old_addr``/``new_addr`` may be moved
    down by realignment, ``old_end`` never is.
    """

    old: Vma
    new: Vma
    old_addr: int
    new_addr: int
    len_in: int
    need_rmap_locks: bool = False
    for_stack: bool = False

    def __post_init__(self) -> None:
        self.old_end = self.old_addr + self.len_in

    def progress(self, old_addr: int) -> int:
        """Bytes moved when the loop stopped at ``old_addr`` (``pmc_progress``): clamped at
        zero because a realigned start lies below the caller's start."""
        return max(0, old_addr - (self.old_end - self.len_in))


def can_align_down(space: AddressSpace, pmc: PageTableMoveControl, vma: Vma, addr: int,
                   size: int, *, stack_relaxation: bool) -> bool:
    """May ``addr`` in ``vma`` be aligned down to a multiple of ``size``? (R4 d/e)

    Outside the exec-stack case the start must be the VMA's own start (the VMA is not split
    first), and no VMA may lie between the aligned-down address and the VMA's start.
    """
    masked = addr - addr % size
    if not (pmc.for_stack and stack_relaxation) and vma.start != addr:
        return False
    if pmc.for_stack and stack_relaxation and masked >= vma.start:
        return True
    i, j = space.intersecting_span(masked, vma.start)
    return i == j  # (no VMA in between)


def can_realign_addr(space: AddressSpace, pmc: PageTableMoveControl, size: int, target: Target,
                     *, require_reach: bool = True) -> bool:
    """All of R4 (a)–(e) for a realignment to a multiple of ``size``."""
    old_off = pmc.old_addr % size
    new_off = pmc.new_addr % size
    if require_reach and pmc.len_in < size - old_off:        # (a) reach the next boundary
        return False
    if old_off == 0:                                           # (b) already aligned
        return False
    if old_off != new_off:                                     # (c) mutually aligned
        return False
    relax = target.kernel.realign_for_stack_relaxation
    return (can_align_down(space, pmc, pmc.old, pmc.old_addr, size, stack_relaxation=relax)   # (d)
            and can_align_down(space, pmc, pmc.new, pmc.new_addr, size, stack_relaxation=relax))  # (e)


def try_realign_addr(space: AddressSpace, pmc: PageTableMoveControl, target: Target) -> bool:
    """Realign ``pmc`` in place if the kernel would; return whether it did.

    The kernel only realigns to PMD boundaries (6.7+). ``realign_pud`` is a what-if knob
    that first tries the PUD boundary with the same rules.
    """
    kern, arch = target.kernel, target.arch
    if kern.realign_pud and can_realign_addr(space, pmc, arch.pud_size, target,
                                             require_reach=kern.realign_reach_pmd):
        pmc.old_addr -= pmc.old_addr % arch.pud_size
        pmc.new_addr -= pmc.new_addr % arch.pud_size
        return True
    if kern.realign_pmd and can_realign_addr(space, pmc, arch.pmd_size, target,
                                             require_reach=kern.realign_reach_pmd):
        pmc.old_addr -= pmc.old_addr % arch.pmd_size
        pmc.new_addr -= pmc.new_addr % arch.pmd_size
        return True
    return False
