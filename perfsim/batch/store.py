"""The results store: one Parquet dataset per sweep, content-addressed and crash-safe.

Layout of ``<root>/<sweep name>/``::

    _sweep.json                 the effective sweep (axes, base, seeds, version), rewritten per run
    part-<hash>.parquet         result rows, one file per flush
    _paired.csv                 paired comparisons (when the sweep asks for them)

Every row carries its provenance: ``key`` (content hash of the point: workload, target and
cost profile digests, seed, replication, grid values, perfsim version), the digests
themselves, ``seed``, ``replication``, ``perfsim_version``, and ``status``/``error``.

**Crash safety.** A part file is written to a hidden temporary name (``.tmp-*``, which
readers ignore), flushed, fsynced, then renamed into place (atomic on POSIX) and the directory
fsynced. A ``kill -9`` at any moment leaves either the whole part or none of it; the rows of
a lost part are simply recomputed on the next run, because a point counts as finished only
once its row is in a renamed part. Nothing is ever appended to or rewritten in place.

Loading: ``pandas.read_parquet("results/<sweep>")`` (or :func:`load_results`, which also
drops any duplicate key and sorts by key).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from perfsim.workload.run import METRICS

ID_COLUMNS: dict[str, pa.DataType] = {
    "key": pa.string(), "cell": pa.int64(), "workload": pa.string(),
    "workload_digest": pa.string(), "target_digest": pa.string(), "kernel": pa.string(),
    "arch": pa.string(), "cost_profile": pa.string(), "cost_digest": pa.string(),
    "seed": pa.string(), "replication": pa.int64(), "perfsim_version": pa.string(),
    "status": pa.string(), "error": pa.string(), "notes": pa.string(),
    "wall_s": pa.float64(), "cpu_s": pa.float64(),
}


def _param_type(values: list) -> pa.DataType:
    if all(isinstance(v, bool) for v in values):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pa.int64()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pa.float64()
    return pa.string()


def schema_for(grid: dict[str, list]) -> pa.Schema:
    """The fixed schema of a sweep's rows: identity, one ``p:<axis>`` column per grid axis
    (typed from its values), then the metrics."""
    fields = [pa.field(k, t) for k, t in ID_COLUMNS.items()]
    fields += [pa.field(f"p:{a}", _param_type(v)) for a, v in grid.items()]
    fields += [pa.field(m, pa.int64() if t == "i" else pa.float64()) for m, t in METRICS.items()]
    return pa.schema(fields)


class ResultStore:
    """Append-only, atomic-part Parquet dataset for one sweep."""

    def __init__(self, path: str | Path, schema: pa.Schema):
        self.path = Path(path)
        self.schema = schema
        self.path.mkdir(parents=True, exist_ok=True)
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        for p in self.path.glob(".tmp-*"):
            try:
                p.unlink()
            except OSError:
                pass

    def parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def done(self, include_failed: bool = True) -> set[str]:
        """Keys already stored (optionally only successful ones)."""
        keys: set[str] = set()
        for p in self.parts():
            t = pq.read_table(p, columns=["key", "status"])
            k = t.column("key").to_pylist()
            if include_failed:
                keys.update(k)
            else:
                keys.update(x for x, s in zip(k, t.column("status").to_pylist(), strict=True) if s == "ok")
        return keys

    def write(self, rows: list[dict]) -> Path | None:
        """Write rows as one new part, atomically. Returns its path."""
        if not rows:
            return None
        rows = sorted(rows, key=lambda r: r["key"])
        cols = {f.name: [_cell(r.get(f.name), f.type) for r in rows] for f in self.schema}
        table = pa.Table.from_pydict(cols, schema=self.schema)
        digest = hashlib.sha256("".join(r["key"] for r in rows).encode()).hexdigest()[:20]
        final = self.path / f"part-{digest}.parquet"
        tmp = self.path / f".tmp-{digest}-{os.getpid()}.parquet"
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.path)
        return final

    def write_meta(self, name: str, data: dict) -> None:
        tmp = self.path / f".tmp-{name}"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.path / name)


def _cell(v, t: pa.DataType):
    if v is None:
        return None
    if pa.types.is_string(t):
        if isinstance(v, (list, dict)):
            return json.dumps(v)
        return v if isinstance(v, str) else str(v)
    if pa.types.is_floating(t):
        return float(v)
    return v


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_results(path: str | Path):
    """The sweep's rows as a DataFrame, duplicates (by key) dropped, sorted by key."""
    import pandas as pd

    p = Path(path)
    if not p.is_dir():
        from perfsim.errors import PerfsimError

        what = "is a file, not a directory" if p.exists() else "does not exist"
        raise PerfsimError(f"sweep results {str(p)!r} {what}; give the directory perfsim "
                           "sweep wrote (OUT/NAME, holding part-*.parquet)")
    parts = sorted(p.glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame()
    df = pd.concat([pd.read_parquet(x) for x in parts], ignore_index=True)
    return df.drop_duplicates("key").sort_values("key").reset_index(drop=True)
