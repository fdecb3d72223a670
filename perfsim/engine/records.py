"""Flat, typed record tables with bounded memory.

A :class:`Table` has fixed columns. Rows arrive one at a time (``add``) or as numpy columns
(``add_columns``, for the many rows one coalesced segment produces). Memory stays bounded:
after ``max_rows`` buffered rows the table either **spills** its buffer to a part file in
``spill_dir`` (Parquet) or, without a spill directory, stops
keeping detail rows and only counts them (``dropped``). Running aggregates (count, sum, max of
every numeric column) always cover every row, kept or not.

``to_frame()`` gives a pandas DataFrame in one line of user code; spilled parts are read back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class Table:
    """One record table (see module docstring)."""

    def __init__(self, name: str, columns: tuple[str, ...], *, max_rows: int = 1_000_000,
                 spill_dir: Path | None = None, numeric: tuple[str, ...] = ()) -> None:
        self.name = name
        self.columns = columns
        self.max_rows = max_rows
        self.spill_dir = Path(spill_dir) if spill_dir else None
        self.numeric = numeric
        self._rows: list[tuple] = []
        self._chunks: list[dict[str, np.ndarray]] = []
        self._buffered = 0
        self.parts: list[Path] = []
        self.total = 0
        self.dropped = 0
        self.sums = dict.fromkeys(numeric, 0)
        self.maxes = dict.fromkeys(numeric, 0)
        self._numeric_at = tuple((c, columns.index(c)) for c in numeric)

    # -- appending ------------------------------------------------------------------
    def add(self, *row) -> None:
        self.total += 1
        sums, maxes = self.sums, self.maxes
        for c, i in self._numeric_at:
            v = row[i]
            sums[c] += v
            if v > maxes[c]:
                maxes[c] = v
        if self._room(1):
            self._rows.append(row)
            self._buffered += 1

    def add_columns(self, cols: dict[str, np.ndarray]) -> None:
        n = len(next(iter(cols.values())))
        if n == 0:
            return
        self.total += n
        for c in self.numeric:
            a = cols[c]
            self.sums[c] += int(a.sum())
            self.maxes[c] = max(self.maxes[c], int(a.max()))
        if self._room(n):
            self._flush_rows()
            self._chunks.append(cols)
            self._buffered += n

    def _room(self, n: int) -> bool:
        if self._buffered + n <= self.max_rows:
            return True
        if self.spill_dir is not None:
            self.spill()
            return True
        self.dropped += n
        return False

    def _flush_rows(self) -> None:
        if self._rows:
            cols = list(zip(*self._rows, strict=False))
            self._chunks.append({c: np.asarray(v) for c, v in zip(self.columns, cols, strict=False)})
            self._rows = []

    # -- output ---------------------------------------------------------------------
    def _buffer_frame(self):
        """The buffered rows as one DataFrame, built column by column (one concatenation per
        column, however many chunks there are)."""
        import pandas as pd

        self._flush_rows()
        if not self._chunks:
            return pd.DataFrame({c: [] for c in self.columns})
        data = {}
        for c in self.columns:
            parts = [ch[c] for ch in self._chunks]
            data[c] = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if data[c].dtype.kind == "U":
                data[c] = data[c].astype(object)
        return pd.DataFrame(data, columns=list(self.columns))

    def spill(self) -> None:
        """Write the buffered rows to a part file and free them."""
        if self.spill_dir is None or self._buffered == 0:
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        df = self._buffer_frame()
        path = self.spill_dir / f"{self.name}.part{len(self.parts):05d}.parquet"
        df.to_parquet(path, index=False)
        self.parts.append(path)
        self._chunks = []
        self._buffered = 0

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
        return {"rows": self.total, "kept": self.total - self.dropped, "dropped": self.dropped,
                "spilled_parts": len(self.parts),
                **{f"sum_{c}": int(v) for c, v in self.sums.items()},
                **{f"max_{c}": int(v) for c, v in self.maxes.items()}}


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


class Recorder:
    """The run's tables: calls, holds (rmap-lock holds), flushes, walker_waits, users."""

    def __init__(self, *, max_rows: int = 1_000_000, spill_dir: Path | None = None,
                 record_zero_waits: bool = False) -> None:
        sd = Path(spill_dir) if spill_dir else None
        self.record_zero_waits = record_zero_waits
        self.walker_visits: dict[str, int] = {}
        self.calls = Table("calls", CALL_COLUMNS, max_rows=max_rows, spill_dir=sd,
                           numeric=("latency_ns", "mmap_lock_wait_ns", "rmap_wait_ns"))
        self.holds = Table("holds", HOLD_COLUMNS, max_rows=max_rows, spill_dir=sd,
                           numeric=("wait_ns", "hold_ns"))
        self.flushes = Table("flushes", FLUSH_COLUMNS, max_rows=max_rows, spill_dir=sd,
                             numeric=("targets", "stolen_ns"))
        self.walker_waits = Table("walker_waits", WALKER_COLUMNS, max_rows=max_rows,
                                  spill_dir=sd, numeric=("wait_ns", "hold_ns"))
        self.users = Table("users", USER_COLUMNS, max_rows=max_rows, spill_dir=sd)

    def tables(self) -> dict[str, Table]:
        return {"calls": self.calls, "holds": self.holds, "flushes": self.flushes,
                "walker_waits": self.walker_waits, "users": self.users}
