"""The plan: a columnar table of steps, one row per kernel action.

A :class:`Steps` table is what every later layer consumes (cost model, engine, reports,
trace export). Rows are in execution order. Each row is one extent of
``move_page_tables()`` (or one phase of the syscall around it) with the counts of the
operations it performs. Columns are numpy arrays of equal length, so a 1 TiB move with a
million extents costs a few dozen MiB and the cost model can work on whole columns.

Phases (column ``phase``):

``SYSCALL``    the fixed part of ``do_mremap``: entry, checks, ``mmap_lock``, VMA work;
``UNMAP_DST``  ``do_munmap`` of a mapped destination under ``MREMAP_FIXED`` (and the tail
               of a shrink);
``MOVE``       ``move_page_tables`` proper, extent by extent;
``REVERT``     the revert move after a partial move (R17);
``UNMAP_SRC``  ``unmap_source_vma`` (zap + ``free_pgtables`` + ``tlb_finish_mmu``), or the
               exec-stack ``free_pgd_range`` (R21.6).

Kinds (column ``kind``) name the kernel function a row mirrors; see :data:`KIND_NAMES`.

Per-row count columns: ``ptes`` present PTEs moved (or zapped), ``slots`` PTE slots walked
(in a ``zap`` row: the huge PMDs ``zap_huge_pmd`` zapped whole, each one entry, R24),
``batches`` set_ptes batches (in a ``zap`` row: the steps ``zap_present_ptes`` zapped its
PTEs in, one per PTE, or one per run of a large folio's PTEs where the kernel batches them,
R24a; equal to ``ptes`` where nothing batches),
``alloc_p4d``/``alloc_pud``/``alloc_pmd``/``alloc_pte`` page-table pages allocated,
``freed`` page-table pages freed, ``flushes`` TLB flush calls
(``flush_tlb_mm_range`` or the arch equivalent; 0 or 1 per row), ``flush_full`` 1 if that flush
is a full (PCID/ASID) flush, ``flush_pages`` per-page invalidations it issues on each CPU
(INVLPG or TLBI ops; 0 for a full flush), ``ipis`` CPUs interrupted by it (0 when local or
broadcast in hardware), ``rmap`` rwsems taken for write around the row (0, 1 or 2; the names
are in :attr:`Steps.rmap_lock_names`), ``ptl`` page-table spinlocks taken, ``notifier`` MMU
notifier start/end pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter, itemgetter

import numpy as np

from perfsim.planner.frozen import direct_init

# Phases
SYSCALL, UNMAP_DST, MOVE, REVERT, UNMAP_SRC = range(5)
PHASE_NAMES = ("syscall", "unmap_dst", "move", "revert", "unmap_src")

# Kinds
(K_SYSCALL, K_NOTIFIER, K_SKIP_PUD, K_SKIP_PMD, K_PUD_MOVE, K_HUGE_PUD_MOVE, K_PMD_MOVE,
 K_PMD_MOVE_FAILED, K_PUD_MOVE_FAILED, K_THP_MOVE, K_THP_SPLIT, K_PTE_MOVE, K_ALLOC_FAIL,
 K_HUGETLB_MOVE, K_ZAP, K_FREE_TABLES, K_MUNMAP) = range(17)

KIND_NAMES = (
    "syscall",          # do_mremap fixed work
    "notifier",         # mmu_notifier_invalidate_range_start/end pair
    "skip_pud",         # source PUD none: skip the PUD extent
    "skip_pmd",         # source PMD none: skip the PMD extent
    "move_normal_pud",  # NORMAL_PUD: reparent a PMD table
    "move_huge_pud",    # HPAGE_PUD leaf
    "move_normal_pmd",  # NORMAL_PMD: reparent a PTE table
    "move_normal_pmd_failed",  # tried with rmap locks held, returned false, fell back
    "move_normal_pud_failed",
    "move_huge_pmd",    # THP leaf moved as one entry
    "split_huge_pmd",   # THP split because the extent is short
    "move_ptes",        # PTE-by-PTE copy of one extent
    "alloc_fail",       # destination table allocation failed: the loop breaks
    "move_hugetlb_page_tables",
    "zap",              # unmap_vmas over a range (present PTEs and whole huge PMDs cleared)
    "free_pgtables",    # page-table pages freed + tlb_finish_mmu flush
    "do_vmi_munmap",    # the VMA work of unmapping a mapped range (slots: the VMAs it hits)
)

INT_COLUMNS = (
    "phase", "kind", "length", "ptes", "slots", "batches", "alloc_p4d", "alloc_pud", "alloc_pmd",
    "alloc_pte", "freed", "flushes", "flush_full", "flush_pages", "ipis", "rmap", "ptl", "notifier",
)
ADDR_COLUMNS = ("old_addr", "new_addr")
_DTYPES = {c: np.int64 for c in ADDR_COLUMNS + ("length", "ptes", "slots", "batches", "flush_pages")}

ROW_FIELDS = ADDR_COLUMNS + INT_COLUMNS
"""The fields of a :class:`StepLog` row tuple, in order (see :attr:`Steps.row_tuples`)."""
_PHASE_AT = ROW_FIELDS.index("phase")
_WIDE_AT = tuple(i for i, n in enumerate(ROW_FIELDS) if _DTYPES.get(n) is np.int64)
_NARROW_AT = tuple(i for i, n in enumerate(ROW_FIELDS) if _DTYPES.get(n) is not np.int64)
_WIDE_OF, _NARROW_OF = itemgetter(*_WIDE_AT), itemgetter(*_NARROW_AT)
# the int64 rows then the int32 rows, back in the order of ROW_FIELDS
_IN_ROW_ORDER = itemgetter(*[(_WIDE_AT + _NARROW_AT).index(i) for i in range(len(ROW_FIELDS))])

#: a part's length (``Steps``, ``PeriodicBlock``): ``sum(map(_LEN, parts))``
_LEN = attrgetter("_len")


@direct_init
@dataclass
class StepLog:
    """Append-only builder used by the planners; ``freeze()`` yields a :class:`Steps`.

    Rows come one at a time through :meth:`add`, or as whole frozen blocks through
    :meth:`append_block` (the vectorised planner's output: no Python object per row).
    ``blocks`` records each block with the number of ``rows`` that precede it.
    """

    rows: list[tuple] = field(default_factory=list)
    lock_names: list[tuple[str, ...]] = field(default_factory=list)
    blocks: list[tuple[int, Steps]] = field(default_factory=list)

    def add(self, phase: int, kind: int, old_addr: int = 0, new_addr: int = 0, length: int = 0, *,
            ptes: int = 0, slots: int = 0, batches: int = 0, alloc_p4d: int = 0, alloc_pud: int = 0,
            alloc_pmd: int = 0, alloc_pte: int = 0, freed: int = 0, flush=None,
            rmap: tuple[str, ...] = (), ptl: int = 0, notifier: int = 0) -> None:
        """Append one row. ``flush`` is a :class:`~perfsim.planner.tlb.Flush` or None
        (:meth:`add_row`, which lays the row out, takes the same arguments by position; hot
        loops call it directly)."""
        self.add_row(phase, kind, old_addr, new_addr, length, ptes, slots, batches, alloc_p4d,
                     alloc_pud, alloc_pmd, alloc_pte, freed, flush, rmap, ptl, notifier)

    def add_row(self, phase: int, kind: int, old_addr: int, new_addr: int, length: int,
                ptes: int, slots: int, batches: int, alloc_p4d: int, alloc_pud: int,
                alloc_pmd: int, alloc_pte: int, freed: int, flush, rmap: tuple[str, ...],
                ptl: int, notifier: int) -> None:
        """:meth:`add` with every argument given by position, in :meth:`add`'s order (a
        call binding seventeen positions costs less than one binding keywords): the same
        row (``tests/test_t13c_layers.py`` holds the two to each other)."""
        if flush is None:
            self.rows.append((old_addr, new_addr, phase, kind, length, ptes, slots, batches,
                              alloc_p4d, alloc_pud, alloc_pmd, alloc_pte, freed, 0, 0, 0, 0,
                              len(rmap), ptl, notifier))
        else:
            self.rows.append((old_addr, new_addr, phase, kind, length, ptes, slots, batches,
                              alloc_p4d, alloc_pud, alloc_pmd, alloc_pte, freed, 1,
                              int(flush.full), flush.pages, flush.ipis, len(rmap), ptl, notifier))
        self.lock_names.append(rmap)

    def append_block(self, block) -> None:
        """Append a frozen :class:`Steps` table or a :class:`PeriodicBlock` after the rows
        added so far, without converting it to Python tuples."""
        if block._len:  # (len() of a Steps table or a PeriodicBlock)
            self.blocks.append((len(self.rows), block))

    @staticmethod
    def _freeze_rows(rows: list[tuple], lock_names: list[tuple[str, ...]]) -> Steps:
        """A table of ``rows`` (tuples in :data:`ROW_FIELDS` order), its columns made when
        first read (:func:`_columns_of_rows`)."""
        return Steps(rows=(rows, lock_names))

    def freeze(self) -> Steps:
        """The table of every row added so far; blocks are spliced in lazily."""
        rows, names = self.rows, self.lock_names
        if not self.blocks:
            return Steps(rows=(list(rows), list(names)))
        parts, at = [], 0
        new = Steps.__new__
        for pos, block in self.blocks:
            if pos > at:
                parts.append(_rows_part(new(Steps), rows[at:pos], names[at:pos]))
            if type(block) is Steps:
                parts.extend(block._parts if block._parts is not None else (block,))
            else:
                parts.append(block)
            at = pos
        if at < len(rows):
            parts.append(_rows_part(new(Steps), rows[at:], names[at:]))
        return Steps(parts=parts)


def _rows_part(out: Steps, rows: list[tuple], lock_names: list[tuple[str, ...]]) -> Steps:
    """``out`` (a bare :class:`Steps`) made ``Steps(rows=(rows, lock_names))`` (``rows``
    not empty), the lock sets found as :func:`_lock_sets_of` finds them, without the two
    calls."""
    out._rows = (rows, lock_names)
    out._len = len(rows)
    first = lock_names[0]
    out.lock_sets = (first,) if lock_names.count(first) == len(lock_names) \
        else tuple(sorted(set(lock_names)))
    return out


def _lock_sets_of(lock_names: list[tuple[str, ...]]) -> tuple:
    """The distinct rmap lock sets of the rows, sorted (their numbers in ``lock_set``)."""
    first = lock_names[0] if lock_names else ()
    if lock_names.count(first) == len(lock_names):  # one lock set, or no row
        return (first,) if lock_names else ()
    return tuple(sorted(set(lock_names)))


#: Up to this many rows :func:`_columns_of_rows` converts the columns with ``np.array``.
_FEW_ROWS = 32


def _columns_of_rows(rows: list[tuple], lock_names: list[tuple[str, ...]],
                     lock_sets: tuple) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(columns, lock_set)`` of row tuples: each column the values and dtype of one
    ``np.asarray`` of it, made in two conversions (the int64 columns, the int32 ones; each
    column a contiguous row of one of them)."""
    n = len(rows)
    data = list(zip(*rows)) if rows else [()] * len(ROW_FIELDS)
    if n <= _FEW_ROWS:  # one conversion of the nested tuples costs less than fromiter's loop
        wide = np.array(_WIDE_OF(data), np.int64).reshape(len(_WIDE_AT), n)
        narrow = np.array(_NARROW_OF(data), np.int32).reshape(len(_NARROW_AT), n)
    else:
        wide = np.fromiter(chain.from_iterable(_WIDE_OF(data)), np.int64,
                           len(_WIDE_AT) * n).reshape(len(_WIDE_AT), n)
        narrow = np.fromiter(chain.from_iterable(_NARROW_OF(data)), np.int32,
                             len(_NARROW_AT) * n).reshape(len(_NARROW_AT), n)
    cols = dict(zip(ROW_FIELDS, _IN_ROW_ORDER([*wide, *narrow])))
    if len(lock_sets) <= 1:
        lock_id = np.zeros(n, np.int32)
    else:
        ids = {k: i for i, k in enumerate(lock_sets)}
        lock_id = np.fromiter((ids[k] for k in lock_names), np.int32, n)
    return cols, lock_id


