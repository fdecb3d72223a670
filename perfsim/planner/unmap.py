"""Unmapping a range: ``unmap_vmas`` (zap), ``free_pgtables`` and the ``mmu_gather`` flush.

Used for ``do_munmap`` of a mapped ``MREMAP_FIXED`` destination, the tail of a shrink, the
source after a successful move (``unmap_source_vma``, R22.6.5) and the exec stack's
``free_pgd_range`` (R21.6). Page-table pages are freed only where their whole span lies
between ``floor`` (the end of the previous VMA) and ``ceiling`` (the start of the next),
rounded the way ``free_pgd_range`` rounds at each level.

The rules are the predicates below, each named after the kernel function whose test it is
(mm/memory.c ``zap_pmd_range``/``zap_pud_range``/``zap_pte_range``, ``free_pgd_range`` and
its ``free_p4d_range``/``free_pud_range``/``free_pmd_range``/``free_pte_range``). The
floor/ceiling rounding was read in the one stored copy of mm/memory.c (commit 0014bd99, an
old 3.x tree: ``addr &= PMD_MASK``, bumped past ``floor``, ``ceiling`` masked down, and each
level's table freed only if its whole span lies inside); perfsim applies the same rounding
for every kernel profile (6.6–6.18), per docs/kernel-rules.md. They take ints or numpy arrays.
Two drivers apply them: :func:`zap_range` + :func:`free_pgd_range` walk a dict
:class:`~perfsim.mm.pagetable.Window` slot by slot (the reference, and the exec stack), and
:func:`unmap_arrays` applies them to the arrays of a
:class:`~perfsim.mm.pagetable.PageTables` without Python work per PMD slot (the source of a
1 TiB move is 512 Ki PTE tables). The flushes come from :mod:`perfsim.planner.gather`.

What forces a flush during the zap was read in Debian's 6.1.176, 6.12.117 and 7.3.4
(mm/memory.c, mm/huge_memory.c): a dirty PTE of a non-anonymous page
(:func:`zap_forces_flush`, per ``zap_pte_range`` call: :func:`zap_segments`), a full set
of page batches (:func:`gather_zapped_ptes`) and the split of a partly covered huge PMD
(:func:`split_for_zap`). Both drivers hand each call to the same functions; the array
driver does so only where one of these can happen, and otherwise gathers in bulk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perfsim.mm.build import large_folio_bounds
from perfsim.mm.pagetable import (
    PMD_LEAF,
    PMD_NONE,
    PMD_TABLE,
    PUD_LEAF,
    PUD_NONE,
    PUD_TABLE,
    PageTables,
    Window,
    _int_to_words,
    _mask_pop,
    _words_to_int,
    range_mask,
)
from perfsim.mm.vma import Vma, vm_shared
from perfsim.planner import steps as S
from perfsim.planner.frozen import direct_init
from perfsim.planner.gather import (
    PMD_TABLE_PAGE,
    PTE_TABLE,
    PUD_TABLE_PAGE,
    MmuGather,
    merge_free_order,
    pages_until_forced_flush,
    tlb_finish_mmu,
)
from perfsim.planner.options import DEFAULT, WALK, WALK_UNLESS_CLOSED, PlanOptions
from perfsim.planner.pgtable_move import split_huge_pmd
from perfsim.planner.reference import geometry_of
from perfsim.planner.tables import CallTables
from perfsim.profiles import Target


# ---------------------------------------------------------------------------- the rules
def zap_huge_pmd_whole(lo, hi, ptrs: int):
    """``zap_pmd_range``: a huge PMD whose slot the range covers wholly (in-slot pages
    ``[lo, hi)`` == ``[0, ptrs)``) is zapped as one entry (``zap_huge_pmd``); a partly
    covered one is split first (``__split_huge_pmd``) and its PTEs zapped like a table's.

    >>> zap_huge_pmd_whole(0, 512, 512), zap_huge_pmd_whole(1, 512, 512)
    (True, False)
    """
    return (lo == 0) & (hi == ptrs)


def zap_huge_pud_whole(base, pud_size: int, start: int, end: int):
    """``zap_pud_range``: a huge PUD leaf at ``base`` is zapped (``zap_huge_pud``) when the
    range covers it wholly; perfsim leaves a partly covered one mapped (1 GiB hugetlb pages
    are unmapped whole by the hugetlb path)."""
    return (start <= base) & (base + pud_size <= end)


def zap_pte_range(mask: int, lo: int, hi: int) -> tuple[int, int]:
    """``zap_pte_range`` over in-slot pages ``[lo, hi)`` of a PTE table whose present PTEs
    are ``mask``: ``(what stays present, what was zapped)``.

    >>> zap_pte_range(0b1111, 1, 3)
    (9, 6)
    """
    hit = mask & range_mask(lo, hi)
    return mask & ~hit, hit


def zap_forces_flush(backing: str, shared: bool, dirty: bool) -> bool:
    """``zap_pte_range`` (6.1: ``!PageAnon(page)`` and ``pte_dirty``) and
    ``zap_present_folio_ptes`` (6.12, 7.3: ``!folio_test_anon(folio)`` and ``pte_dirty``,
    then ``tlb_delay_rmap``, true on SMP): clearing a dirty PTE of a page that is not
    anonymous forces the gathered range to be flushed (``tlb_flush_mmu_tlbonly``) before
    that PTE table's lock is dropped (6.12/7.3 also delay the rmap removal until after it).

    A page is not anonymous in a MAP_SHARED ``shmem`` or ``file`` mapping; in a MAP_PRIVATE
    one a written page is an anonymous copy-on-write copy and an unwritten one is clean, so
    neither forces. hugetlb is zapped by ``__unmap_hugepage_range`` and a whole huge PMD by
    ``zap_huge_pmd``, neither of which forces. Read in 6.1.176, 6.12.117 and 7.3.4.

    >>> zap_forces_flush("shmem", True, True), zap_forces_flush("anon", False, True)
    (True, False)
    >>> zap_forces_flush("file", False, True), zap_forces_flush("file", True, False)
    (False, False)
    """
    return vm_shared(backing, shared) and dirty


def need_resched_break_flushes(forces: bool) -> int:
    """Flushes one ``need_resched()`` break adds to a ``zap_pte_range`` call. The loop over
    a PTE table checks ``need_resched()`` before each PTE (6.1, 6.12: each present one; 7.3:
    each batch of PTEs) and, when set, leaves the table midway, flushes as a forced flush
    would (``force_flush``: ``tlb_flush_mmu_tlbonly``, ``tlb_flush_rmaps``, ``tlb_flush_mmu``),
    ``cond_resched()``s and zaps the rest of the table in a new call (6.1, 7.3: ``goto
    again``/``retry``; 6.12: ``zap_pmd_range`` calls it again on the same PMD). Where the PTEs
    cleared before the break forced a flush (:func:`zap_forces_flush`), the table's one flush
    becomes two: 1. Otherwise nothing was due, the gather goes on and the break costs no
    flush: 0. Whether the flag is set is the scheduler's (another runnable task on the CPU
    and a tick or wake-up during the zap), which a plan cannot know: the planner plans no
    break, the kernel's usual case, and the ground-truth comparison accepts up to one extra
    flush per break the trace shows (``perfsim.groundtruth.model.compare``). Read in
    6.1.176, 6.12.117 and 7.3.4 (mm/memory.c).

    >>> need_resched_break_flushes(True), need_resched_break_flushes(False)
    (1, 0)
    """
    return 1 if forces else 0


def vma_ptes_dirty(vma: Vma) -> bool:
    """Are the present PTEs of ``vma`` dirty? perfsim's populations write every page they
    fault in (the ground-truth probe writes a byte per page, the host harness uses
    MADV_POPULATE_WRITE), so a writable VMA's pages are dirty unless they were written back
    since (``vma.written_back``: writeback's ``folio_mkclean`` clears the dirty bit of every
    PTE mapping the folio); a VMA without write permission can only have been read-faulted
    (clean) unless it was written before ``mprotect`` made it read-only (``vma.dirty``)."""
    return ("w" in vma.prot or vma.dirty) and not vma.written_back


def vma_zap_forces_flush(vma: Vma) -> bool:
    """:func:`zap_forces_flush` for the present PTEs of ``vma``."""
    return zap_forces_flush(vma.backing, vma.shared, vma_ptes_dirty(vma))


def zap_segments(lo: int, hi: int, base: int, page_shift: int,
                 forcing: tuple[tuple[int, int], ...]) -> list[tuple[int, int, bool]]:
    """The ``zap_pte_range`` calls over in-slot pages ``[lo, hi)`` of the PTE table at
    ``base``, as ``(lo, hi, forces)``: ``unmap_vmas`` zaps VMA by VMA, so each VMA whose
    PTEs force a flush (``forcing``: their parts of the unmapped range, in address order)
    gets its own call per table; what lies between them is one run that does not force.

    >>> zap_segments(0, 512, 0, 12, ((0x100000, 0x200000),))
    [(0, 256, False), (256, 512, True)]
    """
    if not forcing:
        return [(lo, hi, False)]
    out = []
    pos = lo
    t_lo, t_hi = base + (lo << page_shift), base + (hi << page_shift)
    for f0, f1 in forcing:
        if f1 <= t_lo or f0 >= t_hi:
            continue
        s_ = (max(f0, t_lo) - base) >> page_shift
        e_ = (min(f1, t_hi) - base) >> page_shift
        if s_ > pos:
            out.append((pos, s_, False))
        out.append((s_, e_, True))
        pos = e_
    if pos < hi:
        out.append((pos, hi, False))
    return out


def _nth_set_bit(mask: int, n: int) -> int:
    """Index of the ``n``-th (1-based) set bit of ``mask``, lowest first."""
    for _ in range(n - 1):
        mask &= mask - 1
    return (mask & -mask).bit_length() - 1


def folio_pte_runs(hit: int) -> int:
    """The runs of consecutive present PTEs in ``hit``: how many batches ``zap_present_ptes``
    makes of PTEs that all map one large folio (``folio_pte_batch`` stops at the first PTE
    that is not present or maps another page than the next of the folio; perfsim's folios
    are mapped in order, so only a hole ends a run inside one table).

    >>> folio_pte_runs(0b1111), folio_pte_runs(0b1011), folio_pte_runs(0)
    (1, 2, 0)
    """
    # (:func:`folio_pte_batch_starts` with every PTE large and one folio head, the first)
    return folio_pte_batch_starts(hit, -1, 1).bit_count()


def zap_batches_large_folio(target: Target, large: bool) -> bool:
    """Are the PTEs of this table that map a large folio zapped in batches (R24a)? Where the
    kernel batches (``zap_pte_batching``: 6.9+, ``zap_present_ptes`` → ``folio_pte_batch``)
    and perfsim knows the PTEs map a large folio (``large``): the anonymous THP
    :func:`split_for_zap` just split (its 512 PTEs still map the 2 MiB folio;
    ``__split_huge_pmd`` does not split the folio), or the folios of an mTHP VMA
    (``Vma.folio_size``, where :func:`large_folio_spans` puts them). Before 6.9 (6.1, 6.6,
    6.7) ``zap_pte_range`` zaps one PTE per step. Other large folios (a THP split by an
    earlier call, page-cache folios of a file VMA without ``folio_size``) are not tracked
    by the page tables perfsim keeps and are zapped one PTE per step."""
    return large and target.kernel.zap_pte_batching


def _every(step: int, ptrs: int) -> int:
    """Bitmap of the in-table indexes ``0, step, 2 * step, ...`` below ``ptrs``."""
    top = -(-ptrs // step) * step
    return ((1 << top) - 1) // ((1 << step) - 1) & ((1 << ptrs) - 1)


def whole_table_folio(ptrs: int) -> tuple[int, int]:
    """The :func:`table_folios` of a PTE table whose PTEs all map one folio (the anonymous
    THP :func:`split_for_zap` just split): every index large, one head at index 0."""
    return (1 << ptrs) - 1, 1


def large_folio_spans(vmas, start: int, end: int,
                      page_shift: int) -> tuple[tuple[int, int, int], ...]:
    """Where the PTEs of ``[start, end)`` map large (mTHP) folios, as ``(lo, hi,
    folio_bytes)`` per VMA (in address order) with ``folio_size`` above a page: the part of
    the range covered by the ``folio_size``-aligned ranges that lie wholly inside the VMA
    (``thp_vma_suitable_order``; a file or shmem VMA only where its start and file offset are
    congruent modulo the folio size), which is where the fault put them (perfsim's
    population maps such a folio whole: :func:`~perfsim.mm.build.populate_vma`, the same
    layout :func:`~perfsim.planner.batch.pte_batching_of` assumes for a move). Pages outside
    are small folios. hugetlb VMAs are zapped by ``__unmap_hugepage_range``: none.

    The folios are taken at the VMA's current bounds and at addresses aligned to their
    size: a folio an earlier split or move left partly mapped, or moved by a distance that
    is not a multiple of its size, is not tracked (its PTEs are zapped one per step).

    >>> from perfsim.mm.vma import Vma
    >>> large_folio_spans([Vma(0x1000, 0x40000, folio_size=0x10000)], 0x8000, 0x40000, 12)
    ((65536, 262144, 65536),)
    """
    out = ()
    for v in vmas:  # (a plain loop: an unmap touches one VMA or a few)
        size = v.folio_size
        if size <= (1 << page_shift) or v.backing == "hugetlb" or v.start >= end or v.end <= start:
            continue
        bounds = large_folio_bounds(v, size, page_shift)
        if bounds is not None and max(bounds[0], start) < min(bounds[1], end):
            out += ((max(bounds[0], start), min(bounds[1], end), size),)
    return out


def table_folios(spans: tuple[tuple[int, int, int], ...], base: int, page_shift: int,
                 ptrs: int) -> tuple[int, int]:
    """The large folios of :func:`large_folio_spans` in the PTE table at ``base``, as
    ``(large, heads)`` bitmaps of its indexes: the PTEs mapping a large folio, and those
    mapping a folio's first page (each folio is aligned to its size, so its first index is
    a multiple of its pages; a folio larger than the table's span starts a batch at the
    table's first index, where every ``zap_pte_range`` call starts one anyway).

    >>> table_folios(((0x4000, 0x10000, 0x4000),), 0, 12, 16)   # 16 KiB folios from page 4
    (65520, 4368)
    """
    large = heads = 0
    t_end = base + (ptrs << page_shift)
    for lo, hi, size in spans:
        if hi <= base or lo >= t_end:
            continue
        a, b = (max(lo, base) - base) >> page_shift, (min(hi, t_end) - base) >> page_shift
        span = range_mask(a, b)
        large |= span
        heads |= _every(min(size >> page_shift, ptrs), ptrs) & span
    return large, heads


def folio_pte_batch_starts(hit: int, large: int, heads: int) -> int:
    """The PTEs of ``hit`` (cleared by one ``zap_pte_range`` call) that start a batch of
    ``zap_present_ptes`` (6.9+), given the table's :func:`table_folios`: ``folio_pte_batch``
    extends a batch over the following present PTEs of the same folio, so one starts at a
    present PTE after a hole (or at the call's first: ``hit`` holds only the call's
    PTEs), at a folio's first page (the batch of the folio before stops at its last page:
    ``max_nr`` is cut at the folio's end) and at every PTE of a small folio
    (``folio_test_large`` fails: one PTE per step). A zap that starts inside a folio makes a
    partial first batch, one that ends inside it a partial last one.

    >>> bin(folio_pte_batch_starts(0b1111_1111, 0b1111_0000, 0b0001_0000))
    '0b11111'
    """
    return (hit & ~(hit << 1)) | (hit & heads) | (hit & ~large)


def folio_pte_batches(hit: int, large: int, heads: int) -> tuple[int, int]:
    """``(batches, batches of more than one PTE)`` ``zap_present_ptes`` makes of ``hit``
    (:func:`folio_pte_batch_starts`); each batch of several PTEs is one two-slot gather
    entry (``__tlb_remove_folio_pages``), each other one slot.

    >>> folio_pte_batches(0b1111_1111, 0b1111_0000, 0b0001_0000)
    (5, 1)
    >>> folio_pte_batches(0b1011, *whole_table_folio(4))
    (2, 1)
    """
    starts = folio_pte_batch_starts(hit, large, heads)
    more = hit & ~starts  # PTEs that continue a batch
    return starts.bit_count(), (starts & (more >> 1)).bit_count()


def gather_zapped_ptes(target: Target, tlb: MmuGather, base: int, lo: int, hi: int, hit: int,
                       forces: bool, folio: bool | tuple[int, int] = False) -> None:
    """One ``zap_pte_range`` call over in-slot pages ``[lo, hi)`` of the PTE table at
    ``base`` whose present PTEs ``hit`` it clears: each page joins the gather's batches;
    when they are full (:func:`~perfsim.planner.gather.pages_until_forced_flush`, with the
    rmaps of a forcing call delayed from its first page) the call flushes and frees after
    that PTE and goes on (``force_break``, ``goto retry``); a call that cleared a PTE
    :func:`zap_forces_flush` names flushes before it returns.

    ``folio`` (where :func:`zap_batches_large_folio`): the table's large folios, as
    :func:`table_folios` (``True``: the whole table is one folio, :func:`whole_table_folio`);
    the PTEs are zapped batch by batch (:func:`folio_pte_batch_starts`,
    ``zap_present_folio_ptes``); each batch of more than one PTE is one
    ``__tlb_remove_folio_pages`` entry of two slots (page and count,
    ``ENCODED_PAGE_BIT_NR_PAGES_NEXT``; 6.9+), a lone PTE one slot, and the batches are full
    (forced flush after that batch) when a batch's slots reach the room left."""
    ps = target.arch.page_shift
    if folio is True:
        folio = whole_table_folio(target.arch.ptrs_per_pte)
    if folio:
        starts = folio_pte_batch_starts(hit, *folio)
        more = hit & ~starts
        while starts:
            s_ = (starts & -starts).bit_length() - 1
            run = more >> (s_ + 1)
            n = (~run & (run + 1)).bit_length()  # the first PTE and those continuing it
            e_ = s_ + n
            slots = 1 if n == 1 else 2
            room = pages_until_forced_flush(target, tlb.batched, forces)
            starts &= starts - 1
            full = slots >= room
            # (tlb_remove_tlb_entries widens the range by the batch's own PTEs)
            tlb.gather_ptes(base + (s_ << ps), base + (e_ << ps),
                            slots, n, level="pte", delayed_rmap=forces, saved=n - 1)
            if full:
                tlb.force_flush(target, base + (e_ << ps))
        if forces and tlb.delayed_rmap:
            tlb.force_flush(target, base + (hi << ps))
        return
    while hit:
        room = pages_until_forced_flush(target, tlb.batched, forces)
        cnt = hit.bit_count()
        first = (hit & -hit).bit_length() - 1  # (the range: the PTEs cleared, first to last)
        if cnt < room:
            tlb.gather_ptes(base + (first << ps), base + (hit.bit_length() << ps), cnt, cnt,
                            level="pte", delayed_rmap=forces)
            break
        k = _nth_set_bit(hit, room) + 1
        tlb.gather_ptes(base + (first << ps), base + (k << ps), room, room, level="pte",
                        delayed_rmap=forces)
        tlb.force_flush(target, base + (k << ps))
        hit &= ~((1 << k) - 1)
    if forces and tlb.delayed_rmap:
        tlb.force_flush(target, base + (hi << ps))


