"""``move_page_tables()`` over whole columns of extents: the same rows and state as the
reference, with the same decision functions.

:mod:`perfsim.planner.reference` walks the move extent by extent. When the source and the
destination touch disjoint PMD slots, no step can see what another step wrote at the PTE
table level, and the few cross-step effects that remain (the first step into a source slot
splits its THP; the first step into a destination slot allocates its PTE table; the first
step into a destination PUD slot allocates its PMD table; the first into a top-level slot
its PUD table) are "first occurrence in a sorted array" questions. So the walk is computed
a column at a time, and every kernel decision is the function the reference calls:

* once per move, :class:`~perfsim.planner.pgtable_move.MoveGates` (the uffd gate,
  ``should_take_rmap_locks``, the PTE batching gate);
* once per column of extents, the entry tests ``move_normal_pud``/``move_normal_pmd``/
  ``move_huge_pmd``, ``split_huge_pmd``, the lock counts, ``move_ptes_flushes``;
* once per distinct length, the TLB policy (:func:`perfsim.planner.tlb.flush_lookup`);
* once per distinct (bitmap, offset, length), ``mremap_folio_pte_batch``.

What is left here is bookkeeping: extents (two arithmetic progressions merged), PUD-level
segments, row positions, present-PTE counts (cached popcounts; bitmap words only for
partial extents of partial rows), and the new page tables spliced from arrays
(:mod:`perfsim.planner.bitmaps`).

:func:`try_move_page_tables` returns None (the dispatcher then runs the reference) when the
fast path does not apply: overlapping PMD slots, huge PUD leaves, a THP leaf at the
destination, the exec stack, or an injected allocation failure that would hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perfsim.mm.pagetable import (
    PMD_LEAF,
    PMD_NONE,
    PMD_TABLE,
    PUD_LEAF,
    PUD_NONE,
    PUD_TABLE,
    PageTables,
)
from perfsim.planner import steps as S
from perfsim.planner.batch import mremap_folio_pte_batch
from perfsim.planner.bitmaps import (
    Declined,
    MaskTable,
    dense,
    firsts,
    interleave,
    range_words,
    shift_left,
    shift_right,
)
from perfsim.planner.fast_state import apply_move, apply_regular_move
from perfsim.planner.pgtable_move import (
    HPAGE_PMD,
    NORMAL_PMD,
    NORMAL_PUD,
    MoveGates,
    alloc_new_pud,
    failed_entry_row,
    move_pgt_entry,
    move_ptes_flushes,
    move_ptes_ptl_count,
    pgt_entry_row,
    pmd_alloc,
    pte_alloc,
    split_huge_pmd,
    split_huge_pmd_row,
)
from perfsim.planner.tlb import Flush, flush_lookup
from perfsim.profiles import Target

# range_words, shift_left and shift_right are re-exported for the tests of the array pieces
__all__ = ["Declined", "flush_table", "plan_move", "range_words", "shift_left", "shift_right",
           "try_move_page_tables"]

_I64, _I32, _I8 = np.int64, np.int32, np.int8


def flush_table(target: Target, npages: np.ndarray, *, cpus: int, lazy_cpus: int,
                stride_shift: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``flush_range`` over ``npages`` stride pages for many requests at once: ``(full,
    pages, ipis)`` arrays of the shape of ``npages``, read from
    :func:`perfsim.planner.tlb.flush_lookup`."""
    shift = target.arch.page_shift if stride_shift is None else stride_shift
    n = np.asarray(npages, dtype=_I64)
    top = max(target.arch.ptrs_per_pte, int(n.max()) if n.size else 0)
    table = flush_lookup(target, shift, cpus, lazy_cpus, top)
    return table.full[n], table.pages[n], table.ipis[n]


def _flush_cols(f: Flush | None) -> tuple[int, int, int, int]:
    if f is None:
        return 0, 0, 0, 0
    return 1, int(f.full), f.pages, f.ipis


class _Rows:
    """Row groups placed at known positions of a block of ``n`` rows; columns are built once."""

    def __init__(self, n: int):
        self.n = n
        self.groups: list[tuple[object, dict]] = []

    def add(self, pos, **cols) -> None:
        """``pos``: an index array, or None for "all rows in order"."""
        if pos is not None and not len(pos):
            return
        self.groups.append((pos, cols))

    def column(self, name: str, dtype) -> np.ndarray:
        vals = [(pos, cols.get(name, 0)) for pos, cols in self.groups]
        scalars = {v for _, v in vals if np.isscalar(v)}
        if all(np.isscalar(v) for _, v in vals) and len(scalars) <= 1:
            v = scalars.pop() if scalars else 0
            return np.broadcast_to(np.asarray(v, dtype=dtype), (self.n,))
        if len(vals) == 1 and vals[0][0] is None:
            return np.ascontiguousarray(vals[0][1], dtype=dtype)
        out = np.zeros(self.n, dtype)
        for pos, v in vals:
            if np.isscalar(v) and v == 0:
                continue
            if pos is None:
                out[:] = v
            else:
                out[pos] = v
        return out

    def steps(self, lock_sets: tuple) -> S.Steps:
        """The block as a :class:`~perfsim.planner.steps.Steps` table, keeping only the lock
        tuples its rows use (as ``StepLog.freeze`` does)."""
        cols = {n: self.column(n, S._DTYPES.get(n, _I32)) for n in S.ADDR_COLUMNS + S.INT_COLUMNS}
        lock_col = self.column("lock", _I32)
        constant = lock_col.strides == (0,)
        used = np.asarray([lock_col[0]]) if constant else np.unique(lock_col)
        if len(used) < len(lock_sets):
            remap = np.full(len(lock_sets), -1, _I32)
            remap[used] = np.arange(len(used), dtype=_I32)
            lock_col = (np.broadcast_to(remap[lock_col[:1]], lock_col.shape) if constant
                        else remap[lock_col])
            lock_sets = tuple(lock_sets[i] for i in used.tolist())
        return S.Steps(cols, lock_sets, lock_col)


# ---------------------------------------------------------------------------- state objects
@dataclass(frozen=True)
class MoveCall:
    """The caller's side of one move: where its rows go and who else runs the mm."""

    phase: int
    cpus: int
    lazy_cpus: int
    fail_alloc_at: int | None


