"""``move_page_tables()`` extent by extent: the readable, exact reference planner.

:func:`move_page_tables` is the kernel loop of mm/mremap.c (6.15+ shape, with
``pagetable_move_control``; the 5.x–6.14 loop is the same steps with the state passed as
arguments), line for line: the PUD stage, the PMD stage, the THP split and ``move_ptes``.
Every decision is a pure function of :mod:`perfsim.planner.pgtable_move` (the entry moves,
the rmap and uffd gates), :mod:`perfsim.planner.batch` (PTE batching) and
:mod:`perfsim.planner.tlb` (the flush policy); this module applies them to a mutable
:class:`~perfsim.mm.pagetable.Window` of the page tables, so every effect of one step is
visible to the next (source and destination sharing page-table pages, the exec stack's
overlapping move).

Its cost is one Python iteration per extent. :mod:`perfsim.planner.fast` calls the same
decision functions over whole columns of extents when source and destination touch
disjoint page-table pages; the tests hold the two to identical output.
"""

from __future__ import annotations

from perfsim.mm.pagetable import (
    PMD_LEAF,
    PMD_NONE,
    PMD_TABLE,
    PUD_LEAF,
    PUD_NONE,
    PUD_TABLE,
    Window,
)
from perfsim.planner import steps as S
from perfsim.planner.batch import mremap_folio_pte_batch
from perfsim.planner.pgtable_move import (
    HPAGE_PMD,
    HPAGE_PUD,
    NORMAL_PMD,
    NORMAL_PUD,
    EntryRow,
    MoveGates,
    alloc_new_pud,
    failed_entry_row,
    get_extent,
    move_ptes_flushes,
    move_ptes_ptl_count,
    pgt_entry_row,
    pmd_alloc,
    pmd_ptl_count,
    pte_alloc,
    split_huge_pmd,
    split_huge_pmd_row,
)
from perfsim.planner.pgtable_move import move_pgt_entry as entry_moves
from perfsim.planner.realign import PageTableMoveControl
from perfsim.planner.tlb import span_flushes
from perfsim.profiles import Target

_PMD_NONE_ENTRY = (PMD_NONE, 0)

#: :func:`geometry_of` memo: id(arch) -> (arch, its geometry). The profile is kept, so its
#: id names no other while it is here.
_GEOMETRY: dict[int, tuple] = {}


def geometry_of(arch) -> tuple:
    """``(page_shift, pmd_shift, pud_shift, p4d_shift, pud_folded, ptrs_per_pte, pmd_size,
    pud_size)`` of ``arch`` (an immutable profile; several are properties), once per profile."""
    got = _GEOMETRY.get(id(arch))
    if got is None or got[0] is not arch:
        if len(_GEOMETRY) >= 64:
            _GEOMETRY.clear()
        got = _GEOMETRY[id(arch)] = (arch, (arch.page_shift, arch.pmd_shift, arch.pud_shift,
                                            arch.p4d_shift, arch.pud_folded, arch.ptrs_per_pte,
                                            arch.pmd_size, arch.pud_size))
    return got[1]


#: :func:`move_constants` memo: id(target) -> (target, its constants).
_MOVE_CONSTANTS: dict[int, tuple] = {}


def move_constants(target: Target) -> tuple:
    """:func:`geometry_of` ``target.arch`` followed by ``(target.have_move_pud,
    target.have_move_pmd)`` (properties of an immutable target), once per target: what every
    :class:`MoveContext` of the target reads."""
    got = _MOVE_CONSTANTS.get(id(target))
    if got is None or got[0] is not target:
        if len(_MOVE_CONSTANTS) >= 64:
            _MOVE_CONSTANTS.clear()
        got = _MOVE_CONSTANTS[id(target)] = (target, geometry_of(target.arch)
                                             + (target.have_move_pud, target.have_move_pmd))
    return got[1]


