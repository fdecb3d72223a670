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

import sys
from bisect import bisect_left
from dataclasses import dataclass, fields

import numpy as np

from perfsim.mm.pagetable import PMD_TABLE, PUD_LEAF, PUD_NONE, PUD_TABLE, PageTables, range_mask
from perfsim.planner import steps as S
from perfsim.planner.batch import mremap_folio_pte_batch
from perfsim.planner.fast_state import _with_pud_tables
from perfsim.planner.frozen import direct_init
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

#: A state with at most this many PUD entries has them read by the shape as two lists and
#: searched by bisection (fewer numpy calls than a search and slices of its arrays).
_FEW_PUDS = 64

#: The dense rows before and after the periodic run (as :class:`RegularRows`).
HEAD, TAIL = 3, 4

_NO_UP = (0, 0)

#: Read-only int32 arrays of ones by length: the values of a block's PMD-table allocations
#: (at most one per PUD segment, so at most MAX_SEGMENTS entries).
_ONES: dict[int, np.ndarray] = {}



class Progressions:
    """The boundaries of a move's PMD-level extents in closed form.

    ``bound(0)`` is the move's start, ``bound(n_ext)`` its end; in between, the merged
    progressions ``c0, c1, c0 + P, c1 + P, ...`` (one progression ``c0 + jP`` when the two
    coincide), which is :func:`perfsim.planner.bitmaps.interleave` of the source PMD
    boundaries and the shifted destination ones."""

    __slots__ = ("start", "end", "c0", "c1", "period", "n_inner", "two")

    def __init__(self, start: int, end: int, c0: int, c1: int, period: int, n_inner: int,
                 two: bool):
        self.start, self.end, self.c0, self.c1 = start, end, c0, c1
        self.period, self.n_inner, self.two = period, n_inner, two

    @classmethod
    def of(cls, old_addr: int, new_addr: int, old_end: int, pmd_size: int) -> Progressions:
        delta = new_addr - old_addr
        a0 = old_addr - old_addr % pmd_size + pmd_size
        b0 = new_addr - new_addr % pmd_size + pmd_size - delta
        out = cls.__new__(cls)  # (the fields as __init__ sets them, without calling it)
        out.start, out.end, out.period = old_addr, old_end, pmd_size
        if (a0 - b0) % pmd_size:
            out.two = True
            out.c0, out.c1 = c0, c1 = (a0, b0) if a0 < b0 else (b0, a0)
            out.n_inner = len(range(c0, old_end, pmd_size)) + len(range(c1, old_end, pmd_size))
        else:
            out.two = False
            out.c0 = out.c1 = a0
            out.n_inner = len(range(a0, old_end, pmd_size))
        return out

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

    def bounds(self, lo: int, hi: int) -> list[int]:
        """``[bound(i) for i in range(lo, hi + 1)]``."""
        a, b = max(lo, 1), min(hi, self.n_inner)  # the inner bounds, from the progressions
        c0, p = self.c0, self.period
        if a > b:
            inner = []
        elif not self.two:
            inner = list(range(c0 + (a - 1) * p, c0 + b * p, p))
        else:
            c1 = self.c1
            inner = [(c1 if j & 1 else c0) + (j >> 1) * p for j in range(a - 1, b)]
        head = [self.start] if lo == 0 else []
        tail = [self.end] * (hi - max(b, lo - 1)) if hi > self.n_inner else []
        return head + inner + tail if head or tail else inner

    def ends(self, hi: int, lo: int) -> tuple[list[int], list[int]]:
        """``(bounds(0, hi), bounds(lo, n_ext))`` (``hi <= n_inner``, ``1 <= lo``): the
        first bounds and the last ones, in one call."""
        c0, p, n = self.c0, self.period, self.n_inner
        if self.two:
            # inner bound j is c0 + (j >> 1) * p (j even) or c1 + (j >> 1) * p (j odd): from
            # any j, every other bound is the one two before plus p, so each list is two
            # ranges interleaved (by slice assignment: no Python step per bound)
            c1 = self.c1
            head = [self.start] * (hi + 1)
            head[1::2] = range(c0, c0 + ((hi + 1) >> 1) * p, p)
            head[2::2] = range(c1, c1 + (hi >> 1) * p, p)
            j0, m = lo - 1, n - lo + 1  # the tail's inner bounds: j0 .. n - 1
            tail = [self.end] * (m + 1)
            a = (c1 if j0 & 1 else c0) + (j0 >> 1) * p
            tail[0:m:2] = range(a, a + ((m + 1) >> 1) * p, p)
            b = (c0 if j0 & 1 else c1) + ((j0 + 1) >> 1) * p
            tail[1:m:2] = range(b, b + (m >> 1) * p, p)
            return head, tail
        head = [self.start, *range(c0, c0 + hi * p, p)]
        tail = [*range(c0 + (lo - 1) * p, c0 + n * p, p), self.end]
        return head, tail

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


