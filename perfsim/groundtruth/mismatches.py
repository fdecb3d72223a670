"""Known disagreements between the planner and a recorded kernel.

``tests/data/groundtruth/known_mismatches.toml`` lists, per ``[[mismatch]]``: ``file`` (the
record file's name), ``id`` (the case id), ``kernel`` (the record's release), ``platform``,
``measured`` and ``predicted`` (whole-call ``[flush calls, full flushes]``), ``rule`` (the
kernel behaviour the planner lacks, naming the function) and ``evidence``. The tests
require equality for every other record and mark exactly these as strict expected
failures, so that a planner fix makes them fail until the entry is removed.
"""

from __future__ import annotations

from pathlib import Path

from perfsim.errors import PerfsimError, read_toml

FIELDS = ("file", "id", "kernel", "platform", "measured", "predicted", "rule", "evidence")


def load_mismatches(path: Path) -> dict[tuple[str, str, str], dict]:
    """``{(file, id, kernel): entry}``; one line naming the entry and field otherwise."""
    if not path.exists():
        return {}
    data = read_toml(path, "known-mismatch")
    out = {}
    for i, m in enumerate(data.get("mismatch", []), 1):
        missing = [f for f in FIELDS if f not in m]
        if missing:
            raise PerfsimError(f"{path}: [[mismatch]] #{i}: missing field(s) {', '.join(missing)}")
        extra = sorted(set(m) - set(FIELDS))
        if extra:
            raise PerfsimError(f"{path}: [[mismatch]] #{i}: unknown field(s) {', '.join(extra)}; "
                               f"allowed: {', '.join(FIELDS)}")
        out[(m["file"], m["id"], m["kernel"])] = m
    return out