class MoveContext:
    """What one ``move_page_tables`` call needs besides the control block: the target, the
    window it edits, the log, the phase, the CPUs its flushes reach, the injected allocation
    failure and the allocations made so far; plus what every step reads (the shifts and
    whether NORMAL_PUD/PMD moves exist, once per target: :func:`move_constants`; the
    flushes by length for these CPUs:
    :func:`~perfsim.planner.tlb.span_flushes`). A plain slotted record: one is made per
    move."""

    __slots__ = ("target", "win", "log", "phase", "cpus", "lazy_cpus", "fail_alloc_at",
                 "allocations", "page_shift", "pmd_shift", "pud_shift", "p4d_shift",
                 "pud_folded", "ptrs", "pmd_size", "pud_size", "have_move_pud",
                 "have_move_pmd", "_has_pud_table", "flushes", "entry_rows")

    def __init__(self, target: Target, win: Window, log: S.StepLog, phase: int = S.MOVE,
                 cpus: int = 1, lazy_cpus: int = 0, fail_alloc_at: int | None = None,
                 allocations: int = 0) -> None:
        self.target, self.win, self.log, self.phase = target, win, log, phase
        self.cpus, self.lazy_cpus = cpus, lazy_cpus
        self.fail_alloc_at, self.allocations = fail_alloc_at, allocations
        (self.page_shift, self.pmd_shift, self.pud_shift, self.p4d_shift, self.pud_folded,
         self.ptrs, self.pmd_size, self.pud_size, self.have_move_pud,
         self.have_move_pmd) = move_constants(target)
        self._has_pud_table: set[int] = set()
        self.flushes = span_flushes(target, cpus=cpus, lazy_cpus=lazy_cpus)
        self.entry_rows: dict[tuple, EntryRow] = {}  # (:meth:`entry_row`, per move)

    # -------------------------------------------------------------- lookups
    def get_old_pud(self, addr: int) -> int:
        """``get_old_pud``: the kind of the source PUD entry (none if a level above is)."""
        if not (self.pud_folded or (addr >> self.p4d_shift) in self.win.pud_tables):
            return PUD_NONE
        return self.win.pud.get(addr >> self.pud_shift, PUD_NONE)

    def pmd_entry(self, addr: int) -> tuple[int, int]:
        """``get_old_pmd``: ``(kind, present-PTE bitmap)`` of the PMD entry mapping ``addr``."""
        return self.win.pmd.get(addr >> self.pmd_shift, _PMD_NONE_ENTRY)

    def entry_row(self, gates: MoveGates, entry: str, src_slot: int, dst_slot: int) -> EntryRow:
        """:func:`~perfsim.planner.pgtable_move.pgt_entry_row` of this move (its gates, CPUs)
        for ``entry`` between these slots, made once per entry kind and PMD-lock count:
        the row depends on the slots only through ``pmd_ptl_count`` (the lock count; the
        flush does not depend on where the range is)."""
        key = (entry, pmd_ptl_count(self.target.arch, src_slot, dst_slot))
        row = self.entry_rows.get(key)
        if row is None:
            row = self.entry_rows[key] = pgt_entry_row(self.target, gates, entry, src_slot,
                                                       dst_slot, cpus=self.cpus,
                                                       lazy_cpus=self.lazy_cpus)
        return row

    # -------------------------------------------------------------- allocation
    def _allocate(self) -> bool:
        """One page-table page allocation; False when the injected failure hits it (the
        count is an int from 1, so it never equals a ``fail_alloc_at`` of None)."""
        self.allocations += 1
        return self.allocations != self.fail_alloc_at

    def alloc_new_pud(self, addr: int, counts: dict) -> bool:
        """``alloc_new_pud``: make sure a PUD table maps ``addr`` at the destination.

        A top-level slot this move already found (or made) a PUD table in is remembered:
        nothing in a move removes one (only an unmap frees tables), so
        :func:`~perfsim.planner.pgtable_move.alloc_new_pud` would answer "nothing to
        allocate" there again (the PMD stage asks once more for the same address)."""
        top = addr >> self.p4d_shift
        if top in self._has_pud_table:
            return True
        p4d, pud = alloc_new_pud(self.target.arch, self.win.pud_tables, addr)
        if not (p4d or pud):
            self._has_pud_table.add(top)
            return True
        for name, n in (("alloc_p4d", p4d), ("alloc_pud", pud)):
            if n:
                if not self._allocate():
                    return False
                counts[name] = counts.get(name, 0) + 1
        if pud:
            self.win.pud_tables.add(top)
            self._has_pud_table.add(top)
        return True

    def alloc_new_pmd(self, addr: int, counts: dict) -> bool:
        """``alloc_new_pmd``: PUD table first, then a PMD table if the PUD entry is none
        (:func:`move_page_tables` reads it inline: the same steps)."""
        if (addr >> self.p4d_shift) not in self._has_pud_table and \
                not self.alloc_new_pud(addr, counts):  # (the memo of alloc_new_pud first)
            return False
        slot = addr >> self.pud_shift
        if pmd_alloc(self.win.pud.get(slot, PUD_NONE)):
            return self.alloc_pmd_table(slot, counts)
        return True

    def alloc_pmd_table(self, slot: int, counts: dict) -> bool:
        """The PMD table ``pmd_alloc`` asked for under destination PUD slot ``slot``: one
        allocation (False when the injected failure hits it), counted, the entry made."""
        if not self._allocate():
            return False
        counts["alloc_pmd"] = counts.get("alloc_pmd", 0) + 1
        self.win.pud[slot] = PUD_TABLE
        return True

    def pte_alloc(self, addr: int, counts: dict) -> bool:
        """``pte_alloc``: a destination PTE table, allocated just before ``move_ptes`` (R13;
        :func:`move_page_tables` reads it inline: the same steps)."""
        slot = addr >> self.pmd_shift
        if not pte_alloc(self.win.pmd.get(slot, _PMD_NONE_ENTRY)[0]):
            return True
        return self.alloc_pte_table(slot, counts)

    def alloc_pte_table(self, slot: int, counts: dict) -> bool:
        """The PTE table the kernel's ``pte_alloc`` asked for at destination PMD slot
        ``slot``: one allocation (False when the injected failure hits it), counted, the
        entry made (an empty table)."""
        self.allocations += 1  # (_allocate)
        if self.allocations == self.fail_alloc_at:
            return False
        counts["alloc_pte"] = 1
        self.win.pmd[slot] = (PMD_TABLE, 0)
        return True