def gather_zapped_pmd(target: Target, tlb: MmuGather, base: int) -> None:
    """``zap_huge_pmd`` of a whole huge PMD at ``base``: one huge entry cleared, not its
    PMD's PTEs (R24), and one gather entry (``tlb_remove_page_size``, which flushes and frees
    when the batches are full)."""
    a = target.arch
    tlb.gather_huge_pmd(base, a.pmd_size)
    if pages_until_forced_flush(target, tlb.batched - 1, False) == 1:
        tlb.force_flush(target, base + a.pmd_size)


def split_for_zap(arch, anon: bool) -> tuple[int, int]:
    """``zap_pmd_range`` → ``__split_huge_pmd`` of a huge PMD the range covers only partly,
    as ``(kind, present-PTE bitmap)`` after it: the split a move makes
    (:func:`~perfsim.planner.pgtable_move.split_huge_pmd`): an anonymous THP becomes a PTE
    table of the same pages (``pmdp_invalidate``), a file or shmem THP is unmapped whole
    (``pmdp_huge_clear_flush``: no PTEs left to zap, the part outside the range faults back
    in later). Either way with one ``flush_pmd_tlb_range`` of its own, outside the gather
    (:meth:`~perfsim.planner.gather.MmuGather.split_huge_pmd`). Read in 6.1.176, 6.12.117
    and 7.3.4 (``__split_huge_pmd_locked``)."""
    return split_huge_pmd(arch, anon)