@dataclass
class Geometry:
    """The move's addresses, the slots both ranges touch, and its extents.

    ``s_lo..s_hi`` / ``d_lo..d_hi``: source / destination PMD slots; ``src_pud_lo..`` /
    ``dst_pud_lo..``: PUD slots. Extents are ``[bounds[i], bounds[i+1])``; PUD-level
    *segments* (the PUD stage's extents) are ``[seg_start, seg_end)``, each covering
    ``seg_count`` extents from ``seg_first``.
    """

    old_addr: int
    new_addr: int
    old_end: int
    delta: int
    s_lo: int
    s_hi: int
    d_lo: int
    d_hi: int
    src_pud_lo: int
    src_pud_hi: int
    dst_pud_lo: int
    dst_pud_hi: int
    bounds: np.ndarray
    seg_start: np.ndarray
    seg_end: np.ndarray
    seg_first: np.ndarray
    seg_count: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        return self.bounds[:-1]

    @property
    def ends(self) -> np.ndarray:
        return self.bounds[1:]

    @property
    def n_ext(self) -> int:
        return len(self.bounds) - 1

    @property
    def seg_len(self) -> np.ndarray:
        return self.seg_end - self.seg_start


@dataclass
class Entries:
    """The page-table entries the move reads, as dense arrays over its slots."""

    src_pud_kind: np.ndarray   # per source PUD slot (none where no PUD table maps it)
    dst_pud_kind: np.ndarray   # per destination PUD slot
    src_kind: np.ndarray       # per source PMD slot
    src_row: np.ndarray        # bitmap row id per source PMD slot
    dst_any: bool              # any PMD entry at the destination
    dst_kind: np.ndarray | None
    dst_row: np.ndarray | None
    has_leaf: bool             # a THP in the source
    anon: bool


@dataclass
class UpperAllocs:
    """``alloc_new_pud`` per segment: P4D and PUD pages, and top-level slots that gain one."""

    seg_p4d: np.ndarray
    seg_pud: np.ndarray
    new_tops: list[int]


@dataclass
class PudStage:
    """The PUD stage per segment, and what the PMD stage then sees per extent."""

    table_seg: np.ndarray      # the source PUD entry is a table
    pud_ok: np.ndarray         # move_normal_pud moved it
    pud_fail: np.ndarray       # move_normal_pud was tried and refused
    stage_seg: np.ndarray      # walked at PMD level
    stage: np.ndarray | None   # per extent: walked at PMD level (None: all are)
    ks: np.ndarray             # source PMD kind seen by each extent's PMD stage
    present: np.ndarray        # the PMD stage finds a source entry
    alloc_pmd_at: np.ndarray   # extents whose alloc_new_pmd allocates a PMD table
    alloc_pmd_q: np.ndarray    # ... in these destination PUD slots

    @property
    def all_stage(self) -> bool:
        return self.stage is None


@dataclass
class PmdStage:
    """The PMD stage and ``move_ptes`` per extent."""

    src_slot: np.ndarray
    dst_slot: np.ndarray
    pages: np.ndarray          # extent length in pages
    thp_move: np.ndarray | None
    split: np.ndarray | None
    pmd_ok: np.ndarray | None
    pmd_fail: np.ndarray | None
    pte: np.ndarray            # the extent ends in move_ptes
    main_kind: np.ndarray
    pte_idx: np.ndarray
    eff_row: np.ndarray        # per source slot: the bitmap move_ptes reads (after a split)
    present_ptes: np.ndarray
    batches: np.ndarray
    alloc_pte_sub: np.ndarray  # per move_ptes extent: allocates its destination table

    @property
    def all_pte(self) -> bool:
        return len(self.pte_idx) == len(self.pte)


@dataclass
class Layout:
    """Where each extent's rows go: ``[pud_fail][split | pmd_fail] main`` for PMD-stage
    extents, one row (skip_pud / move_normal_pud) at the first extent of other segments."""

    n_rows: int
    simple: bool
    main_pos: np.ndarray | None
    pre1: np.ndarray | None
    pre1_pos: np.ndarray
    pre2: np.ndarray | None
    pre2_idx: np.ndarray
    pre2_pos: np.ndarray
    seg_row_pos: np.ndarray


# ---------------------------------------------------------------------------- entry point
def try_move_page_tables(target: Target, pt: PageTables, pmc, log: S.StepLog, *,
                         phase: int = S.MOVE, cpus: int = 1, lazy_cpus: int = 0,
                         fail_alloc_at: int | None = None, force: bool = False):
    """The vectorised ``move_page_tables``: ``(new page tables, progress)`` or None.

    Appends exactly the rows :func:`perfsim.planner.reference.move_page_tables` would.
    ``force`` (``PlanOptions("fast")``) turns a decline into an AssertionError.
    """
    try:
        block, new_pt = plan_move(target, pt, pmc, phase=phase, cpus=cpus,
                                  lazy_cpus=lazy_cpus, fail_alloc_at=fail_alloc_at)
    except Declined as why:
        if force:
            raise AssertionError(f"fast planner declined: {why}") from None
        return None
    log.add(phase, S.K_NOTIFIER, pmc.old_addr, pmc.new_addr, pmc.old_end - pmc.old_addr, notifier=1)
    log.append_block(block)
    return new_pt, pmc.progress(pmc.old_end)


def plan_move(target: Target, pt: PageTables, pmc, *, phase: int = S.MOVE, cpus: int = 1,
              lazy_cpus: int = 0, fail_alloc_at: int | None = None) -> tuple[S.Steps, PageTables]:
    """Plan one move; raise :class:`Declined` when the fast path does not apply."""
    if pmc.for_stack:
        raise Declined("exec stack move (overlapping ranges)")
    if pmc.old.is_hugetlb:
        raise Declined("hugetlb")
    call = MoveCall(phase, cpus, lazy_cpus, fail_alloc_at)
    gates = MoveGates.of(target, pmc.old, pmc.new, pmc.need_rmap_locks)
    geo = _geometry(target, pmc)
    ent = _read_entries(target, pt, geo, pmc.old.backing == "anon")
    if _is_regular(target, geo, ent):
        return _plan_regular(target, pt, geo, ent, gates, call)
    return _plan_general(target, pt, geo, ent, gates, call)


