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

What is left is bookkeeping: here, extents (two arithmetic progressions merged), PUD-level
segments, first occurrences and present-PTE counts (cached popcounts; bitmap words only for
partial extents of partial rows); the rows in :mod:`perfsim.planner.fast_rows`; the new
page tables spliced from arrays in :mod:`perfsim.planner.fast_state`; bit work in
:mod:`perfsim.planner.bitmaps`.

A regular move (every extent one ``move_ptes`` into an empty destination) that is fully
populated inside and crosses at most a few PUD boundaries, the common big move, is planned
in closed form by :mod:`perfsim.planner.fast_closed` (its extents are two progressions of
period PMD_SIZE, so it needs no array over extents or slots); the array code below plans
every other shape, and that one too when asked (``plan_move(..., closed=False)``).

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
from perfsim.planner.bitmaps import (
    Declined,
    MaskTable,
    all_set,
    any_set,
    bits_in_rows,
    dense,
    filled,
    firsts,
    interleave,
    where_set,
)
from perfsim.planner.fast_closed import Progressions, plan_regular_closed
from perfsim.planner.fast_rows import GeneralRows, RegularRows, batch_counts, flush_table
from perfsim.planner.fast_state import apply_move, apply_regular_move
from perfsim.planner.pgtable_move import (
    HPAGE_PMD,
    NORMAL_PMD,
    NORMAL_PUD,
    MoveGates,
    alloc_new_pud,
    move_pgt_entry,
    move_ptes_flushes,
    pmd_alloc,
    pte_alloc,
    split_huge_pmd,
)
from perfsim.profiles import Target

__all__ = ["Declined", "flush_table", "plan_move", "try_move_page_tables"]

_I64, _I32, _I8 = np.int64, np.int32, np.int8

#: Up to this many PUD boundaries in a move, its segments and PUD slots are worked out as
#: Python ints (beyond, as arrays).
_FEW_SEGMENTS = 16


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
                         fail_alloc_at: int | None = None, force: bool = False,
                         closed_only: bool = False):
    """The vectorised ``move_page_tables``: ``(new page tables, progress)`` or None.

    Appends exactly the rows :func:`perfsim.planner.reference.move_page_tables` would.
    ``force`` (``PlanOptions("fast")``) turns a decline into an AssertionError.
    ``closed_only``: None unless the move is planned in closed form (the caller walks it).
    """
    try:
        block, new_pt = plan_move(target, pt, pmc, phase=phase, cpus=cpus,
                                  lazy_cpus=lazy_cpus, fail_alloc_at=fail_alloc_at,
                                  closed_only=closed_only)
    except Declined as why:
        if force:
            raise AssertionError(f"fast planner declined: {why}") from None
        return None
    log.add(phase, S.K_NOTIFIER, pmc.old_addr, pmc.new_addr, pmc.old_end - pmc.old_addr, notifier=1)
    log.append_block(block)
    return new_pt, pmc.progress(pmc.old_end)