def in_spans(addr: int, spans: tuple[tuple[int, int], ...]) -> bool:
    """Does ``addr`` lie in one of ``spans``?"""
    return any(s_ <= addr < e_ for s_, e_ in spans)


def free_range_bounds(addr: int, end: int, floor: int, ceiling: int,
                      size: int) -> tuple[int, int] | None:
    """The rounding of ``free_pmd_range``/``free_pud_range``/``free_p4d_range``: round
    ``[addr, end)`` inward to whole ``size`` units that lie in ``[floor, ceiling)``
    (``ceiling == 0`` means the top of the address space); None when nothing is left.

    >>> M = 1 << 20
    >>> free_range_bounds(3 * M, 9 * M, 2 * M, 0, 2 * M)    # floor at 2 MiB: 2 MiB up
    (2097152, 9437184)
    >>> free_range_bounds(3 * M, 9 * M, 3 * M, 0, 2 * M)    # a neighbour below 4 MiB
    (4194304, 9437184)
    >>> free_range_bounds(3 * M, 9 * M, 0, 8 * M, 2 * M)    # a neighbour from 8 MiB
    (2097152, 8388608)
    """
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


def free_pte_table(pmd_kind):
    """``free_pte_range``: every PTE table in the rounded range is freed (a huge PMD has
    none; it was zapped whole)."""
    return pmd_kind == PMD_TABLE


