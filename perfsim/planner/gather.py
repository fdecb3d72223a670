"""The ``mmu_gather`` of an unmap (mm/mmu_gather.c, include/asm-generic/tlb.h): the range
and levels the zap cleared, the page-table pages freed, and the TLB flushes they cost.

Kernel source read: mm/mmu_gather.c at commit 06d07429 (a 6.x tree, with
``delayed_rmap``): ``tlb_remove_table`` adds a freed table to the current
``mmu_table_batch`` page and, when it holds ``MAX_TABLE_BATCH`` tables, calls
``tlb_table_flush``, which first invalidates the TLB for the gathered range
(``tlb_table_invalidate``); ``tlb_finish_mmu`` flushes what is left. perfsim applies this
where tables go through that batch (see :func:`tables_per_forced_flush` for x86 bare metal
before 6.14, where they do not); the batch size and flush count were checked on this
machine's 6.18 kernel (see :func:`max_table_batch`) and under QEMU on 6.1–7.3.

The page batches (``tlb_next_batch``, ``__tlb_remove_page_size``,
``__tlb_remove_folio_pages_size``, ``tlb_flush_rmaps``) and the zap's forced flush
(``tlb_flush_mmu_tlbonly``, ``__tlb_reset_range``, ``tlb_flush_mmu``) were read in Debian's
6.1.176, 6.12.117 and 7.3.4 (mm/mmu_gather.c, include/asm-generic/tlb.h).
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from perfsim.planner import steps as S
from perfsim.planner.bitmaps import insert_sorted
from perfsim.planner.pgtable_move import split_huge_pmd_row
from perfsim.planner.tlb import _SPAN_TABLES, flush_range, flush_span
from perfsim.profiles import Target

K_ZAP, K_FREE_TABLES = S.K_ZAP, S.K_FREE_TABLES

PTE_TABLE, PMD_TABLE_PAGE, PUD_TABLE_PAGE = 1, 2, 3
"""Levels of a freed page-table page: a PTE table (freed with ``pte_free_tlb``, which marks
``cleared_pmds``), a PMD table (``pmd_free_tlb``, ``cleared_puds``), a PUD table
(``pud_free_tlb``, ``cleared_p4ds``)."""


def max_table_batch(target: Target) -> int:
    """``MAX_TABLE_BATCH``: page-table pages one ``mmu_table_batch`` page holds (a page of
    pointers after a 24-byte header). When a batch fills, the gathered range is flushed
    before the tables are handed to RCU: 509 on 4 KiB pages. Seen on this machine's
    6.18 kernel: E4 at 1 GiB frees 515 tables with 2 flushes, at 2 GiB 1028 with 3
    (docs/host-measurements.md)."""
    return (target.arch.page_size - 24) // 8


def tables_per_forced_flush(target: Target) -> int | None:
    """How many freed page-table pages force a flush before ``tlb_finish_mmu``, or None.

    Where tables go through ``tlb_remove_table`` (every KVM guest with paravirtual flush,
    every arch here, and x86 bare metal from 6.14), a full ``mmu_table_batch`` forces one:
    :func:`max_table_batch`. On x86 bare metal up to 6.13, ``native_tlb_remove_table``
    hands a table to ``tlb_remove_page`` instead: it joins the gather's page batches, which
    force a flush only when ``tlb_next_batch`` cannot add another batch
    (:func:`pages_until_forced_flush`: about 9,700 entries counting the pages the zap
    gathered), so for the unmaps seen the only flush is ``tlb_finish_mmu``'s. Seen under
    QEMU TCG: E4 at 1 GiB frees 515 tables with 1 flush on 6.1 and 6.12, 2 on 6.16+
    (tests/data/groundtruth)."""
    if not target.kernel.tables_freed_through_batch:
        return None
    return max_table_batch(target)


MMU_GATHER_BUNDLE = 8
"""Entries of the gather's on-stack page batch (``tlb->__pages``), 6.1 to 7.3."""


def max_gather_batch(target: Target) -> int:
    """``MAX_GATHER_BATCH``: entries of one allocated page batch (a page of pointers after
    the 16-byte ``mmu_gather_batch`` header): 510 on 4 KiB pages (6.1, 6.12, 7.3)."""
    return (target.arch.page_size - 16) // 8


def max_gather_batch_count(target: Target) -> int:
    """``MAX_GATHER_BATCH_COUNT`` (``10000 / MAX_GATHER_BATCH``): page batches one gather
    may add to its on-stack one before it must flush and free (19 on 4 KiB pages)."""
    return 10000 // max_gather_batch(target)


