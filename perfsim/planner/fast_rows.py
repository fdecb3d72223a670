"""The step rows of a vectorised move, column by column.

:mod:`perfsim.planner.fast` classifies the extents; this module turns the classification
into :class:`~perfsim.planner.steps.Steps` columns. Each row's contents come from the
functions the reference uses (``pgt_entry_row``, ``failed_entry_row``,
``split_huge_pmd_row``, ``move_ptes_flushes``, ``move_ptes_ptl_count``, the TLB policy through
``flush_lookup``, the batch count through ``mremap_folio_pte_batch``); what is here is where
the rows go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from perfsim.mm.pagetable import range_mask
from perfsim.planner import steps as S
from perfsim.planner.batch import PteBatching, mremap_folio_pte_batch
from perfsim.planner.bitmaps import MaskTable, all_set, any_set, filled, where_set
from perfsim.planner.pgtable_move import (
    HPAGE_PMD,
    NORMAL_PMD,
    NORMAL_PUD,
    MoveGates,
    failed_entry_row,
    move_ptes_flushes,
    move_ptes_ptl_count,
    pgt_entry_row,
    split_huge_pmd_row,
)
from perfsim.planner.tlb import Flush, flush_lookup
from perfsim.profiles import ArchProfile, Target

if TYPE_CHECKING:
    from perfsim.planner.fast import (
        Geometry,
        Layout,
        MoveCall,
        PmdStage,
        PudStage,
        RegularCounts,
        UpperAllocs,
    )

_I64, _I32 = np.int64, np.int32


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


def flush_cols(f: Flush | None) -> tuple[int, int, int, int]:
    if f is None:
        return 0, 0, 0, 0
    return 1, int(f.full), f.pages, f.ipis


#: Beyond this many values, :meth:`RowBlock.column_of_groups` casts a group's values to
#: the column's dtype before writing them.
_CAST_FIRST = 64


def _isscalar(v) -> bool:
    """``np.isscalar(v)``, answered without the call for the usual ints and arrays."""
    t = type(v)
    if t is int or t is bool:
        return True
    if t is np.ndarray:
        return False
    return np.isscalar(v)


def zero_stride(v, dtype, n: int) -> np.ndarray:
    """``np.broadcast_to(np.asarray(v, dtype), (n,))`` (a read-only view of one element,
    stride 0), made directly: ``broadcast_to`` costs several microseconds a call."""
    out = np.ndarray((n,), dtype, np.array([v], dtype), 0, (0,))
    out.flags.writeable = False
    return out


#: The columns of a step table, with their dtypes, in table order.
_STEP_COLUMNS = tuple((n, S._DTYPES.get(n, _I32)) for n in S.ADDR_COLUMNS + S.INT_COLUMNS)


class RowBlock:
    """Row groups placed at known positions of a block of ``n`` rows; columns are built once."""

    def __init__(self, n: int):
        self.n = n
        self.groups: list[tuple[object, dict]] = []

    def add(self, pos, **cols) -> None:
        """``pos``: an index array, or None for "all rows in order"."""
        if pos is not None and not len(pos):
            return
        self.groups.append((pos, cols))

    def column(self, name: str, dtype, constants: dict | None = None) -> np.ndarray:
        """Column ``name``: a read-only zero-stride view where every row has one value
        (shared through ``constants``, keyed by value and dtype, when given), else dense.

        A block of one row group (most blocks) is answered directly; any other goes
        through :meth:`column_of_groups`, which gives the same array for one group
        (``tests/test_t13b_pop_paths.py``)."""
        groups = self.groups
        if len(groups) != 1:
            pos, cols = groups[0] if groups else (0, None)
            if pos is not None or any(name in c for _, c in groups[1:]):
                return self.column_of_groups(name, dtype, constants)
            # the first group covers every row and the others do not hold the column
            v = cols.get(name, 0)
            if not _isscalar(v):
                if v.shape == (self.n,):
                    return np.array(v, dtype)
                return self.column_of_groups(name, dtype, constants)
            if v == 0:
                return self._constant(v, dtype, constants)
            out = np.zeros(self.n, dtype)
            out[:] = v
            return out
        pos, cols = groups[0]
        v = cols.get(name, 0)
        if _isscalar(v):
            return self._constant(v, dtype, constants)
        if pos is None:
            return np.ascontiguousarray(v, dtype=dtype)
        out = np.zeros(self.n, dtype)
        out[pos] = v
        return out

    def _constant(self, v, dtype, constants: dict | None) -> np.ndarray:
        key = (type(v), v, dtype)
        out = constants.get(key) if constants is not None else None
        if out is None:
            out = zero_stride(v, dtype, self.n)
            if constants is not None:
                constants[key] = out
        return out

    def column_of_groups(self, name: str, dtype, constants: dict | None = None) -> np.ndarray:
        """:meth:`column` over any number of row groups: one value in every group (a
        group without the column holds 0) is a constant, else each group's values are
        written at its positions, in order, over zeros."""
        vals = [(pos, cols.get(name, 0)) for pos, cols in self.groups]
        is_scalar = [_isscalar(v) for _, v in vals]
        if all(is_scalar):
            scalars = {v for _, v in vals}
            if len(scalars) <= 1:
                return self._constant(scalars.pop() if scalars else 0, dtype, constants)
        if len(vals) == 1 and vals[0][0] is None:
            return np.ascontiguousarray(vals[0][1], dtype=dtype)
        out = np.zeros(self.n, dtype)
        for (pos, v), scalar in zip(vals, is_scalar, strict=True):
            if scalar and v == 0:
                continue
            if not scalar and v.dtype != out.dtype and len(v) > _CAST_FIRST:
                # a long scatter from another dtype: cast first (a scatter that casts as
                # it writes is twice as slow; the same C casts either way)
                v = v.astype(out.dtype)
            if pos is None:
                out[:] = v
            else:
                out[pos] = v
        return out

    def steps(self, lock_sets: tuple) -> S.Steps:
        """The block as a :class:`~perfsim.planner.steps.Steps` table, keeping only the lock
        tuples its rows use (as ``StepLog.freeze`` does)."""
        constants: dict = {}
        groups = self.groups
        if len(groups) == 1 and groups[0][0] is None:
            # one group over every row: what column() gives it, without a call per column
            get, cols = groups[0][1].get, {}
            for name, dt in _STEP_COLUMNS:
                v = get(name, 0)
                t = type(v)
                if t is np.ndarray:
                    cols[name] = np.ascontiguousarray(v, dtype=dt)
                elif t is int or t is bool:
                    cols[name] = self._constant(v, dt, constants)
                else:
                    cols[name] = self.column(name, dt, constants)
        else:
            cols = {n: self.column(n, dt, constants) for n, dt in _STEP_COLUMNS}
        lock_col = self.column("lock", _I32)
        constant = lock_col.strides == (0,)
        # the lock-set ids the rows use, sorted (np.unique of small non-negative ids)
        used = (np.asarray([lock_col[0]]) if constant
                else where_set(np.bincount(lock_col, minlength=len(lock_sets))))
        if len(used) < len(lock_sets):
            remap = filled(len(lock_sets), -1, _I32)
            remap[used] = np.arange(len(used), dtype=_I32)
            lock_col = (zero_stride(remap[lock_col[0]], _I32, len(lock_col)) if constant
                        else remap[lock_col])
            lock_sets = tuple(lock_sets[i] for i in used.tolist())
        return S.Steps(cols, lock_sets, lock_col)


def batch_counts(masks: MaskTable, rows: np.ndarray, starts: np.ndarray, pages: np.ndarray,
                 move_start: int, arch: ArchProfile, batching: PteBatching) -> np.ndarray:
    """``mremap_folio_pte_batch`` for many extents (first PTE at ``starts``, ``pages``
    long, source bitmap row ``rows``): one call per distinct (bitmap row, cleared prefix,
    in-slot offset, length, large-folio window). The table each extent finds is its row with the PTEs that
    earlier extents of this move took cleared: from the move's start (``move_start``) or
    the slot's first PTE up to the extent (source and destination slots are disjoint on
    the vectorised paths, so nothing else has changed in a source table)."""
    ps, ptrs = arch.page_shift, arch.ptrs_per_pte
    lo = (starts >> ps) & (ptrs - 1)
    slot = starts >> arch.pmd_shift
    first_slot = slot == (move_start >> arch.pmd_shift)
    cleared = np.where(first_slot, (move_start >> ps) & (ptrs - 1), 0)
    w_lo, w_hi = batching.window_in_table(slot.astype(_I64) << (arch.pmd_shift - ps), ptrs)
    keys = np.stack([rows.astype(_I64), cleared.astype(_I64), lo.astype(_I64),
                     pages.astype(_I64), w_lo, w_hi], axis=1)
    if not len(keys):
        return np.zeros(0, _I64)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    ints: dict[int, int] = {}
    counts = np.empty(len(uniq), _I64)
    for i, (row, clr, off, n, wl, wh) in enumerate(uniq.tolist()):
        if row not in ints:
            ints[row] = masks.row_int(row)
        table = ints[row] & ~range_mask(clr, off)
        counts[i] = mremap_folio_pte_batch(batching, table, off, n, (wl, wh))
    return counts[inv.reshape(-1)]


class RegularRows:
    """The rows of a regular move. Source and destination PMD boundaries are two
    progressions of period PMD_SIZE that never coincide (the ranges are not mutually PMD
    aligned), so past the first extent the extents alternate between two lengths, one pair
    per source PMD. With a fully populated interior every pair is the same two rows: they
    are stored once, repeated (:class:`~perfsim.planner.steps.PeriodicBlock`), with the few
    table allocations as overrides; the edge rows stay dense."""

    HEAD, TAIL = 3, 4

    def __init__(self, t: Target, geo: Geometry, gates: MoveGates, call: MoveCall,
                 counts: RegularCounts, alloc_pmd_at: np.ndarray, upper: tuple):
        self.t, self.geo, self.gates, self.call, self.counts = t, geo, gates, call, counts
        self.alloc_pmd_at = alloc_pmd_at
        self.up_at, self.up_p4d, self.up_pud = upper
        a = t.arch
        self.flush = flush_lookup(t, a.page_shift, call.cpus, call.lazy_cpus, a.ptrs_per_pte)
        ipis = self.flush.ipis
        self.ipis_const = int(ipis[0]) if all_set(ipis == ipis[0]) else None
        # source and destination PTE tables always differ on this path (disjoint slots)
        self.ptl = int(move_ptes_ptl_count(geo.s_lo, geo.d_lo))

    def block(self) -> S.Steps:
        geo, n_ext = self.geo, self.geo.n_ext
        a = self.t.arch
        batching = self.gates.batching
        periodic_batches = not batching.batches or a.ptrs_per_pte % batching.folio_pages == 0
        h, tail = self.HEAD, self.TAIL
        if not (self.counts.inner_full and self.counts.all_flushed and periodic_batches
                and n_ext >= h + tail + 8):
            return self.rows(0, n_ext)
        # One period is the extents of one source PMD: two when the ends are not mutually
        # PMD aligned, one when they are but no PMD entry may move (no HAVE_MOVE_PMD).
        t0 = h
        k = 1 if geo.bounds[t0 + 1] - geo.bounds[t0] == a.pmd_size else 2
        if geo.bounds[t0 + k] - geo.bounds[t0] != a.pmd_size:
            return self.rows(0, n_ext)
        mid = (n_ext - h - tail) // k * k
        t1 = h + mid
        over = {}
        w = (self.alloc_pmd_at >= t0) & (self.alloc_pmd_at < t1)
        if any_set(w):
            over["alloc_pmd"] = (self.alloc_pmd_at[w] - t0, filled(int(np.count_nonzero(w)), 1, _I32))
        w = (self.up_at >= t0) & (self.up_at < t1)
        if any_set(w):
            over["alloc_p4d"] = (self.up_at[w] - t0, self.up_p4d[w])
            over["alloc_pud"] = (self.up_at[w] - t0, self.up_pud[w])
        periodic = S.PeriodicBlock(self.rows(t0, t0 + k, allocs=False), mid // k,
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
        if not self.gates.batching.batches:
            return ptes
        a = self.t.arch
        rows = self.counts.rows[(st >> a.pmd_shift) - self.geo.s_lo]
        return batch_counts(self.counts.masks, rows, st, pages, self.geo.old_addr, a,
                            self.gates.batching)

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
        rows = RowBlock(hi - lo)
        locks = self.gates.huge_locks
        rows.add(None, old_addr=st, new_addr=new_addr, phase=self.call.phase, kind=S.K_PTE_MOVE,
                 length=length, ptes=ptes, slots=pages, batches=self._batches(st, pages, ptes),
                 alloc_pte=alloc_pte, flushes=flushes, flush_full=f_full, flush_pages=f_pages,
                 ipis=f_ipis if np.isscalar(f_ipis) else constant(f_ipis), rmap=len(locks),
                 ptl=self.ptl, lock=0)
        if allocs:
            w = (self.alloc_pmd_at >= lo) & (self.alloc_pmd_at < hi)
            rows.add(self.alloc_pmd_at[w] - lo, alloc_pmd=1)
            w = (self.up_at >= lo) & (self.up_at < hi)
            rows.add(self.up_at[w] - lo, alloc_p4d=self.up_p4d[w], alloc_pud=self.up_pud[w])
        return rows.steps((locks,))


def constant(col: np.ndarray):
    """A column that holds one value as that scalar (stored as a zero-stride view)."""
    if len(col) and all_set(col == col[0]):
        return int(col[0])
    return col


class GeneralRows:
    """The rows of a move of any shape the fast path takes, column by column."""

    def __init__(self, t: Target, geo: Geometry, gates: MoveGates, call: MoveCall,
                 pud: PudStage, pmd: PmdStage, up: UpperAllocs, lay: Layout):
        self.t, self.geo, self.gates, self.call = t, geo, gates, call
        self.pud, self.pmd, self.up, self.lay = pud, pmd, up, lay
        self.rows = RowBlock(lay.n_rows)
        self.lock_sets = tuple(sorted({(), gates.normal_locks, gates.huge_locks}))
        self.e_idx = slice(None) if pud.all_stage else where_set(pud.stage)
        n_ext = geo.n_ext
        self.alloc_pmd_e = None
        if len(pud.alloc_pmd_at):
            self.alloc_pmd_e = np.zeros(n_ext, _I32)
            self.alloc_pmd_e[pud.alloc_pmd_at] = 1
        # p4d/pud on the first PMD-stage row of a segment that is walked at PMD level
        self.upper_p4d = self.upper_pud = None
        for g in where_set(up.seg_pud | up.seg_p4d).tolist():
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
            fl = 1 if all_set(flushed) else flushed.astype(_I32)
            cols.update(ptes=ptes, slots=pages, batches=pmd.batches[e], ptl=ptl_pte,
                        lock=self.lock_id(gates.huge_locks), rmap=len(gates.huge_locks),
                        flushes=fl, flush_full=f_full * fl, flush_pages=f_pages * fl,
                        ipis=constant(f_ipis * fl))
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
        for entry, moved in ((NORMAL_PMD, pmd.pmd_ok), (HPAGE_PMD, pmd.thp_move)):
            if moved is None or not any_set(moved[e]):
                continue  # the PMD stage moved no entry so: no row of its kind
            row = pgt_entry_row(t, gates, entry, pmd.src_slot[e], pmd.dst_slot[e], cpus=call.cpus,
                                lazy_cpus=call.lazy_cpus)
            m = mk == row.kind
            if not any_set(m):
                continue
            fl[m], ffull[m], fpages[m], fipis[m] = flush_cols(row.flush)
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
        fsp, fno = flush_cols(sp.flush), flush_cols(no.flush)
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
        gs = where_set(~pud.stage_seg)
        okg = pud.pud_ok[gs]
        row = pgt_entry_row(t, self.gates, NORMAL_PUD, None, None, cpus=call.cpus,
                            lazy_cpus=call.lazy_cpus)
        fpud = flush_cols(row.flush)
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
        gs = where_set(self.pud.pud_fail)
        row = failed_entry_row(self.gates, NORMAL_PUD)
        self.rows.add(self.lay.pre1_pos, old_addr=geo.seg_start[gs],
                      new_addr=geo.seg_start[gs] + geo.delta, phase=self.call.phase,
                      kind=row.kind, length=0, ptes=row.ptes, ptl=row.ptl, rmap=len(row.locks),
                      lock=self.lock_id(row.locks), alloc_p4d=up.seg_p4d[gs], alloc_pud=up.seg_pud[gs])