def move_page_tables(ctx: MoveContext, pmc: PageTableMoveControl) -> int:
    """Walk ``[pmc.old_addr, pmc.old_end)`` and move its page tables; return the progress.

    ``pmc`` must already be realigned (or not) by the caller; hugetlb VMAs go to
    :func:`perfsim.planner.hugetlb.move_hugetlb_page_tables` instead.
    """
    t, log, ph = ctx.target, ctx.log, ctx.phase
    gates = MoveGates.of(t, pmc.old, pmc.new, pmc.need_rmap_locks)
    pud_shift, pmd_shift = ctx.pud_shift, ctx.pmd_shift
    pud_size, pmd_size = ctx.pud_size, ctx.pmd_size
    old_end = pmc.old_end
    win = ctx.win
    pmd_get = win.pmd.get  # (the window's dicts stay the same objects during the walk)
    p4d_shift = ctx.p4d_shift
    has_pud_table = ctx._has_pud_table  # (alloc_new_pud's memo, read before asking it)
    # (the window's PUD dict and top-level set stay the same objects during the walk too:
    # get_old_pud, alloc_new_pmd and pte_alloc are read inline below, calling the same
    # decision functions; the context's methods make the allocations)
    pud_get, pud_tables, pud_folded = win.pud.get, win.pud_tables, ctx.pud_folded
    try_normal_pud = gates.normal_moves_tried and ctx.have_move_pud  # (move_constants)
    try_normal_pmd = gates.normal_moves_tried and ctx.have_move_pmd
    old_addr, new_addr = pmc.old_addr, pmc.new_addr
    log.add_row(ph, S.K_NOTIFIER, old_addr, new_addr, old_end - old_addr, 0, 0, 0, 0, 0, 0, 0,
                0, None, (), 0, 1)
    extent = 0
    while True:
        # pmc_next / pmc_done: both addresses advance by the extent the body set; a break
        # leaves them where the loop stopped
        old_addr += extent
        new_addr += extent
        if old_addr >= old_end:
            break
        counts: dict = {}
        # PUD stage (R8): if the extent is PUD-sized, try to move the whole PUD entry.
        extent = get_extent(pud_shift, old_addr, new_addr, old_end)
        # get_old_pud (MoveContext.get_old_pud, inline)
        pud = pud_get(old_addr >> pud_shift, PUD_NONE) \
            if pud_folded or (old_addr >> p4d_shift) in pud_tables else PUD_NONE
        if pud == PUD_NONE:
            log.add_row(ph, S.K_SKIP_PUD, old_addr, new_addr, extent, 0, 0, 0, 0, 0, 0, 0, 0,
                        None, (), 0, 0)
            continue
        if (new_addr >> p4d_shift) not in has_pud_table and \
                not ctx.alloc_new_pud(new_addr, counts):
            log.add(ph, S.K_ALLOC_FAIL, old_addr, new_addr, 0, **counts)
            break
        if pud == PUD_LEAF:
            if extent != pud_size:
                raise NotImplementedError(
                    "partial move of a huge PUD leaf (DAX/PFNMAP only) is not modelled "
                    "(docs/kernel-rules.md: not modelled)")
            move_pgt_entry(ctx, gates, HPAGE_PUD, old_addr, new_addr, extent, counts)
            continue  # the kernel ignores the result and continues (R8.4)
        if try_normal_pud and extent == pud_size:
            if move_pgt_entry(ctx, gates, NORMAL_PUD, old_addr, new_addr, extent, counts):
                continue
        # PMD stage (R9).
        extent = get_extent(pmd_shift, old_addr, new_addr, old_end)
        src_slot = old_addr >> pmd_shift
        kind = pmd_get(src_slot, _PMD_NONE_ENTRY)[0]
        if kind == PMD_NONE:
            log.add(ph, S.K_SKIP_PMD, old_addr, new_addr, extent, **counts)
            continue
        # alloc_new_pmd (MoveContext.alloc_new_pmd, inline: it allocates only when
        # pmd_alloc says the destination PUD entry needs a PMD table)
        if (new_addr >> p4d_shift) not in has_pud_table and \
                not ctx.alloc_new_pud(new_addr, counts):
            log.add(ph, S.K_ALLOC_FAIL, old_addr, new_addr, 0, **counts)
            break
        if pmd_alloc(pud_get(new_addr >> pud_shift, PUD_NONE)) and \
                not ctx.alloc_pmd_table(new_addr >> pud_shift, counts):
            log.add(ph, S.K_ALLOC_FAIL, old_addr, new_addr, 0, **counts)
            break
        if kind == PMD_LEAF:
            # R10: a THP (or PMD swap entry) moves whole only when the extent is a full PMD.
            if extent == pmd_size and move_pgt_entry(ctx, gates, HPAGE_PMD, old_addr,
                                                          new_addr, extent, counts):
                continue
            split_source_thp(ctx, pmc, old_addr, counts)
        elif try_normal_pmd and extent == pmd_size:
            if move_pgt_entry(ctx, gates, NORMAL_PMD, old_addr, new_addr, extent, counts):
                continue
        # R12: nothing left to move here (file THP split, racing collapse).
        if pmd_get(src_slot, _PMD_NONE_ENTRY)[0] == PMD_NONE:
            log.add(ph, S.K_SKIP_PMD, old_addr, new_addr, extent, **counts)
            continue
        # pte_alloc (MoveContext.pte_alloc, inline: it allocates only when the kernel's
        # pte_alloc says the destination PMD entry needs a PTE table)
        if pte_alloc(pmd_get(new_addr >> pmd_shift, _PMD_NONE_ENTRY)[0]) and \
                not ctx.alloc_pte_table(new_addr >> pmd_shift, counts):
            log.add(ph, S.K_ALLOC_FAIL, old_addr, new_addr, 0, **counts)
            break
        move_ptes(ctx, gates, old_addr, new_addr, extent, counts)
    return pmc.progress(old_addr)