def free_pmd_table(pud_kind, pmd_entries_left):
    """``free_pud_range`` → ``free_pmd_range``'s ``pmd_free_tlb``: the PMD table of a PUD
    entry in the rounded range is freed; perfsim keeps one that still maps something."""
    return (pud_kind == PUD_TABLE) & (pmd_entries_left == 0)


def free_pud_table(has_pud_table, pud_entries_left):
    """``free_p4d_range`` → ``free_pud_range``'s ``pud_free_tlb``: as :func:`free_pmd_table`
    one level up (4- and 5-level page tables only)."""
    return has_pud_table & (pud_entries_left == 0)


# ---------------------------------------------------------------------------- walk driver
_PMD_NONE_ENTRY = (PMD_NONE, 0)


def zap_range(target: Target, win: Window, start: int, end: int, tlb: MmuGather,
              forcing: tuple[tuple[int, int], ...] = (),
              not_anon: tuple[tuple[int, int], ...] = (),
              folios: tuple[tuple[int, int, int], ...] = ()) -> int:
    """``unmap_vmas`` over ``[start, end)``: clear present entries; return the PTEs zapped
    (a huge PMD zapped whole is one entry the gather counts, R24; a huge PUD leaf counts
    its pages).
    ``forcing``: the parts of the range whose PTEs force a flush (:func:`zap_forces_flush`);
    ``not_anon``: the parts mapped by VMAs that are not anonymous (a huge PMD the range
    covers only partly is split the way ``__split_huge_pmd`` splits it there);
    ``folios``: where its PTEs map large folios (:func:`large_folio_spans`), zapped in
    batches where :func:`zap_batches_large_folio`.

    Per slot only what can change something is done: a slot with no entry, or a PTE table
    with no present PTE (what a move leaves behind), has nothing to zap (its entry stays as
    it is); the in-slot page range is partial only in the first and last slot; the PUD
    leaves are looked for only when the window holds one."""
    a = target.arch
    ps, ms, us, _, _, ptrs, _, _ = geometry_of(a)
    pud, pmd = win.pud, win.pmd
    zapped = 0
    s0, s1 = start >> ms, (end - 1) >> ms
    leaves = PUD_LEAF in pud.values()  # (the zap changes no PUD entry before its last loop)
    folios = folios if zap_batches_large_folio(target, bool(folios)) else ()
    for slot in range(s0, s1 + 1):
        ent = pmd.get(slot)
        if ent is None:
            continue
        kind, mask = ent
        if (kind == PMD_TABLE and not mask) or kind == PMD_NONE:
            continue  # nothing present: zap_pte_range would clear nothing
        if leaves and pud.get(slot >> (us - ms), PUD_NONE) == PUD_LEAF:
            continue  # handled per PUD below
        base = slot << ms
        lo = (start - base) >> ps if slot == s0 else 0
        hi = (end - base) >> ps if slot == s1 else ptrs
        folio: bool | tuple[int, int] = False
        if kind == PMD_LEAF:
            if zap_huge_pmd_whole(lo, hi, ptrs):
                pmd.pop(slot)  # (counted by the gather: MmuGather.zap_huge_pmds, R24)
                gather_zapped_pmd(target, tlb, base)
                continue
            kind, mask = split_for_zap(a, not in_spans(base + (lo << ps), not_anon))
            tlb.split_huge_pmd(base)
            if kind == PMD_NONE:  # a file THP: unmapped whole, no PTEs
                pmd.pop(slot)
                continue
            folio = zap_batches_large_folio(target, True)
        left, hit = zap_pte_range(mask, lo, hi)
        pmd[slot] = (PMD_TABLE, left) if hit else (kind, mask)
        if hit:
            zapped += hit.bit_count()
            if folios and not folio:
                lay = table_folios(folios, base, ps, ptrs)
                folio = lay if lay[0] & hit else False
            for s_lo, s_hi, forces in zap_segments(lo, hi, base, ps, forcing):
                gather_zapped_ptes(target, tlb, base, s_lo, s_hi, hit & range_mask(s_lo, s_hi),
                                   forces, folio)
    if leaves:
        pud_size = 1 << us
        for pslot in range(start >> us, ((end - 1) >> us) + 1):
            base = pslot << us
            if pud.get(pslot, PUD_NONE) == PUD_LEAF and zap_huge_pud_whole(base, pud_size, start, end):
                pud.pop(pslot)
                zapped += 1 << (us - ps)
                tlb.cleared_puds = True
                tlb.adjust(base, base + pud_size)
    return zapped


