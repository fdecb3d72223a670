"""The decisions of ``move_page_tables`` (mm/mremap.c), one pure function per kernel helper.

Both planners call these: :mod:`perfsim.planner.reference` once per extent with plain
integers, :mod:`perfsim.planner.fast` once per move (the gates) or once per column of
extents (the entry tests, written with ``==`` and ``&`` so a numpy array works where an
int does). Nothing here reads or writes page tables; the callers pass the entry kinds
(``PMD_NONE``/``PMD_TABLE``/``PMD_LEAF``, ``PUD_*``) they see.

Kernel source read for these docstrings: mm/mremap.c at a 6.17-development commit
(000c0691: ``struct pagetable_move_control``, ``should_take_rmap_locks``, ``move_pgt_entry``,
``mremap_folio_pte_batch`` without the ``pte_batch_hint`` gate). What the docstrings say of
earlier kernels (the 5.x–6.14 loop passing ``vma, old_addr, new_addr`` instead of ``pmc``,
the dates of the fixes) follows the project's kernel model (docs/kernel-rules.md), as do the
profile flags that switch between versions.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.mm.pagetable import PMD_NONE, PMD_TABLE, PUD_NONE
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.batch import PteBatching, pte_batching_of
from perfsim.planner.frozen import direct_init
from perfsim.planner.tlb import Flush, flush_pmd_range, flush_pud_range, flush_span
from perfsim.profiles import ArchProfile, Target

# enum pgt_entry
NORMAL_PMD, HPAGE_PMD, NORMAL_PUD, HPAGE_PUD = "NORMAL_PMD", "HPAGE_PMD", "NORMAL_PUD", "HPAGE_PUD"


def get_extent(shift: int, old_addr: int, new_addr: int, old_end: int) -> int:
    """``get_extent``: the distance to the nearer of the next source and the next destination
    boundary of the level (``1 << shift``: ``PMD_SIZE`` for NORMAL_PMD/HPAGE_PMD,
    ``PUD_SIZE`` for the PUD entries), capped by what is left of the range (R7).

    Unchanged in substance from 5.x to 6.18; 6.15 made it read ``old_addr``/``new_addr``/
    ``old_end`` from ``pagetable_move_control`` instead of taking them as arguments.

    >>> M = 1 << 20
    >>> get_extent(21, 0x200000, 0x400000, 0x200000 + 8 * M)   # mutually aligned: a full PMD
    2097152
    >>> get_extent(21, 0x202000, 0x401000, 0x200000 + 8 * M)   # the source boundary comes first
    2088960
    >>> get_extent(21, 0x201000, 0x402000, 0x200000 + 8 * M)   # the destination's comes first
    2088960
    >>> get_extent(30, 0x40000000, 0x80000000, 0x40000000 + (3 << 30))   # PUD level
    1073741824
    >>> get_extent(21, 0x200000, 0x400000, 0x200000 + 4096)    # the end of the range
    4096
    """
    size = 1 << shift
    mask = size - 1  # (x % size == x & mask for every int x: the distances to the next boundaries)
    extent = size - (old_addr & mask)
    dst = size - (new_addr & mask)
    if dst < extent:
        extent = dst
    left = old_end - old_addr
    return left if left < extent else extent  # (the least of the three, as min() gives it)


def should_take_rmap_locks(target: Target, need_rmap_locks: bool, entry: str) -> bool:
    """``should_take_rmap_locks`` (6.15+; before, the same test inline in
    ``move_page_tables``): NORMAL_PMD and NORMAL_PUD moves always take the rmap locks (the
    2021 fix for the race with rmap walkers, profile
    ``rmap_locks_always_for_normal_moves``); huge entries and ``move_ptes`` take them only
    when ``copy_vma`` asked for them (``need_rmap_locks``, R16a).

    >>> from perfsim import resolve_target
    >>> t = resolve_target("6.18", "x86_64")
    >>> should_take_rmap_locks(t, False, NORMAL_PMD), should_take_rmap_locks(t, False, HPAGE_PMD)
    (True, False)
    """
    if entry in (NORMAL_PMD, NORMAL_PUD) and target.kernel.rmap_locks_always_for_normal_moves:
        return True
    return need_rmap_locks


def take_rmap_locks(vma: Vma, take: bool) -> tuple[str, ...]:
    """``take_rmap_locks``: the rwsems taken for writing (``i_mmap_rwsem`` of the file,
    then the ``anon_vma`` lock), or none when ``take`` is false."""
    return vma.rmap_locks() if take else ()


def vma_has_uffd_without_event_remap(target: Target, old: Vma, new: Vma) -> bool:
    """``vma_has_uffd_without_event_remap``: is this move's VMA registered for userfaultfd
    write-protect without the remap event, so that its uffd-wp bits must be cleared PTE by
    PTE and its page tables must not move whole?

    Kernels before "mm: clear uffd-wp PTE/PMD state on mremap()" (0cef0bb836e3, 6.13;
    6.12.11 in the 6.12 stable line; profile ``uffd_wp_table_move_gate = "none"``: 6.1, 6.6,
    6.7) have no such test: False. From it, the old VMA is tested, and also the new one
    where the kernel checks both (6.12.117's ``uffd_supports_move``, 7.3's
    ``uffd_supports_page_table_move``; profile ``uffd_checks_new_vma``; ``copy_vma`` gives
    the new VMA the old one's context, so this cannot change a plan)."""
    if target.kernel.uffd_wp_table_move_gate == "none":
        return False
    return old.uffd_wp or (target.kernel.uffd_checks_new_vma and new.uffd_wp)


def uffd_gate_placement(target: Target, gated: bool) -> tuple[bool, bool]:
    """Where the uffd-wp gate of :func:`vma_has_uffd_without_event_remap` acts, as
    ``(move_page_tables skips NORMAL_PUD/NORMAL_PMD, move_normal_pud/pmd refuse)``:

    * 6.12.117 (``uffd_wp_table_move_gate = "move_page_tables"``): ``uffd_supports_move``
      is one of the loop's conditions for calling ``move_pgt_entry(NORMAL_PUD/PMD)``, so a
      gated VMA never attempts a table move and takes no rmap lock for one;
    * 6.13 onwards (``"move_normal"``; 7.3's ``uffd_supports_page_table_move``): the test
      is inside ``move_normal_pmd``/``move_normal_pud``, so ``move_pgt_entry`` has taken
      the rmap locks (``should_take_rmap_locks``) before the move refuses.

    >>> from perfsim import resolve_target
    >>> uffd_gate_placement(resolve_target("6.12", "x86_64"), True)
    (True, False)
    >>> uffd_gate_placement(resolve_target("7.3", "x86_64"), True)
    (False, True)
    >>> uffd_gate_placement(resolve_target("7.3", "x86_64"), False)
    (False, False)
    """
    in_loop = target.kernel.uffd_wp_table_move_gate == "move_page_tables"
    return gated and in_loop, gated and not in_loop


def move_normal_pud(uffd_blocks: bool, dst_pud):
    """``move_normal_pud`` (``CONFIG_HAVE_MOVE_PUD``, 5.11+): reparent the PMD table when the
    destination PUD entry is none (the kernel warns and refuses otherwise) and the uffd
    gate does not block. ``dst_pud`` may be an int or an array of entry kinds."""
    return (dst_pud == PUD_NONE) & (not uffd_blocks)


def move_huge_pud(dst_pud):
    """``move_huge_pud`` (huge PUD leaves: DAX/PFNMAP; 1 GiB hugetlb pages take the hugetlb
    path instead): moves the leaf when the destination entry is none.
    ``move_page_tables`` ignores the result and continues (R8.4)."""
    return dst_pud == PUD_NONE


def move_normal_pmd(uffd_blocks: bool, dst_pmd):
    """``move_normal_pmd`` (``CONFIG_HAVE_MOVE_PMD``, 5.0+): reparent the PTE table when the
    destination PMD entry is none and the uffd gate does not block. Since 6.7 the extent
    may be a realigned head (``try_realign_addr``); the test itself is unchanged."""
    return (dst_pmd == PMD_NONE) & (not uffd_blocks)


def move_huge_pmd(dst_pmd):
    """``move_huge_pmd`` (mm/huge_memory.c): a THP (or PMD swap entry) moves as one entry
    when the destination PMD entry is none; the caller only tries for a full-PMD extent."""
    return dst_pmd == PMD_NONE


def alloc_new_pud(arch: ArchProfile, pud_tables, addr: int) -> tuple[int, int]:
    """``alloc_new_pud`` (``p4d_alloc`` + ``pud_alloc``): the page-table pages allocated so
    that a PUD table maps ``addr``, as ``(P4D pages, PUD pages)``, given the top-level slots
    that already have a PUD table. Nothing with folded PUDs (3 levels); a P4D page only
    with 5 levels, when no PUD table shares the PGD entry yet.

    >>> from perfsim import resolve_target
    >>> a = resolve_target("6.18", "x86_64").arch
    >>> addr = 0x7f0000000000
    >>> alloc_new_pud(a, set(), addr), alloc_new_pud(a, {addr >> a.p4d_shift}, addr)
    ((0, 1), (0, 0))
    """
    top = addr >> arch.p4d_shift
    if top in pud_tables or arch.pud_folded:  # (either: nothing to allocate)
        return 0, 0
    shift = arch.pgd_shift - arch.p4d_shift
    p4d = 0 if arch.p4d_folded or any((t >> shift) == (top >> shift) for t in pud_tables) else 1
    return p4d, 1


def pmd_alloc(dst_pud):
    """``pmd_alloc`` in ``alloc_new_pmd``: a PMD table is allocated where the destination PUD
    entry is none (int or array of kinds)."""
    return dst_pud == PUD_NONE


def pte_alloc(dst_pmd):
    """``pte_alloc`` before ``move_ptes`` (R13): a PTE table is allocated where the
    destination PMD entry is none."""
    return dst_pmd == PMD_NONE


def move_pgt_entry(entry: str, uffd_blocks: bool, dst_kind):
    """``move_pgt_entry``: dispatch to the move of ``entry``; True where it moves.

    >>> move_pgt_entry(NORMAL_PMD, False, PMD_NONE), move_pgt_entry(NORMAL_PMD, True, PMD_NONE)
    (True, False)
    """
    if entry == NORMAL_PMD:
        return move_normal_pmd(uffd_blocks, dst_kind)
    if entry == HPAGE_PMD:
        return move_huge_pmd(dst_kind)
    if entry == NORMAL_PUD:
        return move_normal_pud(uffd_blocks, dst_kind)
    return move_huge_pud(dst_kind)


def pmd_ptl_count(arch: ArchProfile, src_slot, dst_slot):
    """PMD-level spinlocks a PMD-entry move takes (``pmd_lock`` + ``pmd_lockptr``): one when
    both entries are in the same PMD table or the architecture has no split PMD ptlocks
    (``USE_SPLIT_PMD_PTLOCKS`` off: the mm's ``page_table_lock``), else two."""
    k = arch.pud_shift - arch.pmd_shift
    same = (src_slot >> k) == (dst_slot >> k)
    return 2 - (same | (not arch.split_pmd_ptlocks))


def split_huge_pmd(arch: ArchProfile, anon: bool) -> tuple[int, int]:
    """``split_huge_pmd`` of a source THP the extent covers only partly (R10): what the
    source PMD entry is afterwards, as ``(kind, present-PTE bitmap)``. An anonymous THP
    becomes a PTE table mapping the same pages; a file/shmem THP is just unmapped (the page
    cache keeps the folio; the next fault maps it again), so the entry is none and
    ``move_page_tables`` skips it (R12)."""
    if anon:
        return PMD_TABLE, (1 << arch.ptrs_per_pte) - 1
    return PMD_NONE, 0


def move_ptes_ptl_count(src_slot, dst_slot):
    """PTE-table spinlocks ``move_ptes`` takes: the source's, and the destination's when it
    is another PTE table (``new_ptl != old_ptl``)."""
    return 1 + (src_slot != dst_slot)


def move_ptes_flushes(present):
    """``move_ptes`` flushes the extent (``flush_tlb_range``) only when it moved a present
    PTE (``force_flush``); since 4.19 the flush is taken before dropping the PTE lock."""
    return present > 0


@direct_init
@dataclass(frozen=True)
class EntryRow:
    """What one entry operation puts in its step row besides addresses and allocations:
    the row kind, the PTEs it covers, its TLB flush, its spinlocks and rmap locks."""

    kind: int
    ptes: int
    flush: Flush | None
    ptl: object        # int, or an int array when the slots are arrays
    locks: tuple[str, ...]


def pgt_entry_row(target: Target, gates: MoveGates, entry: str, src_slot, dst_slot, *,
                  cpus: int, lazy_cpus: int) -> EntryRow:
    """The row of a ``move_pgt_entry`` that moved ``entry``: ``move_normal_pud`` and
    ``move_normal_pmd`` flush the old range with ``flush_tlb_range`` (base-page stride),
    ``move_huge_pud``/``move_huge_pmd`` with ``flush_pud_tlb_range``/``flush_pmd_tlb_range``
    (:mod:`perfsim.planner.tlb`); PUD entries take the PUD lock(s) (counted as one), PMD
    entries :func:`pmd_ptl_count`. ``src_slot``/``dst_slot`` are entry slots at the
    entry's level (ints or arrays). The flush does not depend on where the range is (the
    base-page flushes are :func:`~perfsim.planner.tlb.flush_span`'s, memoised)."""
    arch = target.arch
    locks = gates.locks(entry)
    if entry == NORMAL_PUD:
        return EntryRow(S.K_PUD_MOVE, 0,
                        flush_span(target, arch.pud_size, cpus=cpus, lazy_cpus=lazy_cpus), 1,
                        locks)
    if entry == HPAGE_PUD:
        return EntryRow(S.K_HUGE_PUD_MOVE, arch.ptrs_per_pte << (arch.pud_shift - arch.pmd_shift),
                        flush_pud_range(target, 0, cpus=cpus, lazy_cpus=lazy_cpus), 1, locks)
    ptl = pmd_ptl_count(arch, src_slot, dst_slot)
    if entry == NORMAL_PMD:
        return EntryRow(S.K_PMD_MOVE, 0,
                        flush_span(target, arch.pmd_size, cpus=cpus, lazy_cpus=lazy_cpus), ptl,
                        locks)
    return EntryRow(S.K_THP_MOVE, arch.ptrs_per_pte,
                    flush_pmd_range(target, 0, cpus=cpus, lazy_cpus=lazy_cpus), ptl, locks)


def failed_entry_row(gates: MoveGates, entry: str) -> EntryRow:
    """The row of a NORMAL_PUD/NORMAL_PMD ``move_pgt_entry`` that did not move: the rmap
    locks were taken and dropped, nothing else happened (zero length, no flush)."""
    kind = S.K_PUD_MOVE_FAILED if entry == NORMAL_PUD else S.K_PMD_MOVE_FAILED
    return EntryRow(kind, 0, None, 0, gates.locks(entry))


def split_huge_pmd_row(target: Target, *, cpus: int, lazy_cpus: int) -> EntryRow:
    """The row of :func:`split_huge_pmd`: the whole PMD's PTEs, one ``flush_pmd_tlb_range``
    (``pmdp_invalidate``), the PMD lock, no rmap lock."""
    return EntryRow(S.K_THP_SPLIT, target.arch.ptrs_per_pte,
                    flush_pmd_range(target, 0, cpus=cpus, lazy_cpus=lazy_cpus), 1, ())


@direct_init
@dataclass(frozen=True)
class MoveGates:
    """What one ``move_page_tables`` call decides once, from the VMAs and the kernel: the
    uffd gate (whether NORMAL_PUD/PMD are tried, whether they refuse), the rmap lock sets
    per entry kind, and the PTE batching of ``move_ptes``."""

    uffd_blocks: bool               # move_normal_pmd/pud refuse (:func:`uffd_gate_placement`)
    normal_locks: tuple[str, ...]   # NORMAL_PMD / NORMAL_PUD
    huge_locks: tuple[str, ...]     # HPAGE_PMD / HPAGE_PUD and move_ptes
    batching: PteBatching           # pte_batching_of; no batching when folio_pages == 1
    normal_moves_tried: bool = True  # move_page_tables tries NORMAL_PUD/NORMAL_PMD at all

    @classmethod
    def of(cls, target: Target, old: Vma, new: Vma, need_rmap_locks: bool) -> MoveGates:
        skip, refuse = uffd_gate_placement(target,
                                           vma_has_uffd_without_event_remap(target, old, new))
        take_normal = should_take_rmap_locks(target, need_rmap_locks, NORMAL_PMD)
        take_huge = should_take_rmap_locks(target, need_rmap_locks, HPAGE_PMD)
        normal_locks = take_rmap_locks(old, take_normal)
        # (the same decision names the same locks: one tuple for both)
        huge_locks = normal_locks if take_huge == take_normal else take_rmap_locks(old, take_huge)
        return cls(refuse, normal_locks, huge_locks, pte_batching_of(target, old), not skip)

    def locks(self, entry: str) -> tuple[str, ...]:
        return self.normal_locks if entry in (NORMAL_PMD, NORMAL_PUD) else self.huge_locks