def move_pgt_entry(ctx: MoveContext, gates: MoveGates, entry: str, old_addr: int,
                   new_addr: int, extent: int, counts: dict) -> bool:
    """``move_pgt_entry``: under the rmap locks ``should_take_rmap_locks`` chose
    (:attr:`MoveGates.normal_locks`/``huge_locks``), move one PUD or PMD entry if
    :func:`perfsim.planner.pgtable_move.move_pgt_entry` says it can; log its row
    (:func:`~perfsim.planner.pgtable_move.pgt_entry_row`).

    A failed NORMAL_PMD/PUD attempt is a row of its own (the locks were taken and dropped)
    that carries the allocations made so far; ``counts`` is then emptied for the next row.
    A huge PUD's row is logged whether or not it moved (the kernel ignores the result).
    """
    win = ctx.win
    pud_level = entry in (NORMAL_PUD, HPAGE_PUD)
    shift = ctx.pud_shift if pud_level else ctx.pmd_shift
    src, dst = old_addr >> shift, new_addr >> shift
    dst_kind = win.pud.get(dst, PUD_NONE) if pud_level else win.pmd.get(dst, (PMD_NONE, 0))[0]
    moved = bool(entry_moves(entry, gates.uffd_blocks, dst_kind))
    if moved and entry == NORMAL_PUD:
        _reparent_pmd_table(win, ctx.pud_shift - ctx.pmd_shift, src, dst)
    elif moved:
        table = win.pud if pud_level else win.pmd
        table[dst] = table.pop(src)
    if moved or entry == HPAGE_PUD:
        row = ctx.entry_row(gates, entry, src, dst)
        length = extent
    elif entry in (NORMAL_PUD, NORMAL_PMD):
        row, length = failed_entry_row(gates, entry), 0
    else:
        return False
    if counts:  # (the allocations made for this step: the alloc_* columns; by position)
        got = counts.get
        ctx.log.add_row(ctx.phase, row.kind, old_addr, new_addr, length, row.ptes, 0, 0,
                        got("alloc_p4d", 0), got("alloc_pud", 0), got("alloc_pmd", 0),
                        got("alloc_pte", 0), 0, row.flush, row.locks, int(row.ptl), 0)
        if not moved:
            counts.clear()
    else:
        ctx.log.add_row(ctx.phase, row.kind, old_addr, new_addr, length, row.ptes, 0, 0, 0, 0,
                        0, 0, 0, row.flush, row.locks, int(row.ptl), 0)
    return moved