def _geometry(t: Target, pmc) -> Geometry:
    a = t.arch
    ms, us, pmd_size, pud_size = a.pmd_shift, a.pud_shift, a.pmd_size, a.pud_size
    o0, n0, oe = pmc.old_addr, pmc.new_addr, pmc.old_end
    length = oe - o0
    if length <= 0:
        raise Declined("empty move")
    delta = n0 - o0
    s_lo, s_hi = o0 >> ms, (oe - 1) >> ms
    d_lo, d_hi = n0 >> ms, (n0 + length - 1) >> ms
    if not (s_hi < d_lo or d_hi < s_lo):
        raise Declined("source and destination share PMD slots")
    # PMD-level extents: source PMD boundaries and shifted destination PMD boundaries.
    inner = interleave(o0 - o0 % pmd_size + pmd_size, (n0 - n0 % pmd_size + pmd_size) - delta,
                       oe, pmd_size)
    bounds = np.empty(len(inner) + 2, _I64)
    bounds[0], bounds[-1] = o0, oe
    bounds[1:-1] = inner
    # PUD-level segments
    ub = np.union1d(np.arange(o0 - o0 % pud_size + pud_size, oe, pud_size, dtype=_I64),
                    np.arange(n0 - n0 % pud_size + pud_size - delta, oe, pud_size, dtype=_I64))
    seg_start = np.concatenate([np.array([o0], _I64), ub])
    seg_end = np.concatenate([ub, np.array([oe], _I64)])
    seg_first = np.searchsorted(bounds[:-1], seg_start)
    seg_count = np.diff(np.concatenate([seg_first, [len(bounds) - 1]]))
    return Geometry(o0, n0, oe, delta, s_lo, s_hi, d_lo, d_hi, o0 >> us, (oe - 1) >> us,
                    n0 >> us, (n0 + length - 1) >> us, bounds, seg_start, seg_end, seg_first,
                    seg_count)


def _read_entries(t: Target, pt: PageTables, geo: Geometry, anon: bool) -> Entries:
    a = t.arch
    us = a.pud_shift
    p_lo, p_hi = geo.src_pud_lo, geo.src_pud_hi
    src_pud = dense(pt.pud_idx, pt.pud_kind, p_lo, p_hi, PUD_NONE, _I8).copy()
    dst_pud = dense(pt.pud_idx, pt.pud_kind, geo.dst_pud_lo, geo.dst_pud_hi, PUD_NONE, _I8)
    if not a.pud_folded:
        tops = np.arange(p_lo, p_hi + 1, dtype=_I64) >> (a.p4d_shift - us)
        uniq = np.unique(tops)
        has_top = np.fromiter((int(x) in pt.pud_tables for x in uniq), bool)
        if not has_top.all():
            src_pud[~has_top[np.searchsorted(uniq, tops)]] = PUD_NONE
    if (src_pud == PUD_LEAF).any() or (dst_pud == PUD_LEAF).any():
        raise Declined("huge PUD leaf in range")
    src_kind = dense(pt.pmd_idx, pt.pmd_kind, geo.s_lo, geo.s_hi, PMD_NONE, _I8)
    src_row = dense(pt.pmd_idx, pt.pmd_mask, geo.s_lo, geo.s_hi, 0, _I32)
    j0, j1 = np.searchsorted(pt.pmd_idx, [geo.d_lo, geo.d_hi + 1])
    dst_kind = dst_row = None
    if j1 > j0:
        dst_kind = dense(pt.pmd_idx, pt.pmd_kind, geo.d_lo, geo.d_hi, PMD_NONE, _I8)
        dst_row = dense(pt.pmd_idx, pt.pmd_mask, geo.d_lo, geo.d_hi, 0, _I32)
        if (dst_kind == PMD_LEAF).any():
            raise Declined("PMD leaf at the destination")
    return Entries(src_pud, dst_pud, src_kind, src_row, bool(j1 > j0), dst_kind, dst_row,
                   bool((src_kind == PMD_LEAF).any()), anon)


