"""The page tables after a vectorised move, spliced from arrays.

The decisions (which entries move whole, which extents go through ``move_ptes``) are made
by :mod:`perfsim.planner.fast` with the functions of :mod:`perfsim.planner.pgtable_move`;
this module only applies them to the sorted arrays of a
:class:`~perfsim.mm.pagetable.PageTables`: destination bitmaps are the source bitmaps
shifted by the constant in-PMD page offset of the move, computed once per distinct pair of
source rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from perfsim.mm.pagetable import PMD_LEAF, PMD_NONE, PMD_TABLE, PUD_TABLE, PageTables, range_mask
from perfsim.planner.bitmaps import (
    FEW_IDS,
    MaskTable,
    all_set,
    any_set,
    clipped,
    filled,
    firsts,
    insert_sorted,
    pair_window,
    where_set,
)
from perfsim.profiles import ArchProfile, Target

if TYPE_CHECKING:
    from perfsim.planner.fast import Entries, Geometry, PmdStage, PudStage, UpperAllocs

_I64, _I32, _I8 = np.int64, np.int32, np.int8


def split_edge_slots(a: ArchProfile, masks: MaskTable, rows: np.ndarray, em: np.ndarray,
                     rest: np.ndarray, geo: Geometry, only: np.ndarray | None = None) -> None:
    """The first and last source slot may lie only partly inside ``[old_addr, old_end)``:
    split their bitmap into the part that moves (``em``) and the part that stays
    (``rest``), in place."""
    for slot in sorted({geo.s_lo, geo.s_hi}):
        if only is not None and not only[slot - geo.s_lo]:
            continue
        base = slot << a.pmd_shift
        lo = (max(geo.old_addr, base) - base) >> a.page_shift
        hi = (min(geo.old_end, base + a.pmd_size) - base) >> a.page_shift
        if lo == 0 and hi == a.ptrs_per_pte:
            continue
        m = masks.row_int(int(rows[slot - geo.s_lo]))
        em[slot - geo.s_lo] = masks.add_int(m & range_mask(lo, hi))
        rest[slot - geo.s_lo] = masks.add_int(m & ~range_mask(lo, hi))


def _combine(masks: MaskTable, ra: np.ndarray, rb: np.ndarray, off: int) -> np.ndarray:
    """Row ids of the destination bitmaps made of the top of source row ``ra`` and the
    bottom of ``rb`` (``off`` pages into the slot); one new row per distinct pair."""
    if not off:
        return ra.astype(_I32)
    key = ra.astype(_I64) * (masks.n + 1) + rb
    uk, inv = np.unique(key, return_inverse=True)
    ua, ub = uk // (masks.n + 1), uk % (masks.n + 1)
    words = pair_window(masks.materialise()[0], ua, ub, off)
    ids = masks.add_rows(words)
    ids[~words.any(axis=1)] = 0
    return ids[inv]


def _with_pud_tables(pt: PageTables, add: set[int], remove: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """``pud_idx``/``pud_kind`` with PMD tables added at ``add`` and entries ``remove`` gone."""
    if not add and not remove:
        return pt.pud_idx, pt.pud_kind
    pud = dict(zip(pt.pud_idx.tolist(), pt.pud_kind.tolist()))
    for p in remove:
        pud.pop(p, None)
    for q in add:
        pud[q] = PUD_TABLE
    items = sorted(pud.items())
    return np.array([k for k, _ in items], _I64), np.array([k for _, k in items], _I8)


def apply_regular_move(t: Target, pt: PageTables, masks: MaskTable, geo: Geometry,
                       src_row: np.ndarray, alloc_pmd_q: np.ndarray,
                       new_tops: list[int]) -> PageTables:
    """A regular move (every extent a ``move_ptes`` into an empty destination): source
    slots emptied, every destination slot filled."""
    a = t.arch
    s_lo, s_hi, d_lo, d_hi = geo.s_lo, geo.s_hi, geo.d_lo, geo.d_hi
    i_lo = int(pt.pmd_idx.searchsorted(s_lo))
    i_hi = i_lo + (s_hi - s_lo + 1)
    em = np.zeros(s_hi - s_lo + 2, _I32)
    em[:-1] = src_row
    src_new = np.zeros(s_hi - s_lo + 1, _I32)
    split_edge_slots(a, masks, src_row, em, src_new, geo)
    n_dst = d_hi - d_lo + 1
    off = ((-geo.delta) % a.pmd_size) >> a.page_shift
    sa0 = (((d_lo << a.pmd_shift) - geo.delta) >> a.pmd_shift) - s_lo  # source slot under each D's bottom

    def em_at(rel: np.ndarray) -> np.ndarray:
        ok = (rel >= 0) & (rel < len(em))
        return np.where(ok, em[clipped(rel, 0, len(em) - 1)], 0)

    # destination slots 3 .. n_dst-4 read source rows em[sa0 + 3 .. sa0 + n_dst - 3]
    lo_i, hi_i = sa0 + 3, sa0 + n_dst - 3
    interior = em[lo_i:hi_i + 1] if (n_dst > 6 and lo_i >= 0 and hi_i < len(em)) else em[:0]
    if len(interior) and all_set(interior == interior[0]):
        r = np.array([int(interior[0])])
        dst_rows = filled(n_dst, int(_combine(masks, r, r, off)[0]), _I32)
        ends_rel = np.array([0, 1, 2, n_dst - 3, n_dst - 2, n_dst - 1])
        rel = sa0 + ends_rel
        dst_rows[ends_rel] = _combine(masks, em_at(rel), em_at(rel + 1), off)
    else:
        rel = sa0 + np.arange(n_dst)
        dst_rows = _combine(masks, em_at(rel), em_at(rel + 1), off)
    pmd_mask = pt.pmd_mask.copy()
    pmd_mask[i_lo:i_hi] = src_new
    at = int(pt.pmd_idx.searchsorted(d_lo))
    pmd_idx = np.concatenate([pt.pmd_idx[:at], np.arange(d_lo, d_hi + 1, dtype=_I64), pt.pmd_idx[at:]])
    pmd_kind = np.concatenate([pt.pmd_kind[:at], filled(n_dst, PMD_TABLE, _I8), pt.pmd_kind[at:]])
    pmd_mask = np.concatenate([pmd_mask[:at], dst_rows, pmd_mask[at:]])
    pud_idx, pud_kind = _with_pud_tables(pt, set(alloc_pmd_q.tolist()), set())
    tops = pt.pud_tables | frozenset(new_tops) if new_tops else pt.pud_tables
    all_masks, pop = masks.materialise()
    return PageTables(a, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_mask, all_masks, pop)


class _PmdEdits:
    """New destination PMD entries and the source entries that leave, gathered per kind of
    step before one splice."""

    def __init__(self, n_src: int):
        self.removed_src = np.zeros(n_src, bool)
        self.idx: list[np.ndarray] = []
        self.kind: list[np.ndarray] = []
        self.row: list[np.ndarray] = []

    def add(self, idx: np.ndarray, kind: np.ndarray, row: np.ndarray) -> None:
        self.idx.append(idx)
        self.kind.append(kind)
        self.row.append(row)


def _whole_entry_moves(geo: Geometry, ent: Entries, pmd: PmdStage, edits: _PmdEdits) -> None:
    """NORMAL_PMD and THP moves: the source entry goes to the destination slot as is; a
    file THP split leaves its source slot empty."""
    for m in (pmd.pmd_ok, pmd.thp_move):
        if m is None:
            continue
        e = where_set(m)
        if not len(e):
            continue
        rel = pmd.src_slot[e] - geo.s_lo
        edits.removed_src[rel] = True
        edits.add(pmd.dst_slot[e], ent.src_kind[rel],
                  np.where(ent.src_kind[rel] == PMD_LEAF, -1, ent.src_row[rel]).astype(_I32))
    if pmd.split is not None and not ent.anon:
        edits.removed_src[pmd.src_slot[where_set(pmd.split)] - geo.s_lo] = True


def _pud_moves(a: ArchProfile, pt: PageTables, geo: Geometry, pud: PudStage,
               edits: _PmdEdits, src_idx: np.ndarray, i_lo: int, i_hi: int) -> np.ndarray:
    """NORMAL_PUD moves: every PMD entry under a moved PUD slot goes to the destination PUD
    slot. Returns which source entries (of ``src_idx``) moved."""
    k_pp = a.pud_shift - a.pmd_shift
    seg_src_pud = geo.seg_start >> a.pud_shift
    seg_dst_pud = (geo.seg_start + geo.delta) >> a.pud_shift
    moved_p = seg_src_pud[pud.pud_ok]
    if not len(moved_p):
        return np.zeros(len(src_idx), bool)
    # entries under one PUD slot are contiguous in the sorted index: mark them by ranges
    b0 = src_idx.searchsorted(moved_p << k_pp)
    b1 = src_idx.searchsorted((moved_p + 1) << k_pp)
    sh = (seg_dst_pud[pud.pud_ok] - moved_p) << k_pp
    step = np.zeros(len(src_idx) + 1, _I64)
    np.add.at(step, b0, sh + 1)
    np.add.at(step, b1, -(sh + 1))
    run = np.cumsum(step[:-1])
    moved = run != 0
    edits.add(src_idx[moved] + run[moved] - 1, pt.pmd_kind[i_lo:i_hi][moved],
              pt.pmd_mask[i_lo:i_hi][moved])
    return moved


def _moving_rows(a: ArchProfile, masks: MaskTable, geo: Geometry, ent: Entries,
                 pmd: PmdStage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per source slot: the bitmap that ``move_ptes`` moves (``em``, one spare slot past the
    end), the bitmap left behind (``rest``) and whether ``move_ptes`` walks it."""
    n_src = geo.s_hi - geo.s_lo + 1
    if pmd.all_pte:
        walked = ent.src_kind != PMD_NONE
    else:
        walked = np.zeros(n_src, bool)
        walked[pmd.src_slot[pmd.pte_idx] - geo.s_lo] = True
    em = np.zeros(n_src + 1, _I32)
    em[:-1] = np.where(walked, pmd.eff_row, 0)
    rest = np.zeros(n_src, _I32)  # interior walked slots end empty
    split_edge_slots(a, masks, pmd.eff_row, em, rest, geo, only=walked)
    return em, rest, walked