#: :func:`_flush_lists` memo: (id(target), stride shift, cpus, lazy cpus, max pages) ->
#: (target, the three lists). The target is kept, so its id names no other while it is here.
_FLUSH_LISTS: dict[tuple, tuple] = {}


def _flush_lists(target: Target, stride_shift: int, cpus: int, lazy_cpus: int,
                 max_pages: int) -> tuple[list[int], list[int], list[int]]:
    """:func:`~perfsim.planner.tlb.flush_lookup`'s table as Python lists, memoised by the
    target's identity (hashing a :class:`Target` hashes every field of its profiles)."""
    key = (id(target), stride_shift, cpus, lazy_cpus, max_pages)
    got = _FLUSH_LISTS.get(key)
    if got is None or got[0] is not target:
        if len(_FLUSH_LISTS) >= 64:
            _FLUSH_LISTS.clear()
        f = flush_lookup(target, stride_shift, cpus, lazy_cpus, max_pages)
        got = _FLUSH_LISTS[key] = (target, f.full.tolist(), f.pages.tolist(), f.ipis.tolist())
    return got[1], got[2], got[3]


#: :func:`_constants` memo: id(target) -> (target, its constants). The target is kept, so
#: its id names no other while it is here.
_CONSTANTS: dict[int, tuple] = {}


def _constants(t: Target) -> tuple:
    """``(page shift, PMD shift, PUD shift, PTEs per table, PMD size, PUD size, P4D shift,
    PUD folded, have_move_pmd, have_move_pud, a full bitmap, PMD slots per PUD slot and PUD
    slots per top-level slot as shifts)`` of ``t`` (immutable profiles; several are
    properties), once per target."""
    got = _CONSTANTS.get(id(t))
    if got is None or got[0] is not t:
        if len(_CONSTANTS) >= 64:
            _CONSTANTS.clear()
        a = t.arch
        got = _CONSTANTS[id(t)] = (t, (a.page_shift, a.pmd_shift, a.pud_shift, a.ptrs_per_pte,
                                       a.pmd_size, a.pud_size, a.p4d_shift, a.pud_folded,
                                       t.have_move_pmd, t.have_move_pud,
                                       (1 << a.ptrs_per_pte) - 1, a.pud_shift - a.pmd_shift,
                                       a.p4d_shift - a.pud_shift))
    return got[1]


def _all_equal(x: np.ndarray, value: int) -> bool:
    """Every element of the 1-D array ``x`` is ``value`` (compared as the bytes of ``x``'s
    dtype: one C call for the array instead of a comparison and a count)."""
    dt = x.dtype
    one = _TABLE_KIND if value == PMD_TABLE and (dt is _INT8 or dt == _INT8) \
        else dt.type(value).tobytes()
    return x.tobytes() == one * len(x)


_TABLE_KIND = np.int8(PMD_TABLE).tobytes()
_INT8 = np.dtype(np.int8)
_I32 = np.dtype(np.int32)
_U8 = np.dtype("<u8")
_ORDER = sys.byteorder  # (the byte order of a native dtype's bytes)

#: A state with at most this many bitmap rows has the edge slots' rows read from one copy
#: of the whole table's bytes.
_FEW_MASKS = 64


def _all_first(x: np.ndarray) -> bool:
    """Every element of the non-empty 1-D array ``x`` is its first (``_all_equal(x,
    x[0])``, without making ``x[0]``'s bytes from a scalar)."""
    return x.tobytes() == x[:1].tobytes() * len(x)


def _words(a, ints: list[int]) -> np.ndarray:
    """Bitmap rows (uint64 words, little-endian) of the Python ints ``ints``."""
    w = a.ptrs_per_pte // 64
    buf = b"".join(m.to_bytes(w * 8, "little") for m in ints)
    return np.frombuffer(buf, dtype="<u8").reshape(-1, w)


