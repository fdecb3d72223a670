"""Flat, typed record tables with bounded memory.

A :class:`Table` has fixed columns. Rows arrive one at a time (``add``), as numpy columns
(``add_columns``) or as a :class:`Block` (``add_block``: the many rows one coalesced segment
produces, kept as its template's arrays plus a few constants and made columns when read).
Memory stays bounded: after ``max_rows`` buffered rows the table either **spills** its buffer
to a part file in ``spill_dir`` (Parquet) or, without a spill directory, stops keeping detail
rows and only counts them (``dropped``). Running aggregates (count, sum, max of
every numeric column) always cover every row, kept or not.

``to_frame()`` gives a pandas DataFrame in one line of user code; spilled parts are read back.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import chain
from pathlib import Path

import numpy as np


class Block:
    """How a *block* of rows fills a table's columns (:meth:`Table.add_block`): each
    column is a constant (one value per block, of a given dtype), a given array, or a given
    array of offsets shifted by the block's ``t0`` (a timestamp). A coalesced segment's
    holds and flushes are blocks: their arrays come from the call template, their constants
    (caller, call) and ``t0`` from the clock. Blocks are stored as given and turned into
    columns when the table is read (:meth:`Table.to_frame`), consecutive blocks of one
    layout in one numpy call per column, equal to one ``add_columns`` per block. A column
    given a dtype in ``dtypes`` may be given as a Python list (a small call template's):
    all the lists of a read are made one array of that dtype."""

    __slots__ = ("columns", "consts", "arrays", "shifted", "numeric", "dtypes")

    def __init__(self, table: Table, consts: tuple[tuple[str, object], ...],
                 arrays: tuple[str, ...] = (), shifted: tuple[str, ...] = (),
                 dtypes: dict | None = None) -> None:
        names = [c for c, _ in consts] + list(arrays) + list(shifted)
        if sorted(names) != sorted(table.columns):
            raise ValueError(f"a block of table {table.name!r} must give each of its columns "
                             f"once: {', '.join(table.columns)}; got {', '.join(names)}")
        self.columns = table.columns
        self.consts = tuple((c, np.dtype(dt)) for c, dt in consts)
        self.arrays = tuple(arrays)
        self.shifted = tuple(shifted)
        where = {c: ("const", k) for k, (c, _) in enumerate(consts)}
        where.update({c: ("array", k) for k, c in enumerate(arrays)})
        where.update({c: ("shifted", k) for k, c in enumerate(shifted)})
        self.numeric = tuple((c, *where[c]) for c in table.numeric)
        dtypes = dtypes or {}
        # per given column (arrays, then shifted): the dtype a Python list given for it is
        # made, or None when only numpy arrays may be given
        self.dtypes = (tuple(dtypes.get(c) for c in arrays),
                       tuple(dtypes.get(c) for c in shifted))

    def frame_columns(self, blocks: list[tuple]) -> dict[str, np.ndarray]:
        """The columns of consecutive stored blocks ``(n, consts, arrays, shifted, t0)``."""
        ns = [b[0] for b in blocks]
        out = {}
        if len(blocks) == 1:
            n, consts, arrays, shifted, t0 = blocks[0]
            for k, (c, dt) in enumerate(self.consts):
                out[c] = np.full(n, consts[k], dtype=dt)
            for k, c in enumerate(self.arrays):
                out[c] = _joined([arrays[k]], self.dtypes[0][k], n)
            for k, c in enumerate(self.shifted):
                out[c] = _joined([shifted[k]], self.dtypes[1][k], n) + t0
            return out
        total = sum(ns)
        for k, (c, dt) in enumerate(self.consts):
            out[c] = np.repeat(np.array([b[1][k] for b in blocks], dtype=dt), ns)
        for k, c in enumerate(self.arrays):
            out[c] = _joined([b[2][k] for b in blocks], self.dtypes[0][k], total)
        if self.shifted:
            t0s = np.array([b[4] for b in blocks], np.int64)
            for k, c in enumerate(self.shifted):
                offs = _joined([b[3][k] for b in blocks], self.dtypes[1][k], total)
                out[c] = offs + np.repeat(t0s.astype(offs.dtype, copy=False), ns)
        return out


class ColumnList(list):
    """A block column given as a Python list (a small call template's holds and flushes):
    a list that also answers ``tolist()`` as the numpy array it stands for does."""

    __slots__ = ()

    def tolist(self) -> list:
        return list(self)


class DeferredColumn:
    """A block column made when its table is read (a periodic call template's flushes,
    ``pricing._PeriodicFlushes``): ``n`` rows; ``owner.columns()[index]`` the array;
    ``owner.sum_max(index)`` its sum and maximum, known without making it (for a column
    the table aggregates). Behaves as that array where a table reads it."""

    __slots__ = ("owner", "index", "n")

    def __init__(self, owner, index: int, n: int) -> None:
        self.owner, self.index, self.n = owner, index, n

    def __len__(self) -> int:
        return self.n

    def array(self) -> np.ndarray:
        return self.owner.columns()[self.index]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.array()
        return a if dtype is None else a.astype(dtype, copy=False)

    def tolist(self) -> list:
        return self.array().tolist()

    def sum_max(self) -> tuple[int, int]:
        return self.owner.sum_max(self.index)

    def __reduce__(self):
        # pickled (a table sent to another process) as the array it stands for
        return np.asarray, (self.array(),)


def _joined(pieces: list, dtype, n: int) -> np.ndarray:
    """One block column of ``pieces`` (numpy arrays, Python lists of a column declared
    with ``dtype`` in :class:`Block`, or :class:`DeferredColumn`s): their concatenation,
    each list as ``np.array(piece, dtype)`` would make it (all lists at once in one
    conversion; ``n`` rows in all)."""
    if any(isinstance(p, DeferredColumn) for p in pieces):
        pieces = [p.array() if isinstance(p, DeferredColumn) else p for p in pieces]
    if dtype is not None:
        if all(isinstance(p, list) for p in pieces):
            return np.fromiter(chain.from_iterable(pieces), dtype, n)
        pieces = [np.array(p, dtype) if isinstance(p, list) else p for p in pieces]
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


@lru_cache(maxsize=64)
def _numeric_layout(columns: tuple[str, ...], numeric: tuple[str, ...]) -> tuple:
    """``(((column, its position), ...), (sum keys, max keys) or (), the summary of a
    table with no row)`` of a table's numeric columns: where :class:`Table` reads them in
    a row, and the names its :meth:`summary` gives their aggregates (computed once per
    layout, not per table; the empty summary is copied, never handed out)."""
    at = tuple((c, columns.index(c)) for c in numeric)
    keys = (tuple(f"sum_{c}" for c in numeric), tuple(f"max_{c}" for c in numeric))
    empty = dict.fromkeys(("rows", "kept", "dropped", "spilled_parts", *keys[0], *keys[1]), 0)
    return at, keys if numeric else (), empty


class Table:
    """One record table (see module docstring)."""

    #: Row tuples kept as a list between two blocks before they are made columns.
    ROW_PIECE = 4096

    # Counters every table starts from (class attributes: a run makes five tables; each
    # is set on the instance when it first changes).
    _buffered = 0
    total = 0
    dropped = 0
    # The aggregates are folded lazily (when read, or before a spill): the first
    # _folded_chunks chunks and the first _folded_rows of _rows are in them.
    _folded_chunks = 0
    _folded_rows = 0
    #: The part files spilled so far (a list once the first is written).
    parts: tuple | list = ()

    def __init__(self, name: str, columns: tuple[str, ...], *, max_rows: int = 1_000_000,
                 spill_dir: Path | None = None, numeric: tuple[str, ...] = (),
                 layout: tuple | None = None) -> None:
        self._init(name, columns, max_rows, spill_dir, numeric, layout)

    @classmethod
    def like(cls, table: Table) -> Table:
        """A new, empty table with the name, columns, bounds and numeric columns of
        ``table`` (an empty prototype): what the constructor makes of them, its
        attributes copied at once."""
        t = cls.__new__(cls)
        d = table.__dict__
        t.__dict__ = {**d, "_rows": [], "_chunks": [], "_sums": d["_sums"].copy(),
                      "_maxes": d["_maxes"].copy()}
        return t

    def _init(self, name, columns, max_rows, spill_dir, numeric, layout) -> None:
        self.name = name
        self.columns = columns
        self.max_rows = max_rows
        self.spill_dir = spill_dir if spill_dir is None or isinstance(spill_dir, Path) \
            else Path(spill_dir) if spill_dir else None
        self.numeric = numeric
        self._rows: list[tuple] = []
        # in order: dicts of columns, lists of row tuples, (Block, n, consts, arrays,
        # shifted, t0) blocks
        self._chunks: list = []
        self._sums = dict.fromkeys(numeric, 0)
        self._maxes = dict.fromkeys(numeric, 0)
        # ``layout``: _numeric_layout(columns, numeric), when the caller has it
        self._numeric_at, self._summary_keys, self._empty_summary = (
            _numeric_layout(columns, numeric) if layout is None else layout)

    @property
    def sums(self) -> dict:
        """Sum of every numeric column over every row added (kept or not)."""
        self._fold()
        return self._sums

    @property
    def maxes(self) -> dict:
        """Maximum (at least 0) of every numeric column over every row added."""
        self._fold()
        return self._maxes

    # -- appending ------------------------------------------------------------------
    def add(self, *row) -> None:
        self.add_row(row)

    def add_row(self, row: tuple) -> None:
        """:meth:`add` of a row given as one tuple (a record NamedTuple), kept as it is."""
        self.total += 1
        if self._buffered < self.max_rows or self._room(1):
            self._rows.append(row)
            self._buffered += 1
        else:
            self._fold_rows([row])

    def add_columns(self, cols: dict[str, np.ndarray]) -> None:
        n = len(next(iter(cols.values())))
        if n == 0:
            return
        self.total += n
        self._fold_columns(cols)
        if self._room(n):
            self._flush_rows()
            self._chunks.append(cols)
            self._buffered += n
            if self._folded_chunks == len(self._chunks) - 1:
                self._folded_chunks += 1

    def add_block(self, block: Block, n: int, consts: tuple, arrays: tuple = (),
                  shifted: tuple = (), t0: int = 0) -> None:
        """Append ``n`` rows laid out by ``block``: ``consts`` the constant columns' values,
        ``arrays`` the given columns, ``shifted`` the offsets the shifted columns add to
        ``t0`` (in ``block``'s order). The arrays are kept, not copied: they must not
        change. The same rows, aggregates and columns as :meth:`add_columns` of them."""
        if n == 0:
            return
        self.total += n
        stored = (block, n, consts, arrays, shifted, t0)
        if self._room(n):
            if self._rows:
                self._keep_rows()
            self._chunks.append(stored)
            self._buffered += n
        else:
            self._fold_blocks(block, [stored[1:]])

    # -- aggregates -------------------------------------------------------------------
    def _fold(self) -> None:
        """Fold every row not yet in the aggregates into them."""
        chunks = self._chunks
        if self._folded_chunks == len(chunks) - 1 and isinstance(chunks[-1], tuple):
            ch = chunks[-1]  # one new block (a run of one call's segment)
            self._fold_blocks(ch[0], [ch[1:]])
            self._folded_chunks = len(chunks)
        elif self._folded_chunks < len(chunks):
            blocks: dict[Block, list] = {}
            for ch in chunks[self._folded_chunks:]:
                if isinstance(ch, tuple):
                    blocks.setdefault(ch[0], []).append(ch[1:])
                elif isinstance(ch, list):
                    self._fold_rows(ch)
                # a dict of columns (add_columns) is folded when added
            for layout, got in blocks.items():
                self._fold_blocks(layout, got)
            self._folded_chunks = len(chunks)
        if self._folded_rows < len(self._rows):
            self._fold_rows(self._rows[self._folded_rows:])
            self._folded_rows = len(self._rows)

    def _update(self, c: str, total: int, top: int) -> None:
        self._sums[c] += total
        if top > self._maxes[c]:
            self._maxes[c] = top

    def _fold_rows(self, rows: list[tuple]) -> None:
        sums, maxes = self._sums, self._maxes
        if len(rows) == 1:  # one row (a run of one call): its values are the aggregates
            row = rows[0]
            for c, i in self._numeric_at:
                v = row[i]
                sums[c] += v
                if v > maxes[c]:
                    maxes[c] = v
            return
        for c, i in self._numeric_at:
            vals = [r[i] for r in rows]
            sums[c] += sum(vals)
            top = max(vals)
            if top > maxes[c]:
                maxes[c] = top

    def _fold_columns(self, cols: dict[str, np.ndarray]) -> None:
        for c in self.numeric:
            a = cols[c]
            self._update(c, int(a.sum()), int(a.max()))

    def _fold_blocks(self, block: Block, blocks: list[tuple]) -> None:
        """Fold stored blocks ``(n, consts, arrays, shifted, t0)`` of one layout, each
        numeric column in one pass over all of them."""
        if not block.numeric:
            return
        ns = [b[0] for b in blocks]
        for c, kind, k in block.numeric:
            if kind == "const":
                vals = [b[1][k] for b in blocks]
                self._update(c, sum(v * n for v, n in zip(vals, ns, strict=True)), max(vals))
                continue
            if kind == "array":
                pieces = [b[2][k] for b in blocks]
                rows = sum(ns)
                if any(isinstance(p, DeferredColumn) for p in pieces):
                    # aggregated without making them (their sums and maxima are known)
                    for p in pieces:
                        if isinstance(p, DeferredColumn):
                            self._update(c, *p.sum_max())
                    pieces = [p for p in pieces if not isinstance(p, DeferredColumn)]
                    if not pieces:
                        continue
                    rows = sum(map(len, pieces))
                if block.dtypes[0][k] is not None and all(isinstance(p, list) for p in pieces):
                    # Python ints of an integer column (a small template's): the same sum
                    # and maximum as the int64 array they are made into
                    vals = list(chain.from_iterable(pieces))
                    self._update(c, sum(vals), max(vals))
                    continue
                a = _joined(pieces, block.dtypes[0][k], rows)
            else:
                offs = _joined([b[3][k] for b in blocks], block.dtypes[1][k], sum(ns))
                a = offs + np.repeat(np.array([b[4] for b in blocks], offs.dtype), ns)
            self._update(c, int(a.sum()), int(a.max()))

    def _room(self, n: int) -> bool:
        if self._buffered + n <= self.max_rows:
            return True
        if self.spill_dir is not None:
            self.spill()
            return True
        self.dropped += n
        return False

    def _keep_rows(self) -> None:
        """Close the current list of row tuples before a block (columns made later)."""
        if len(self._rows) >= self.ROW_PIECE:
            self._flush_rows()
        else:
            self._close_rows(self._rows)

    def _flush_rows(self) -> None:
        """Make ``_rows`` a chunk of columns (its rows folded now: such chunks are folded
        when added, as :meth:`add_columns`'s are)."""
        if self._rows:
            if self._folded_rows < len(self._rows):
                self._fold_rows(self._rows[self._folded_rows:])
            self._chunks.append(self._row_columns(self._rows))
            self._rows = []
            self._folded_rows = 0

    def _close_rows(self, rows: list[tuple]) -> None:
        """Append the list ``_rows`` to the chunks and start a new list of rows."""
        if self._folded_rows:  # folded in part (the aggregates were read): fold the rest
            self._fold()
        self._chunks.append(rows)
        if self._folded_rows:
            self._folded_chunks = len(self._chunks)
        self._rows = []
        self._folded_rows = 0

    def _row_columns(self, rows: list[tuple]) -> dict[str, np.ndarray]:
        cols = list(zip(*rows, strict=False))
        return {c: np.asarray(v) for c, v in zip(self.columns, cols, strict=False)}

    def _buffer_columns(self) -> dict[str, np.ndarray] | None:
        """Every buffered row as one array per column, in order; None if there is none.

        The row tuples of all the lists are made columns at once, and the blocks of each
        layout at once (:meth:`Block.frame_columns`); then each column is those sources
        concatenated and put back in chunk order by one gather, so reading a table costs a
        few numpy calls per column however many small chunks the run appended. The values
        and dtypes are those of concatenating the chunks' columns one after the other."""
        chunks = self._chunks + ([self._rows] if self._rows else [])
        if not chunks:
            return None
        rows: list[tuple] = []
        blocks: dict[Block, list] = {}  # layout -> [its blocks, their rows]
        dicts: list[dict] = []
        pieces = []  # (source, start in source, rows) per chunk, in order
        for ch in chunks:
            if isinstance(ch, tuple):
                got = blocks.get(ch[0])
                if got is None:
                    got = blocks[ch[0]] = [[], 0]
                pieces.append((ch[0], got[1], ch[1]))
                got[0].append(ch[1:])
                got[1] += ch[1]
            elif isinstance(ch, list):
                pieces.append(("rows", len(rows), len(ch)))
                rows.extend(ch)
            else:
                n = len(next(iter(ch.values())))
                pieces.append((len(dicts), 0, n))
                dicts.append(ch)
        sources: dict = {}
        if rows:
            sources["rows"] = self._row_columns(rows)
        for layout, (got, _) in blocks.items():
            sources[layout] = layout.frame_columns(got)
        for k, d in enumerate(dicts):
            sources[k] = d
        if len(sources) == 1:
            return next(iter(sources.values()))
        base, at = {}, 0
        for key, cols in sources.items():
            base[key] = at
            at += len(next(iter(cols.values())))
        ns = np.array([n for _, _, n in pieces], np.int64)
        starts = np.array([base[key] + start for key, start, _ in pieces], np.int64)
        out_starts = np.cumsum(ns) - ns
        order = np.repeat(starts - out_starts, ns) + np.arange(int(ns.sum()))
        return {c: np.concatenate([cols[c] for cols in sources.values()])[order]
                for c in self.columns}

    # -- output ---------------------------------------------------------------------
    def _buffer_frame(self):
        """The buffered rows as one DataFrame, built column by column (one concatenation per
        column, however many chunks there are)."""
        import pandas as pd

        cols = self._buffer_columns()
        if cols is None:
            return pd.DataFrame({c: [] for c in self.columns})
        data = {}
        for c in self.columns:
            data[c] = cols[c]
            if data[c].dtype.kind == "U":
                data[c] = data[c].astype(object)
        return pd.DataFrame(data)  # columns in table order (the dict's): no reindexing

    def spill(self) -> None:
        """Write the buffered rows to a part file and free them."""
        if self.spill_dir is None or self._buffered == 0:
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._fold()
        df = self._buffer_frame()
        path = self.spill_dir / f"{self.name}.part{len(self.parts):05d}.parquet"
        df.to_parquet(path, index=False)
        self.parts = [*self.parts, path]
        self._chunks = []
        self._rows = []
        self._buffered = 0
        self._folded_chunks = self._folded_rows = 0

    def to_frame(self):
        """All kept rows (spilled parts first, then the buffer) as a DataFrame."""
        import pandas as pd

        frames = []
        for p in self.parts:
            frames.append(pd.read_parquet(p))
        frames.append(self._buffer_frame())
        frames = [f for f in frames if len(f)] or frames[-1:]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def summary(self) -> dict:
        if not self.total and not self.parts:  # nothing added: every count and aggregate 0
            return dict(self._empty_summary)
        out = {"rows": self.total, "kept": self.total - self.dropped, "dropped": self.dropped,
               "spilled_parts": len(self.parts)}
        if self._summary_keys:
            self._fold()
            sum_keys, max_keys = self._summary_keys
            out.update(zip(sum_keys, map(int, self._sums.values())))
            out.update(zip(max_keys, map(int, self._maxes.values())))
        return out


CALL_COLUMNS = (
    "caller", "mm", "cpu", "call", "errno", "start_ns", "end_ns", "latency_ns",
    "mmap_lock_wait_ns", "rmap_wait_ns", "ptl_wait_ns", "steps", "segments",
    "ptes_moved", "pmd_moves", "pud_moves", "thp_moves", "tlb_flushes", "ipis", "rmap_holds",
    "tables_allocated", "tables_freed",
) + tuple(f"cost_{c}_ns" for c in (
    "pte_copies", "pmd_moves", "pud_moves", "thp", "tlb_flush", "ipi", "rmap_locks", "ptl",
    "table_alloc_free", "notifier", "fixed"))
HOLD_COLUMNS = ("lock", "holder", "mode", "call", "step", "request_ns", "acquire_ns",
                "wait_ns", "hold_ns")
FLUSH_COLUMNS = ("caller", "call", "step", "time_ns", "full", "pages", "targets", "stolen_ns")
WALKER_COLUMNS = ("walker", "lock", "cpu", "request_ns", "wait_ns", "hold_ns", "ptl_wait_ns")
USER_COLUMNS = ("thread", "mm", "cpu", "quanta", "work_ns", "stolen_ns", "interrupts",
                "max_quantum_delay_ns")


def _record(name: str, columns: tuple[str, ...]):
    """A typed record (a NamedTuple) with one field per column of a table, built by
    keyword at every call site so that no value can land in the wrong column."""
    from typing import NamedTuple

    return NamedTuple(name, [(c, object) for c in columns])


CallHead = _record("CallHead", CALL_COLUMNS[:11])
"""The call record's own columns; the rest (:data:`CALL_STAT_COLUMNS`) come from its plan."""
CALL_STAT_COLUMNS = CALL_COLUMNS[11:]
CallStats = _record("CallStats", CALL_STAT_COLUMNS)
HoldRecord = _record("HoldRecord", HOLD_COLUMNS)
FlushRecord = _record("FlushRecord", FLUSH_COLUMNS)
WalkerWaitRecord = _record("WalkerWaitRecord", WALKER_COLUMNS)
UserRecord = _record("UserRecord", USER_COLUMNS)


#: The dtypes of a segment's hold and flush columns a call template may give as Python
#: lists (``pricing.SegmentRecords``): what its numpy arrays have.
SEGMENT_DTYPES = {c: np.dtype(np.int64) for c in (
    "step", "hold_ns", "request_ns", "acquire_ns", "pages", "targets", "stolen_ns", "time_ns")}
SEGMENT_DTYPES["full"] = np.dtype(bool)


def _segment_blocks() -> tuple[Block, Block]:
    """The layouts of one coalesced segment's rmap holds and flushes (the same for every
    run: a :class:`Block` only describes columns, so one of each serves all recorders)."""
    holds = Table("holds", HOLD_COLUMNS, numeric=HOLD_NUMERIC)
    flushes = Table("flushes", FLUSH_COLUMNS, numeric=FLUSH_NUMERIC)
    return (Block(holds, (("lock", object), ("holder", object), ("mode", object),
                          ("call", np.int64), ("wait_ns", np.int64)),
                  ("step", "hold_ns"), ("request_ns", "acquire_ns"), SEGMENT_DTYPES),
            Block(flushes, (("caller", object), ("call", np.int64)),
                  ("step", "full", "pages", "targets", "stolen_ns"), ("time_ns",),
                  SEGMENT_DTYPES))


#: The aggregated (numeric) columns of each table (:class:`Recorder`).
CALL_NUMERIC = ("latency_ns", "mmap_lock_wait_ns", "rmap_wait_ns")
HOLD_NUMERIC = ("wait_ns", "hold_ns")
FLUSH_NUMERIC = ("targets", "stolen_ns")
WALKER_NUMERIC = ("wait_ns", "hold_ns")
SEGMENT_HOLDS, SEGMENT_FLUSHES = _segment_blocks()
#: A :class:`Recorder`'s tables: (name, columns, numeric columns).
_RECORDER_TABLES = (("calls", CALL_COLUMNS, CALL_NUMERIC), ("holds", HOLD_COLUMNS, HOLD_NUMERIC),
                    ("flushes", FLUSH_COLUMNS, FLUSH_NUMERIC),
                    ("walker_waits", WALKER_COLUMNS, WALKER_NUMERIC),
                    ("users", USER_COLUMNS, ()))


@lru_cache(maxsize=16)
def _recorder_tables(max_rows: int, spill_dir: Path | None) -> tuple[Table, ...]:
    """Empty tables of a :class:`Recorder` with these bounds, as prototypes
    (:meth:`Table.like`; never appended to themselves)."""
    return tuple(Table(name, columns, max_rows=max_rows, spill_dir=spill_dir, numeric=numeric)
                 for name, columns, numeric in _RECORDER_TABLES)


#: The tables of a :class:`Recorder`, in the order a run's summary lists them.
RECORDER_TABLES = tuple(name for name, _c, _n in _RECORDER_TABLES)
_TABLE_AT = {name: i for i, name in enumerate(RECORDER_TABLES)}


class Recorder:
    """The run's tables: calls, holds (rmap-lock holds), flushes, walker_waits, users.

    Each table is made (copied from its empty prototype, :meth:`Table.like`) when first
    used: a table a run never writes to is never made while it runs (a lone caller makes
    no walker_waits or users table, a run recording no rmap hold no holds table). A table not
    made yet is an empty one: :meth:`table` makes it, :meth:`summary_of` gives an empty
    table's summary without making it, :meth:`tables` makes them all."""

    def __init__(self, *, max_rows: int = 1_000_000, spill_dir: Path | None = None,
                 record_zero_waits: bool = False) -> None:
        sd = Path(spill_dir) if spill_dir else None
        self.record_zero_waits = record_zero_waits
        self.walker_visits: dict[str, int] = {}
        self._prototypes = _recorder_tables(max_rows, sd)
        # the rmap holds and the flushes of one coalesced segment (caller._replay_segment)
        self.segment_holds = SEGMENT_HOLDS
        self.segment_flushes = SEGMENT_FLUSHES

    def __getattr__(self, name: str) -> Table:
        """``rec.calls`` and the other tables: made on first use (class docstring)."""
        at = _TABLE_AT.get(name)
        if at is None or name.startswith("_"):
            raise AttributeError(name)
        table = self.__dict__[name] = Table.like(self.__dict__["_prototypes"][at])
        return table

    def table(self, name: str) -> Table:
        """The table ``name`` (made now if it was not yet)."""
        if name not in _TABLE_AT:
            raise KeyError(name)
        return getattr(self, name)

    def summary_of(self, name: str) -> dict:
        """:meth:`Table.summary` of table ``name``; for a table not made yet, that of an
        empty table (its prototype's, a copy), without making it."""
        table = self.__dict__.get(name)
        if table is None:
            return self._prototypes[_TABLE_AT[name]].summary()
        return table.summary()

    def tables(self) -> dict[str, Table]:
        return {name: getattr(self, name) for name in RECORDER_TABLES}


class RecordTables:
    """A :class:`Recorder`'s tables by name, as a read-only mapping whose tables are made
    when first looked up (:meth:`Recorder.table`): what :class:`~perfsim.engine.simulate.SimResult`
    reads its tables from. ``dict(tables)`` makes them all."""

    __slots__ = ("rec",)

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def __getitem__(self, name: str) -> Table:
        return self.rec.table(name)

    def get(self, name: str, default=None):
        return self.rec.table(name) if name in _TABLE_AT else default

    def __contains__(self, name) -> bool:
        return name in _TABLE_AT

    def __iter__(self):
        return iter(RECORDER_TABLES)

    def __len__(self) -> int:
        return len(RECORDER_TABLES)

    def keys(self):
        return list(RECORDER_TABLES)

    def items(self):
        return [(name, self.rec.table(name)) for name in RECORDER_TABLES]

    def values(self):
        return [self.rec.table(name) for name in RECORDER_TABLES]