def _pte_destinations(a: ArchProfile, masks: MaskTable, geo: Geometry, ent: Entries,
                      pmd: PmdStage, em: np.ndarray, edits: _PmdEdits) -> None:
    """Destination bitmaps of the slots ``move_ptes`` writes, ORed into what was there."""
    p_dst = pmd.dst_slot[pmd.pte_idx]
    touched = p_dst[firsts(p_dst)]
    off = ((-geo.delta) % a.pmd_size) >> a.page_shift
    # source slot whose bits land at the bottom of each destination slot
    sa = (((touched << a.pmd_shift) - geo.delta) >> a.pmd_shift) - geo.s_lo
    ra = em[clipped(sa, 0, len(em) - 1)] * ((sa >= 0) & (sa < len(em)))
    if off:
        sb = sa + 1
        rb = em[clipped(sb, 0, len(em) - 1)] * ((sb >= 0) & (sb < len(em)))
    else:
        rb = np.zeros_like(ra)
    key = ra.astype(_I64) * (masks.n + 1) + rb
    run = firsts(key)
    run_id = np.cumsum(run) - 1
    rk = key[run]
    if len(rk) > 64:
        uk, inv = np.unique(rk, return_inverse=True)
    else:
        uk, inv = rk, np.arange(len(rk))
    ua, ub = uk // (masks.n + 1), uk % (masks.n + 1)
    if off and len(uk) <= FEW_IDS:
        # a few distinct pairs: the shifted bitmaps on Python ints (what the word shifts give)
        ptrs = a.ptrs_per_pte
        full = (1 << ptrs) - 1
        ints = [(masks.row_int(x) >> off | (masks.row_int(y) << (ptrs - off))) & full
                for x, y in zip(ua.tolist(), ub.tolist())]
        urow = masks.add_rows(np.frombuffer(b"".join(m.to_bytes(ptrs // 8, "little") for m in ints),
                                            dtype="<u8").reshape(len(ints), -1))
        urow[[not m for m in ints]] = 0
    elif off:
        words = pair_window(masks.materialise()[0], ua, ub, off)
        urow = masks.add_rows(words)
        urow[~words.any(axis=1)] = 0
    else:
        urow = ua.astype(_I32)  # aligned moves: the combination is just a source row
    dst_row = urow[inv][run_id]
    if ent.dst_any:
        had = where_set(ent.dst_kind[touched - geo.d_lo] == PMD_TABLE)
        if len(had):
            old_rows = ent.dst_row[touched[had] - geo.d_lo]
            dst_row = dst_row.copy()
            dst_row[had] = masks.add_rows(masks.rows(old_rows) | masks.rows(dst_row[had]))
    edits.add(touched, filled(len(touched), PMD_TABLE, _I8), dst_row.astype(_I32))


def _splice(pt: PageTables, geo: Geometry, keep: np.ndarray, pmd_kind: np.ndarray,
            pmd_row: np.ndarray, edits: _PmdEdits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The PMD arrays with ``keep``-ed old entries and the new destination entries."""
    if edits.idx:
        ni, nk, nr = (np.concatenate(x) for x in (edits.idx, edits.kind, edits.row))
        if len(edits.idx) > 1:
            o = np.argsort(ni, kind="stable")
            ni, nk, nr = ni[o], nk[o], nr[o]
        # existing destination entries are replaced by the new ones
        j0, j1 = pt.pmd_idx.searchsorted((geo.d_lo, geo.d_hi + 1)).tolist()
        if j1 > j0:
            keep[j0:j1] &= ~np.isin(pt.pmd_idx[j0:j1], ni)
    else:
        ni, nk, nr = np.empty(0, _I64), np.empty(0, _I8), np.empty(0, _I32)
    if not all_set(keep):
        base_idx, base_kind, base_row = pt.pmd_idx[keep], pmd_kind[keep], pmd_row[keep]
    else:
        base_idx, base_kind, base_row = pt.pmd_idx, pmd_kind, pmd_row
    if not len(ni):
        return base_idx, base_kind, base_row
    at = base_idx.searchsorted(ni)
    if at[0] == at[-1]:  # one block between two base entries: splice, no scatter
        k = int(at[0])
        return (np.concatenate([base_idx[:k], ni, base_idx[k:]]),
                np.concatenate([base_kind[:k], nk, base_kind[k:]]),
                np.concatenate([base_row[:k], nr, base_row[k:]]))
    return tuple(insert_sorted((base_idx, base_kind, base_row), at, (ni, nk, nr)))


def apply_move(t: Target, pt: PageTables, masks: MaskTable, geo: Geometry, ent: Entries,
               pud: PudStage, pmd: PmdStage, up: UpperAllocs) -> PageTables:
    """The page tables after a move of any shape the fast path takes."""
    a = t.arch
    k_pp = a.pud_shift - a.pmd_shift
    edits = _PmdEdits(geo.s_hi - geo.s_lo + 1)
    _whole_entry_moves(geo, ent, pmd, edits)
    i_lo, i_hi = pt.pmd_idx.searchsorted((geo.s_lo, geo.s_hi + 1)).tolist()
    src_idx = pt.pmd_idx[i_lo:i_hi]
    pud_moved = _pud_moves(a, pt, geo, pud, edits, src_idx, i_lo, i_hi)
    em, rest, walked = _moving_rows(a, masks, geo, ent, pmd)
    # source entries: walked slots keep what move_ptes left behind
    walked_p = np.zeros(geo.src_pud_hi - geo.src_pud_lo + 1, bool)
    walked_p[(geo.seg_start[pud.stage_seg] >> a.pud_shift) - geo.src_pud_lo] = True
    rel = src_idx - geo.s_lo
    walked_e = walked_p[(src_idx >> k_pp) - geo.src_pud_lo] & walked[rel]
    new_src_kind, new_src_row = pt.pmd_kind[i_lo:i_hi], pt.pmd_mask[i_lo:i_hi]
    if any_set(walked_e):
        new_src_kind = np.where(walked_e, PMD_TABLE, new_src_kind).astype(_I8)
        new_src_row = np.where(walked_e, rest[rel], new_src_row).astype(_I32)
    if len(pmd.pte_idx):
        _pte_destinations(a, masks, geo, ent, pmd, em, edits)
    keep = filled(len(pt.pmd_idx), True, bool)
    keep[i_lo:i_hi] = ~(edits.removed_src[rel] | pud_moved)
    pmd_kind, pmd_row = pt.pmd_kind.copy(), pt.pmd_mask.copy()
    pmd_kind[i_lo:i_hi] = new_src_kind
    pmd_row[i_lo:i_hi] = new_src_row
    pmd_idx, pmd_kind, pmd_row = _splice(pt, geo, keep, pmd_kind, pmd_row, edits)
    seg_dst_pud = (geo.seg_start + geo.delta) >> a.pud_shift
    pud_idx, pud_kind = _with_pud_tables(
        pt, set(pud.alloc_pmd_q.tolist()) | set(seg_dst_pud[pud.pud_ok].tolist()),
        set((geo.seg_start[pud.pud_ok] >> a.pud_shift).tolist()))
    tops = pt.pud_tables | frozenset(up.new_tops) if up.new_tops else pt.pud_tables
    all_masks, pop = masks.materialise()
    return PageTables(a, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_row, all_masks, pop)