class _Bitmaps:
    """The bitmap rows the move reads (as ints) and the rows it adds, one per distinct
    bitmap: the empty one is row 0, a full one the interior's row ``full_row`` (whose int
    is known: every PTE present)."""

    __slots__ = ("pt", "full_int", "ints", "added", "ids", "_le")

    def __init__(self, pt: PageTables, full_row: int, full_int: int) -> None:
        self.pt = pt
        self.full_int = full_int
        self.ints: dict[int, int] = {full_row: full_int}
        self.added: list[int] = []
        self.ids: dict[int, int] = {0: 0, full_int: full_row}
        self._le = None  # are the state's bitmap words little-endian uint64 (asked once)

    def int_of(self, row: int) -> int:
        m = self.ints.get(row)
        if m is None:
            masks = self.pt.masks
            le = self._le
            if le is None:
                dt = masks.dtype
                le = self._le = dt is _U8 or dt.str == "<u8"
            words = masks[row] if le else masks[row].astype("<u8")
            m = self.ints[row] = int.from_bytes(words.tobytes(), "little")
        return m

    def id_of(self, m: int) -> int:
        r = self.ids.get(m)
        if r is None:
            r = self.ids[m] = len(self.pt.masks) + len(self.added)
            self.added.append(m)
        return r


@direct_init
@dataclass
class _Shape:
    """What :func:`_regular_shape` found: the extents, where the source and destination
    entries sit in the PMD arrays (``i0:i1`` the source's, ``j0`` where the destination's
    go), the edge slots' bitmap rows, the present PTEs of the extents touching them
    (``exact``; every other extent maps all its pages), the period ``k`` (extents per
    source PMD) and the table allocations: ``alloc_pmd`` (extent -> destination PUD slot),
    ``ups`` (extent -> (P4D, PUD) pages) and the top-level slots gaining a PUD table.
    ``heads`` are the bounds of extents ``0 .. HEAD + 2``, ``tails`` those from ``t1``
    (where the dense tail starts, after ``mid`` periodic extents) to the end; ``consts``
    the target's :func:`_constants`.

    For the source's unmap (:func:`perfsim.planner.fast_unmap._unmap_pending`), what the
    shape read of the state before the move anyway: the PUD entries of PUD slots
    ``view[0] .. view[1] - 1`` (the top-level entries the source spans) as lists
    ``view_l``/``view_k`` with the PMD tables the move allocates (``pud_added``) among
    them, ``below``: for the PMD slot at each bound of the source's PUD entries, the PMD
    entries below it (a ``searchsorted`` of ``pmd_idx``), and ``left``: whether the move
    leaves a present PTE in a source slot (an edge slot's pages outside the range)."""

    ext: Progressions
    delta: int
    i0: int
    i1: int
    j0: int
    n_src: int
    n_dst: int
    edge: dict[int, int]
    bitmaps: _Bitmaps
    exact: dict[int, int]
    k: int
    alloc_pmd: dict[int, int]
    ups: dict[int, tuple[int, int]]
    new_tops: list[int]
    pud_added: list[int]
    heads: list[int]
    tails: list[int]
    t1: int
    mid: int
    view: tuple[int, int]
    view_l: list[int]
    view_k: list[int]
    below: dict[int, int]
    left: bool
    consts: tuple


def plan_regular_closed(t: Target, pt: PageTables, pmc, gates: MoveGates, phase: int,
                        cpus: int, lazy_cpus: int,
                        fail_alloc_at: int | None) -> tuple[S.Steps, PageTables] | None:
    """The plan and page tables of a regular, fully populated, periodic move of at most
    :data:`MAX_SEGMENTS` PUD segments; None when the move is not of that shape."""
    if fail_alloc_at is not None:
        return None  # the array path decides whether the injected failure hits
    sh = _regular_shape(t, pt, pmc, gates)
    if sh is None:
        return None
    moved = MovedTables.__new__(MovedTables)  # (what MovedTables(t, pt, sh) sets)
    moved.__dict__.update(arch=t.arch, pud_tables=(pt.pud_tables | frozenset(sh.new_tops)
                                                   if sh.new_tops else pt.pud_tables),
                          _make=lambda: _after(t, pt, sh), _view_before=pt, _view_shape=sh)
    return _block(t, sh, gates, phase, cpus, lazy_cpus), moved


