"""The regular move of a few PUD segments in closed form, on Python integers.

A *regular* move (:func:`perfsim.planner.fast._is_regular`: every source PUD and PMD entry
a PTE table, nothing mapped at the destination, the two ranges not mutually PMD aligned or
no PMD entry allowed to move) is every extent one ``move_ptes`` into an empty destination.
Its extents are two arithmetic progressions of period PMD_SIZE merged (the source PMD
boundaries and the shifted destination ones), so past the first extents they repeat, one
pair per source PMD; with a fully populated interior so do the rows, and
:class:`~perfsim.planner.fast_rows.RegularRows` stores them as a
:class:`~perfsim.planner.steps.PeriodicBlock`. This module computes that same plan and the
same page tables without an array over the extents or the PMD slots: the few rows that are
not repeats (three at the head, four or five at the tail, the one period) come from the
closed form of the progressions, and the per-slot work is on the handful of edge slots.

Every kernel decision is the function the array path and the reference call, evaluated on
Python ints: ``move_ptes_flushes``, ``move_ptes_ptl_count``, ``pmd_alloc``,
``alloc_new_pud``, ``mremap_folio_pte_batch`` with ``PteBatching.window_in_table``, the
TLB policy through ``flush_lookup``. :func:`plan_regular_closed` returns None wherever its
shape does not hold (many PUD segments, a partly populated interior, a destination entry,
an injected allocation failure, ...): :func:`perfsim.planner.fast.plan_move` then runs the
array path, which decides (and declines) exactly as before.
``tests/test_t13_big_closed.py`` holds this path to the array path and to the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from perfsim.mm.pagetable import PMD_TABLE, PUD_LEAF, PUD_NONE, PUD_TABLE, PageTables, range_mask
from perfsim.planner import steps as S
from perfsim.planner.batch import mremap_folio_pte_batch
from perfsim.planner.fast_state import _with_pud_tables
from perfsim.planner.pgtable_move import (
    MoveGates,
    alloc_new_pud,
    move_ptes_flushes,
    move_ptes_ptl_count,
    pmd_alloc,
)
from perfsim.planner.tlb import flush_lookup
from perfsim.profiles import Target

#: Above this many PUD segments (a move of more than about 32 GiB on x86-64) the array path
#: is used: the per-segment work here is a Python step per segment.
MAX_SEGMENTS = 64

#: The dense rows before and after the periodic run (as :class:`RegularRows`).
HEAD, TAIL = 3, 4

_NAMES = S.ADDR_COLUMNS + S.INT_COLUMNS
_WIDE = tuple(n for n in _NAMES if S._DTYPES.get(n, np.int32) == np.int64)
_NARROW = tuple(n for n in _NAMES if S._DTYPES.get(n, np.int32) != np.int64)
_COL = {n: j for j, n in enumerate(_NAMES)}
_WIDE_J = tuple(_COL[n] for n in _WIDE)
_NARROW_J = tuple(_COL[n] for n in _NARROW)


@dataclass(frozen=True)
class Progressions:
    """The boundaries of a move's PMD-level extents in closed form.

    ``bound(0)`` is the move's start, ``bound(n_ext)`` its end; in between, the merged
    progressions ``c0, c1, c0 + P, c1 + P, ...`` (one progression ``c0 + jP`` when the two
    coincide), which is :func:`perfsim.planner.bitmaps.interleave` of the source PMD
    boundaries and the shifted destination ones."""

    start: int
    end: int
    c0: int
    c1: int
    period: int
    n_inner: int
    two: bool

    @classmethod
    def of(cls, old_addr: int, new_addr: int, old_end: int, pmd_size: int) -> Progressions:
        delta = new_addr - old_addr
        a0 = old_addr - old_addr % pmd_size + pmd_size
        b0 = new_addr - new_addr % pmd_size + pmd_size - delta
        two = (a0 - b0) % pmd_size != 0
        c0, c1 = (min(a0, b0), max(a0, b0)) if two else (a0, a0)
        n = len(range(c0, old_end, pmd_size)) + (len(range(c1, old_end, pmd_size)) if two else 0)
        return cls(old_addr, old_end, c0, c1, pmd_size, n, two)

    @property
    def n_ext(self) -> int:
        return self.n_inner + 1

    def bound(self, i: int) -> int:
        if i == 0:
            return self.start
        if i > self.n_inner:
            return self.end
        j = i - 1
        if not self.two:
            return self.c0 + j * self.period
        return (self.c1 if j & 1 else self.c0) + (j >> 1) * self.period

    def index(self, v: int) -> int:
        """The ``i`` with ``bound(i) == v`` (``v`` one of the boundaries)."""
        if v == self.start:
            return 0
        if v == self.end:
            return self.n_inner + 1
        if not self.two:
            return (v - self.c0) // self.period + 1
        if (v - self.c0) % self.period == 0:
            return 2 * ((v - self.c0) // self.period) + 1
        return 2 * ((v - self.c1) // self.period) + 2


@lru_cache(maxsize=64)
def _flush_lists(target: Target, stride_shift: int, cpus: int, lazy_cpus: int,
                 max_pages: int) -> tuple[list[int], list[int], list[int]]:
    """:func:`~perfsim.planner.tlb.flush_lookup`'s table as Python lists."""
    f = flush_lookup(target, stride_shift, cpus, lazy_cpus, max_pages)
    return f.full.tolist(), f.pages.tolist(), f.ipis.tolist()