def free_pgd_range(target: Target, win: Window, addr: int, end: int, floor: int, ceiling: int,
                   tlb: MmuGather, visible: tuple[int, int] | None = None) -> int:
    """Free the page-table pages of ``[addr, end)`` that no neighbour can be using; return
    how many pages were freed. Lower levels first, like the kernel.

    A PUD table is freed when no PUD entry under it is left among those the unmap's window
    sees: the PUD slots of ``visible`` (an address range, as given to
    :meth:`~perfsim.mm.pagetable.PageTables.window`; by default all of ``win``'s).

    The entries left under a PUD entry (or a top-level slot) are looked for only where the
    entry's table could be freed (``free_pmd_table``/``free_pud_table`` ask for none left),
    and the look stops at the first."""
    ps, ms, us, p4s, pud_folded, _, pmd_size, pud_size = geometry_of(target.arch)
    b = free_range_bounds(addr, end, floor, ceiling, pmd_size)
    if b is None:
        return 0
    lo, hi = b
    pmd, pud = win.pmd, win.pud
    freed = tlb.tables  # (the tables free_table records, appended here in free order)
    n0 = len(freed)
    for slot in range(lo >> ms, ((hi - 1) >> ms) + 1):
        ent = pmd.get(slot)
        if ent is not None and free_pte_table(ent[0]):
            del pmd[slot]
            freed.append((slot << ms, PTE_TABLE))
    b = free_range_bounds(addr, end, floor, ceiling, pud_size)
    if b is not None:
        lo, hi = b
        shift = us - ms
        for pslot in range(lo >> us, ((hi - 1) >> us) + 1):
            kind = pud.get(pslot, PUD_NONE)
            left = 0
            if kind == PUD_TABLE:
                for s in pmd:
                    if (s >> shift) == pslot:
                        left = 1  # (at least one)
                        break
            if free_pmd_table(kind, left):
                del pud[pslot]
                freed.append((pslot << us, PMD_TABLE_PAGE))
    if not pud_folded:
        b = free_range_bounds(addr, end, floor, ceiling, 1 << p4s)
        if b is not None:
            lo, hi = b
            shift = p4s - us
            if visible is None:
                v0, v1 = win.lo, win.hi
            else:
                v0, v1 = visible[0] >> us, ((visible[1] - 1) >> us) + 1
            tops = win.pud_tables
            for top in range(lo >> p4s, ((hi - 1) >> p4s) + 1):
                has = top in tops
                left = 0
                if has:
                    for s in pud:
                        if (s >> shift) == top and v0 <= s < v1:
                            left = 1  # (at least one)
                            break
                if free_pud_table(has, left):
                    tops.discard(top)
                    freed.append((top << p4s, PUD_TABLE_PAGE))
    n = len(freed) - n0
    if n:
        tlb.freed_tables = True
    return n


# ---------------------------------------------------------------------------- array driver
def _append_mask_rows(pt: PageTables, ints: list[int]):
    """``pt.masks``/``mask_pop`` with the bitmaps ``ints`` appended; their row ids."""
    if not ints:
        return pt.masks, pt.mask_pop, []
    w = pt.masks.shape[1]
    rows = np.stack([_int_to_words(m, w) for m in ints])
    ids = list(range(len(pt.masks), len(pt.masks) + len(ints)))
    pop = _mask_pop(rows)
    return np.concatenate([pt.masks, rows]), np.concatenate([pt.mask_pop, pop]), ids


@dataclass
class _Arrays:
    """The arrays of a :class:`PageTables` being edited by :func:`unmap_arrays`."""

    pmd_idx: np.ndarray
    pmd_kind: np.ndarray
    pmd_row: np.ndarray
    pud_idx: np.ndarray
    pud_kind: np.ndarray
    masks: np.ndarray
    mask_pop: np.ndarray
    tops: frozenset

    @classmethod
    def of(cls, pt: PageTables) -> _Arrays:
        return cls(pt.pmd_idx, pt.pmd_kind, pt.pmd_mask, pt.pud_idx, pt.pud_kind, pt.masks,
                   pt.mask_pop, pt.pud_tables)

    def keep_pmd(self, keep: np.ndarray) -> None:
        self.pmd_idx, self.pmd_kind, self.pmd_row = (self.pmd_idx[keep], self.pmd_kind[keep],
                                                     self.pmd_row[keep])

    def keep_pud(self, keep: np.ndarray) -> None:
        self.pud_idx, self.pud_kind = self.pud_idx[keep], self.pud_kind[keep]