def plan_move(target: Target, pt: PageTables, pmc, *, phase: int = S.MOVE, cpus: int = 1,
              lazy_cpus: int = 0, fail_alloc_at: int | None = None,
              closed: bool = True, closed_only: bool = False) -> tuple[S.Steps, PageTables]:
    """Plan one move; raise :class:`Declined` when the fast path does not apply.

    A regular periodic move of a few PUD segments is planned in closed form
    (:mod:`perfsim.planner.fast_closed`; ``closed=False`` takes the array path for it, as
    the tests that hold the two to each other do). ``closed_only``: decline any other
    move (a move of a few dozen slots, which the walk plans faster)."""
    if pmc.for_stack:
        raise Declined("exec stack move (overlapping ranges)")
    if pmc.old.is_hugetlb:
        raise Declined("hugetlb")
    gates = MoveGates.of(target, pmc.old, pmc.new, pmc.need_rmap_locks)
    if closed:
        out = plan_regular_closed(target, pt, pmc, gates, phase, cpus, lazy_cpus, fail_alloc_at)
        if out is not None:
            return out
    if closed_only:
        raise Declined("not a closed-form move (walked)")
    call = MoveCall(phase, cpus, lazy_cpus, fail_alloc_at)
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
    ra = range(o0 - o0 % pud_size + pud_size, oe, pud_size)
    rb = range(n0 - n0 % pud_size + pud_size - delta, oe, pud_size)
    if len(ra) + len(rb) <= _FEW_SEGMENTS:
        # a few: the boundaries as Python ints, each segment's first extent from the
        # closed form of the extents (the same indexes searchsorted finds)
        ub = sorted(set(ra) | set(rb))
        ext = Progressions.of(o0, n0, oe, pmd_size)
        first = [ext.index(v) for v in (o0, *ub)]
        seg_start = np.array([o0, *ub], _I64)
        seg_end = np.array([*ub, oe], _I64)
        seg_first = np.array(first, np.intp)
        seg_count = np.array([b - a for a, b in zip(first, [*first[1:], len(bounds) - 1])], np.intp)
    else:
        ub = np.union1d(np.arange(ra.start, oe, pud_size, dtype=_I64),
                        np.arange(rb.start, oe, pud_size, dtype=_I64))
        seg_start = np.concatenate([np.array([o0], _I64), ub])
        seg_end = np.concatenate([ub, np.array([oe], _I64)])
        seg_first = bounds[:-1].searchsorted(seg_start)
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
        if p_hi - p_lo < _FEW_SEGMENTS:
            shift = a.p4d_shift - us
            gone = [i for i, p in enumerate(range(p_lo, p_hi + 1))
                    if (p >> shift) not in pt.pud_tables]
            if gone:
                src_pud[gone] = PUD_NONE
        else:
            tops = np.arange(p_lo, p_hi + 1, dtype=_I64) >> (a.p4d_shift - us)
            uniq = np.unique(tops)
            has_top = np.fromiter((int(x) in pt.pud_tables for x in uniq), bool)
            if not all_set(has_top):
                src_pud[~has_top[uniq.searchsorted(tops)]] = PUD_NONE
    if any_set(src_pud == PUD_LEAF) or any_set(dst_pud == PUD_LEAF):
        raise Declined("huge PUD leaf in range")
    src_kind = dense(pt.pmd_idx, pt.pmd_kind, geo.s_lo, geo.s_hi, PMD_NONE, _I8)
    src_row = dense(pt.pmd_idx, pt.pmd_mask, geo.s_lo, geo.s_hi, 0, _I32)
    j0, j1 = pt.pmd_idx.searchsorted((geo.d_lo, geo.d_hi + 1)).tolist()
    dst_kind = dst_row = None
    if j1 > j0:
        dst_kind = dense(pt.pmd_idx, pt.pmd_kind, geo.d_lo, geo.d_hi, PMD_NONE, _I8)
        dst_row = dense(pt.pmd_idx, pt.pmd_mask, geo.d_lo, geo.d_hi, 0, _I32)
        if any_set(dst_kind == PMD_LEAF):
            raise Declined("PMD leaf at the destination")
    return Entries(src_pud, dst_pud, src_kind, src_row, bool(j1 > j0), dst_kind, dst_row,
                   any_set(src_kind == PMD_LEAF), anon)