def _words(a, ints: list[int]) -> np.ndarray:
    """Bitmap rows (uint64 words, little-endian) of the Python ints ``ints``."""
    w = a.ptrs_per_pte // 64
    buf = b"".join(m.to_bytes(w * 8, "little") for m in ints)
    return np.frombuffer(buf, dtype="<u8").astype(np.uint64).reshape(-1, w)


class _Rows:
    """The bitmap rows the move reads (as ints) and the rows it adds (deduplicated)."""

    def __init__(self, pt: PageTables):
        self.pt = pt
        self.ints: dict[int, int] = {}
        self.added: list[int] = []
        self.ids: dict[int, int] = {0: 0}

    def int_of(self, row: int) -> int:
        m = self.ints.get(row)
        if m is None:
            r = self.pt.masks[row]
            m = self.ints[row] = int.from_bytes(r.astype("<u8").tobytes(), "little")
        return m

    def id_of(self, m: int, full_row: int | None = None) -> int:
        """A row id holding bitmap ``m``: 0 for the empty table, ``full_row`` (an existing
        all-ones row) for a full one, else a row added once per distinct bitmap."""
        r = self.ids.get(m)
        if r is None:
            if full_row is not None and m == (1 << self.pt.arch.ptrs_per_pte) - 1:
                r = full_row
            else:
                r = len(self.pt.masks) + len(self.added)
                self.added.append(m)
            self.ids[m] = r
        return r