def _zap_pmd_entries(target: Target, arr: _Arrays, pt: PageTables, start: int, end: int,
                     tlb: MmuGather, spans: list, forcing: tuple[tuple[int, int], ...] = (),
                     not_anon: tuple[tuple[int, int], ...] = (),
                     folios: tuple[tuple[int, int, int], ...] = ()) -> int:
    """The PMD-level part of :func:`zap_range` on arrays; returns the PTEs zapped (the huge
    PMDs zapped whole are counted by the gather, as the walk counts them). Entries are
    gathered without Python work per entry unless the range holds PTEs that force a flush
    or more pages than the gather's batches take; then entry by entry, by the same rules.
    The PTE tables holding large folios (``folios``, :func:`large_folio_spans`) are counted
    table by table (one distinct bitmap and folio layout once) where they are batched."""
    a = target.arch
    ps, ms, ptrs = a.page_shift, a.pmd_shift, a.ptrs_per_pte
    s0, s1 = start >> ms, (end - 1) >> ms
    i0, i1 = arr.pmd_idx.searchsorted((s0, s1 + 1)).tolist()
    # Nothing to zap when every entry in range is a PTE table with no present PTE (the
    # source after a move): skip the per-entry work.
    if i1 == i0 or (not (arr.pmd_kind[i0:i1] != PMD_TABLE).any()
                    and not arr.mask_pop[arr.pmd_row[i0:i1]].any()):
        return 0
    idx, kind, row = arr.pmd_idx[i0:i1], arr.pmd_kind[i0:i1], arr.pmd_row[i0:i1]
    j0, j1 = arr.pud_idx.searchsorted((start >> a.pud_shift, ((end - 1) >> a.pud_shift) + 1)).tolist()
    leaf_puds = arr.pud_idx[j0:j1][arr.pud_kind[j0:j1] == PUD_LEAF]
    live = ~np.isin(idx >> (a.pud_shift - ms), leaf_puds) if len(leaf_puds) else np.ones(len(idx), bool)
    # in-slot page range [lo, hi) of each entry: only the first and last slot are partial
    lo = np.zeros(len(idx), np.int64)
    hi = np.full(len(idx), ptrs, np.int64)
    lo[idx == s0] = (start - (s0 << ms)) >> ps
    hi[idx == s1] = (end - (s1 << ms)) >> ps
    whole = zap_huge_pmd_whole(lo, hi, ptrs)
    leaf_whole = live & (kind == PMD_LEAF) & whole
    table = live & (kind == PMD_TABLE)
    hits = np.zeros(len(idx), np.int64)
    tw = table & whole
    hits[tw] = arr.mask_pop[row[tw]]  # zap_pte_range of a whole table leaves it empty
    new_row, new_kind = row.copy(), kind.copy()
    new_row[tw & (hits > 0)] = 0
    base = idx << ms
    edge_ints, edge_pos = [], []
    edge_hit: dict[int, int] = {}
    split_at: dict[int, bool] = {}  # partly covered huge PMD -> split into PTEs (anon)
    file_split = np.zeros(len(idx), bool)
    for k in np.flatnonzero((table | (live & (kind == PMD_LEAF))) & ~whole).tolist():
        if kind[k] == PMD_LEAF:
            sk, m = split_for_zap(a, not in_spans(int(base[k] + (lo[k] << ps)), not_anon))
            split_at[k] = sk != PMD_NONE
            if sk == PMD_NONE:
                file_split[k] = True
                continue
        else:
            m = _words_to_int(arr.masks[row[k]])
        left, hit = zap_pte_range(m, int(lo[k]), int(hi[k]))
        hits[k] = hit.bit_count()
        edge_hit[k] = hit
        if hit:
            edge_ints.append(left)
            edge_pos.append(k)
            new_kind[k] = PMD_TABLE
    arr.masks, arr.mask_pop, ids = _append_mask_rows(pt, edge_ints)
    for k, rid, m in zip(edge_pos, ids, edge_ints):
        new_row[k] = rid if m else 0
    hit_pte = (hits > 0) & ~leaf_whole

    def hit_of(k: int) -> int:
        """The PTEs the zap clears in entry ``k``: an edge's part, or a whole table's."""
        return edge_hit[k] if k in edge_hit else _words_to_int(arr.masks[row[k]])

    # the PTEs of a large folio are zapped batch by batch where the kernel batches (R24a):
    # a split anonymous THP's table is one folio, an mTHP VMA's tables hold its folios
    # (table_folios); one slot per lone PTE, two per longer batch; saved: PTEs after each
    # batch's first
    folio_at: dict[int, tuple[int, int]] = {}
    if zap_batches_large_folio(target, True):
        whole_folio = whole_table_folio(ptrs)
        for k, anon in split_at.items():
            if anon and edge_hit.get(k):
                folio_at[k] = whole_folio
        if folios:
            near = np.zeros(len(idx), bool)
            for f0, f1, _ in folios:
                near |= (base < f1) & (base + a.pmd_size > f0)
            for k in np.flatnonzero(near & hit_pte).tolist():
                if k not in split_at:
                    lay = table_folios(folios, int(base[k]), ps, ptrs)
                    h = hit_of(k)
                    if lay[0] & h:
                        folio_at[k] = lay
    slots_less = saved = 0
    counted: dict[tuple, tuple[int, int]] = {}
    for k, lay in folio_at.items():
        h = hit_of(k)
        key = (h, lay)
        if key not in counted:
            n, (runs, multi) = h.bit_count(), folio_pte_batches(h, *lay)
            counted[key] = (n - runs, n - (runs + multi))
        dsaved, dslots = counted[key]
        saved += dsaved
        slots_less += dslots
    entries = int(hits[hit_pte].sum()) - slots_less + int(np.count_nonzero(leaf_whole))
    in_range = [f for f in forcing if f[0] < end and f[1] > start]
    if in_range or entries >= pages_until_forced_flush(target, tlb.batched, False):
        for k in sorted(set(np.flatnonzero(hit_pte | leaf_whole).tolist()) | set(split_at)):
            b = int(base[k])
            if k in split_at:
                tlb.split_huge_pmd(b)
                if file_split[k]:
                    continue
            if leaf_whole[k]:
                gather_zapped_pmd(target, tlb, b)
                continue
            h = hit_of(k)
            for s_lo, s_hi, forces in zap_segments(int(lo[k]), int(hi[k]), b, ps, tuple(in_range)):
                gather_zapped_ptes(target, tlb, b, s_lo, s_hi, h & range_mask(s_lo, s_hi), forces,
                                   folio_at.get(k, False))
    else:
        for k in sorted(split_at):
            tlb.split_huge_pmd(int(base[k]))
        tlb.batched += entries
        tlb.zap_ptes += int(hits[hit_pte].sum())
        tlb.zap_saved += saved
        tlb.zap_huge_pmds += int(np.count_nonzero(leaf_whole))
        if hit_pte.any():
            tlb.cleared_ptes = True
            # the range covers the PTEs cleared (tlb_remove_tlb_entries), first to last
            ks = np.flatnonzero(hit_pte)
            k0, k1 = int(ks[0]), int(ks[-1])
            h0, h1 = hit_of(k0), hit_of(k1)
            spans.append((int(base[k0]) + (((h0 & -h0).bit_length() - 1) << ps),
                          int(base[k1]) + (h1.bit_length() << ps)))
        if leaf_whole.any():
            tlb.cleared_pmds = True
            spans.append((int(base[leaf_whole].min()), int(base[leaf_whole].max()) + a.pmd_size))
    arr.pmd_kind, arr.pmd_row = arr.pmd_kind.copy(), arr.pmd_row.copy()
    arr.pmd_kind[i0:i1], arr.pmd_row[i0:i1] = new_kind, new_row
    keep = np.ones(len(arr.pmd_idx), bool)
    keep[i0:i1] = ~leaf_whole & ~file_split
    if not keep.all():
        arr.keep_pmd(keep)
    return int(hits.sum())