def gather_batch_pages(target: Target) -> tuple[int, int]:
    """``(on-stack batch, each added batch)``: single-page entries a batch takes before the
    gather moves to the next. 6.1's ``__tlb_remove_page_size`` moves on when a batch is
    full (8, 510); from 6.9 ("mm/mmu_gather: add __tlb_remove_folio_pages()", read in
    6.12.117 and 7.3.4) ``__tlb_remove_folio_pages_size`` keeps room for a page + count pair
    and moves on at ``max - 1`` (7, 509)."""
    spare = 1 if target.kernel.version >= (6, 9) else 0
    return MMU_GATHER_BUNDLE - spare, max_gather_batch(target) - spare


def tlb_next_batch_refuses(target: Target, batch: int, delayed_rmap: bool) -> bool:
    """``tlb_next_batch`` when batch ``batch`` (0: the on-stack one) is full: no next batch
    once ``MAX_GATHER_BATCH_COUNT`` were added, nor, from 6.2 ("mm: delay
    page_remove_rmap() until after the TLB has been flushed"; read in 6.12.117 and 7.3.4,
    absent in 6.1.176), while delayed rmaps are pending and the full batch is not the
    on-stack one. The caller then flushes and frees what it gathered."""
    if batch >= max_gather_batch_count(target):
        return True
    return delayed_rmap and batch > 0 and target.kernel.version >= (6, 2)


def pages_until_forced_flush(target: Target, batched: int, delayed_rmap: bool) -> int:
    """How many more single-page entries the gather takes, the last one included, before
    ``__tlb_remove_page`` reports it full (``zap_pte_range`` then sets ``force_flush`` and
    breaks out after that PTE), given ``batched`` entries gathered since the last free.

    >>> from perfsim.profiles import resolve_target
    >>> pages_until_forced_flush(resolve_target(kernel="6.1"), 0, False)   # 8 + 19 * 510
    9698
    >>> pages_until_forced_flush(resolve_target(kernel="6.12"), 0, True)   # 7 + 509
    516
    """
    local, per = gather_batch_pages(target)
    batch = 0 if batched < local else (batched - local) // per + 1
    while not tlb_next_batch_refuses(target, batch, delayed_rmap):
        batch += 1
    return local + batch * per - batched


def _pte_table_key(a, addrs):
    return (addrs >> a.pmd_shift) * 4


def _pmd_table_key(a, addrs):
    return (((addrs >> a.pud_shift) + 1) << (a.pud_shift - a.pmd_shift)) * 4 - 2


def _pud_table_key(a, addrs):
    return (((addrs >> a.p4d_shift) + 1) << (a.p4d_shift - a.pmd_shift)) * 4 - 1


_KEY_OF_LEVEL = {PTE_TABLE: _pte_table_key, PMD_TABLE_PAGE: _pmd_table_key,
                 PUD_TABLE_PAGE: _pud_table_key}


def table_order_key(target: Target, addrs, levels):
    """Sort key putting freed tables in the order ``free_pgd_range`` frees them: per PUD
    entry its PTE tables then its PMD table; the PUD table after all its PUD entries.
    ``addrs`` and ``levels`` are ints (one table) or arrays."""
    a = target.arch
    if isinstance(levels, int):
        return _KEY_OF_LEVEL[levels](a, addrs)
    lv = np.asarray(levels)
    if len(lv) and lv.min() == lv.max():  # one level: one formula, no masks
        return _KEY_OF_LEVEL[int(lv[0])](a, addrs)
    return ((lv == PTE_TABLE) * _pte_table_key(a, addrs)
            + (lv == PMD_TABLE_PAGE) * _pmd_table_key(a, addrs)
            + (lv == PUD_TABLE_PAGE) * _pud_table_key(a, addrs))


def merge_free_order(target: Target, addrs: list, levels: list):
    """Merge per-level lists of freed tables (each sorted by address) into kernel free
    order. The largest list (the PTE tables) is taken as is and the few others are inserted
    by binary search, so a million freed tables cost one pass, not a sort."""
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
    out_a, out_l = insert_sorted((out_a, out_l), pos, (a_[order], l_[order]))
    return out_a, out_l