def _is_regular(t: Target, geo: Geometry, ent: Entries) -> bool:
    """The dominant shape of big moves: every source PUD and PMD entry is a table, nothing
    is mapped at the destination, and no extent can be a NORMAL_PUD/PMD attempt (the two
    ranges are not mutually PMD aligned). Every extent is then one ``move_ptes`` row."""
    pmd_size = t.arch.pmd_size
    o0, oe = geo.old_addr, geo.old_end
    no_full = (geo.delta % pmd_size != 0) or not t.have_move_pmd or (
        -(-o0 // pmd_size) * pmd_size + pmd_size > oe)
    return (no_full and not ent.dst_any and all_set(ent.src_pud_kind == PUD_TABLE)
            and not (t.have_move_pud and any_set(geo.seg_len == t.arch.pud_size))
            and all_set(ent.src_kind == PMD_TABLE))


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
    tab = where_set(table_seg)
    have = set(pt.pud_tables)
    for g in tab[firsts(seg_dst_top[tab])].tolist():
        top = int(seg_dst_top[g])
        p4d, pud = alloc_new_pud(a, have, top << a.p4d_shift)
        out.seg_p4d[g], out.seg_pud[g] = p4d, pud
        if pud:
            have.add(top)
            out.new_tops.append(top)
    return out


# ---------------------------------------------------------------------------- regular shape
def _plan_regular(t: Target, pt: PageTables, geo: Geometry, ent: Entries, gates: MoveGates,
                  call: MoveCall) -> tuple[S.Steps, PageTables]:
    """Every extent a ``move_ptes`` into an empty destination (see :func:`_is_regular`)."""
    a = t.arch
    masks = MaskTable(pt)
    counts = RegularCounts.of(t, geo, ent, masks)
    # PMD tables: first step into each destination PUD slot whose entry is none
    seg_dst_pud = (geo.seg_start + geo.delta) >> a.pud_shift
    fq = firsts(seg_dst_pud)
    qa = seg_dst_pud[fq]
    want = pmd_alloc(ent.dst_pud_kind[qa - geo.dst_pud_lo])
    alloc_pmd_at, alloc_pmd_q = geo.seg_first[fq][want], qa[want]
    up = upper_allocs(t, pt, (geo.seg_start + geo.delta) >> a.p4d_shift,
                      filled(len(seg_dst_pud), True, bool))
    # The first step into each destination PMD slot allocates its PTE table (the
    # destination is empty): one per destination slot.
    total = (geo.d_hi - geo.d_lo + 1) + len(alloc_pmd_at) + int(up.seg_p4d.sum() + up.seg_pud.sum())
    if call.fail_alloc_at is not None and call.fail_alloc_at <= total:
        raise Declined("injected allocation failure")
    g = where_set(up.seg_pud | up.seg_p4d)
    builder = RegularRows(t, geo, gates, call, counts, alloc_pmd_at,
                           (geo.seg_first[g], up.seg_p4d[g], up.seg_pud[g]))
    block = builder.block()
    new_pt = apply_regular_move(t, pt, masks, geo, ent.src_row, alloc_pmd_q, up.new_tops)
    return block, new_pt


@dataclass
class RegularCounts:
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
    def of(cls, t: Target, geo: Geometry, ent: Entries, masks: MaskTable) -> RegularCounts:
        a = t.arch
        ps, ms, ptrs = a.page_shift, a.pmd_shift, a.ptrs_per_pte
        bounds, n_ext, src_row = geo.bounds, geo.n_ext, ent.src_row
        pop_d = masks.base_pop[src_row]
        inner_full = len(pop_d) <= 2 or all_set(pop_d[1:-1] == ptrs)
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
            all_flushed = all_set(move_ptes_flushes(ptes_all)) if n_ext else True
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
    pidx = where_set(partial if only is None else partial & only)
    if len(pidx):
        lo_pg = (starts[pidx] >> a.page_shift) & (ptrs - 1)
        out[pidx] = bits_in_rows(masks.materialise()[0], row_e[pidx], lo_pg, lo_pg + pages[pidx])
    return out


# ---------------------------------------------------------------------------- general shape
def _plan_general(t: Target, pt: PageTables, geo: Geometry, ent: Entries, gates: MoveGates,
                  call: MoveCall) -> tuple[S.Steps, PageTables]:
    a = t.arch
    pud = _pud_stage(t, geo, ent, gates)
    # A destination PMD table allocated in a PUD slot the source still has to walk (moving
    # up, the one PUD slot both ranges touch) makes that source PUD entry present.
    shared = geo.src_pud_hi if (geo.delta > 0 and geo.dst_pud_lo == geo.src_pud_hi) else None
    if (shared is not None and ent.src_pud_kind[shared - geo.src_pud_lo] == PUD_NONE
            and any_set(pud.alloc_pmd_q == shared)):
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
    block = GeneralRows(t, geo, gates, call, pud, pmd, up, lay).block()
    return block, apply_move(t, pt, masks, geo, ent, pud, pmd, up)


def _pud_stage(t: Target, geo: Geometry, ent: Entries, gates: MoveGates) -> PudStage:
    a = t.arch
    k_pp = a.pud_shift - a.pmd_shift
    seg_src_pud = geo.seg_start >> a.pud_shift
    seg_dst_pud = (geo.seg_start + geo.delta) >> a.pud_shift
    table_seg = ent.src_pud_kind[seg_src_pud - geo.src_pud_lo] == PUD_TABLE
    pud_try = table_seg & (t.have_move_pud and gates.normal_moves_tried) & (geo.seg_len == a.pud_size)
    pud_ok = pud_try & move_pgt_entry(NORMAL_PUD, gates.uffd_blocks,
                                      ent.dst_pud_kind[seg_dst_pud - geo.dst_pud_lo])
    stage_seg = table_seg & ~pud_ok
    stage = None if all_set(stage_seg) else np.repeat(stage_seg, geo.seg_count)
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
    pres_idx = where_set(present)
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
    if t.have_move_pmd and gates.normal_moves_tried:
        try_pmd = table & full_ext
        pmd_ok = try_pmd & move_pgt_entry(NORMAL_PMD, gates.uffd_blocks, dst_kind)
        pmd_fail = try_pmd & ~pmd_ok
        pmd_fail = pmd_fail if any_set(pmd_fail) else None
        pmd_ok = pmd_ok if any_set(pmd_ok) else None
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
    pte_idx = where_set(pte)
    present_ptes = _present_in_extents(masks, row_e, starts, pages, a, only=pte)
    if len(pte_idx) != len(pte):
        present_ptes = np.where(pte, present_ptes, 0)
    batches = present_ptes
    if gates.batching.batches:
        batches = np.zeros(len(pte), _I64)
        batches[pte_idx] = batch_counts(masks, row_e[pte_idx], starts[pte_idx], pages[pte_idx],
                                        geo.old_addr, a, gates.batching)
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
    if any_set(pud.pud_fail):
        pre1 = np.zeros(n_ext, bool)
        pre1[geo.seg_first[pud.pud_fail]] = True
    pre2 = None
    if pmd.split is not None and any_set(pmd.split):
        pre2 = pmd.split.copy()
    if pmd.pmd_fail is not None:
        pre2 = pmd.pmd_fail.copy() if pre2 is None else (pre2 | pmd.pmd_fail)
    if pud.all_stage and pre1 is None and pre2 is None:
        return Layout(n_ext, True, None, None, empty, None, empty, empty, empty)
    cnt = filled(n_ext, 1, _I64) if pud.all_stage else pud.stage.astype(_I64)
    if pre1 is not None:
        cnt += pre1
    if pre2 is not None:
        cnt += pre2
    if not pud.all_stage:
        cnt[geo.seg_first[where_set(~pud.stage_seg)]] += 1
    off = np.cumsum(cnt) - cnt
    stage_idx = np.arange(n_ext) if pud.all_stage else where_set(pud.stage)
    pre2_idx = where_set(pre2) if pre2 is not None else empty
    return Layout(
        n_rows=int(cnt.sum()), simple=False, main_pos=(off + cnt - 1)[stage_idx], pre1=pre1,
        pre1_pos=off[where_set(pre1)] if pre1 is not None else empty, pre2=pre2,
        pre2_idx=pre2_idx, pre2_pos=off[pre2_idx] + (pre1[pre2_idx] if pre1 is not None else 0),
        seg_row_pos=(off[geo.seg_first[where_set(~pud.stage_seg)]] if not pud.all_stage
                     else empty))