#: Plans of at most this many rows are materialised as plain (dense) columns: finding the
#: columns that could stay zero-stride views costs more than the memory it saves.
DENSE_ROWS = 4096


def _concat_column(arrays: list[np.ndarray], total: int | None = None) -> np.ndarray:
    """Concatenate one column; a column that is one constant in every part (blocks may hold
    constant columns as zero-stride views) stays a zero-stride view, unless the table has
    at most :data:`DENSE_ROWS` rows (``total``). The values are the same either way."""
    if len(arrays) == 1:
        return arrays[0]
    if total is not None and total <= DENSE_ROWS:
        return np.concatenate(arrays)
    first = arrays[0]
    if first.size and any(a.strides == (0,) for a in arrays):
        v = first.flat[0]
        if all(a.size == 0 or (a.strides == (0,) and a.flat[0] == v) or
               (a.size <= 8 and bool((a == v).all())) for a in arrays):
            return np.broadcast_to(np.asarray(v, dtype=first.dtype), (sum(len(a) for a in arrays),))
    return np.concatenate(arrays)


class Steps:
    """Columnar step table.

    ``cols`` maps column name → numpy array; ``lock_sets`` lists the distinct tuples of rmap
    lock names held, and ``lock_set`` indexes it per row.

    A table frozen from :class:`StepLog` rows keeps them (:attr:`row_tuples`) and makes its
    columns the first time they are read: a consumer that reads the Python rows of a small
    plan needs no numpy call.

    A table may also be *lazy*: a sequence of parts (dense tables and
    :class:`PeriodicBlock` runs) whose columns are concatenated only when first read.
    ``len()`` and the counters (:func:`perfsim.planner.result.phase_blocks`) never need
    that, so planning a million-extent move does not pay for materialising its rows.
    """

    # (what an instance holds until it sets its own: a table of rows or parts makes its
    # columns when first read)
    _rows = _parts = _cols = _lock_set = None

    def __init__(self, cols: dict | None = None, lock_sets: tuple = (), lock_set=None, *,
                 parts: list | None = None, rows: tuple | None = None):
        if rows is not None:
            self._rows = rows
            self._len = len(rows[0])
            self.lock_sets = _lock_sets_of(rows[1])
        elif parts is not None:
            # the parts that hold rows (``_len``: a Steps table's or a PeriodicBlock's length)
            self._parts = kept = [p for p in parts if p._len]
            sets = {p.lock_sets for p in kept}  # (the distinct lock-set tuples)
            if not sets:
                self.lock_sets = ()
            elif len(sets) == 1 and len(one := next(iter(sets))) <= 1:
                # every part holds the same lock set (or none): the sorted union is it
                self.lock_sets = one
            else:
                self.lock_sets = tuple(sorted({n for p in kept for n in p.lock_sets}))
            self._len = sum(map(_LEN, kept))
        else:
            self._cols = cols
            self.lock_sets = tuple(lock_sets)
            self._lock_set = lock_set
            self._len = len(cols["kind"])

    @classmethod
    def periodic_run(cls, head: list[tuple], period: list[tuple], reps: int, old_stride: int,
                     new_stride: int, overrides: dict, tail: list[tuple],
                     locks: tuple[str, ...]) -> Steps:
        """``Steps(parts=[Steps(rows=(head, ...)), PeriodicBlock(Steps(rows=(period, ...)),
        reps, old_stride, new_stride, overrides), Steps(rows=(tail, ...))])``, every row of
        one phase holding the rmap locks ``locks``, built without the checks and searches
        those constructors make (the lock sets are ``(locks,)``; ``head``, ``period`` and
        ``tail`` are not empty, ``reps`` is positive)."""
        sets = (locks,)
        new = cls.__new__
        h, p, t = new(cls), new(cls), new(cls)
        h._rows, h._len, h.lock_sets = (head, [locks] * len(head)), len(head), sets
        p._rows, p._len, p.lock_sets = (period, [locks] * len(period)), len(period), sets
        t._rows, t._len, t.lock_sets = (tail, [locks] * len(tail)), len(tail), sets
        block = PeriodicBlock.__new__(PeriodicBlock)
        block.template, block.reps, block.overrides, block.lock_sets = p, reps, overrides, sets
        block.old_stride, block.new_stride, block._len = old_stride, new_stride, p._len * reps
        out = new(cls)
        out._parts = [h, block, t]
        out._len = h._len + block._len + t._len
        out.lock_sets = sets
        return out

    # ------------------------------------------------------------------ materialising
    def _materialise(self) -> None:
        if self._rows is not None:
            self._cols, self._lock_set = _columns_of_rows(*self._rows, self.lock_sets)
            return
        parts = [p.dense() if isinstance(p, PeriodicBlock) else p for p in self._parts]
        if not parts:
            self._cols, self._lock_set = _columns_of_rows([], [], ())
            return
        ids = {n: i for i, n in enumerate(self.lock_sets)}
        remapped = []
        for p in parts:
            remap = np.asarray([ids[n] for n in p.lock_sets], np.int32)
            if not len(remap) or np.array_equal(remap, np.arange(len(remap))):
                remapped.append(p.lock_set)  # already in the merged numbering
            else:
                remapped.append(remap[p.lock_set])
        n = self._len
        self._lock_set = _concat_column(remapped, n)
        self._cols = {k: _concat_column([p.cols[k] for p in parts], n) for k in parts[0].cols}

    @property
    def cols(self) -> dict[str, np.ndarray]:
        if self._cols is None:
            self._materialise()
        return self._cols

    @property
    def lock_set(self) -> np.ndarray:
        if self._lock_set is None:
            self._materialise()
        return self._lock_set

    @property
    def row_tuples(self) -> tuple[list[tuple], list[tuple[str, ...]]] | None:
        """For a table frozen from :class:`StepLog` rows alone (every walked plan): ``(rows,
        lock names per row)``, each row a tuple of Python ints in :data:`ROW_FIELDS` order,
        the same values as :attr:`cols` (which are made from them when first read). None
        for a table of columns or parts. Not to be modified."""
        return self._rows

    def parts(self) -> list:
        """The dense tables and periodic blocks this table is made of, in row order."""
        return list(self._parts) if self._parts is not None else [self]

    # ------------------------------------------------------------------ table API
    def __len__(self) -> int:
        return self._len

    def col(self, name: str) -> np.ndarray:
        return self.cols[name]

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in ADDR_COLUMNS or name in INT_COLUMNS:
            return self.cols[name]
        raise AttributeError(name)

    def lock_names_per_row(self) -> list[tuple[str, ...]]:
        return [self.lock_sets[i] for i in self.lock_set.tolist()]

    @property
    def rmap_lock_names(self) -> list[tuple[str, ...]]:
        return self.lock_names_per_row()

    def select(self, mask: np.ndarray) -> Steps:
        return Steps({k: v[mask] for k, v in self.cols.items()}, self.lock_sets, self.lock_set[mask])

    @staticmethod
    def concat(parts: list) -> Steps:
        return Steps(parts=[q for p in parts for q in (p.parts() if isinstance(p, Steps) else [p])])

    def to_frame(self):
        """A pandas DataFrame with one row per step, phase and kind as names."""
        import pandas as pd

        df = pd.DataFrame(self.cols)
        df["phase"] = pd.Categorical.from_codes(df["phase"], PHASE_NAMES)
        df["kind"] = pd.Categorical.from_codes(df["kind"], KIND_NAMES)
        df["rmap_locks"] = [",".join(n) for n in self.lock_names_per_row()]
        return df