def _zap_pud_leaves(target: Target, arr: _Arrays, start: int, end: int, tlb: MmuGather,
                    spans: list) -> int:
    a = target.arch
    us = a.pud_shift
    j0, j1 = arr.pud_idx.searchsorted((start >> us, ((end - 1) >> us) + 1)).tolist()
    pslots = arr.pud_idx[j0:j1]
    gone = (arr.pud_kind[j0:j1] == PUD_LEAF) & zap_huge_pud_whole(pslots << us, a.pud_size, start, end)
    if not gone.any():
        return 0
    tlb.cleared_puds = True
    spans.append((int(pslots[gone].min()) << us, (int(pslots[gone].max()) + 1) << us))
    keep = np.ones(len(arr.pud_idx), bool)
    keep[j0:j1] = ~gone
    arr.keep_pud(keep)
    return int(np.count_nonzero(gone)) << (us - a.page_shift)


def _free_arrays(target: Target, arr: _Arrays, start: int, end: int, floor: int, ceiling: int,
                 window: tuple[int, int], tlb: MmuGather) -> int:
    """:func:`free_pgd_range` on arrays; returns tables freed."""
    a = target.arch
    ms, us, k_pp = a.pmd_shift, a.pud_shift, a.pud_shift - a.pmd_shift
    ev_addr: list = []
    ev_level: list = []
    b = free_range_bounds(start, end, floor, ceiling, a.pmd_size)
    if b is None:
        return 0
    k0, k1 = arr.pmd_idx.searchsorted((b[0] >> ms, ((b[1] - 1) >> ms) + 1)).tolist()
    tab = free_pte_table(arr.pmd_kind[k0:k1])
    if tab.any():
        ev_addr.append(arr.pmd_idx[k0:k1][tab] << ms)
        ev_level.append(np.full(int(np.count_nonzero(tab)), PTE_TABLE, np.int8))
        keep = np.ones(len(arr.pmd_idx), bool)
        keep[k0:k1] = ~tab
        arr.keep_pmd(keep)
    b = free_range_bounds(start, end, floor, ceiling, a.pud_size)
    if b is not None:
        q0, q1 = arr.pud_idx.searchsorted((b[0] >> us, ((b[1] - 1) >> us) + 1)).tolist()
        cand = arr.pud_idx[q0:q1]
        left = (arr.pmd_idx.searchsorted((cand + 1) << k_pp)
                - arr.pmd_idx.searchsorted(cand << k_pp))
        free_p = free_pmd_table(arr.pud_kind[q0:q1], left)
        if free_p.any():
            ev_addr.append(cand[free_p] << us)
            ev_level.append(np.full(int(np.count_nonzero(free_p)), PMD_TABLE_PAGE, np.int8))
            keep = np.ones(len(arr.pud_idx), bool)
            keep[q0:q1] = ~free_p
            arr.keep_pud(keep)
    b = None if a.pud_folded else free_range_bounds(start, end, floor, ceiling, 1 << a.p4d_shift)
    if b is not None:
        # the walk's window covers window rounded out to PUD slots: what it can see
        w0, w1 = window[0] >> us, ((window[1] - 1) >> us) + 1
        in_win = arr.pud_idx[(arr.pud_idx >= w0) & (arr.pud_idx < w1)] >> (a.p4d_shift - us)
        tops = set(arr.tops)
        for top in range(b[0] >> a.p4d_shift, ((b[1] - 1) >> a.p4d_shift) + 1):
            if free_pud_table(top in tops, int(np.count_nonzero(in_win == top))):
                tops.discard(top)
                ev_addr.append(np.array([top << a.p4d_shift], np.int64))
                ev_level.append(np.array([PUD_TABLE_PAGE], np.int8))
        arr.tops = frozenset(tops)
    if not ev_addr:
        return 0
    tlb.table_arrays = merge_free_order(target, ev_addr, ev_level)
    tlb.freed_tables = True
    return sum(len(x) for x in ev_addr)


def unmap_arrays(target: Target, pt: PageTables, start: int, end: int, floor: int,
                 ceiling: int, win_start: int, win_end: int, tlb: MmuGather,
                 forcing: tuple[tuple[int, int], ...] = (),
                 not_anon: tuple[tuple[int, int], ...] = (),
                 folios: tuple[tuple[int, int, int], ...] = (), *, closed: bool = True,
                 closed_only: bool = False):
    """:func:`zap_range` then :func:`free_pgd_range` on the arrays of ``pt``, with no Python
    work per PMD slot (except where :func:`_zap_pmd_entries` needs it). ``[win_start,
    win_end)`` is the range the walk's window would cover (its PUD-slot rounding bounds what
    the top-level test can see); ``forcing``, ``not_anon`` and ``folios`` as for
    :func:`zap_range`.
    A range of empty PTE tables (the source after a move) is unmapped in closed form
    (:func:`~perfsim.planner.fast_unmap.unmap_moved_source`) unless ``closed`` is False;
    with ``closed_only``, any other range returns None (the caller walks it).

    Returns ``(new page tables, PTEs zapped, tables freed)``; ``tlb`` is updated exactly as
    the walk updates it.
    """
    if closed:
        out = _fast_unmap.unmap_moved_source(target, pt, start, end, floor, ceiling, win_start, win_end, tlb)
        if out is not None or closed_only:
            return out
    arr = _Arrays.of(pt)
    spans: list[tuple[int, int]] = []
    zapped = _zap_pmd_entries(target, arr, pt, start, end, tlb, spans, forcing, not_anon,
                              folios)
    zapped += _zap_pud_leaves(target, arr, start, end, tlb, spans)
    for s, e in spans:
        tlb.adjust(s, e)
    freed = _free_arrays(target, arr, start, end, floor, ceiling, (win_start, win_end), tlb)
    new_pt = PageTables(target.arch, arr.tops, arr.pud_idx, arr.pud_kind, arr.pmd_idx,
                        arr.pmd_kind, arr.pmd_row, arr.masks, arr.mask_pop)
    return new_pt, zapped, freed