class FreedRun:
    """Freed tables in free order, in closed form: ``n`` PTE tables at ``first``,
    ``first + step``, ... (consecutive PMD slots) with a few other tables inserted,
    ``inserted`` holding ``(position, address, level)`` in order, ``position`` as for
    :func:`~perfsim.planner.bitmaps.insert_sorted` (the number of run tables before it).
    :meth:`arrays` gives the ``(addrs, levels)`` arrays; :meth:`flush_groups` what
    :func:`table_flush_groups_arrays` computes from them, without them."""

    __slots__ = ("first", "n", "step", "inserted", "_arrays")

    def __init__(self, first: int, n: int, step: int,
                 inserted: list[tuple[int, int, int]]) -> None:
        self.first, self.n, self.step, self.inserted = first, n, step, inserted
        self._arrays = None

    def __len__(self) -> int:
        return self.n + len(self.inserted)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(addrs int64, levels int8)`` in free order (made once)."""
        if self._arrays is None:
            addrs = np.arange(self.n, dtype=np.int64) * self.step + self.first
            levels = np.empty(self.n, np.int8)
            levels.fill(PTE_TABLE)
            if self.inserted:
                ins = self.inserted
                addrs, levels = insert_sorted(
                    (addrs, levels), [p for p, _, _ in ins],
                    (np.array([ad for _, ad, _ in ins], np.int64),
                     np.array([lv for _, _, lv in ins], np.int8)))
            self._arrays = (addrs, levels)
        return self._arrays

    def flush_groups(self, cuts: list[int], page_size: int) -> list[tuple[int, int, int, int]]:
        """:func:`table_flush_groups` of the tables in free order: per run starting at each
        of ``cuts`` (increasing), ``(lowest address, highest + page_size, lowest level,
        tables)``. A run's PTE tables are consecutive, so their lowest and highest address
        are their first and last."""
        ins = self.inserted
        first, step = self.first, self.step
        at = []  # final positions (increasing)
        for p, _, _ in ins:
            at.append(p + len(at))
        m = len(at)
        out = []
        j = 0  # inserted tables before the current run
        for c0, c1 in zip(cuts, [*cuts[1:], self.n + m]):
            j = bisect_left(at, c0, j)  # (the first inserted table at or after c0)
            j1 = bisect_left(at, c1, j)
            r0, r1 = c0 - j, c1 - j1  # the run's tables in this flush: [r0, r1)
            if r1 > r0:
                lo, hi, lvl = first + r0 * step, first + (r1 - 1) * step, PTE_TABLE
            else:
                _, lo, lvl = ins[j]
                hi = lo
            for _, ad, lv in ins[j:j1]:
                if ad < lo:
                    lo = ad
                elif ad > hi:
                    hi = ad
                if lv < lvl:
                    lvl = lv
            out.append((lo, hi + page_size, lvl, c1 - c0))
            j = j1
        return out


class MmuGather:
    """An ``mmu_gather``: the zapped range and its cleared levels, plus the page-table
    pages freed, in the order they were freed (:func:`tlb_finish_mmu` turns them into flushes)."""

    __slots__ = ("start", "end", "cleared_ptes", "cleared_pmds", "cleared_puds", "freed_tables",
                 "tables", "_table_arrays", "table_run", "batched", "delayed_rmap", "zap_mark",
                 "zap_ptes", "zap_saved", "zap_huge_pmds", "forced", "events")

    def __init__(self, zap_start: int = 0) -> None:
        self.start: int | None = None
        self.end = 0
        self.cleared_ptes = False
        self.cleared_pmds = False
        self.cleared_puds = False
        self.freed_tables = False
        self.tables: list[tuple[int, int]] = []
        self._table_arrays = None  # (addrs, levels) numpy arrays in free order, if set
        self.table_run: FreedRun | None = None  # or the same in closed form
        self.batched = 0  # page-batch entries gathered since the last free
        self.delayed_rmap = False
        self.zap_mark = zap_start  # where the zap stood at the last forced flush
        self.zap_ptes = 0  # PTEs zapped since then
        # of those, the PTEs that joined a batch after its first (zap_present_ptes batches
        # a large folio's PTEs, R24a): the zap's batches are zap_ptes - zap_saved
        self.zap_saved = 0
        self.zap_huge_pmds = 0  # huge PMDs zapped whole since then (zap_huge_pmd)
        # forced flushes during the zap: (zap from, zap to, ptes, huge PMDs, range start,
        # end, shift, batches)
        self.forced: list[tuple[int, int, int, int, int, int, int, int]] = []
        # the zap's own flushes and forced flushes, in order: ("split", PMD base) for a
        # huge PMD split, ("forced", index into forced)
        self.events: list[tuple[str, int]] = []

    def split_huge_pmd(self, base: int) -> None:
        """``__split_huge_pmd`` of a huge PMD at ``base`` the zap covers only partly: its
        own flush (``pmdp_invalidate`` / ``pmdp_huge_clear_flush``), outside the gather."""
        self.events.append(("split", base))

    def adjust(self, start: int, end: int) -> None:
        self.start = start if self.start is None else min(self.start, start)
        self.end = max(self.end, end)

    def gather_ptes(self, start: int, end: int, entries: int, ptes: int, *, level: str,
                    delayed_rmap: bool, saved: int = 0) -> None:
        """Entries cleared over ``[start, end)`` (``tlb_remove_tlb_entry`` /
        ``tlb_remove_pmd_tlb_entry``) and their pages added to the page batches
        (``__tlb_remove_page``), with their rmap removal delayed when ``delayed_rmap``.
        ``entries``: the page-batch slots they take; ``saved``: how many of the ``ptes``
        were zapped inside a batch after its first PTE (R24a; 0 where nothing batches)."""
        self.adjust(start, end)
        if level == "pte":
            self.cleared_ptes = True
        else:
            self.cleared_pmds = True
        self.batched += entries
        self.zap_ptes += ptes
        self.zap_saved += saved
        self.delayed_rmap = self.delayed_rmap or delayed_rmap

    def gather_huge_pmd(self, base: int, pmd_size: int) -> None:
        """``zap_huge_pmd`` of a whole huge PMD at ``base``: ``tlb_remove_pmd_tlb_entry``
        widens the range by the PMD and marks ``cleared_pmds`` (a PMD-stride flush unless
        PTEs were cleared too), and ``tlb_remove_page_size`` adds the folio to the page
        batches as one entry (R24)."""
        self.adjust(base, base + pmd_size)
        self.cleared_pmds = True
        self.batched += 1
        self.zap_huge_pmds += 1

    def force_flush(self, target: Target, zap_to: int) -> None:
        """``zap_pte_range``'s forced flush: ``tlb_flush_mmu_tlbonly`` of the range gathered
        so far, then ``__tlb_reset_range``, ``tlb_flush_rmaps`` and the freeing of the
        gathered pages (``tlb_flush_mmu``). The zap stood at ``zap_to``."""
        shift = self.tlb_get_unmap_shift(target)
        if self.start is not None and shift is not None:
            self.events.append(("forced", len(self.forced)))
            self.forced.append((self.zap_mark, zap_to, self.zap_ptes, self.zap_huge_pmds,
                                self.start, self.end, shift, self.zap_ptes - self.zap_saved))
        self.zap_mark, self.zap_ptes, self.zap_huge_pmds = zap_to, 0, 0
        self.zap_saved = 0
        self.start, self.end = None, 0
        self.cleared_ptes = self.cleared_pmds = self.cleared_puds = False
        self.batched = 0
        self.delayed_rmap = False

    @property
    def table_arrays(self):
        """``(addrs, levels)`` numpy arrays of the freed tables in free order, when an
        array driver set them (or :attr:`table_run`, as arrays); else None."""
        if self._table_arrays is None and self.table_run is not None:
            return self.table_run.arrays()
        return self._table_arrays

    @table_arrays.setter
    def table_arrays(self, value) -> None:
        self._table_arrays = value

    def free_table(self, addr: int, level: int) -> None:
        self.tables.append((addr, level))
        self.freed_tables = True

    def freed(self, target: Target):
        """``(addrs, levels)`` of every freed table, in kernel free order: Python lists for
        the tables :meth:`free_table` recorded (sorted by :func:`table_order_key`, stable),
        else the arrays the array driver set (already in that order)."""
        if self.table_arrays is not None:
            return self.table_arrays
        order = self.tables
        if len(order) > 1:
            a = target.arch
            order = sorted(order, key=lambda t: _KEY_OF_LEVEL[t[1]](a, t[0]))
        return [t[0] for t in order], [t[1] for t in order]

    def tlb_get_unmap_shift(self, target: Target) -> int | None:
        """``tlb_get_unmap_shift`` for what the zap cleared, or None if it cleared nothing."""
        a = target.arch
        if self.cleared_ptes:
            return a.page_shift
        if self.cleared_pmds:
            return a.pmd_shift
        if self.cleared_puds:
            return a.pud_shift
        return None


#: :func:`_finish_constants` memo: id(target) -> (target, its constants). The target is
#: kept, so its id names no other while it is here.
_FINISH: dict[int, tuple] = {}


def _finish_constants(target: Target) -> tuple:
    """``(tables_per_forced_flush, {level: flush stride shift}, page_size, pmd_size)`` of
    ``target`` (immutable profiles; several are properties), once per target."""
    got = _FINISH.get(id(target))
    if got is None or got[0] is not target:
        if len(_FINISH) >= 64:
            _FINISH.clear()
        a = target.arch
        got = _FINISH[id(target)] = (target, (
            tables_per_forced_flush(target),
            {PTE_TABLE: a.pmd_shift, PMD_TABLE_PAGE: a.pud_shift, PUD_TABLE_PAGE: a.p4d_shift},
            a.page_size, a.pmd_size))
    return got[1]


def tlb_finish_mmu(target: Target, tlb: MmuGather, log: S.StepLog, phase: int, start: int, end: int,
           zapped: int, freed: int, *, cpus: int, lazy_cpus: int) -> None:
    """Record the zap and the flushes of the gather: the zap's huge PMD splits (a
    ``split_huge_pmd`` row each, with its flush) and forced flushes (one ``zap`` row each,
    :meth:`MmuGather.force_flush`), in the order they happened, then a ``zap`` row for what
    was zapped after the last forced flush. ``zapped``: the PTEs the zap cleared; a ``zap``
    row's ``ptes`` are its PTEs, its ``slots`` the huge PMDs ``zap_huge_pmd`` cleared whole
    (:meth:`MmuGather.gather_huge_pmd`; R24), each one entry, not its PMD's PTEs, its
    ``batches`` the steps its PTEs were zapped in (``zap_present_ptes``: one per PTE, or
    one per run of a large folio's PTEs where the kernel batches them, R24a).
    Then the table flushes: one each time a table batch fills
    (:func:`tables_per_forced_flush`), and one in ``tlb_finish_mmu`` for what is left. Each
    flush covers the range gathered since the previous one, with the stride of the lowest
    level cleared in it (``tlb_get_unmap_shift``).

    Tables :meth:`MmuGather.free_table` recorded that go out in one flush (no more than
    :func:`table_flush_cuts` puts in its first) are not put in free order: that flush's
    range, lowest level and count are the same in any order."""
    got = _FINISH.get(id(target))
    cap, shift_of, page_size, pmd_size = got[1] if got is not None and got[0] is target \
        else _finish_constants(target)
    forced_ptes = forced_huge = 0
    if tlb.events:
        for what, arg in tlb.events:
            if what == "split":
                row = split_huge_pmd_row(target, cpus=cpus, lazy_cpus=lazy_cpus)
                log.add_row(phase, row.kind, arg, 0, pmd_size, row.ptes, 0, 0, 0, 0, 0, 0, 0,
                            row.flush, (), row.ptl, 0)
                continue
            z0, z1, ptes, huge, s_, e_, shift, batches = tlb.forced[arg]
            flush = flush_range(target, s_, e_, stride_shift=shift, cpus=cpus,
                                lazy_cpus=lazy_cpus, freed_tables=False)
            log.add_row(phase, K_ZAP, z0, 0, z1 - z0, ptes, huge, batches, 0, 0, 0, 0, 0,
                        flush, (), 0, 0)
            forced_ptes += ptes
            forced_huge += huge
    huge_left = tlb.zap_huge_pmds
    if zapped or huge_left or forced_huge:
        if zapped > forced_ptes or huge_left or not tlb.forced:
            mark = tlb.zap_mark if tlb.forced else start
            left = zapped - forced_ptes
            log.add_row(phase, K_ZAP, mark, 0, end - mark, left, huge_left,
                        left - tlb.zap_saved, 0, 0, 0, 0, 0, None, (), 0, 0)
    # (a gather that cleared nothing has no unmap shift)
    zap_shift = tlb.tlb_get_unmap_shift(target) \
        if tlb.cleared_ptes or tlb.cleared_pmds or tlb.cleared_puds else None
    zap_start = tlb.start if zap_shift is not None else None
    run = tlb.table_run if tlb._table_arrays is None else None
    recorded = run is None and tlb._table_arrays is None  # the tables free_table recorded
    if recorded:
        tables = tlb.tables
        n = len(tables)
        if n and n <= (cap if cap is not None
                       else pages_until_forced_flush(target, tlb.batched, False)):
            # one flush (table_flush_cuts gives [0]): its range, lowest level and count
            # are the same in any order, so the tables are not put in free order
            addrs, levels = zip(*tables)
            groups = table_flush_groups(addrs, levels, [0], page_size)
        elif n:
            addrs, levels = tlb.freed(target)
            groups = table_flush_groups(addrs, levels, table_flush_cuts(target, tlb.batched, n),
                                        page_size)
    elif run is not None:
        n = run.n + len(run.inserted)  # (len(run))
        if n:
            groups = run.flush_groups(table_flush_cuts(target, tlb.batched, n, cap), page_size)
    else:
        addrs, levels = tlb.freed(target)
        n = len(addrs)
        if n:
            cuts = table_flush_cuts(target, tlb.batched, n)
            if isinstance(addrs, list):
                groups = table_flush_groups(addrs, levels, cuts, page_size)
            else:
                groups = table_flush_groups_arrays(addrs, levels, cuts, page_size)
    # (a flush depends on the span, not where it is: flush_span, memoised per target)
    if n == 0:
        if zap_start is not None:
            flush = flush_span(target, tlb.end - zap_start, stride_shift=zap_shift, cpus=cpus,
                               lazy_cpus=lazy_cpus, freed_tables=False)
            log.add_row(phase, K_FREE_TABLES, start, 0, end - start, 0, 0, 0, 0, 0, 0, 0, 0,
                        flush, (), 0, 0)
        return
    for i, (s_, e_, lv, k) in enumerate(groups):
        shift = shift_of[lv]
        if i == 0 and zap_start is not None:
            s_, e_ = min(s_, zap_start), max(e_, tlb.end)
            shift = min(shift, zap_shift)
        span = e_ - s_
        got = _SPAN_TABLES.get((id(target), shift, cpus, lazy_cpus, True))
        # (flush_span's own memo read inline: its per-target table of flushes by span)
        flush = got[1][span] if got is not None and got[0] is target and type(span) is int \
            else flush_span(target, span, stride_shift=shift, cpus=cpus, lazy_cpus=lazy_cpus,
                            freed_tables=True)
        log.add_row(phase, K_FREE_TABLES, start, 0, end - start, 0, 0, 0, 0, 0, 0, 0, k, flush,
                    (), 0, 0)


def table_flush_cuts(target: Target, batched: int, n: int, cap=...) -> list[int]:
    """Where the ``n`` freed tables (in free order) are cut into flushes: the first table
    of each run that ends in a flush. With :func:`tables_per_forced_flush`, every full
    table batch; otherwise the tables join the page batches after the ``batched`` pages
    the zap left in them (:func:`pages_until_forced_flush`). ``cap``, when given, is the
    target's :func:`tables_per_forced_flush` (:func:`tlb_finish_mmu` has it)."""
    if cap is ...:
        cap = tables_per_forced_flush(target)
    if cap is not None:
        return list(range(0, n, cap))
    first = pages_until_forced_flush(target, batched, False)
    return [0, *range(first, n, pages_until_forced_flush(target, 0, False))]


def table_flush_groups(addrs: list[int], levels: list[int], cuts: list[int],
                       page_size: int) -> list[tuple[int, int, int, int]]:
    """Per run of freed tables starting at each of ``cuts``: ``(lowest address, highest
    address + page_size, lowest level, tables)``, on Python lists."""
    if len(cuts) == 1:  # (one run, from cuts[0] == 0: every table; no slices)
        return [(min(addrs), max(addrs) + page_size, min(levels), len(addrs))]
    ends = [*cuts[1:], len(addrs)]
    return [(min(addrs[c0:c1]), max(addrs[c0:c1]) + page_size, min(levels[c0:c1]), c1 - c0)
            for c0, c1 in zip(cuts, ends)]


def table_flush_groups_arrays(addrs: np.ndarray, levels: np.ndarray, cuts: list[int],
                              page_size: int) -> list[tuple[int, int, int, int]]:
    """:func:`table_flush_groups` on arrays (a million freed tables in a few numpy calls)."""
    at = np.asarray(cuts, np.int64)
    lo = np.minimum.reduceat(addrs, at)
    hi = np.maximum.reduceat(addrs, at) + page_size
    lvl = np.minimum.reduceat(levels, at)
    counts = np.diff(np.append(at, len(addrs)))
    return list(zip(lo.tolist(), hi.tolist(), lvl.tolist(), counts.tolist()))
