"""``move_page_tables()`` with numpy: the same rows and state as the reference, per column.

:mod:`perfsim.planner.reference` walks the move extent by extent. When the source and the
destination touch disjoint PMD slots, no step can see what another step wrote at the PTE
table level, and the few cross-step effects that remain (the first step into a source slot
splits its THP; the first step into a destination slot allocates its PTE table; the first
step into a destination PUD slot allocates its PMD table; the first into a top-level slot
its PUD table) are "first occurrence in a sorted array" questions. So the whole walk is
computed at once:

1. The PMD-level extents are the sorted union of the source PMD boundaries and the shifted
   destination PMD boundaries, two arithmetic progressions merged by interleaving (no sort).
2. The PUD-level boundaries (a few per GiB) cut the extents into *segments*; each segment is
   skipped (source PUD none), moved whole (NORMAL_PUD), or walked at PMD level.
3. Every PMD-level extent is classified with array expressions (skip, THP move, THP split,
   NORMAL_PMD move or its failure, PTE move); present-PTE counts come from the cached
   popcount of each bitmap row (full and empty rows need no bit work, a whole-slot extent
   uses the cached count, only partial extents of partial rows gather bitmap words).
4. TLB flushes come from a per-length lookup table built from :mod:`perfsim.planner.tlb`.
5. Rows are assembled column by column (constant columns as zero-stride views) into one
   :class:`~perfsim.planner.steps.Steps` block appended to the log.
6. The new page tables are spliced from arrays: destination bitmaps are the source bitmaps
   shifted by the constant in-PMD page offset of the move, computed once per run of equal
   source rows.

Work is O(extents) numpy element operations with no Python per extent, and O(1) Python per
PUD segment boundary only where allocation order matters (a handful).

:func:`try_move_page_tables` returns None (the dispatcher then runs the reference) when the
fast path does not apply: overlapping PMD slots, huge PUD leaves, a THP leaf at the
destination, large-folio PTE batching, the exec stack, or an injected allocation failure
that would hit.
"""

from __future__ import annotations

import numpy as np

from perfsim.mm.pagetable import (
    PMD_LEAF,
    PMD_NONE,
    PMD_TABLE,
    PUD_LEAF,
    PUD_NONE,
    PUD_TABLE,
    PageTables,
    _int_to_words,
    _words_to_int,
    range_mask,
)
from perfsim.planner import steps as S
from perfsim.planner.tlb import Flush, flush_pmd_range, flush_range
from perfsim.profiles import Arm64Tlb, RiscvTlb, Target, X86Tlb

_I64, _I32, _I8 = np.int64, np.int32, np.int8


class Declined(Exception):
    """The fast path does not apply; the message says why."""


# ---------------------------------------------------------------------------- TLB policy
def _arm64_range_ops_vec(pages: np.ndarray) -> np.ndarray:
    """Vectorised :func:`perfsim.planner.tlb._arm64_range_ops`."""
    ops = pages & 1
    rest = pages >> 1
    while np.any(rest):
        ops = ops + ((rest & 31) != 0)
        rest = rest >> 5
    return ops