def _reparent_pmd_table(win: Window, pmds_per_pud_shift: int, src: int, dst: int) -> None:
    """``move_normal_pud``'s effect: the PMD table under source PUD slot ``src`` now hangs
    under destination slot ``dst``, with every entry it holds."""
    win.pud.pop(src)
    win.pud[dst] = PUD_TABLE
    base_src, base_dst = src << pmds_per_pud_shift, dst << pmds_per_pud_shift
    moved = [s for s in win.pmd if base_src <= s < base_src + (1 << pmds_per_pud_shift)]
    entries = {s: win.pmd.pop(s) for s in moved}
    for s, e in entries.items():
        win.pmd[s - base_src + base_dst] = e


def split_source_thp(ctx: MoveContext, pmc: PageTableMoveControl, old_addr: int,
                     counts: dict) -> None:
    """``split_huge_pmd`` of the source THP at ``old_addr``: apply
    :func:`perfsim.planner.pgtable_move.split_huge_pmd` and log the split with its flush."""
    arch = ctx.target.arch
    slot = old_addr >> arch.pmd_shift
    base = slot << arch.pmd_shift
    kind, mask = split_huge_pmd(arch, pmc.old.backing == "anon")
    if kind == PMD_NONE:
        ctx.win.pmd.pop(slot)
    else:
        ctx.win.pmd[slot] = (kind, mask)
    row = split_huge_pmd_row(ctx.target, cpus=ctx.cpus, lazy_cpus=ctx.lazy_cpus)
    ctx.log.add(ctx.phase, row.kind, base, 0, arch.pmd_size, ptes=row.ptes, flush=row.flush,
                rmap=row.locks, ptl=row.ptl, **counts)
    counts.clear()


def move_ptes(ctx: MoveContext, gates: MoveGates, old_addr: int, new_addr: int, extent: int,
              counts: dict) -> None:
    """``move_ptes`` over one extent (R14, R16f–g): move the present PTEs' bits to the
    destination table, batched as ``mremap_folio_pte_batch`` does, flushed if any moved."""
    ps, ptrs, pmd = ctx.page_shift, ctx.ptrs, ctx.win.pmd
    src_slot, dst_slot = old_addr >> ctx.pmd_shift, new_addr >> ctx.pmd_shift
    mask = pmd.get(src_slot, _PMD_NONE_ENTRY)[1]
    lo, dlo, n = (old_addr >> ps) & (ptrs - 1), (new_addr >> ps) & (ptrs - 1), extent >> ps
    low = (1 << n) - 1
    bits = (mask >> lo) & low
    present = bits.bit_count()
    kept = mask & ~(low << lo)  # (``low << lo`` is ``range_mask(lo, lo + n)``)
    if src_slot == dst_slot:
        pmd[src_slot] = (PMD_TABLE, kept | (bits << dlo))
    else:
        pmd[src_slot] = (PMD_TABLE, kept)
        pmd[dst_slot] = (PMD_TABLE, pmd[dst_slot][1] | (bits << dlo))
    batching = gates.batching
    # the large-folio window is read only where the move batches (else every PTE is one)
    window = (batching.window_in_table(src_slot << (ctx.pmd_shift - ps), ptrs)
              if batching.batches else (0, 0))
    # (without batching mremap_folio_pte_batch answers one batch per present PTE, its first
    # branch: ``present``, asked only where the move batches)
    batches = mremap_folio_pte_batch(batching, mask, lo, n, window) if batching.batches \
        else present
    flush = ctx.flushes[extent] if move_ptes_flushes(present) else None
    ptl = move_ptes_ptl_count(src_slot, dst_slot)
    if counts:  # (the allocations made for this extent: the alloc_* columns; by position)
        got = counts.get
        ctx.log.add_row(ctx.phase, S.K_PTE_MOVE, old_addr, new_addr, extent, present, n, batches,
                        got("alloc_p4d", 0), got("alloc_pud", 0), got("alloc_pmd", 0),
                        got("alloc_pte", 0), 0, flush, gates.huge_locks, ptl, 0)
    else:  # (by position: binds faster than keywords)
        ctx.log.add_row(ctx.phase, S.K_PTE_MOVE, old_addr, new_addr, extent, present, n, batches,
                        0, 0, 0, 0, 0, flush, gates.huge_locks, ptl, 0)
