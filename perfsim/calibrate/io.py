"""Files of a calibration: atomic writes, the raw-measurement data file, content hashes.

The data file is JSON lines: one ``{"kind": "header", ...}`` line (format, machine, settings,
design, what was skipped and why, status, duration) followed by one ``{"kind": "rep", ...}``
line per repetition. Its sha256 is what a fitted profile cites, so a profile can always be
traced to the exact measurements behind it (Vidur's measurement → model → simulator stages,
with a content hash between each).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfsim.errors import PerfsimError, read_text

DATA_FORMAT = "perfsim-calibration-data/1"
FIT_FORMAT = "perfsim-calibration-fit/1"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sibling(profile_path: str | Path, suffix: str) -> Path:
    """``out/x.toml`` → ``out/x<suffix>`` (e.g. ``.data.jsonl``, ``.fit.json``)."""
    p = Path(profile_path)
    stem = p.name[:-5] if p.name.endswith(".toml") else p.name
    return p.with_name(stem + suffix)


def render_data(header: dict[str, Any], records: list[dict[str, Any]]) -> str:
    head = {"kind": "header", "format": DATA_FORMAT, **header}
    lines = [json.dumps(head, sort_keys=True, separators=(",", ":"))]
    lines += [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in records]
    return "\n".join(lines) + "\n"


#: What a repetition record needs for fitting and validation (``slim_record``).
SLIM_KEYS = ("kind", "config_id", "align", "size", "threads", "populate", "backing", "thp",
             "group", "op", "phase", "rep", "latency_ns", "disturbed", "traced", "src", "dst",
             "thp_kb", "kernel_us", "ipi_coverage", "condition", "timer", "round")


def slim_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A repetition record without the per-phase trace detail (for small test fixtures)."""
    out = {k: rec[k] for k in SLIM_KEYS if k in rec}
    if rec.get("summary"):
        out["summary"] = {k: rec["summary"][k] for k in
                          ("flush_calls", "full_flushes", "ipi_rounds") if k in rec["summary"]}
    return out


@dataclass
class CalibData:
    """A loaded data file."""

    path: str
    sha256: str
    header: dict[str, Any]
    records: list[dict[str, Any]]


REP_KEYS: dict[str, type | tuple[type, ...]] = {
    "config_id": str, "latency_ns": (int, float), "threads": int, "src": int, "dst": int}
"""The keys every measured repetition (``"kind": "rep"``) of a data file has, and their
JSON types: what the fit and ``perfsim validate`` read of each."""


def _check_rep(obj: dict, where: str) -> None:
    for key, typ in REP_KEYS.items():
        v = obj.get(key)
        if isinstance(v, bool) or not isinstance(v, typ):
            want = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
            got = "missing" if key not in obj else f"{v!r}"
            raise PerfsimError(f"{where}: a repetition's {key!r} is {got}; allowed: {want} "
                               "(perfsim calibrate writes these records)")


def load_data(path: str | Path) -> CalibData:
    """Read a data file written by ``perfsim calibrate``; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise PerfsimError(f"calibration data file {str(path)!r} does not exist (perfsim "
                           "calibrate writes it next to the profile as <name>.data.jsonl)")
    text = read_text(path, "calibration data")
    header: dict[str, Any] | None = None
    recs: list[dict[str, Any]] = []
    lines: list[int] = []  # the line of each of recs
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PerfsimError(f"{path}:{i}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise PerfsimError(f"{path}:{i}: a JSON {type(obj).__name__}, not an object; each "
                               "line of a calibration data file is one JSON object")
        if obj.get("kind") == "header":
            header = obj
        elif obj.get("kind") == "rep":
            recs.append(obj)
            lines.append(i)
    if header is None or header.get("format") != DATA_FORMAT:
        raise PerfsimError(f"{path}: not a perfsim calibration data file (no '{DATA_FORMAT}' "
                           "header line)")
    for i, obj in zip(lines, recs, strict=True):
        _check_rep(obj, f"{path}:{i}")
    return CalibData(str(path), sha256_text(text), header, recs)