# ---------------------------------------------------------------------------- entry point
@direct_init
@dataclass(frozen=True)
class UnmapRegion:
    """One ``do_munmap`` range and its surroundings: ``[start, end)`` is unmapped; page
    tables are freed only between ``floor`` (end of the previous VMA, 0 if none) and
    ``ceiling`` (start of the next VMA, 0 if none), as ``free_pgtables`` does; ``span`` covers
    the VMAs the range touches (the part of the page tables the walk may read); ``forcing``
    holds, in address order, the part of ``[start, end)`` of each VMA whose present PTEs
    force a flush when zapped (:func:`vma_zap_forces_flush`), ``not_anon`` that of each
    VMA that is not anonymous (``vma_is_anonymous``: not ``anon`` backing) and ``folios``
    where the range's PTEs map large (mTHP) folios (:func:`large_folio_spans`)."""

    start: int
    end: int
    floor: int
    ceiling: int
    span: tuple[int, int]
    forcing: tuple[tuple[int, int], ...] = ()
    not_anon: tuple[tuple[int, int], ...] = ()
    folios: tuple[tuple[int, int, int], ...] = ()


def _spans_of(vmas, start: int, end: int, keep) -> tuple[tuple[int, int], ...]:
    """The parts of ``[start, end)`` of the VMAs (in address order) for which ``keep(vma)``,
    one per VMA (adjacent ones stay apart)."""
    out = ()
    for v in vmas:  # (a plain loop: an unmap touches one VMA or a few)
        if v.start < end and v.end > start and keep(v):
            out += ((max(v.start, start), min(v.end, end)),)
    return out


def forcing_spans(vmas, start: int, end: int) -> tuple[tuple[int, int], ...]:
    """The parts of ``[start, end)`` of the VMAs whose zapped PTEs force a flush
    (:func:`vma_zap_forces_flush`), one per VMA: each gets its own ``zap_pte_range`` call."""
    return _spans_of(vmas, start, end, vma_zap_forces_flush)


def _not_anonymous(vma: Vma) -> bool:
    return vma.backing != "anon"


def not_anon_spans(vmas, start: int, end: int) -> tuple[tuple[int, int], ...]:
    """The parts of ``[start, end)`` of the VMAs that are not anonymous (file, shmem,
    hugetlb: ``vma_is_anonymous`` is false), whose partly zapped huge PMDs
    ``__split_huge_pmd`` unmaps whole instead of splitting into PTEs."""
    return _spans_of(vmas, start, end, _not_anonymous)


def zap_spans(vmas, start: int, end: int) -> tuple[tuple, tuple]:
    """``(forcing_spans(...), not_anon_spans(...))`` of ``vmas`` over ``[start, end)`` in
    one pass over the VMAs (the same predicates, the same spans)."""
    forcing = not_anon = ()
    for v in vmas:
        # (an anonymous VMA's PTEs never force a flush, zap_forces_flush: only a page that
        # is not anonymous does; so only a VMA that is not anonymous is asked)
        if v.start < end and v.end > start and _not_anonymous(v):
            span = (max(v.start, start), min(v.end, end))
            if vma_zap_forces_flush(v):
                forcing += (span,)
            not_anon += (span,)
    return forcing, not_anon


def unmap_region(target: Target, tables: CallTables, region: UnmapRegion, log: S.StepLog,
                 phase: int, *, cpus: int, lazy_cpus: int, options: PlanOptions = DEFAULT,
                 closed_first: bool = False) -> None:
    """``unmap_region``: zap the PTEs of the range, free the page tables between the
    neighbours, and flush as the ``mmu_gather`` does, on the call's page tables ``tables``.

    ``PlanOptions.route`` chooses the slot-by-slot walk (in the call's open window) or the
    array driver (by default the walk for small ranges and for ranges of a few dozen slots,
    ``WALK_UNLESS_CLOSED``; same rows and state, the tests hold them to that).
    ``closed_first``: the range's tables were just planned by the vectorised path (the
    closed-form move of this source), so a range of a few dozen slots tries the driver's
    closed form before it walks (a walk would first read the moved state into a window)."""
    start, end = region.start, region.end
    tlb = MmuGather(start)
    route = options.route(target.arch.pmd_shift, start, end)
    got = None
    if route != WALK:
        few = route == WALK_UNLESS_CLOSED
        if closed_first or not few:
            # (a declined closed form leaves tlb untouched: the walk then starts afresh)
            got = unmap_arrays(target, tables.value(), start, end, region.floor,
                               region.ceiling, region.span[0], region.span[1], tlb,
                               region.forcing, region.not_anon, region.folios,
                               closed_only=few)
    if got is None:
        win = tables.window(*region.span)
        zapped = zap_range(target, win, start, end, tlb, region.forcing, region.not_anon,
                           region.folios)
        freed = free_pgd_range(target, win, start, end, region.floor, region.ceiling, tlb,
                               visible=region.span)
    else:
        out, zapped, freed = got
        tables.set_value(out)
    tlb_finish_mmu(target, tlb, log, phase, start, end, zapped, freed, cpus=cpus,
                   lazy_cpus=lazy_cpus)


# At the end: fast_unmap reads this module's predicates (free_range_bounds, free_*_table),
# so it is bound once here, whichever of the two is imported first, not looked up per call.
import perfsim.planner.fast_unmap as _fast_unmap  # noqa: E402