def _regular_shape(t: Target, pt: PageTables, pmc, gates: MoveGates) -> _Shape | None:
    got = _CONSTANTS.get(id(t))
    consts = got[1] if got is not None and got[0] is t else _constants(t)
    (ps, ms, us, ptrs, pmd_size, pud_size, p4d_shift, folded, move_pmd, move_pud, full_int,
     k_pp, top_shift) = consts
    o0, n0, oe = pmc.old_addr, pmc.new_addr, pmc.old_end
    length = oe - o0
    if length <= 0:
        return None
    delta = n0 - o0
    s_lo, s_hi = o0 >> ms, (oe - 1) >> ms
    d_lo, d_hi = n0 >> ms, (n0 + length - 1) >> ms
    if s_hi >= d_lo and d_hi >= s_lo:
        return None
    # _is_regular: no extent can be a NORMAL_PMD attempt, no full PUD segment may move
    if not (delta % pmd_size or not move_pmd or -(-o0 // pmd_size) * pmd_size + pmd_size > oe):
        return None
    ra = range(o0 - o0 % pud_size + pud_size, oe, pud_size)
    rb = range(n0 - n0 % pud_size + pud_size - delta, oe, pud_size)
    if len(ra) + len(rb) >= MAX_SEGMENTS:
        return None
    ub = sorted({*ra, *rb})
    if move_pud:
        s = o0
        for e in (*ub, oe):
            if e - s == pud_size:
                return None
            s = e
    # PUD entries: every source one a PMD table (under a PUD table), no destination leaf.
    # Read at once with those of the top-level entries the source spans (the view).
    p_lo, p_hi = o0 >> us, (oe - 1) >> us
    q_lo, q_hi = n0 >> us, (n0 + length - 1) >> us
    if folded:
        v_lo, v_hi = p_lo, p_hi + 1
    else:
        v_lo, v_hi = p_lo >> top_shift << top_shift, ((p_hi >> top_shift) + 1) << top_shift
    pud_idx = pt.pud_idx
    if len(pud_idx) <= _FEW_PUDS:
        # a few entries: a list searched by bisection and the kinds by slot
        all_l, all_k = pud_idx.tolist(), pt.pud_kind.tolist()
        kind_of = dict(zip(all_l, all_k))
        k4, k5 = bisect_left(all_l, v_lo), bisect_left(all_l, v_hi)
        view_l, view_k = all_l[k4:k5], all_k[k4:k5]
    else:
        k0, k1, k2, k3, k4, k5 = pud_idx.searchsorted(
            (p_lo, p_hi + 1, q_lo, q_hi + 1, v_lo, v_hi)).tolist()
        view_l, view_k = pud_idx[k4:k5].tolist(), pt.pud_kind[k4:k5].tolist()
        # the source's and the destination's entries (one state: one kind per slot)
        kind_of = dict(zip(pud_idx[k2:k3].tolist(), pt.pud_kind[k2:k3].tolist()))
        kind_of.update(zip(view_l[k0 - k4:k1 - k4], view_k[k0 - k4:k1 - k4]))
    tops = pt.pud_tables
    for p in range(p_lo, p_hi + 1):
        if kind_of.get(p) != PUD_TABLE or (not folded and (p >> top_shift) not in tops):
            return None
    for q in range(q_lo, q_hi + 1):
        if kind_of.get(q) == PUD_LEAF:
            return None
    # PMD entries: every source slot a PTE table, no destination entry; with the entries
    # below each bound of the source's PUD entries (for the unmap)
    bnd = range(p_lo << k_pp, (p_hi + 2) << k_pp, 1 << k_pp)
    i0, i1, j0, j1, *below = pt.pmd_idx.searchsorted((s_lo, s_hi + 1, d_lo, d_hi + 1, *bnd)).tolist()
    n_src, n_dst = s_hi - s_lo + 1, d_hi - d_lo + 1
    if j1 > j0 or i1 - i0 != n_src or n_src < 3:
        return None
    pop = pt.mask_pop
    if pop.item(0) != 0:
        return None  # MaskTable's precondition: row 0 is the empty bitmap
    kinds = pt.pmd_kind[i0:i1]
    if not (kinds.tobytes() == _TABLE_KIND * n_src if kinds.dtype is _INT8
            else _all_equal(kinds, PMD_TABLE)):
        return None
    # a fully populated interior (RegularCounts.inner_full): one bitmap row throughout (a
    # full one), else every row's population read
    src_row = pt.pmd_mask[i0:i1]
    if src_row.dtype is _I32:  # (the rows' bytes: one C call, the rest on bytes)
        b = src_row.tobytes()
        e0, r, e1 = (int.from_bytes(b[:4], _ORDER, signed=True),
                     int.from_bytes(b[4:8], _ORDER, signed=True),
                     int.from_bytes(b[-4:], _ORDER, signed=True))
        one_row = b[4:-4] == b[4:8] * (n_src - 2)
    else:
        e0, r = src_row[:2].tolist()
        e1 = src_row.item(-1)
        one_row = _all_first(src_row[1:-1])
    if not (one_row and pop.item(r) == ptrs) and np.count_nonzero(pop[src_row[1:-1]] != ptrs):
        return None
    ext = Progressions.of(o0, n0, oe, pmd_size)
    n_ext = ext.n_inner + 1
    if n_ext < HEAD + TAIL + 8:
        return None
    k = 2 if ext.two else 1  # (extents per source PMD: the heads' checks below hold it)
    mid = (n_ext - HEAD - TAIL) // k * k
    t1 = HEAD + mid
    heads, tails = ext.ends(HEAD + 2, t1)
    if (1 if heads[HEAD + 1] - heads[HEAD] == pmd_size else 2) != k \
            or heads[HEAD + k] - heads[HEAD] != pmd_size:
        return None
    batching = gates.batching
    if batching.batches and ptrs % batching.folio_pages:
        return None
    # the edge slots' bitmaps (the interior's row r is full)
    masks = pt.masks
    if len(masks) <= _FEW_MASKS and masks.dtype is _U8:
        mb = masks.tobytes()
        w = len(mb) // len(masks)  # (bytes per row)
        m0 = int.from_bytes(mb[e0 * w:(e0 + 1) * w], "little")
        m1 = int.from_bytes(mb[e1 * w:(e1 + 1) * w], "little")
        bitmaps = _Bitmaps.__new__(_Bitmaps)  # (what __init__ sets, and the two rows read)
        bitmaps.pt, bitmaps.full_int, bitmaps.added, bitmaps._le = pt, full_int, [], True
        bitmaps.ints = {r: full_int, e0: m0, e1: m1}
        bitmaps.ids = {0: 0, full_int: r}
    else:
        bitmaps = _Bitmaps(pt, r, full_int)
        m0, m1 = bitmaps.int_of(e0), bitmaps.int_of(e1)
    # present PTEs of the extents touching the edge slots (the first two, the last two);
    # interior extents map every page
    exact = {}
    last = n_src - 1
    for i, st0, st1 in ((0, heads[0], heads[1]), (1, heads[1], heads[2]),
                        (n_ext - 2, tails[-3], tails[-2]), (n_ext - 1, tails[-2], tails[-1])):
        rel = (st0 >> ms) - s_lo
        if rel == 0 or rel == last:
            v = ((m0 if rel == 0 else m1) >> ((st0 >> ps) & (ptrs - 1))
                 & ((1 << ((st1 - st0) >> ps)) - 1)).bit_count()
        else:
            v = (st1 - st0) >> ps  # (a full bitmap: every page of the extent)
        exact[i] = v
        if not move_ptes_flushes(v):
            return None  # RegularRows writes such a move as dense rows
    # alloc_new_pmd / alloc_new_pud: at the first step of a segment into a new slot
    alloc_pmd: dict[int, int] = {}
    pud_added: list[int] = []  # (increasing: so are the segments' destination slots)
    seg_start = (o0, *ub)
    prev = None
    for s in seg_start:
        q = (s + delta) >> us
        if q != prev and pmd_alloc(kind_of.get(q, PUD_NONE)):
            alloc_pmd[0 if s == o0 else ext.index(s)] = q
            if q not in kind_of:  # (q is a destination slot: kind_of holds those)
                pud_added.append(q)
        prev = q
    ups: dict[int, tuple[int, int]] = {}
    new_tops: list[int] = []
    if not folded:
        have = tops
        prev = None
        for s in seg_start:
            top = (s + delta) >> p4d_shift
            if top == prev:
                continue
            prev = top
            p4d, pud = alloc_new_pud(t.arch, have, top << p4d_shift)
            if pud:
                have = {*have, top}
                new_tops.append(top)
            if p4d or pud:
                ups[0 if s == o0 else ext.index(s)] = (p4d, pud)
    # for the unmap of the source: the view's PUD entries with the PMD tables the move
    # allocated among them, and whether the move leaves a present PTE in an edge slot
    for q in pud_added:
        if v_lo <= q < v_hi:  # (a new entry: the state before has none at q)
            at = bisect_left(view_l, q)
            view_l.insert(at, q)
            view_k.insert(at, PUD_TABLE)
    # (the source spans at least three slots: the range covers the first slot from its
    # first page to the slot's end, the last from the slot's start to its last page)
    left = bool(m0 & ((1 << ((o0 - (s_lo << ms)) >> ps)) - 1)
                or m1 >> ((oe - (s_hi << ms)) >> ps))
    return _Shape(ext, delta, i0, i1, j0, n_src, n_dst, {0: e0, last: e1}, bitmaps, exact, k,
                  alloc_pmd, ups, new_tops, pud_added, heads, tails, t1, mid, (v_lo, v_hi),
                  view_l, view_k, dict(zip(bnd, below)), left, consts)


def _block(t: Target, sh: _Shape, gates: MoveGates, phase: int, cpus: int,
           lazy_cpus: int) -> S.Steps:
    """The rows, as :meth:`RegularRows.block` lays them out: ``HEAD`` dense rows, one
    period repeated (:class:`~perfsim.planner.steps.PeriodicBlock`, the table allocations
    inside it as overrides), the dense tail. Only the extents of ``special`` (the first,
    those touching an edge slot, those allocating a table) differ from the rule of the
    others: every page present, nothing allocated but the PTE table of an extent starting
    a destination PMD."""
    ps, ms, _, ptrs, pmd_size = sh.consts[:5]
    ext, delta, exact, k, t1 = sh.ext, sh.delta, sh.exact, sh.k, sh.t1
    s_lo = ext.start >> ms
    got = _FLUSH_LISTS.get((id(t), ps, cpus, lazy_cpus, ptrs))
    f_full, f_pages, f_ipis = got[1:] if got is not None and got[0] is t \
        else _flush_lists(t, ps, cpus, lazy_cpus, ptrs)
    ptl = int(move_ptes_ptl_count(s_lo, (ext.start + delta) >> ms))  # the tables differ
    locks = gates.huge_locks
    rmap = len(locks)
    batching = gates.batching
    batches_on = batching.batches
    t0 = HEAD
    heads = sh.heads
    ups, alloc_pmd = sh.ups, sh.alloc_pmd
    allocated = {*ups, *alloc_pmd}  # the extents allocating a table
    special = {0, *exact, *allocated}
    low = pmd_size - 1
    kind = S.K_PTE_MOVE
    head_rows, period_rows, tail_rows = [], [], []
    # the head, the period (its allocations are overrides), the tail: (first extent, bounds);
    # each row's flush and lock columns: one move_ptes flush of its pages, the locks
    for i, bounds, rows in ((0, heads[:t0 + 1], head_rows), (t0, heads[t0:t0 + k + 1], period_rows),
                            (t1, sh.tails, tail_rows)):
        allocs = i != t0
        add = rows.append
        st0 = bounds[0]
        for st1 in bounds[1:]:
            ln = st1 - st0
            pages = ln >> ps
            new = st0 + delta
            if i in special:
                ptes = exact.get(i, pages)
                batches = _batches(sh, batching, st0, pages) if batches_on else ptes
                if allocs and i in allocated:
                    p4d, pud = ups.get(i, _NO_UP)
                    add((st0, new, phase, kind, ln, ptes, pages, batches, p4d, pud,
                         1 if i in alloc_pmd else 0, 1 if (new & low) == 0 or i == 0 else 0,
                         0, 1, f_full[pages], f_pages[pages], f_ipis[pages], rmap, ptl, 0))
                else:
                    add((st0, new, phase, kind, ln, ptes, pages, batches, 0, 0, 0,
                         1 if (new & low) == 0 or i == 0 else 0,
                         0, 1, f_full[pages], f_pages[pages], f_ipis[pages], rmap, ptl, 0))
            else:
                add((st0, new, phase, kind, ln, pages, pages,
                     _batches(sh, batching, st0, pages) if batches_on else pages, 0, 0, 0,
                     0 if new & low else 1,
                     0, 1, f_full[pages], f_pages[pages], f_ipis[pages], rmap, ptl, 0))
            st0 = st1
            i += 1
    over = {}
    pmd_mid = []
    for i in alloc_pmd:
        if t0 <= i < t1:
            pmd_mid.append(i - t0)
    if pmd_mid:
        ones = _ONES.get(len(pmd_mid))
        if ones is None:
            ones = _ONES[len(pmd_mid)] = np.array([1] * len(pmd_mid), np.int32)
            ones.flags.writeable = False  # (shared: the overrides' readers only read it)
        over["alloc_pmd"] = (np.array(pmd_mid, np.int64), ones)
    if ups:
        up_mid = [(i - t0, v) for i, v in ups.items() if t0 <= i < t1]
        if up_mid:
            pos = np.array([p for p, _ in up_mid], np.int64)
            over["alloc_p4d"] = (pos, np.array([v[0] for _, v in up_mid], np.int32))
            over["alloc_pud"] = (pos, np.array([v[1] for _, v in up_mid], np.int32))
    return S.Steps.periodic_run(head_rows, period_rows, sh.mid // k, pmd_size, pmd_size, over,
                                tail_rows, locks)


def _batches(sh: _Shape, batching, st0: int, pages: int) -> int:
    """``mremap_folio_pte_batch``'s batches of the extent of ``pages`` pages at ``st0``
    (its slot's bitmap, the moved range's first pages cleared in the first slot)."""
    ps, ms, _, ptrs = sh.consts[:4]
    start = sh.ext.start
    s_lo = start >> ms
    slot = st0 >> ms
    off = (st0 >> ps) & (ptrs - 1)
    rel = slot - s_lo
    edge, bitmaps = sh.edge, sh.bitmaps
    m = bitmaps.int_of(edge[rel]) if rel in edge else bitmaps.full_int
    clr = (start >> ps) & (ptrs - 1) if rel == 0 else 0
    return mremap_folio_pte_batch(batching, m & ~range_mask(clr, off), off, pages,
                                  batching.window_in_table(slot << (ms - ps), ptrs))


_FIELDS = frozenset(f.name for f in fields(PageTables)) - {"arch"}


class DeferredTables(PageTables):
    """Page tables made the first time one of their fields is read: ``make()`` returns
    the :class:`PageTables` this state is, and reading any field (or any method that
    reads one) makes it and takes its fields, so such a state is indistinguishable from
    the one ``make`` returns. A plan whose ``after`` nobody reads (a simulated call) never
    pays for building it. ``arch`` and ``pud_tables`` are known up front (``tops``).
    Pickled (and copied) as the plain state it makes."""

    def __init__(self, arch, tops: frozenset[int], make) -> None:
        self.__dict__.update(arch=arch, pud_tables=tops, _make=make)

    def __getattr__(self, name: str):
        # only called for an attribute the instance lacks
        d = self.__dict__
        if name in _FIELDS and "_make" in d:
            self.made()
            if name in d:
                return d[name]
        return super().__getattr__(name)  # a small state's arrays, or AttributeError

    @property
    def pending(self) -> bool:
        """True until the state is made."""
        return "_make" in self.__dict__

    def made(self) -> PageTables:
        """Make the state (once) and take its fields and caches; returns ``self``."""
        d = self.__dict__
        make = d.pop("_make", None)
        if make is not None:
            out = make()
            for k in [k for k in d if k.startswith("_view")]:
                del d[k]  # what only a pending state reads
            d.update(out.__dict__)
        return self

    def __reduce__(self):
        self.made()
        return (_plain_tables, (dict(self.__dict__),))


def _plain_tables(state: dict) -> PageTables:
    out = object.__new__(PageTables)
    out.__dict__.update(state)
    return out


class MovedTables(DeferredTables):
    """The page tables after a closed-form move (:func:`_after` of the state before and
    the move's :class:`_Shape`), made when first read. ``before``, ``shape`` and
    ``target`` let the source's unmap (:func:`perfsim.planner.fast_unmap.unmap_moved_source`)
    answer what it reads from this state without making it."""

    def __init__(self, t: Target, pt: PageTables, sh: _Shape) -> None:
        tops = pt.pud_tables | frozenset(sh.new_tops) if sh.new_tops else pt.pud_tables
        # (DeferredTables.__init__'s fields, and the view's)
        self.__dict__.update(arch=t.arch, pud_tables=tops, _make=lambda: _after(t, pt, sh),
                             _view_before=pt, _view_shape=sh)

    @property
    def before(self) -> PageTables:
        return self.__dict__["_view_before"]

    @property
    def shape(self) -> _Shape:
        return self.__dict__["_view_shape"]


def _after(t: Target, pt: PageTables, sh: _Shape) -> PageTables:
    """The page tables after the move: source slots emptied (an edge slot keeps what lies
    outside the range), every destination slot a PTE table holding the source bits shifted
    by the move's in-PMD page offset (as :func:`perfsim.planner.fast_state.apply_regular_move`)."""
    a = t.arch
    ps, ms, ptrs = a.page_shift, a.pmd_shift, a.ptrs_per_pte
    ext, delta, bitmaps = sh.ext, sh.delta, sh.bitmaps
    n_src, n_dst, i0, i1, j0 = sh.n_src, sh.n_dst, sh.i0, sh.i1, sh.j0
    s_lo, d_lo = ext.start >> ms, (ext.start + delta) >> ms
    full_int = bitmaps.full_int
    # the moving part (em) and the part left behind of the two edge slots
    em: dict[int, int] = {}
    src_new = np.zeros(n_src, np.int32)
    for rel, row in sh.edge.items():
        base = (s_lo + rel) << ms
        lo = (max(ext.start, base) - base) >> ps
        hi = (min(ext.end, base + a.pmd_size) - base) >> ps
        m = bitmaps.int_of(row)
        if lo == 0 and hi == ptrs:
            em[rel] = m
            continue
        em[rel] = m & range_mask(lo, hi)
        src_new[rel] = bitmaps.id_of(m & ~range_mask(lo, hi))

    def em_at(rel: int) -> int:
        if rel < 0 or rel >= n_src:
            return 0
        return em.get(rel, full_int)  # the interior is fully populated

    # destination slot j holds the top of source slot sa0 + j and the bottom of the next
    off = ((-delta) % a.pmd_size) >> ps
    sa0 = (((d_lo << ms) - delta) >> ms) - s_lo
    dst_rows = np.full(n_dst, bitmaps.id_of(full_int), np.int32)
    ends = sorted({j for j in (*range(0, 1 - sa0), *range(n_src - 2 - sa0, n_dst))
                   if 0 <= j < n_dst})
    ids = []
    for j in ends:
        m = em_at(sa0 + j)
        if off:
            m = (m >> off) | ((em_at(sa0 + j + 1) << (ptrs - off)) & full_int)
        ids.append(bitmaps.id_of(m))
    dst_rows[ends] = ids
    # the PMD arrays: source rows replaced, destination entries inserted at j0
    mask = pt.pmd_mask
    if j0 >= i1:
        mask_parts = [mask[:i0], src_new, mask[i1:j0], dst_rows, mask[j0:]]
    else:
        mask_parts = [mask[:j0], dst_rows, mask[j0:i0], src_new, mask[i1:]]
    pmd_idx = np.concatenate([pt.pmd_idx[:j0], np.arange(d_lo, d_lo + n_dst, dtype=np.int64),
                              pt.pmd_idx[j0:]])
    pmd_kind = np.concatenate([pt.pmd_kind[:j0], np.full(n_dst, PMD_TABLE, np.int8),
                               pt.pmd_kind[j0:]])
    pmd_mask = np.concatenate(mask_parts)
    pud_idx, pud_kind = _with_pud_tables(pt, set(sh.alloc_pmd.values()), set())
    tops = pt.pud_tables | frozenset(sh.new_tops) if sh.new_tops else pt.pud_tables
    if bitmaps.added:
        masks = np.concatenate([pt.masks, _words(a, bitmaps.added)]).astype(np.uint64, copy=False)
        pop = np.concatenate([pt.mask_pop,
                              np.array([m.bit_count() for m in bitmaps.added], np.int32)])
    else:
        masks, pop = pt.masks, pt.mask_pop
    return PageTables(a, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_mask, masks, pop)