def plan_regular_closed(t: Target, pt: PageTables, pmc, gates: MoveGates, phase: int,
                        cpus: int, lazy_cpus: int,
                        fail_alloc_at: int | None) -> tuple[S.Steps, PageTables] | None:
    """The plan and page tables of a regular, fully populated, periodic move of at most
    :data:`MAX_SEGMENTS` PUD segments; None when the move is not of that shape."""
    if fail_alloc_at is not None:
        return None
    a = t.arch
    ps, ms, us, ptrs = a.page_shift, a.pmd_shift, a.pud_shift, a.ptrs_per_pte
    pmd_size, pud_size = a.pmd_size, a.pud_size
    o0, n0, oe = pmc.old_addr, pmc.new_addr, pmc.old_end
    length = oe - o0
    if length <= 0:
        return None
    delta = n0 - o0
    s_lo, s_hi = o0 >> ms, (oe - 1) >> ms
    d_lo, d_hi = n0 >> ms, (n0 + length - 1) >> ms
    if not (s_hi < d_lo or d_hi < s_lo):
        return None
    # _is_regular: no extent can be a NORMAL_PMD attempt, no full PUD segment may move
    if not ((delta % pmd_size != 0) or not t.have_move_pmd
            or -(-o0 // pmd_size) * pmd_size + pmd_size > oe):
        return None
    ra = range(o0 - o0 % pud_size + pud_size, oe, pud_size)
    rb = range(n0 - n0 % pud_size + pud_size - delta, oe, pud_size)
    if len(ra) + len(rb) >= MAX_SEGMENTS:
        return None
    ub = sorted(set(ra) | set(rb))
    seg_start = [o0, *ub]
    seg_end = [*ub, oe]
    if t.have_move_pud and any(e - s == pud_size for s, e in zip(seg_start, seg_end)):
        return None
    # PUD entries: every source one a PMD table (under a PUD table), no destination leaf
    p_lo, p_hi = o0 >> us, (oe - 1) >> us
    q_lo, q_hi = n0 >> us, (n0 + length - 1) >> us
    k0, k1, k2, k3 = pt.pud_idx.searchsorted((p_lo, p_hi + 1, q_lo, q_hi + 1)).tolist()
    src_pud = dict(zip(pt.pud_idx[k0:k1].tolist(), pt.pud_kind[k0:k1].tolist()))
    dst_pud = dict(zip(pt.pud_idx[k2:k3].tolist(), pt.pud_kind[k2:k3].tolist()))
    top_shift = a.p4d_shift - us
    for p in range(p_lo, p_hi + 1):
        if src_pud.get(p, PUD_NONE) != PUD_TABLE or (
                not a.pud_folded and (p >> top_shift) not in pt.pud_tables):
            return None
    if PUD_LEAF in dst_pud.values():
        return None
    # PMD entries: every source slot a PTE table, no destination entry
    i0, i1, j0, j1 = pt.pmd_idx.searchsorted((s_lo, s_hi + 1, d_lo, d_hi + 1)).tolist()
    n_src, n_dst = s_hi - s_lo + 1, d_hi - d_lo + 1
    if j1 > j0 or i1 - i0 != n_src:
        return None
    if not len(pt.mask_pop) or pt.mask_pop[0] != 0:
        return None  # MaskTable's precondition: row 0 is the empty bitmap
    if np.count_nonzero(pt.pmd_kind[i0:i1] != PMD_TABLE):
        return None
    src_row = pt.pmd_mask[i0:i1]
    # a fully populated interior (RegularCounts.inner_full)
    if n_src > 2 and int(pt.mask_pop[src_row[1:-1]].min()) != ptrs:
        return None
    ext = Progressions.of(o0, n0, oe, pmd_size)
    n_ext = ext.n_ext
    if n_ext < HEAD + TAIL + 8:
        return None
    k = 1 if ext.bound(HEAD + 1) - ext.bound(HEAD) == pmd_size else 2
    if ext.bound(HEAD + k) - ext.bound(HEAD) != pmd_size:
        return None
    batching = gates.batching
    if batching.batches and ptrs % batching.folio_pages:
        return None
    rows = _Rows(pt)
    edge = {0: int(src_row[0]), n_src - 1: int(src_row[-1])}
    full_int = (1 << ptrs) - 1

    def content(rel: int) -> int:
        """The bitmap of source slot ``s_lo + rel``: an edge's, else full (the interior)."""
        return rows.int_of(edge[rel]) if rel in edge else full_int

    # present PTEs of the extents touching the edge slots; interior extents map every page
    exact = {}
    for i in sorted({0, 1, n_ext - 2, n_ext - 1}):
        st0 = ext.bound(i)
        n = (ext.bound(i + 1) - st0) >> ps
        lo = (st0 >> ps) & (ptrs - 1)
        m = content((st0 >> ms) - s_lo)
        exact[i] = (m >> lo & ((1 << n) - 1)).bit_count()
    if not all(bool(move_ptes_flushes(v)) for v in exact.values()):
        return None  # RegularRows writes such a move as dense rows
    # alloc_new_pmd / alloc_new_pud: at the first step of a segment into a new slot
    seg_first = [ext.index(s) for s in seg_start]
    alloc_pmd_at, alloc_pmd_q = [], []
    prev = None
    for g, s in enumerate(seg_start):
        q = (s + delta) >> us
        if q != prev and pmd_alloc(dst_pud.get(q, PUD_NONE)):
            alloc_pmd_at.append(seg_first[g])
            alloc_pmd_q.append(q)
        prev = q
    up_at, up_p4d, up_pud, new_tops = [], [], [], []
    if not a.pud_folded:
        have = set(pt.pud_tables)
        prev = None
        for g, s in enumerate(seg_start):
            top = (s + delta) >> a.p4d_shift
            if top == prev:
                continue
            prev = top
            p4d, pud = alloc_new_pud(a, have, top << a.p4d_shift)
            if pud:
                have.add(top)
                new_tops.append(top)
            if p4d or pud:
                up_at.append(seg_first[g])
                up_p4d.append(p4d)
                up_pud.append(pud)
    # the rows
    f_full, f_pages, f_ipis = _flush_lists(t, ps, cpus, lazy_cpus, ptrs)
    ptl = int(move_ptes_ptl_count(s_lo, d_lo))  # source and destination tables differ
    rmap = len(gates.huge_locks)
    move_first = (o0 >> ps) & (ptrs - 1)
    alloc_pmd_set = set(alloc_pmd_at)
    ups = dict(zip(up_at, zip(up_p4d, up_pud)))

    def row(i: int, allocs: bool) -> tuple:
        st0 = ext.bound(i)
        ln = ext.bound(i + 1) - st0
        pages = ln >> ps
        new = st0 + delta
        ptes = exact.get(i, pages)
        if batching.batches:
            slot = st0 >> ms
            lo = (st0 >> ps) & (ptrs - 1)
            m = content(slot - s_lo)
            clr = move_first if slot == s_lo else 0
            window = batching.window_in_table(slot << (ms - ps), ptrs)
            batches = mremap_folio_pte_batch(batching, m & ~range_mask(clr, lo), lo, pages, window)
        else:
            batches = ptes
        alloc_pte = 1 if (new & (pmd_size - 1)) == 0 or i == 0 else 0
        p4d, pud = ups.get(i, (0, 0)) if allocs else (0, 0)
        alloc_pmd = 1 if allocs and i in alloc_pmd_set else 0
        return (st0, new, phase, S.K_PTE_MOVE, ln, ptes, pages, batches, p4d, pud, alloc_pmd,
                alloc_pte, 0, 1, f_full[pages], f_pages[pages], f_ipis[pages], rmap, ptl, 0)

    mid = (n_ext - HEAD - TAIL) // k * k
    t0, t1 = HEAD, HEAD + mid
    spans = ((0, t0, True), (t0, t0 + k, False), (t1, n_ext, True))
    table = [row(i, allocs) for lo, hi, allocs in spans for i in range(lo, hi)]
    wide_cols, narrow_cols = _columns(table)
    parts, at = [], 0
    lock_sets = (gates.huge_locks,)
    for lo, hi, _ in spans:
        n = hi - lo
        cols = {}
        for name in _NAMES:
            src = wide_cols if name in _WIDE_SET else narrow_cols
            cols[name] = src[_ROW_OF[name], at:at + n]
        parts.append(S.Steps(cols, lock_sets, np.zeros(n, np.int32)))
        at += n
    over = {}
    pmd_mid = [i - t0 for i in alloc_pmd_at if t0 <= i < t1]
    if pmd_mid:
        over["alloc_pmd"] = (np.array(pmd_mid, np.int64), np.ones(len(pmd_mid), np.int32))
    up_mid = [(i - t0, ups[i]) for i in up_at if t0 <= i < t1]
    if up_mid:
        pos = np.array([p for p, _ in up_mid], np.int64)
        over["alloc_p4d"] = (pos, np.array([v[0] for _, v in up_mid], np.int32))
        over["alloc_pud"] = (pos, np.array([v[1] for _, v in up_mid], np.int32))
    periodic = S.PeriodicBlock(parts[1], mid // k, pmd_size, pmd_size, over)
    block = S.Steps(parts=[parts[0], periodic, parts[2]])
    return block, _after(t, pt, rows, ext, delta, edge, (i0, i1, j0), (n_src, n_dst),
                         alloc_pmd_q, new_tops)


_WIDE_SET = frozenset(_WIDE)
_ROW_OF = {**{n: r for r, n in enumerate(_WIDE)}, **{n: r for r, n in enumerate(_NARROW)}}


def _columns(table: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``table`` (tuples in column order) as two (columns x rows) arrays, the
    int64 columns and the int32 ones; each column is a contiguous row of one of them."""
    by_col = list(zip(*table))
    return (np.array([by_col[j] for j in _WIDE_J], np.int64),
            np.array([by_col[j] for j in _NARROW_J], np.int32))


def _after(t: Target, pt: PageTables, rows: _Rows, ext: Progressions, delta: int,
           edge: dict[int, int], at: tuple[int, int, int], sizes: tuple[int, int],
           alloc_pmd_q: list[int], new_tops: list[int]) -> PageTables:
    """The page tables after the move: source slots emptied (an edge slot keeps what lies
    outside the range), every destination slot a PTE table holding the source bits shifted
    by the move's in-PMD page offset (as :func:`perfsim.planner.fast_state.apply_regular_move`)."""
    a = t.arch
    ps, ms, ptrs = a.page_shift, a.pmd_shift, a.ptrs_per_pte
    i0, i1, j0 = at
    n_src, n_dst = sizes
    s_lo, d_lo = ext.start >> ms, (ext.start + delta) >> ms
    full_int = (1 << ptrs) - 1
    full_ids = np.flatnonzero(pt.mask_pop == ptrs)
    full_row = int(full_ids[0]) if len(full_ids) else None
    # the moving part (em) and the part left behind (rest) of the two edge slots
    em: dict[int, int] = {}
    src_new = np.zeros(n_src, np.int32)
    for rel, row in edge.items():
        base = (s_lo + rel) << ms
        lo = (max(ext.start, base) - base) >> ps
        hi = (min(ext.end, base + a.pmd_size) - base) >> ps
        m = rows.int_of(row)
        if lo == 0 and hi == ptrs:
            em[rel] = m
            continue
        em[rel] = m & range_mask(lo, hi)
        src_new[rel] = rows.id_of(m & ~range_mask(lo, hi), full_row)

    def em_at(rel: int) -> int:
        if rel < 0 or rel >= n_src:
            return 0
        return em.get(rel, full_int)  # the interior is fully populated

    off = ((-delta) % a.pmd_size) >> ps
    sa0 = (((d_lo << ms) - delta) >> ms) - s_lo  # source slot under the first one's bottom
    dst_rows = np.full(n_dst, rows.id_of(full_int, full_row), np.int32)
    ends = sorted({j for j in (*range(0, 1 - sa0), *range(n_src - 2 - sa0, n_dst))
                   if 0 <= j < n_dst})
    ids = []
    for j in ends:
        lo_bits = em_at(sa0 + j)
        m = ((lo_bits >> off) | ((em_at(sa0 + j + 1) << (ptrs - off)) & full_int)) if off \
            else lo_bits
        ids.append(rows.id_of(m, full_row))
    dst_rows[ends] = ids
    # the PMD arrays: source rows replaced, destination entries inserted at j0
    mask = pt.pmd_mask
    d_idx = np.arange(d_lo, d_lo + n_dst, dtype=np.int64)
    d_kind = np.full(n_dst, PMD_TABLE, np.int8)
    if j0 >= i1:
        mask_parts = [mask[:i0], src_new, mask[i1:j0], dst_rows, mask[j0:]]
    else:
        mask_parts = [mask[:j0], dst_rows, mask[j0:i0], src_new, mask[i1:]]
    pmd_idx = np.concatenate([pt.pmd_idx[:j0], d_idx, pt.pmd_idx[j0:]])
    pmd_kind = np.concatenate([pt.pmd_kind[:j0], d_kind, pt.pmd_kind[j0:]])
    pmd_mask = np.concatenate(mask_parts)
    pud_idx, pud_kind = _with_pud_tables(pt, set(alloc_pmd_q), set())
    tops = pt.pud_tables | frozenset(new_tops) if new_tops else pt.pud_tables
    if rows.added:
        masks = np.concatenate([pt.masks, _words(a, rows.added)])
        pop = np.concatenate([pt.mask_pop,
                              np.array([m.bit_count() for m in rows.added], np.int32)])
    else:
        masks, pop = pt.masks, pt.mask_pop
    return PageTables(a, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_mask, masks, pop)