def _is_regular(t: Target, geo: Geometry, ent: Entries) -> bool:
    """The dominant shape of big moves: every source PUD and PMD entry is a table, nothing
    is mapped at the destination, and no extent can be a NORMAL_PUD/PMD attempt (the two
    ranges are not mutually PMD aligned). Every extent is then one ``move_ptes`` row."""
    pmd_size = t.arch.pmd_size
    o0, oe = geo.old_addr, geo.old_end
    no_full = (geo.delta % pmd_size != 0) or not t.have_move_pmd or (
        -(-o0 // pmd_size) * pmd_size + pmd_size > oe)
    return (no_full and not ent.dst_any and bool((ent.src_pud_kind == PUD_TABLE).all())
            and not (t.have_move_pud and (geo.seg_len == t.arch.pud_size).any())
            and bool((ent.src_kind == PMD_TABLE).all()))


# ---------------------------------------------------------------------------- shared pieces
def upper_allocs(t: Target, pt: PageTables, seg_dst_top: np.ndarray,
                 table_seg: np.ndarray) -> UpperAllocs:
    """``alloc_new_pud`` at the first step of each PUD-table segment: P4D/PUD pages per
    segment and the top-level slots that gain a PUD table (a handful of Python steps)."""
    a = t.arch
    n_seg = len(seg_dst_top)
    out = UpperAllocs(np.zeros(n_seg, _I32), np.zeros(n_seg, _I32), [])
    if a.pud_folded:
        return out
    tab = np.flatnonzero(table_seg)
    have = set(pt.pud_tables)
    for g in tab[firsts(seg_dst_top[tab])].tolist():
        top = int(seg_dst_top[g])
        p4d, pud = alloc_new_pud(a, have, top << a.p4d_shift)
        out.seg_p4d[g], out.seg_pud[g] = p4d, pud
        if pud:
            have.add(top)
            out.new_tops.append(top)
    return out


def batch_counts(masks: MaskTable, rows: np.ndarray, lo: np.ndarray, pages: np.ndarray,
                 first: np.ndarray, block: int) -> np.ndarray:
    """``mremap_folio_pte_batch`` for many extents: one call per distinct (bitmap row,
    in-slot offset, length, offset in the block)."""
    keys = np.stack([rows.astype(_I64), lo.astype(_I64), pages.astype(_I64),
                     first.astype(_I64)], axis=1)
    if not len(keys):
        return np.zeros(0, _I64)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    ints: dict[int, int] = {}
    counts = np.empty(len(uniq), _I64)
    for i, (row, off, n, fst) in enumerate(uniq.tolist()):
        if row not in ints:
            ints[row] = masks.row_int(row)
        bits = (ints[row] >> off) & ((1 << n) - 1)
        counts[i] = mremap_folio_pte_batch(bits, fst, n, block)
    return counts[inv.reshape(-1)]


# ---------------------------------------------------------------------------- regular shape
def _plan_regular(t: Target, pt: PageTables, geo: Geometry, ent: Entries, gates: MoveGates,
                  call: MoveCall) -> tuple[S.Steps, PageTables]:
    """Every extent a ``move_ptes`` into an empty destination (see :func:`_is_regular`)."""
    a = t.arch
    masks = MaskTable(pt)
    counts = _RegularCounts.of(t, geo, ent, masks)
    # PMD tables: first step into each destination PUD slot whose entry is none
    seg_dst_pud = (geo.seg_start + geo.delta) >> a.pud_shift
    fq = firsts(seg_dst_pud)
    qa = seg_dst_pud[fq]
    want = pmd_alloc(ent.dst_pud_kind[qa - geo.dst_pud_lo])
    alloc_pmd_at, alloc_pmd_q = geo.seg_first[fq][want], qa[want]
    up = upper_allocs(t, pt, (geo.seg_start + geo.delta) >> a.p4d_shift,
                      np.ones(len(seg_dst_pud), bool))
    # The first step into each destination PMD slot allocates its PTE table (the
    # destination is empty): one per destination slot.
    total = (geo.d_hi - geo.d_lo + 1) + len(alloc_pmd_at) + int(up.seg_p4d.sum() + up.seg_pud.sum())
    if call.fail_alloc_at is not None and call.fail_alloc_at <= total:
        raise Declined("injected allocation failure")
    g = np.flatnonzero(up.seg_pud | up.seg_p4d)
    builder = _RegularRows(t, geo, gates, call, counts, alloc_pmd_at,
                           (geo.seg_first[g], up.seg_p4d[g], up.seg_pud[g]))
    block = builder.block()
    new_pt = apply_regular_move(t, pt, masks, geo, ent.src_row, alloc_pmd_q, up.new_tops)
    return block, new_pt


@dataclass
class _RegularCounts:
    """Present PTEs per extent of a regular move: whole bitmaps need no bit
    work; only edge slots and partial rows do. ``exact`` holds the edge rows when every
    interior row is full (``ptes_all`` is then None)."""

    inner_full: bool
    ptes_all: np.ndarray | None
    exact: dict[int, int]
    all_flushed: bool
    masks: MaskTable
    rows: np.ndarray           # bitmap row per source slot

    @classmethod
    def of(cls, t: Target, geo: Geometry, ent: Entries, masks: MaskTable) -> _RegularCounts:
        a = t.arch
        ps, ms, ptrs = a.page_shift, a.pmd_shift, a.ptrs_per_pte
        bounds, n_ext, src_row = geo.bounds, geo.n_ext, ent.src_row
        pop_d = masks.base_pop[src_row]
        inner_full = len(pop_d) <= 2 or bool((pop_d[1:-1] == ptrs).all())
        exact: dict[int, int] = {}
        ptes_all = None
        if inner_full:
            # Interior rows map every page they cover; only the rows touching the first and
            # last source slot may be partial.
            for i in sorted({i for i in (0, 1, n_ext - 2, n_ext - 1) if 0 <= i < n_ext}):
                st0, n = int(bounds[i]), int(bounds[i + 1] - bounds[i]) >> ps
                lo = (st0 >> ps) & (ptrs - 1)
                row = masks.row_int(int(src_row[(st0 >> ms) - geo.s_lo]))
                exact[i] = (row >> lo & ((1 << n) - 1)).bit_count()
            all_flushed = all(bool(move_ptes_flushes(v)) for v in exact.values())
        else:
            ptes_all = _present_in_extents(masks, src_row[(geo.starts >> ms) - geo.s_lo],
                                           geo.starts, np.diff(bounds) >> ps, a)
            all_flushed = bool(move_ptes_flushes(ptes_all).all()) if n_ext else True
        return cls(inner_full, ptes_all, exact, all_flushed, masks, src_row)


def _present_in_extents(masks: MaskTable, row_e: np.ndarray, starts: np.ndarray,
                        pages: np.ndarray, a, only: np.ndarray | None = None) -> np.ndarray:
    """Present PTEs of each extent: the cached popcount where the row is full or empty or
    the extent is the whole slot, bitmap words only for partial extents of partial rows
    (of the extents ``only`` selects, if given; the others' counts are not used)."""
    ptrs = a.ptrs_per_pte
    pop_e = masks.base_pop[row_e] if masks.n == len(masks.base) else masks.materialise()[1][row_e]
    full_ext = pages == ptrs
    out = np.where(pop_e == ptrs, pages, np.where(full_ext, pop_e, 0)).astype(_I64)
    partial = (pop_e != 0) & (pop_e != ptrs) & ~full_ext
    pidx = np.flatnonzero(partial if only is None else partial & only)
    if len(pidx):
        lo_pg = (starts[pidx] >> a.page_shift) & (ptrs - 1)
        words = masks.rows(row_e[pidx]) & range_words(lo_pg, lo_pg + pages[pidx], masks.words)
        out[pidx] = np.bitwise_count(words).sum(axis=1)
    return out


class _RegularRows:
    """The rows of a regular move. Source and destination PMD boundaries are two
    progressions of period PMD_SIZE that never coincide (the ranges are not mutually PMD
    aligned), so past the first extent the extents alternate between two lengths, one pair
    per source PMD. With a fully populated interior every pair is the same two rows: they
    are stored once, repeated (:class:`~perfsim.planner.steps.PeriodicBlock`), with the few
    table allocations as overrides; the edge rows stay dense."""

    HEAD, TAIL = 3, 4

    def __init__(self, t: Target, geo: Geometry, gates: MoveGates, call: MoveCall,
                 counts: _RegularCounts, alloc_pmd_at: np.ndarray, upper: tuple):
        self.t, self.geo, self.gates, self.call, self.counts = t, geo, gates, call, counts
        self.alloc_pmd_at = alloc_pmd_at
        self.up_at, self.up_p4d, self.up_pud = upper
        a = t.arch
        self.flush = flush_lookup(t, a.page_shift, call.cpus, call.lazy_cpus, a.ptrs_per_pte)
        ipis = self.flush.ipis
        self.ipis_const = int(ipis[0]) if bool((ipis == ipis[0]).all()) else None
        # source and destination PTE tables always differ on this path (disjoint slots)
        self.ptl = int(move_ptes_ptl_count(geo.s_lo, geo.d_lo))

    def block(self) -> S.Steps:
        geo, n_ext = self.geo, self.geo.n_ext
        a = self.t.arch
        block = self.gates.batch_block
        periodic_batches = block <= 1 or a.ptrs_per_pte % block == 0
        h, tail = self.HEAD, self.TAIL
        if not (self.counts.inner_full and self.counts.all_flushed and periodic_batches
                and n_ext >= h + tail + 8):
            return self.rows(0, n_ext)
        mid = (n_ext - h - tail) // 2 * 2
        t0, t1 = h, h + mid
        assert geo.bounds[t0 + 2] - geo.bounds[t0] == a.pmd_size
        over = {}
        w = (self.alloc_pmd_at >= t0) & (self.alloc_pmd_at < t1)
        if w.any():
            over["alloc_pmd"] = (self.alloc_pmd_at[w] - t0, np.ones(int(w.sum()), _I32))
        w = (self.up_at >= t0) & (self.up_at < t1)
        if w.any():
            over["alloc_p4d"] = (self.up_at[w] - t0, self.up_p4d[w])
            over["alloc_pud"] = (self.up_at[w] - t0, self.up_pud[w])
        periodic = S.PeriodicBlock(self.rows(t0, t0 + 2, allocs=False), mid // 2,
                                   a.pmd_size, a.pmd_size, over)
        return S.Steps(parts=[self.rows(0, t0), periodic, self.rows(t1, n_ext)])

    def _ptes(self, lo: int, hi: int, pages: np.ndarray) -> np.ndarray:
        c = self.counts
        if c.ptes_all is not None:
            return c.ptes_all[lo:hi]
        ptes = pages.copy()
        for i, val in c.exact.items():
            if lo <= i < hi:
                ptes[i - lo] = val
        return ptes

    def _batches(self, st: np.ndarray, pages: np.ndarray, ptes: np.ndarray) -> np.ndarray:
        block = self.gates.batch_block
        if block <= 1:
            return ptes
        a = self.t.arch
        ps, ptrs = a.page_shift, a.ptrs_per_pte
        rows = self.counts.rows[(st >> a.pmd_shift) - self.geo.s_lo]
        return batch_counts(self.counts.masks, rows, (st >> ps) & (ptrs - 1), pages,
                            (st >> ps) % block, block)

    def rows(self, lo: int, hi: int, allocs: bool = True) -> S.Steps:
        """Rows ``[lo, hi)`` as a dense table (with the sparse table allocations if asked)."""
        a, geo = self.t.arch, self.geo
        st = geo.bounds[lo:hi]
        length = geo.bounds[lo + 1:hi + 1] - st
        new_addr = st + geo.delta
        pages = length >> a.page_shift
        ptes = self._ptes(lo, hi, pages)
        f_full, f_pages = self.flush.full[pages], self.flush.pages[pages]
        f_ipis = self.flush.ipis[pages] if self.ipis_const is None else self.ipis_const
        if self.counts.all_flushed:
            flushes = 1
        else:
            flushes = move_ptes_flushes(ptes).astype(_I32)
            f_full, f_pages, f_ipis = f_full * flushes, f_pages * flushes, f_ipis * flushes
        alloc_pte = ((new_addr & (a.pmd_size - 1)) == 0).astype(_I32)
        if lo == 0:
            alloc_pte[0] = 1
        rows = _Rows(hi - lo)
        locks = self.gates.huge_locks
        rows.add(None, old_addr=st, new_addr=new_addr, phase=self.call.phase, kind=S.K_PTE_MOVE,
                 length=length, ptes=ptes, slots=pages, batches=self._batches(st, pages, ptes),
                 alloc_pte=alloc_pte, flushes=flushes, flush_full=f_full, flush_pages=f_pages,
                 ipis=f_ipis if np.isscalar(f_ipis) else _constant(f_ipis), rmap=len(locks),
                 ptl=self.ptl, lock=0)
        if allocs:
            w = (self.alloc_pmd_at >= lo) & (self.alloc_pmd_at < hi)
            rows.add(self.alloc_pmd_at[w] - lo, alloc_pmd=1)
            w = (self.up_at >= lo) & (self.up_at < hi)
            rows.add(self.up_at[w] - lo, alloc_p4d=self.up_p4d[w], alloc_pud=self.up_pud[w])
        return rows.steps((locks,))


def _constant(col: np.ndarray):
    """A column that holds one value as that scalar (stored as a zero-stride view)."""
    if len(col) and bool((col == col[0]).all()):
        return int(col[0])
    return col


# ---------------------------------------------------------------------------- general shape
def _plan_general(t: Target, pt: PageTables, geo: Geometry, ent: Entries, gates: MoveGates,
                  call: MoveCall) -> tuple[S.Steps, PageTables]:
    a = t.arch
    pud = _pud_stage(t, geo, ent, gates)
    # A destination PMD table allocated in a PUD slot the source still has to walk (moving
    # up, the one PUD slot both ranges touch) makes that source PUD entry present.
    shared = geo.src_pud_hi if (geo.delta > 0 and geo.dst_pud_lo == geo.src_pud_hi) else None
    if (shared is not None and ent.src_pud_kind[shared - geo.src_pud_lo] == PUD_NONE
            and (pud.alloc_pmd_q == shared).any()):
        ent.src_pud_kind[shared - geo.src_pud_lo] = PUD_TABLE
        pud = _pud_stage(t, geo, ent, gates)
    up = upper_allocs(t, pt, (geo.seg_start + geo.delta) >> a.p4d_shift, pud.table_seg)
    masks = MaskTable(pt)
    pmd = _pmd_stage(t, geo, ent, gates, pud, masks)
    total = (int(up.seg_p4d.sum() + up.seg_pud.sum()) + len(pud.alloc_pmd_at)
             + int(np.count_nonzero(pmd.alloc_pte_sub)))
    if call.fail_alloc_at is not None and call.fail_alloc_at <= total:
        raise Declined("injected allocation failure")
    lay = _layout(geo, pud, pmd)
    block = _GeneralRows(t, geo, gates, call, pud, pmd, up, lay).block()
    return block, apply_move(t, pt, masks, geo, ent, pud, pmd, up)


def _pud_stage(t: Target, geo: Geometry, ent: Entries, gates: MoveGates) -> PudStage:
    a = t.arch
    k_pp = a.pud_shift - a.pmd_shift
    seg_src_pud = geo.seg_start >> a.pud_shift
    seg_dst_pud = (geo.seg_start + geo.delta) >> a.pud_shift
    table_seg = ent.src_pud_kind[seg_src_pud - geo.src_pud_lo] == PUD_TABLE
    pud_try = table_seg & t.have_move_pud & (geo.seg_len == a.pud_size)
    pud_ok = pud_try & move_pgt_entry(NORMAL_PUD, gates.uffd_blocks,
                                      ent.dst_pud_kind[seg_dst_pud - geo.dst_pud_lo])
    stage_seg = table_seg & ~pud_ok
    stage = None if bool(stage_seg.all()) else np.repeat(stage_seg, geo.seg_count)
    # the source PMD kind each extent's PMD stage sees: a THP split by an earlier extent
    # into its slot is what split_huge_pmd left
    src_slot = geo.starts >> a.pmd_shift
    ks = ent.src_kind[src_slot - geo.s_lo]
    if ent.has_leaf:
        after_split, _ = split_huge_pmd(a, ent.anon)
        ks = np.where((ks == PMD_LEAF) & ~firsts(src_slot), after_split, ks).astype(_I8)
    present = ks != PMD_NONE
    if stage is not None:
        present &= stage
    # alloc_new_pmd: first PMD-stage step with a present source per destination PUD slot
    pres_idx = np.flatnonzero(present)
    dst_slot = (geo.starts + geo.delta) >> a.pmd_shift
    q_of = (dst_slot[pres_idx] >> k_pp) if len(pres_idx) else np.empty(0, _I64)
    fq = firsts(q_of)
    alloc_pmd_at = pres_idx[fq]
    alloc_pmd_at = alloc_pmd_at[pmd_alloc(ent.dst_pud_kind[q_of[fq] - geo.dst_pud_lo])]
    return PudStage(table_seg, pud_ok, pud_try & ~pud_ok, stage_seg, stage, ks, present,
                    alloc_pmd_at, dst_slot[alloc_pmd_at] >> k_pp)


def _pmd_stage(t: Target, geo: Geometry, ent: Entries, gates: MoveGates, pud: PudStage,
               masks: MaskTable) -> PmdStage:
    a = t.arch
    ps, ms, ptrs = a.page_shift, a.pmd_shift, a.ptrs_per_pte
    starts = geo.starts
    src_slot, dst_slot = starts >> ms, (starts + geo.delta) >> ms
    pages = (geo.ends - starts) >> ps
    full_ext = pages == ptrs
    leaf, table = pud.ks == PMD_LEAF, pud.ks == PMD_TABLE
    if pud.stage is not None:
        leaf &= pud.stage
        table &= pud.stage
    dst_kind = ent.dst_kind[dst_slot - geo.d_lo] if ent.dst_any else PMD_NONE
    thp_move = split = None
    if ent.has_leaf:
        thp_move = leaf & full_ext & move_pgt_entry(HPAGE_PMD, gates.uffd_blocks, dst_kind)
        split = leaf & ~thp_move
    pmd_ok = pmd_fail = None
    if t.have_move_pmd:
        try_pmd = table & full_ext
        pmd_ok = try_pmd & move_pgt_entry(NORMAL_PMD, gates.uffd_blocks, dst_kind)
        pmd_fail = try_pmd & ~pmd_ok
        pmd_fail = pmd_fail if pmd_fail.any() else None
        pmd_ok = pmd_ok if pmd_ok.any() else None
    pte = table if pmd_ok is None else (table & ~pmd_ok)
    if split is not None and split_huge_pmd(a, ent.anon)[0] == PMD_TABLE:
        pte = pte | split
    main_kind = np.where(pte, S.K_PTE_MOVE, S.K_SKIP_PMD).astype(_I32)
    if pmd_ok is not None:
        main_kind[pmd_ok] = S.K_PMD_MOVE
    if thp_move is not None:
        main_kind[thp_move] = S.K_THP_MOVE
    # what move_ptes reads: after a split, an anonymous THP is a full PTE table
    eff_row = ent.src_row
    if ent.has_leaf and ent.anon:
        eff_row = np.where(ent.src_kind == PMD_LEAF, masks.full, ent.src_row).astype(_I32)
    row_e = eff_row[src_slot - geo.s_lo]
    pte_idx = np.flatnonzero(pte)
    present_ptes = _present_in_extents(masks, row_e, starts, pages, a, only=pte)
    if len(pte_idx) != len(pte):
        present_ptes = np.where(pte, present_ptes, 0)
    batches = present_ptes
    if gates.batch_block > 1:
        batches = np.zeros(len(pte), _I64)
        batches[pte_idx] = batch_counts(masks, row_e[pte_idx], (starts[pte_idx] >> ps) & (ptrs - 1),
                                        pages[pte_idx], (starts[pte_idx] >> ps) % gates.batch_block,
                                        gates.batch_block)
    # pte_alloc: first move_ptes step per destination slot whose PMD entry was none
    pte_dst = dst_slot[pte_idx] if len(pte_idx) != len(pte) else dst_slot
    alloc_pte_sub = firsts(pte_dst)
    if ent.dst_any:
        alloc_pte_sub &= pte_alloc(ent.dst_kind[pte_dst - geo.d_lo])
    return PmdStage(src_slot, dst_slot, pages, thp_move, split, pmd_ok, pmd_fail, pte,
                    main_kind, pte_idx, eff_row, present_ptes, batches, alloc_pte_sub)


def _layout(geo: Geometry, pud: PudStage, pmd: PmdStage) -> Layout:
    n_ext = geo.n_ext
    empty = np.empty(0, _I64)
    pre1 = None
    if pud.pud_fail.any():
        pre1 = np.zeros(n_ext, bool)
        pre1[geo.seg_first[pud.pud_fail]] = True
    pre2 = None
    if pmd.split is not None and pmd.split.any():
        pre2 = pmd.split.copy()
    if pmd.pmd_fail is not None:
        pre2 = pmd.pmd_fail.copy() if pre2 is None else (pre2 | pmd.pmd_fail)
    if pud.all_stage and pre1 is None and pre2 is None:
        return Layout(n_ext, True, None, None, empty, None, empty, empty, empty)
    cnt = np.ones(n_ext, _I64) if pud.all_stage else pud.stage.astype(_I64)
    if pre1 is not None:
        cnt += pre1
    if pre2 is not None:
        cnt += pre2
    if not pud.all_stage:
        cnt[geo.seg_first[np.flatnonzero(~pud.stage_seg)]] += 1
    off = np.cumsum(cnt) - cnt
    stage_idx = np.arange(n_ext) if pud.all_stage else np.flatnonzero(pud.stage)
    pre2_idx = np.flatnonzero(pre2) if pre2 is not None else empty
    return Layout(
        n_rows=int(cnt.sum()), simple=False, main_pos=(off + cnt - 1)[stage_idx], pre1=pre1,
        pre1_pos=off[np.flatnonzero(pre1)] if pre1 is not None else empty, pre2=pre2,
        pre2_idx=pre2_idx, pre2_pos=off[pre2_idx] + (pre1[pre2_idx] if pre1 is not None else 0),
        seg_row_pos=(off[geo.seg_first[np.flatnonzero(~pud.stage_seg)]] if not pud.all_stage
                     else empty))


class _GeneralRows:
    """The rows of a move of any shape the fast path takes, column by column."""

    def __init__(self, t: Target, geo: Geometry, gates: MoveGates, call: MoveCall,
                 pud: PudStage, pmd: PmdStage, up: UpperAllocs, lay: Layout):
        self.t, self.geo, self.gates, self.call = t, geo, gates, call
        self.pud, self.pmd, self.up, self.lay = pud, pmd, up, lay
        self.rows = _Rows(lay.n_rows)
        self.lock_sets = tuple(sorted({(), gates.normal_locks, gates.huge_locks}))
        self.e_idx = slice(None) if pud.all_stage else np.flatnonzero(pud.stage)
        n_ext = geo.n_ext
        self.alloc_pmd_e = None
        if len(pud.alloc_pmd_at):
            self.alloc_pmd_e = np.zeros(n_ext, _I32)
            self.alloc_pmd_e[pud.alloc_pmd_at] = 1
        # p4d/pud on the first PMD-stage row of a segment that is walked at PMD level
        self.upper_p4d = self.upper_pud = None
        for g in np.flatnonzero(up.seg_pud | up.seg_p4d).tolist():
            if pud.pud_ok[g] or pud.pud_fail[g]:
                continue  # carried by the segment's own row
            if self.upper_pud is None:
                self.upper_p4d, self.upper_pud = np.zeros(n_ext, _I32), np.zeros(n_ext, _I32)
            self.upper_p4d[geo.seg_first[g]] = up.seg_p4d[g]
            self.upper_pud[geo.seg_first[g]] = up.seg_pud[g]

    def lock_id(self, locks: tuple[str, ...]) -> int:
        return self.lock_sets.index(locks)

    def block(self) -> S.Steps:
        self._main_rows()
        if self.lay.pre2 is not None:
            self._pre2_rows()
        if not self.pud.all_stage:
            self._segment_rows()
        if self.lay.pre1 is not None:
            self._pud_fail_rows()
        return self.rows.steps(self.lock_sets)

    def _main_rows(self) -> None:
        t, geo, pmd, e = self.t, self.geo, self.pmd, self.e_idx
        call, gates = self.call, self.gates
        mk = pmd.main_kind[e]
        ptes, pages = pmd.present_ptes[e], pmd.pages[e]
        is_pte = mk == S.K_PTE_MOVE
        flushed = move_ptes_flushes(ptes)
        f_full, f_pages, f_ipis = flush_table(t, pages, cpus=call.cpus, lazy_cpus=call.lazy_cpus)
        ptl_pte = int(move_ptes_ptl_count(geo.s_lo, geo.d_lo))  # always different tables here
        cols = dict(old_addr=geo.starts[e], new_addr=geo.starts[e] + geo.delta, phase=call.phase,
                    kind=mk, length=geo.ends[e] - geo.starts[e])
        if self.lay.simple and pmd.all_pte:
            # the common shape: every row a move_ptes
            fl = 1 if flushed.all() else flushed.astype(_I32)
            cols.update(ptes=ptes, slots=pages, batches=pmd.batches[e], ptl=ptl_pte,
                        lock=self.lock_id(gates.huge_locks), rmap=len(gates.huge_locks),
                        flushes=fl, flush_full=f_full * fl, flush_pages=f_pages * fl,
                        ipis=_constant(f_ipis * fl))
        else:
            cols.update(self._mixed_main_cols(mk, is_pte, flushed, ptes, pages,
                                              (f_full, f_pages, f_ipis), ptl_pte))
        for name, arr in (("alloc_p4d", self.upper_p4d), ("alloc_pud", self.upper_pud),
                          ("alloc_pmd", self.alloc_pmd_e)):
            if arr is not None:
                # on the main row unless a split / failed NORMAL_PMD row comes first
                v = arr if self.lay.pre2 is None else np.where(self.lay.pre2, 0, arr)
                cols[name] = v[e]
        if len(pmd.pte_idx):
            ap = np.zeros(geo.n_ext, _I32)
            ap[pmd.pte_idx[pmd.alloc_pte_sub]] = 1
            cols["alloc_pte"] = ap[e]
        self.rows.add(self.lay.main_pos, **cols)

    def _mixed_main_cols(self, mk, is_pte, flushed, ptes, pages, flush, ptl_pte) -> dict:
        t, gates, call, pmd, e = self.t, self.gates, self.call, self.pmd, self.e_idx
        f_full, f_pages, f_ipis = flush
        fl = np.where(is_pte, flushed, False).astype(_I32)
        ffull, fpages, fipis = fl * f_full, fl * f_pages, fl * f_ipis
        ptes_c = np.where(is_pte, ptes, 0)
        ptl = np.where(is_pte, ptl_pte, 0).astype(_I32)
        rmap = np.where(is_pte, len(gates.huge_locks), 0).astype(_I32)
        lock = np.where(is_pte, self.lock_id(gates.huge_locks), self.lock_id(())).astype(_I32)
        for entry in (NORMAL_PMD, HPAGE_PMD):
            row = pgt_entry_row(t, gates, entry, pmd.src_slot[e], pmd.dst_slot[e], cpus=call.cpus,
                                lazy_cpus=call.lazy_cpus)
            m = mk == row.kind
            if not m.any():
                continue
            fl[m], ffull[m], fpages[m], fipis[m] = _flush_cols(row.flush)
            ptl[m] = row.ptl[m]
            rmap[m] = len(row.locks)
            lock[m] = self.lock_id(row.locks)
            ptes_c = np.where(m, row.ptes, ptes_c)
        return dict(ptes=ptes_c, slots=np.where(is_pte, pages, 0),
                    batches=np.where(is_pte, pmd.batches[e], 0), flushes=fl, flush_full=ffull,
                    flush_pages=fpages, ipis=fipis, ptl=ptl, rmap=rmap, lock=lock)

    def _pre2_rows(self) -> None:
        """THP split or NORMAL_PMD failure rows before an extent's main row."""
        t, a, geo, pmd, lay, call = self.t, self.t.arch, self.geo, self.pmd, self.lay, self.call
        idx = lay.pre2_idx
        is_split = pmd.split[idx] if pmd.split is not None else np.zeros(len(idx), bool)
        sp = split_huge_pmd_row(t, cpus=call.cpus, lazy_cpus=call.lazy_cpus)
        no = failed_entry_row(self.gates, NORMAL_PMD)
        fsp, fno = _flush_cols(sp.flush), _flush_cols(no.flush)
        base = pmd.src_slot[idx] << a.pmd_shift
        cols = dict(old_addr=np.where(is_split, base, geo.starts[idx]),
                    new_addr=np.where(is_split, 0, geo.starts[idx] + geo.delta), phase=call.phase,
                    kind=np.where(is_split, sp.kind, no.kind).astype(_I32),
                    length=np.where(is_split, a.pmd_size, 0),
                    ptes=np.where(is_split, sp.ptes, no.ptes),
                    flushes=np.where(is_split, fsp[0], fno[0]),
                    flush_full=np.where(is_split, fsp[1], fno[1]),
                    flush_pages=np.where(is_split, fsp[2], fno[2]),
                    ipis=np.where(is_split, fsp[3], fno[3]),
                    ptl=np.where(is_split, sp.ptl, no.ptl),
                    rmap=np.where(is_split, len(sp.locks), len(no.locks)),
                    lock=np.where(is_split, self.lock_id(sp.locks), self.lock_id(no.locks)))
        for name, arr in (("alloc_p4d", self.upper_p4d), ("alloc_pud", self.upper_pud),
                          ("alloc_pmd", self.alloc_pmd_e)):
            if arr is not None:
                cols[name] = arr[idx]
        self.rows.add(lay.pre2_pos, **cols)

    def _segment_rows(self) -> None:
        """skip_pud and move_normal_pud rows."""
        t, geo, pud, up, call = self.t, self.geo, self.pud, self.up, self.call
        gs = np.flatnonzero(~pud.stage_seg)
        okg = pud.pud_ok[gs]
        row = pgt_entry_row(t, self.gates, NORMAL_PUD, None, None, cpus=call.cpus,
                            lazy_cpus=call.lazy_cpus)
        fpud = _flush_cols(row.flush)
        self.rows.add(self.lay.seg_row_pos, old_addr=geo.seg_start[gs],
                      new_addr=geo.seg_start[gs] + geo.delta, phase=call.phase,
                      kind=np.where(okg, row.kind, S.K_SKIP_PUD), length=geo.seg_len[gs],
                      ptes=np.where(okg, row.ptes, 0),
                      flushes=np.where(okg, fpud[0], 0), flush_full=np.where(okg, fpud[1], 0),
                      flush_pages=np.where(okg, fpud[2], 0), ipis=np.where(okg, fpud[3], 0),
                      ptl=np.where(okg, row.ptl, 0), rmap=np.where(okg, len(row.locks), 0),
                      lock=np.where(okg, self.lock_id(row.locks), self.lock_id(())),
                      alloc_p4d=up.seg_p4d[gs], alloc_pud=up.seg_pud[gs])

    def _pud_fail_rows(self) -> None:
        """Failed move_normal_pud rows before a segment's first PMD-stage row."""
        geo, up = self.geo, self.up
        gs = np.flatnonzero(self.pud.pud_fail)
        row = failed_entry_row(self.gates, NORMAL_PUD)
        self.rows.add(self.lay.pre1_pos, old_addr=geo.seg_start[gs],
                      new_addr=geo.seg_start[gs] + geo.delta, phase=self.call.phase,
                      kind=row.kind, length=0, ptes=row.ptes, ptl=row.ptl, rmap=len(row.locks),
                      lock=self.lock_id(row.locks), alloc_p4d=up.seg_p4d[gs], alloc_pud=up.seg_pud[gs])