class PeriodicBlock:
    """``reps`` repetitions of a short ``template`` table, each shifted by ``old_stride``
    and ``new_stride`` bytes, plus a few ``overrides`` (column → (row positions, values)).

    The unaligned move of a fully populated range is this shape: the same pair of
    ``move_ptes`` extents, one per PMD of the source, with a table allocation every
    512 rows. It is materialised (``dense()``) only when a consumer reads its rows.
    """

    def __init__(self, template: Steps, reps: int, old_stride: int, new_stride: int,
                 overrides: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
        rows = template.row_tuples
        if rows is not None:
            phase = rows[0][0][_PHASE_AT] if rows[0] else None
            for r in rows[0]:
                assert r[_PHASE_AT] == phase, "a periodic block has one phase"
        else:
            assert len(set(template.phase.tolist())) <= 1, "a periodic block has one phase"
        self.template = template
        self.reps = int(reps)
        self.old_stride = int(old_stride)
        self.new_stride = int(new_stride)
        self.overrides = overrides or {}
        self.lock_sets = template.lock_sets
        self._len = template._len * self.reps

    def __len__(self) -> int:
        return self._len

    @property
    def phase(self) -> int:
        rows = self.template.row_tuples
        return rows[0][0][_PHASE_AT] if rows is not None else int(self.template.phase[0])

    def dense(self) -> Steps:
        k, n = len(self.template), self.reps
        cols = {}
        for name, v in self.template.cols.items():
            if name == "old_addr" or name == "new_addr":
                stride = self.old_stride if name == "old_addr" else self.new_stride
                col = (np.tile(v, n).reshape(n, k) +
                       (np.arange(n, dtype=np.int64) * stride)[:, None]).reshape(-1)
            elif len(v) and bool((v == v[0]).all()) and name not in self.overrides:
                col = np.broadcast_to(v[:1], (n * k,))
            else:
                col = np.tile(v, n)
            if name in self.overrides:
                pos, val = self.overrides[name]
                col = np.array(col) if col.strides == (0,) else col
                col[pos] = val
            cols[name] = col
        return Steps(cols, self.template.lock_sets, np.tile(self.template.lock_set, n))

    def totals(self, block_totals) -> dict:
        """Totals over all rows: the template's times ``reps``, corrected by the overrides."""
        t = block_totals(self.template, 0, len(self.template))
        out = {}
        for key, v in t.items():
            out[key] = v * self.reps
        k = len(self.template)
        for name, (pos, val) in self.overrides.items():
            base = self.template.col(name)[np.asarray(pos) % k]
            delta = int(np.asarray(val, np.int64).sum() - base.astype(np.int64).sum())
            if name in out:
                out[name] += delta
            elif delta:
                raise ValueError(f"periodic override of {name!r} is not a summed column")
        return out