def flush_table(target: Target, npages: np.ndarray, *, cpus: int, lazy_cpus: int,
                stride_shift: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """``flush_range`` over ``npages`` stride pages for many requests at once.

    Returns ``(full, pages, ipis)``: arrays of the same shape as ``npages`` (full as int32)
    and the IPI count, which does not depend on the length.
    """
    arch = target.arch
    tlb = arch.tlb
    shift = arch.page_shift if stride_shift is None else stride_shift
    n = np.asarray(npages, dtype=_I64)
    ipis = flush_range(target, 0, 1 << shift, stride_shift=shift, cpus=cpus,
                       lazy_cpus=lazy_cpus).ipis
    if isinstance(tlb, X86Tlb):
        full = n > tlb.single_page_flush_ceiling
        pages = np.where(full, 0, n * (2 if tlb.pti else 1))
    elif isinstance(tlb, Arm64Tlb):
        full = n >= tlb.max_tlbi_range_pages
        if not tlb.tlbirange:
            full = full | (n >= tlb.max_dvm_ops)
        pages = np.where(full, 0, _arm64_range_ops_vec(n) if tlb.tlbirange else n)
    elif isinstance(tlb, RiscvTlb):
        full = n > tlb.flush_all_threshold
        pages = np.where(full, 0, n)
    else:  # pragma: no cover
        raise Declined(f"unknown TLB policy {tlb!r}")
    return full.astype(_I32), pages.astype(_I64), ipis


# ---------------------------------------------------------------------------- bitmaps
def range_words(lo: np.ndarray, hi: np.ndarray, words: int) -> np.ndarray:
    """``(len(lo), words)`` uint64 bitmaps with bits ``[lo, hi)`` set, per row."""
    base = (np.arange(words, dtype=_I64) * 64)[None, :]
    lo_c = np.clip(lo[:, None] - base, 0, 64).astype(np.uint64)
    hi_c = np.clip(hi[:, None] - base, 0, 64).astype(np.uint64)
    one = np.uint64(1)
    full = ~np.uint64(0)
    with np.errstate(over="ignore"):
        m_hi = np.where(hi_c >= 64, full, (one << (hi_c & np.uint64(63))) - one)
        m_lo = np.where(lo_c >= 64, full, (one << (lo_c & np.uint64(63))) - one)
    return m_hi & ~m_lo


def shift_right(rows: np.ndarray, k: int) -> np.ndarray:
    """Multiword logical right shift by ``k`` bits of little-endian uint64 rows."""
    n, w = rows.shape
    out = np.zeros_like(rows)
    q, r = divmod(k, 64)
    if q >= w:
        return out
    out[:, :w - q] = rows[:, q:] >> np.uint64(r)
    if r and q + 1 < w:
        out[:, :w - q - 1] |= rows[:, q + 1:] << np.uint64(64 - r)
    return out


def shift_left(rows: np.ndarray, k: int) -> np.ndarray:
    """Multiword left shift by ``k`` bits, truncated to the row width."""
    n, w = rows.shape
    out = np.zeros_like(rows)
    q, r = divmod(k, 64)
    if q >= w:
        return out
    out[:, q:] = rows[:, :w - q] << np.uint64(r)
    if r and q + 1 < w:
        out[:, q + 1:] |= rows[:, :w - q - 1] >> np.uint64(64 - r)
    return out


class MaskTable:
    """The ``masks``/``mask_pop`` of a state plus rows appended while planning."""

    def __init__(self, pt: PageTables):
        self.words = pt.masks.shape[1]
        self.base = pt.masks
        self.base_pop = pt.mask_pop
        self.extra: list[np.ndarray] = []
        self.n = len(pt.masks)
        self.ptrs = pt.arch.ptrs_per_pte
        if not len(self.base) or self.base_pop[0] != 0:
            raise Declined("mask row 0 is not the empty bitmap")
        full = np.flatnonzero(self.base_pop == self.ptrs)
        self._full = int(full[0]) if len(full) else None

    def add_rows(self, rows: np.ndarray) -> np.ndarray:
        """Append bitmap rows; return their ids."""
        rows = np.ascontiguousarray(rows, dtype=np.uint64).reshape(-1, self.words)
        ids = np.arange(self.n, self.n + len(rows), dtype=_I32)
        if len(rows):
            self.extra.append(rows)
            self.n += len(rows)
        return ids

    def add_int(self, mask: int) -> int:
        if mask == 0:
            return 0
        return int(self.add_rows(_int_to_words(mask, self.words)[None, :])[0])

    @property
    def full(self) -> int:
        if self._full is None:
            self._full = self.add_int((1 << self.ptrs) - 1)
        return self._full

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Bitmap words of rows ``ids``."""
        ids = np.asarray(ids, dtype=_I64)
        if not self.extra:
            return self.base[ids]
        allm = self.materialise()[0]
        return allm[ids]

    def row_int(self, i: int) -> int:
        return _words_to_int(self.rows(np.array([i]))[0])

    def materialise(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.extra:
            return self.base, self.base_pop
        extra = np.concatenate(self.extra)
        pop = np.bitwise_count(extra).sum(axis=1).astype(_I32)
        self.base = np.concatenate([self.base, extra])
        self.base_pop = np.concatenate([self.base_pop, pop])
        self.extra = []
        return self.base, self.base_pop


# ---------------------------------------------------------------------------- helpers
def _lookup(idx: np.ndarray, vals: np.ndarray, keys: np.ndarray, default) -> np.ndarray:
    """``vals`` at the positions where sorted ``idx`` equals ``keys`` (``default`` if absent)."""
    out = np.full(len(keys), default, dtype=vals.dtype)
    if not len(idx) or not len(keys):
        return out
    pos = np.searchsorted(idx, keys)
    pos_c = np.minimum(pos, len(idx) - 1)
    hit = idx[pos_c] == keys
    out[hit] = vals[pos_c[hit]]
    return out


def _dense(idx: np.ndarray, vals: np.ndarray, lo: int, hi: int, default, dtype) -> np.ndarray:
    """Dense array over slots ``[lo, hi]`` of the sorted sparse ``idx``/``vals``."""
    i0, i1 = np.searchsorted(idx, [lo, hi + 1])
    n = hi - lo + 1
    if i1 - i0 == n:  # every slot present: the slice is the dense array
        return vals[i0:i1].astype(dtype, copy=False)
    out = np.full(n, default, dtype=dtype)
    out[idx[i0:i1] - lo] = vals[i0:i1]
    return out


def _firsts(keys: np.ndarray) -> np.ndarray:
    """Boolean: where a non-decreasing ``keys`` array takes a new value."""
    out = np.empty(len(keys), bool)
    if len(keys):
        out[0] = True
        np.not_equal(keys[1:], keys[:-1], out=out[1:])
    return out


def _interleave(a0: int, b0: int, stop: int, step: int) -> np.ndarray:
    """Sorted union of ``range(a0, stop, step)`` and ``range(b0, stop, step)``."""
    a = np.arange(a0, stop, step, dtype=_I64)
    if (a0 - b0) % step == 0:
        return a
    b = np.arange(b0, stop, step, dtype=_I64)
    if b0 < a0:
        a, b = b, a
    out = np.empty(len(a) + len(b), _I64)
    out[0::2] = a
    out[1::2] = b
    return out


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


# ---------------------------------------------------------------------------- the planner
def try_move_page_tables(target: Target, pt: PageTables, pmc, log: S.StepLog, *,
                         phase: int = S.MOVE, cpus: int = 1, lazy_cpus: int = 0,
                         fail_alloc_at: int | None = None, force: bool = False):
    """The vectorised ``move_page_tables``: ``(new page tables, progress)`` or None.

    Appends exactly the rows :func:`perfsim.planner.reference.move_page_tables` would.
    ``force`` (tests only) turns a decline into an AssertionError.
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
    t = target
    a = t.arch
    old, new = pmc.old, pmc.new
    if pmc.for_stack:
        raise Declined("exec stack move (overlapping ranges)")
    if old.is_hugetlb:
        raise Declined("hugetlb")
    ps, ms, us = a.page_shift, a.pmd_shift, a.pud_shift
    P, U = a.pmd_size, a.pud_size
    ptrs = a.ptrs_per_pte
    k_pp = us - ms  # PMD slots per PUD slot, as a shift
    o0, n0, oe = pmc.old_addr, pmc.new_addr, pmc.old_end
    L = oe - o0
    if L <= 0:
        raise Declined("empty move")
    delta = n0 - o0
    s_lo, s_hi = o0 >> ms, (oe - 1) >> ms
    d_lo, d_hi = n0 >> ms, (n0 + L - 1) >> ms
    if not (s_hi < d_lo or d_hi < s_lo):
        raise Declined("source and destination share PMD slots")
    mode = t.kernel.pte_batching
    if mode != "none":
        folio_pages = max(old.folio_size >> ps, 1)
        if (mode == "hint" and a.contpte_entries > 1 and folio_pages >= a.contpte_entries) or \
                (mode == "folio" and folio_pages > 1):
            raise Declined("large-folio PTE batching")
    uffd = old.uffd_wp or (t.kernel.uffd_checks_new_vma and new.uffd_wp)
    locks = old.rmap_locks()
    normal_locks = locks if (t.kernel.rmap_locks_always_for_normal_moves or pmc.need_rmap_locks) else ()
    huge_locks = locks if pmc.need_rmap_locks else ()

    # ------------------------------------------------------------ PUD level state
    P_lo, P_hi = o0 >> us, (oe - 1) >> us
    Q_lo, Q_hi = n0 >> us, (n0 + L - 1) >> us
    skind = _dense(pt.pud_idx, pt.pud_kind, P_lo, P_hi, PUD_NONE, _I8).copy()
    dkindQ = _dense(pt.pud_idx, pt.pud_kind, Q_lo, Q_hi, PUD_NONE, _I8)
    if not a.pud_folded:
        tops = np.arange(P_lo, P_hi + 1, dtype=_I64) >> (a.p4d_shift - us)
        has_top = np.fromiter((int(x) in pt.pud_tables for x in np.unique(tops)), bool)
        if not has_top.all():
            skind[~has_top[np.searchsorted(np.unique(tops), tops)]] = PUD_NONE
    if (skind == PUD_LEAF).any() or (dkindQ == PUD_LEAF).any():
        raise Declined("huge PUD leaf in range")

    # ------------------------------------------------------------ PMD level state
    src_kind = _dense(pt.pmd_idx, pt.pmd_kind, s_lo, s_hi, PMD_NONE, _I8)
    src_row = _dense(pt.pmd_idx, pt.pmd_mask, s_lo, s_hi, 0, _I32)
    j0, j1 = np.searchsorted(pt.pmd_idx, [d_lo, d_hi + 1])
    dst_any = j1 > j0
    if dst_any:
        dst_kind_d = _dense(pt.pmd_idx, pt.pmd_kind, d_lo, d_hi, PMD_NONE, _I8)
        dst_row_d = _dense(pt.pmd_idx, pt.pmd_mask, d_lo, d_hi, 0, _I32)
        if (dst_kind_d == PMD_LEAF).any():
            raise Declined("PMD leaf at the destination")
    has_leaf = bool((src_kind == PMD_LEAF).any())
    anon = old.backing == "anon"

    # ------------------------------------------------------------ extents
    inner = _interleave(o0 - o0 % P + P, (n0 - n0 % P + P) - delta, oe, P)
    bounds = np.empty(len(inner) + 2, _I64)
    bounds[0], bounds[-1] = o0, oe
    bounds[1:-1] = inner
    del inner
    starts, ends = bounds[:-1], bounds[1:]
    n_ext = len(starts)
    # PUD-level segments
    ub = np.union1d(np.arange(o0 - o0 % U + U, oe, U, dtype=_I64),
                    np.arange(n0 - n0 % U + U - delta, oe, U, dtype=_I64))
    seg_start = np.concatenate([np.array([o0], _I64), ub])
    seg_end = np.concatenate([ub, np.array([oe], _I64)])
    seg_first = np.searchsorted(starts, seg_start)
    seg_cnt = np.diff(np.concatenate([seg_first, [n_ext]]))
    seg_P = seg_start >> us
    seg_Q = (seg_start + delta) >> us
    seg_T = (seg_start + delta) >> a.p4d_shift
    seg_len = seg_end - seg_start

    # The dominant shape of big moves: every source PUD and PMD entry is a table, nothing is
    # mapped at the destination, and no extent can be a NORMAL_PUD/PMD attempt (the two
    # ranges are not mutually PMD aligned). Every extent is then one move_ptes row.
    no_full = (delta % P != 0) or not t.have_move_pmd or (-(-o0 // P) * P + P > oe)
    if (no_full and not dst_any and bool((skind == PUD_TABLE).all())
            and not (t.have_move_pud and (seg_len == U).any())
            and bool((src_kind == PMD_TABLE).all())):
        return _plan_regular(t, pt, locals())

    S_ = starts >> ms            # source PMD slot per extent
    D_ = (starts + delta) >> ms  # destination PMD slot per extent
    n_pg = (ends - starts) >> ps
    full_ext = n_pg == ptrs

    def classify(skind):
        c = {}
        sk = skind[seg_P - P_lo]
        table_seg = sk == PUD_TABLE
        pud_try = table_seg & t.have_move_pud & (seg_len == U)
        pud_ok = pud_try & (not uffd) & (dkindQ[seg_Q - Q_lo] == PUD_NONE)
        pud_fail = pud_try & ~pud_ok
        stage_seg = table_seg & ~pud_ok
        c.update(table_seg=table_seg, pud_ok=pud_ok, pud_fail=pud_fail, stage_seg=stage_seg)
        all_stage = bool(stage_seg.all())
        stage = None if all_stage else np.repeat(stage_seg, seg_cnt)
        c["all_stage"], c["stage"] = all_stage, stage
        # source PMD kind seen by each extent's PMD stage
        ks = src_kind[S_ - s_lo]
        first_s = _firsts(S_)
        if has_leaf:
            after_split = PMD_TABLE if anon else PMD_NONE
            ks = np.where((ks == PMD_LEAF) & ~first_s, after_split, ks).astype(_I8)
        present = ks != PMD_NONE
        if stage is not None:
            present &= stage
        c["ks"], c["present"], c["first_s"] = ks, present, first_s
        # alloc_new_pmd: first PMD-stage step with a present source per destination PUD slot
        pres_idx = np.flatnonzero(present)
        q_of = (D_[pres_idx] >> k_pp) if len(pres_idx) else np.empty(0, _I64)
        fq = _firsts(q_of)
        alloc_pmd_at = pres_idx[fq]
        alloc_pmd_at = alloc_pmd_at[dkindQ[q_of[fq] - Q_lo] == PUD_NONE]
        c["alloc_pmd_at"] = alloc_pmd_at
        c["alloc_pmd_q"] = D_[alloc_pmd_at] >> k_pp
        return c

    c = classify(skind)
    # A destination PMD table allocated in a PUD slot the source still has to walk (moving
    # up, the one PUD slot both ranges touch) makes that source PUD entry present.
    shared = P_hi if (delta > 0 and Q_lo == P_hi) else None
    if shared is not None and skind[shared - P_lo] == PUD_NONE and (c["alloc_pmd_q"] == shared).any():
        skind[shared - P_lo] = PUD_TABLE
        c = classify(skind)
    table_seg, pud_ok, pud_fail, stage_seg = c["table_seg"], c["pud_ok"], c["pud_fail"], c["stage_seg"]
    all_stage, stage, ks, present = c["all_stage"], c["stage"], c["ks"], c["present"]
    alloc_pmd_at, alloc_pmd_q = c["alloc_pmd_at"], c["alloc_pmd_q"]

    # ------------------------------------------------------------ PUD-stage allocations
    seg_p4d, seg_pud, new_tops = _upper_allocs(t, pt, seg_T, table_seg)

    # ------------------------------------------------------------ PMD-stage classification
    LEAF = ks == PMD_LEAF
    TABLE = ks == PMD_TABLE
    if stage is not None:
        LEAF &= stage
        TABLE &= stage
    if dst_any:
        dk0 = dst_kind_d[D_ - d_lo]
        dst_none0 = dk0 == PMD_NONE
    else:
        dst_none0 = None
    if has_leaf:
        thp_move = LEAF & full_ext & (True if dst_none0 is None else dst_none0)
        split = LEAF & ~thp_move
    else:
        thp_move = split = None
    if t.have_move_pmd:
        try_pmd = TABLE & full_ext
        pmd_ok = try_pmd if not uffd else np.zeros(n_ext, bool)
        if dst_none0 is not None:
            pmd_ok = pmd_ok & dst_none0
        pmd_fail = try_pmd & ~pmd_ok
        if not pmd_fail.any():
            pmd_fail = None
        if not pmd_ok.any():
            pmd_ok = None
    else:
        pmd_ok = pmd_fail = None
    pte = TABLE if pmd_ok is None else (TABLE & ~pmd_ok)
    if split is not None and anon:
        pte = pte | split
    # main row kind per extent (valid for stage extents)
    main_kind = np.where(pte, S.K_PTE_MOVE, S.K_SKIP_PMD).astype(_I32)
    if pmd_ok is not None:
        main_kind[pmd_ok] = S.K_PMD_MOVE
    if thp_move is not None:
        main_kind[thp_move] = S.K_THP_MOVE

    # present PTEs of each PTE extent
    lo_pg = (starts >> ps) & (ptrs - 1)
    pte_idx = np.flatnonzero(pte)
    all_pte = len(pte_idx) == n_ext
    masks = MaskTable(pt)
    if has_leaf and anon:
        eff_row = np.where(src_kind == PMD_LEAF, masks.full, src_row).astype(_I32)
    else:
        eff_row = src_row
    row_e = eff_row[S_ - s_lo]
    pop_e = masks.base_pop[row_e] if masks.n == len(masks.base) else masks.materialise()[1][row_e]
    present_ptes = np.where(pop_e == ptrs, n_pg, np.where(full_ext, pop_e, 0)).astype(_I64)
    partial = pte & (pop_e != 0) & (pop_e != ptrs) & ~full_ext
    pidx = np.flatnonzero(partial)
    if len(pidx):
        words = masks.rows(row_e[pidx]) & range_words(lo_pg[pidx], lo_pg[pidx] + n_pg[pidx], masks.words)
        present_ptes[pidx] = np.bitwise_count(words).sum(axis=1)
    if not all_pte:
        present_ptes = np.where(pte, present_ptes, 0)

    # alloc_pte: first PTE-path step per destination slot whose PMD entry was none
    pte_D = D_[pte_idx] if not all_pte else D_
    fD = _firsts(pte_D)
    if dst_none0 is not None:
        alloc_pte_mask_sub = fD & dst_none0[pte_idx]
    else:
        alloc_pte_mask_sub = fD

    total_alloc = (int(seg_p4d.sum() + seg_pud.sum()) + len(alloc_pmd_at)
                   + int(np.count_nonzero(alloc_pte_mask_sub)))
    if fail_alloc_at is not None and fail_alloc_at <= total_alloc:
        raise Declined("injected allocation failure")

    # ------------------------------------------------------------ row layout
    # rows per extent: [pud_fail][split | pmd_fail] main   for PMD-stage extents;
    # one row (skip_pud / move_normal_pud) at the first extent of other segments.
    pre1 = np.zeros(n_ext, bool) if pud_fail.any() else None
    if pre1 is not None:
        pre1[seg_first[pud_fail]] = True
    pre2 = None
    if split is not None and split.any():
        pre2 = split.copy()
    if pmd_fail is not None:
        pre2 = pmd_fail.copy() if pre2 is None else (pre2 | pmd_fail)
    simple = all_stage and pre1 is None and pre2 is None
    if simple:
        n_rows = n_ext
        main_pos = None
        pre1_pos = pre2_pos = np.empty(0, _I64)
        seg_row_pos = np.empty(0, _I64)
    else:
        cnt = np.ones(n_ext, _I64) if all_stage else stage.astype(_I64)
        if pre1 is not None:
            cnt += pre1
        if pre2 is not None:
            cnt += pre2
        if not all_stage:
            other = np.flatnonzero(~stage_seg)
            cnt[seg_first[other]] += 1
        off = np.cumsum(cnt) - cnt
        n_rows = int(cnt.sum())
        stage_idx = np.arange(n_ext) if all_stage else np.flatnonzero(stage)
        main_pos = (off + cnt - 1)[stage_idx]
        pre1_pos = off[np.flatnonzero(pre1)] if pre1 is not None else np.empty(0, _I64)
        pre2_idx = np.flatnonzero(pre2) if pre2 is not None else np.empty(0, _I64)
        pre2_pos = off[pre2_idx] + (pre1[pre2_idx] if pre1 is not None else 0)
        seg_row_pos = off[seg_first[np.flatnonzero(~stage_seg)]] if not all_stage else np.empty(0, _I64)
    R = _Rows(n_rows)
    lock_sets = tuple(sorted({(), normal_locks, huge_locks}))
    lid_normal, lid_huge = lock_sets.index(normal_locks), lock_sets.index(huge_locks)
    # --- main rows of PMD-stage extents
    if all_stage:
        sel = None
        e_idx = slice(None)
    else:
        sel = np.flatnonzero(stage)
        e_idx = sel
    mk = main_kind if sel is None else main_kind[sel]
    pos_main = main_pos
    ptes_main = present_ptes[e_idx]
    n_main = n_pg[e_idx]
    is_pte_main = mk == S.K_PTE_MOVE
    flushed = ptes_main > 0
    f_full, f_pages, f_ipis = flush_table(t, n_main, cpus=cpus, lazy_cpus=lazy_cpus)
    cols = dict(old_addr=starts[e_idx], new_addr=starts[e_idx] + delta, phase=phase, kind=mk,
                length=ends[e_idx] - starts[e_idx])
    if simple and all_pte:
        # the common shape: every row a move_ptes
        cols.update(ptes=ptes_main, slots=n_main, batches=ptes_main, ptl=2,
                    lock=lid_huge, rmap=len(huge_locks))
        if flushed.all():
            cols.update(flushes=1, flush_full=f_full, flush_pages=f_pages, ipis=f_ipis)
        else:
            fl = flushed.astype(_I32)
            cols.update(flushes=fl, flush_full=f_full * fl, flush_pages=f_pages * fl,
                        ipis=fl * f_ipis)
    else:
        fl = np.where(is_pte_main, flushed, False).astype(_I32)
        ffull, fpages, fipis = fl * f_full, fl * f_pages, fl * f_ipis
        ptes_c = np.where(is_pte_main, ptes_main, 0)
        slots_c = np.where(is_pte_main, n_main, 0)
        ptl = np.where(is_pte_main, 2, 0).astype(_I32)
        rmap = np.where(is_pte_main, len(huge_locks), 0).astype(_I32)
        lock = np.where(is_pte_main, lid_huge, lock_sets.index(())).astype(_I32)
        s_e, d_e = S_[e_idx], D_[e_idx]
        pmd_ptl = np.where(((s_e >> k_pp) == (d_e >> k_pp)) | (not a.split_pmd_ptlocks), 1, 2)
        pmd_flush = flush_range(t, 0, P, cpus=cpus, lazy_cpus=lazy_cpus)
        thp_flush = flush_pmd_range(t, 0, cpus=cpus, lazy_cpus=lazy_cpus)
        for kind_v, fobj, lk in ((S.K_PMD_MOVE, pmd_flush, normal_locks),
                                 (S.K_THP_MOVE, thp_flush, huge_locks)):
            m = mk == kind_v
            if not m.any():
                continue
            f1, f2, f3, f4 = _flush_cols(fobj)
            fl[m], ffull[m], fpages[m], fipis[m] = f1, f2, f3, f4
            ptl[m] = pmd_ptl[m]
            rmap[m] = len(lk)
            lock[m] = lock_sets.index(lk)
            if kind_v == S.K_THP_MOVE:
                ptes_c = np.where(m, ptrs, ptes_c)
        cols.update(ptes=ptes_c, slots=slots_c, batches=np.where(is_pte_main, ptes_c, 0), flushes=fl,
                    flush_full=ffull,
                    flush_pages=fpages, ipis=fipis, ptl=ptl, rmap=rmap, lock=lock)
    main_cols = cols

    # allocation counts: p4d/pud on the first row of a segment's first step; pmd on the first
    # PMD-stage row of its step; pte on the move_ptes row.
    alloc_pte_e = None
    if len(pte_idx):
        ap = np.zeros(n_ext, _I32)
        ap[pte_idx[alloc_pte_mask_sub] if not all_pte else np.flatnonzero(alloc_pte_mask_sub)] = 1
        alloc_pte_e = ap
    alloc_pmd_e = None
    if len(alloc_pmd_at):
        alloc_pmd_e = np.zeros(n_ext, _I32)
        alloc_pmd_e[alloc_pmd_at] = 1
    seg_alloc = np.flatnonzero(seg_pud | seg_p4d)
    # which extents carry p4d/pud on their first PMD-stage row
    upper_e_p4d = upper_e_pud = None
    seg_row_extra: dict[int, tuple[int, int]] = {}
    for g in seg_alloc.tolist():
        if pud_ok[g] or pud_fail[g]:
            seg_row_extra[g] = (int(seg_p4d[g]), int(seg_pud[g]))
        else:
            if upper_e_pud is None:
                upper_e_p4d = np.zeros(n_ext, _I32)
                upper_e_pud = np.zeros(n_ext, _I32)
            upper_e_p4d[seg_first[g]] = seg_p4d[g]
            upper_e_pud[seg_first[g]] = seg_pud[g]
    pre2_has = pre2 if pre2 is not None else None

    def on_main(arr):
        """Per-extent counts that land on the main row unless a pre2 row comes first."""
        if arr is None:
            return 0
        v = arr if pre2_has is None else np.where(pre2_has, 0, arr)
        return v[e_idx]

    for name, arr in (("alloc_p4d", upper_e_p4d), ("alloc_pud", upper_e_pud), ("alloc_pmd", alloc_pmd_e)):
        if arr is not None:
            main_cols[name] = on_main(arr)
    if alloc_pte_e is not None:
        main_cols["alloc_pte"] = alloc_pte_e[e_idx]
    R.add(pos_main, **main_cols)

    # --- pre2 rows: THP split or NORMAL_PMD failure
    if pre2 is not None:
        idx = pre2_idx
        is_split = split[idx] if split is not None else np.zeros(len(idx), bool)
        fthp = _flush_cols(flush_pmd_range(t, 0, cpus=cpus, lazy_cpus=lazy_cpus))
        kind2 = np.where(is_split, S.K_THP_SPLIT, S.K_PMD_MOVE_FAILED).astype(_I32)
        base = S_[idx] << ms
        cols2 = dict(old_addr=np.where(is_split, base, starts[idx]),
                     new_addr=np.where(is_split, 0, starts[idx] + delta), phase=phase, kind=kind2,
                     length=np.where(is_split, P, 0), ptes=np.where(is_split, ptrs, 0),
                     flushes=np.where(is_split, fthp[0], 0), flush_full=np.where(is_split, fthp[1], 0),
                     flush_pages=np.where(is_split, fthp[2], 0), ipis=np.where(is_split, fthp[3], 0),
                     ptl=np.where(is_split, 1, 0),
                     rmap=np.where(is_split, 0, len(normal_locks)),
                     lock=np.where(is_split, lock_sets.index(()), lock_sets.index(normal_locks)))
        for name, arr in (("alloc_p4d", upper_e_p4d), ("alloc_pud", upper_e_pud), ("alloc_pmd", alloc_pmd_e)):
            if arr is not None:
                cols2[name] = arr[idx]
        R.add(pre2_pos, **cols2)

    # --- segment rows: skip_pud, move_normal_pud, move_normal_pud failure
    if not all_stage:
        gs = np.flatnonzero(~stage_seg)
        okg = pud_ok[gs]
        fpud = _flush_cols(flush_range(t, 0, U, cpus=cpus, lazy_cpus=lazy_cpus))
        cols3 = dict(old_addr=seg_start[gs], new_addr=seg_start[gs] + delta, phase=phase,
                     kind=np.where(okg, S.K_PUD_MOVE, S.K_SKIP_PUD),
                     length=seg_len[gs], flushes=np.where(okg, fpud[0], 0),
                     flush_full=np.where(okg, fpud[1], 0), flush_pages=np.where(okg, fpud[2], 0),
                     ipis=np.where(okg, fpud[3], 0), ptl=np.where(okg, 1, 0),
                     rmap=np.where(okg, len(normal_locks), 0),
                     lock=np.where(okg, lock_sets.index(normal_locks), lock_sets.index(())),
                     alloc_p4d=seg_p4d[gs], alloc_pud=seg_pud[gs])
        R.add(seg_row_pos, **cols3)
    if pre1 is not None:
        gs = np.flatnonzero(pud_fail)
        R.add(pre1_pos, old_addr=seg_start[gs], new_addr=seg_start[gs] + delta, phase=phase,
              kind=S.K_PUD_MOVE_FAILED, length=0, rmap=len(normal_locks),
              lock=lock_sets.index(normal_locks), alloc_p4d=seg_p4d[gs], alloc_pud=seg_pud[gs])

    colmap = {n: R.column(n, S._DTYPES.get(n, _I32)) for n in S.ADDR_COLUMNS + S.INT_COLUMNS}
    lock_col = R.column("lock", _I32)
    used = np.unique(lock_col) if lock_col.strides != (0,) else np.asarray([lock_col[0]])
    if len(used) < len(lock_sets):  # keep only the lock tuples rows use, like StepLog.freeze
        keep = [lock_sets[i] for i in used.tolist()]
        remap = np.full(len(lock_sets), -1, _I32)
        remap[used] = np.arange(len(used), dtype=_I32)
        lock_col = remap[lock_col] if lock_col.strides != (0,) else np.broadcast_to(
            remap[lock_col[:1]], lock_col.shape)
        lock_sets = tuple(keep)
    block = S.Steps(colmap, lock_sets, lock_col)

    # ------------------------------------------------------------ the new page tables
    new_pt = _apply(t, pt, masks, pmc, locals())
    return block, new_pt


def _plan_regular(t: Target, pt: PageTables, v: dict) -> tuple[S.Steps, PageTables]:
    """Every extent a ``move_ptes`` into an empty destination (see :func:`plan_move`)."""
    a = t.arch
    ps, ms = a.page_shift, a.pmd_shift
    P, ptrs = a.pmd_size, a.ptrs_per_pte
    o0, oe, delta, phase = v["o0"], v["oe"], v["delta"], v["phase"]
    s_lo, s_hi, d_lo, d_hi = v["s_lo"], v["s_hi"], v["d_lo"], v["d_hi"]
    bounds, starts, n_ext = v["bounds"], v["starts"], v["n_ext"]
    src_row = v["src_row"]
    huge_locks = v["huge_locks"]
    masks = MaskTable(pt)

    # present PTEs: whole bitmaps need no bit work; only edge slots and partial rows do
    pop_d = masks.base_pop[src_row]
    edge = sorted({i for i in (0, 1, n_ext - 2, n_ext - 1) if 0 <= i < n_ext})
    inner_full = len(pop_d) <= 2 or bool((pop_d[1:-1] == ptrs).all())
    ptes_all = None
    exact: dict[int, int] = {}
    if inner_full:
        # Interior rows map every page they cover; only the rows touching the first and
        # last source slot may be partial.
        for i in edge:
            st0, n = int(bounds[i]), int(bounds[i + 1] - bounds[i]) >> ps
            slot = st0 >> ms
            lo = (st0 >> ps) & (ptrs - 1)
            exact[i] = (masks.row_int(int(src_row[slot - s_lo])) >> lo & ((1 << n) - 1)).bit_count()
        all_flushed = all(v_ > 0 for v_ in exact.values())
    else:
        n_pg_all = np.diff(bounds) >> ps
        S_ = starts >> ms
        row_e = src_row[S_ - s_lo]
        pop_e = masks.base_pop[row_e]
        full_ext = n_pg_all == ptrs
        ptes_all = np.where(pop_e == ptrs, n_pg_all, np.where(full_ext, pop_e, 0)).astype(_I64)
        pidx = np.flatnonzero((pop_e != 0) & (pop_e != ptrs) & ~full_ext)
        if len(pidx):
            lo_pg = (starts[pidx] >> ps) & (ptrs - 1)
            words = masks.rows(row_e[pidx]) & range_words(lo_pg, lo_pg + n_pg_all[pidx], masks.words)
            ptes_all[pidx] = np.bitwise_count(words).sum(axis=1)
        all_flushed = bool(ptes_all.min() > 0) if n_ext else True
    lut_full, lut_pages, ipis = flush_table(t, np.arange(ptrs + 1), cpus=v["cpus"],
                                            lazy_cpus=v["lazy_cpus"])
    # PMD tables: first step into each destination PUD slot whose entry is none
    seg_Q, seg_first = v["seg_Q"], v["seg_first"]
    fq = _firsts(seg_Q)
    qa = seg_Q[fq]
    want = v["dkindQ"][qa - v["Q_lo"]] == PUD_NONE
    alloc_pmd_at, alloc_pmd_q = seg_first[fq][want], qa[want]
    seg_p4d, seg_pud, new_tops = _upper_allocs(t, pt, v["seg_T"], np.ones(len(seg_Q), bool))
    # The first step into each destination PMD slot allocates its PTE table (the
    # destination is empty): one per destination slot.
    total = (d_hi - d_lo + 1) + len(alloc_pmd_at) + int(seg_p4d.sum() + seg_pud.sum())
    fa = v["fail_alloc_at"]
    if fa is not None and fa <= total:
        raise Declined("injected allocation failure")
    g = np.flatnonzero(seg_pud | seg_p4d)
    up_at, up_p4d, up_pud = seg_first[g], seg_p4d[g], seg_pud[g]

    def rows(lo: int, hi: int, allocs: bool = True) -> S.Steps:
        """Rows ``[lo, hi)`` as a dense table (with the sparse table allocations if asked)."""
        st = bounds[lo:hi]
        length = bounds[lo + 1:hi + 1] - st
        new_addr = st + delta
        n_pg = length >> ps
        if ptes_all is not None:
            ptes = ptes_all[lo:hi]
        else:
            ptes = n_pg.copy()
            for i, val in exact.items():
                if lo <= i < hi:
                    ptes[i - lo] = val
        f_full, f_pages = lut_full[n_pg], lut_pages[n_pg]
        if all_flushed:
            flushes, ipis_c = 1, ipis
        else:
            flushes = (ptes > 0).astype(_I32)
            f_full, f_pages, ipis_c = f_full * flushes, f_pages * flushes, flushes * ipis
        alloc_pte = ((new_addr & (P - 1)) == 0).astype(_I32)
        if lo == 0:
            alloc_pte[0] = 1
        R = _Rows(hi - lo)
        R.add(None, old_addr=st, new_addr=new_addr, phase=phase, kind=S.K_PTE_MOVE,
              length=length, ptes=ptes, slots=n_pg, batches=ptes, alloc_pte=alloc_pte,
              flushes=flushes, flush_full=f_full, flush_pages=f_pages, ipis=ipis_c,
              rmap=len(huge_locks), ptl=2, lock=0)
        if allocs:
            w = (alloc_pmd_at >= lo) & (alloc_pmd_at < hi)
            R.add(alloc_pmd_at[w] - lo, alloc_pmd=1)
            w = (up_at >= lo) & (up_at < hi)
            R.add(up_at[w] - lo, alloc_p4d=up_p4d[w], alloc_pud=up_pud[w])
        cols = {n: R.column(n, S._DTYPES.get(n, _I32)) for n in S.ADDR_COLUMNS + S.INT_COLUMNS}
        return S.Steps(cols, (huge_locks,), np.broadcast_to(np.int32(0), (hi - lo,)))

    # Source and destination PMD boundaries are two progressions of period PMD_SIZE that
    # never coincide (the ranges are not mutually PMD aligned), so past the first extent the
    # extents alternate between two lengths, one pair per source PMD. With a fully populated
    # interior every pair is the same two rows: store them once, repeated (PeriodicBlock),
    # with the few table allocations as overrides. The edge rows stay dense.
    head, tail_n = 3, 4
    if inner_full and all_flushed and n_ext >= head + tail_n + 8:
        mid = (n_ext - head - tail_n) // 2 * 2
        t0, t1 = head, head + mid
        assert bounds[t0 + 2] - bounds[t0] == P
        over = {}
        w = (alloc_pmd_at >= t0) & (alloc_pmd_at < t1)
        if w.any():
            over["alloc_pmd"] = (alloc_pmd_at[w] - t0, np.ones(int(w.sum()), _I32))
        w = (up_at >= t0) & (up_at < t1)
        if w.any():
            over["alloc_p4d"] = (up_at[w] - t0, up_p4d[w])
            over["alloc_pud"] = (up_at[w] - t0, up_pud[w])
        periodic = S.PeriodicBlock(rows(t0, t0 + 2, allocs=False), mid // 2, P, P, over)
        block = S.Steps(parts=[rows(0, t0), periodic, rows(t1, n_ext)])
    else:
        block = rows(0, n_ext)

    # ------------------------------------------------ state: source slots emptied, destination filled
    i_lo = int(np.searchsorted(pt.pmd_idx, s_lo))
    i_hi = i_lo + (s_hi - s_lo + 1)
    em = np.zeros(s_hi - s_lo + 2, _I32)
    em[:-1] = src_row
    src_new = np.zeros(s_hi - s_lo + 1, _I32)
    _split_edge_slots(a, masks, src_row, em, src_new, s_lo, s_hi, o0, oe)
    nD = d_hi - d_lo + 1
    off = ((-delta) % P) >> ps
    sa0 = (((d_lo << ms) - delta) >> ms) - s_lo  # source slot (relative) under each D's bottom

    def combo(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
        if not off:
            return ra.astype(_I32)
        key = ra.astype(_I64) * (masks.n + 1) + rb
        uk, inv = np.unique(key, return_inverse=True)
        ua, ub = uk // (masks.n + 1), uk % (masks.n + 1)
        words = shift_right(masks.rows(ua), off) | shift_left(masks.rows(ub), ptrs - off)
        ids = masks.add_rows(words)
        ids[~words.any(axis=1)] = 0
        return ids[inv]

    def em_at(rel: np.ndarray) -> np.ndarray:
        ok = (rel >= 0) & (rel < len(em))
        return np.where(ok, em[np.clip(rel, 0, len(em) - 1)], 0)

    # destination slots 3 .. nD-4 read source rows em[sa0 + 3 .. sa0 + nD - 3]
    lo_i, hi_i = sa0 + 3, sa0 + nD - 3
    interior = em[lo_i:hi_i + 1] if (nD > 6 and lo_i >= 0 and hi_i < len(em)) else em[:0]
    if len(interior) and bool((interior == interior[0]).all()):
        r = int(interior[0])
        mid = int(combo(np.array([r]), np.array([r]))[0])
        dst_rows = np.full(nD, mid, _I32)
        ends_rel = np.array([0, 1, 2, nD - 3, nD - 2, nD - 1])
        rel = sa0 + ends_rel
        dst_rows[ends_rel] = combo(em_at(rel), em_at(rel + 1))
    else:
        rel = sa0 + np.arange(nD)
        dst_rows = combo(em_at(rel), em_at(rel + 1))
    pmd_mask = pt.pmd_mask.copy()
    pmd_mask[i_lo:i_hi] = src_new
    at = int(np.searchsorted(pt.pmd_idx, d_lo))
    pmd_idx = np.concatenate([pt.pmd_idx[:at], np.arange(d_lo, d_hi + 1, dtype=_I64), pt.pmd_idx[at:]])
    pmd_kind = np.concatenate([pt.pmd_kind[:at], np.full(nD, PMD_TABLE, _I8), pt.pmd_kind[at:]])
    pmd_mask = np.concatenate([pmd_mask[:at], dst_rows, pmd_mask[at:]])
    if len(alloc_pmd_q):
        pud = dict(zip(pt.pud_idx.tolist(), pt.pud_kind.tolist()))
        for q in alloc_pmd_q.tolist():
            pud[q] = PUD_TABLE
        items = sorted(pud.items())
        pud_idx = np.array([k for k, _ in items], _I64)
        pud_kind = np.array([k for _, k in items], _I8)
    else:
        pud_idx, pud_kind = pt.pud_idx, pt.pud_kind
    tops = pt.pud_tables | frozenset(new_tops) if new_tops else pt.pud_tables
    all_masks, pop = masks.materialise()
    return block, PageTables(a, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_mask, all_masks, pop)


def _split_edge_slots(a, masks: MaskTable, rows: np.ndarray, em: np.ndarray, rest: np.ndarray,
                      s_lo: int, s_hi: int, o0: int, oe: int, only: np.ndarray | None = None) -> None:
    """The first and last source slot may lie only partly inside ``[o0, oe)``: split their
    bitmap into the part that moves (``em``) and the part that stays (``rest``), in place."""
    for slot in sorted({s_lo, s_hi}):
        if only is not None and not only[slot - s_lo]:
            continue
        base = slot << a.pmd_shift
        lo = (max(o0, base) - base) >> a.page_shift
        hi = (min(oe, base + a.pmd_size) - base) >> a.page_shift
        if lo == 0 and hi == a.ptrs_per_pte:
            continue
        m = masks.row_int(int(rows[slot - s_lo]))
        em[slot - s_lo] = masks.add_int(m & range_mask(lo, hi))
        rest[slot - s_lo] = masks.add_int(m & ~range_mask(lo, hi))


def _upper_allocs(t: Target, pt: PageTables, seg_T: np.ndarray, table_seg: np.ndarray):
    """``alloc_new_pud`` at the first step of each PUD-table segment: P4D/PUD pages per
    segment and the top-level slots that gain a PUD table (a handful of Python steps)."""
    a = t.arch
    n_seg = len(seg_T)
    seg_p4d = np.zeros(n_seg, _I32)
    seg_pud = np.zeros(n_seg, _I32)
    new_tops: list[int] = []
    if a.pud_folded:
        return seg_p4d, seg_pud, new_tops
    tab = np.flatnonzero(table_seg)
    cand = tab[_firsts(seg_T[tab])]
    have = set(pt.pud_tables)
    gshift = a.pgd_shift - a.p4d_shift
    for g in cand.tolist():
        top = int(seg_T[g])
        if top in have:
            continue
        if not a.p4d_folded and not any((x >> gshift) == (top >> gshift) for x in have):
            seg_p4d[g] = 1
        seg_pud[g] = 1
        have.add(top)
        new_tops.append(top)
    return seg_p4d, seg_pud, new_tops


def _apply(t: Target, pt: PageTables, masks: MaskTable, pmc, v: dict) -> PageTables:
    """Build the page tables after the move from the classification in ``v``."""
    a = t.arch
    ps, ms, us = a.page_shift, a.pmd_shift, a.pud_shift
    P, ptrs, k_pp = a.pmd_size, a.ptrs_per_pte, us - ms
    o0, oe, delta = v["o0"], v["oe"], v["delta"]
    s_lo, s_hi, d_lo, d_hi = v["s_lo"], v["s_hi"], v["d_lo"], v["d_hi"]
    P_lo = v["P_lo"]
    anon = v["anon"]
    S_, D_ = v["S_"], v["D_"]
    pte_idx = v["pte_idx"]
    seg_P, seg_Q = v["seg_P"], v["seg_Q"]
    pud_ok, stage_seg = v["pud_ok"], v["stage_seg"]
    pmd_ok, thp_move, split = v["pmd_ok"], v["thp_move"], v["split"]
    src_kind, src_row = v["src_kind"], v["src_row"]

    # --- per source PUD slot: walked at PMD level?
    n_P = v["P_hi"] - P_lo + 1
    walked_P = np.zeros(n_P, bool)
    walked_P[seg_P[stage_seg] - P_lo] = True
    moved_P = seg_P[pud_ok]

    # --- source slots removed (moved whole or a file THP split) and cleared
    removed_src = np.zeros(s_hi - s_lo + 1, bool)
    dst_new_idx, dst_new_kind, dst_new_row = [], [], []
    for m in (pmd_ok, thp_move):
        if m is None:
            continue
        e = np.flatnonzero(m)
        if not len(e):
            continue
        removed_src[S_[e] - s_lo] = True
        dst_new_idx.append(D_[e])
        dst_new_kind.append(src_kind[S_[e] - s_lo])
        rel = S_[e] - s_lo
        dst_new_row.append(np.where(src_kind[rel] == PMD_LEAF, -1, src_row[rel]).astype(_I32))
    if split is not None and not anon:
        removed_src[S_[np.flatnonzero(split)] - s_lo] = True

    # moved PUD slots: every PMD entry under them goes to the destination PUD slot
    i_lo, i_hi = np.searchsorted(pt.pmd_idx, [s_lo, s_hi + 1])
    src_idx = pt.pmd_idx[i_lo:i_hi]
    pud_moved_entries = np.zeros(len(src_idx), bool)
    if len(moved_P):
        # entries under one PUD slot are contiguous in the sorted index: mark them by ranges
        b0 = np.searchsorted(src_idx, moved_P << k_pp)
        b1 = np.searchsorted(src_idx, (moved_P + 1) << k_pp)
        sh = (seg_Q[pud_ok] - seg_P[pud_ok]) << k_pp
        step = np.zeros(len(src_idx) + 1, _I64)
        np.add.at(step, b0, sh + 1)
        np.add.at(step, b1, -(sh + 1))
        run = np.cumsum(step[:-1])
        pud_moved_entries = run != 0
        shift_by = run[pud_moved_entries] - 1
        dst_new_idx.append(src_idx[pud_moved_entries] + shift_by)
        dst_new_kind.append(pt.pmd_kind[i_lo:i_hi][pud_moved_entries])
        dst_new_row.append(pt.pmd_mask[i_lo:i_hi][pud_moved_entries])

    # --- effective moving bitmap per source slot (row ids): whole slot for interior slots
    em = np.zeros(s_hi - s_lo + 2, _I32)  # one spare slot past the end
    pte_slots = np.unique(S_[pte_idx]) if len(pte_idx) != len(S_) else None
    if pte_slots is None:
        # every extent is a move_ptes: every source slot in range is walked by PTE moves
        pte_slot_mask = src_kind != PMD_NONE
    else:
        pte_slot_mask = np.zeros(s_hi - s_lo + 1, bool)
        pte_slot_mask[pte_slots - s_lo] = True
    eff_row = v["eff_row"]
    em[:-1] = np.where(pte_slot_mask, eff_row, 0)
    src_new_row = np.zeros(s_hi - s_lo + 1, _I32)  # interior walked slots end empty
    # edge slots: only part of them is in the range
    _split_edge_slots(a, masks, eff_row, em, src_new_row, s_lo, s_hi, o0, oe,
                      only=pte_slot_mask)

    # --- destination bitmaps of slots written by move_ptes
    new_src_kind = pt.pmd_kind[i_lo:i_hi]
    new_src_row = pt.pmd_mask[i_lo:i_hi]
    rel = src_idx - s_lo
    walked_e = walked_P[(src_idx >> k_pp) - P_lo] & pte_slot_mask[rel]
    keep_e = ~(removed_src[rel] | pud_moved_entries)
    if walked_e.any():
        new_src_kind = np.where(walked_e, PMD_TABLE, new_src_kind).astype(_I8)
        new_src_row = np.where(walked_e, src_new_row[rel], new_src_row).astype(_I32)

    touched_D = None
    if len(pte_idx):
        pD = D_[pte_idx]
        touched_D = pD[_firsts(pD)]
        off = ((-delta) % P) >> ps
        # source slot whose bits land at the bottom of each destination slot
        Sa = (((touched_D << ms) - delta) >> ms) - s_lo
        ra = em[np.clip(Sa, 0, len(em) - 1)] * ((Sa >= 0) & (Sa < len(em)))
        if off:
            Sb = Sa + 1
            rb = em[np.clip(Sb, 0, len(em) - 1)] * ((Sb >= 0) & (Sb < len(em)))
        else:
            rb = np.zeros_like(ra)
        key = ra.astype(_I64) * (masks.n + 1) + rb
        run = _firsts(key)
        run_id = np.cumsum(run) - 1
        rk = key[run]
        if len(rk) > 64:
            uk, inv = np.unique(rk, return_inverse=True)
        else:
            uk, inv = rk, np.arange(len(rk))
        ua, ub = uk // (masks.n + 1), uk % (masks.n + 1)
        if off:
            words = shift_right(masks.rows(ua), off) | shift_left(masks.rows(ub), ptrs - off)
        else:
            words = masks.rows(ua)
        # reuse existing rows where a combination is just a source row (aligned moves)
        if off:
            urow = masks.add_rows(words)
            zero = ~words.any(axis=1)
            urow[zero] = 0
        else:
            urow = ua.astype(_I32)
        dst_row_t = urow[inv][run_id]
        # OR in what the destination already had
        if v["dst_any"]:
            dk = v["dst_kind_d"][touched_D - d_lo]
            had = np.flatnonzero(dk == PMD_TABLE)
            if len(had):
                old_rows = v["dst_row_d"][touched_D[had] - d_lo]
                merged = masks.rows(old_rows) | masks.rows(dst_row_t[had])
                dst_row_t = dst_row_t.copy()
                dst_row_t[had] = masks.add_rows(merged)
        dst_new_idx.append(touched_D)
        dst_new_kind.append(np.full(len(touched_D), PMD_TABLE, _I8))
        dst_new_row.append(dst_row_t.astype(_I32))

    # --- splice the PMD arrays
    keep = np.ones(len(pt.pmd_idx), bool)
    keep[i_lo:i_hi] = keep_e
    pmd_kind = pt.pmd_kind.copy()
    pmd_row = pt.pmd_mask.copy()
    pmd_kind[i_lo:i_hi] = new_src_kind
    pmd_row[i_lo:i_hi] = new_src_row
    if len(dst_new_idx):
        ni = np.concatenate(dst_new_idx)
        nk = np.concatenate(dst_new_kind)
        nr = np.concatenate(dst_new_row)
        if len(dst_new_idx) > 1:
            o = np.argsort(ni, kind="stable")
            ni, nk, nr = ni[o], nk[o], nr[o]
        # existing destination entries are replaced by the new ones
        j0, j1 = np.searchsorted(pt.pmd_idx, [d_lo, (d_hi + 1)])
        if j1 > j0:
            exist = np.isin(pt.pmd_idx[j0:j1], ni)
            keep[j0:j1] &= ~exist
    else:
        ni = np.empty(0, _I64)
        nk = np.empty(0, _I8)
        nr = np.empty(0, _I32)
    base_idx = pt.pmd_idx[keep] if not keep.all() else pt.pmd_idx
    base_kind = pmd_kind[keep] if not keep.all() else pmd_kind
    base_row = pmd_row[keep] if not keep.all() else pmd_row
    if len(ni):
        at = np.searchsorted(base_idx, ni)
        if at[0] == at[-1]:  # one block between two base entries: splice, no scatter
            k = int(at[0])
            pmd_idx = np.concatenate([base_idx[:k], ni, base_idx[k:]])
            pmd_kind = np.concatenate([base_kind[:k], nk, base_kind[k:]])
            pmd_row = np.concatenate([base_row[:k], nr, base_row[k:]])
        else:
            pmd_idx = np.insert(base_idx, at, ni)
            pmd_kind = np.insert(base_kind, at, nk)
            pmd_row = np.insert(base_row, at, nr)
    else:
        pmd_idx, pmd_kind, pmd_row = base_idx, base_kind, base_row

    # --- PUD level
    pud = {}
    add_q = set(v["alloc_pmd_q"].tolist())
    add_q.update(seg_Q[pud_ok].tolist())
    rm_p = set(moved_P.tolist())
    if add_q or rm_p:
        pud = dict(zip(pt.pud_idx.tolist(), pt.pud_kind.tolist()))
        for p_ in rm_p:
            pud.pop(p_, None)
        for q in add_q:
            pud[q] = PUD_TABLE
        items = sorted(pud.items())
        pud_idx = np.array([k for k, _ in items], _I64)
        pud_kind = np.array([k for _, k in items], _I8)
    else:
        pud_idx, pud_kind = pt.pud_idx, pt.pud_kind
    tops = pt.pud_tables | frozenset(v["new_tops"]) if v["new_tops"] else pt.pud_tables
    all_masks, pop = masks.materialise()
    return PageTables(a, tops, pud_idx, pud_kind, pmd_idx, pmd_kind, pmd_row, all_masks, pop)
