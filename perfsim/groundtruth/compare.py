"""Hold records against kernel profiles, and the docs table built from them.

:func:`target_for` picks the profile of the record's kernel version (``6.12`` for
``6.12.117+deb13-amd64``) with the record's platform; :func:`compare_records` compares every
traced record; :func:`markdown_table` is the "kernel version x shape" table of
docs/groundtruth.md.
"""

from __future__ import annotations

from pathlib import Path

from perfsim.errors import PerfsimError
from perfsim.groundtruth.model import Unrepresentable, compare
from perfsim.groundtruth.records import read_jsonl
from perfsim.profiles import Target, between_profiles, kernel_names, profile_name, resolve_target


def target_for(rec: dict, profile: str | None = None) -> Target:
    """The profile ``profile`` (default: the record's kernel version) on x86-64, with the
    record's platform."""
    name = profile or rec["kernel_version"]
    if profile is None and profile_name(name) not in kernel_names():
        hint = between_profiles(name)
        raise PerfsimError(f"record {rec['id']!r}: no kernel profile {name!r}; known: "
                           f"{', '.join(kernel_names())}" + (f"; {hint}" if hint else "")
                           + "; pass --profile NAME to compare with one")
    return resolve_target(name).with_changes(platform=rec["platform"])


def compare_records(records: list[dict], profile: str | None = None) -> list[dict]:
    """One row per traced record: id, kernel, platform, measured/predicted whole-call
    counts, agreement and the differing counters (``diff``), or why it was not compared."""
    rows = []
    for rec in records:
        row = {"id": rec["id"], "kernel": rec.get("kernel"), "platform": rec.get("platform"),
               "threads": rec.get("threads")}
        if not rec.get("traced"):
            rows.append({**row, "status": "untraced", "why": rec.get("trace_skipped")})
            continue
        try:
            c = compare(rec, target_for(rec, profile))
        except Unrepresentable as exc:
            rows.append({**row, "status": "unrepresentable", "why": str(exc)})
            continue
        rows.append({**row, "status": "agree" if c["agree"] else "disagree",
                     "measured": c["measured"]["whole"], "predicted": c["predicted"]["whole"],
                     "diff": c["diff"], "phases": c["scopes"][1:], "excused": c["excused"]})
    return rows


def _cell(d: dict) -> str:
    return f"{d['flush_calls']} / {d['full_flushes']}"


def markdown_table(files: list[Path]) -> str:
    """Rows: the cases of the recorded grids; columns: kernel release and platform. Each
    cell: measured flush calls / full flushes, then the planner's prediction in brackets
    (marked ≠ where they differ). In-place shrinks (``flags=shrink``, the ``zap-shared``
    grid, recorded with repetitions on one kernel) are :func:`repetition_table`'s."""
    cols: list[tuple[str, str]] = []
    cells: dict[tuple[str, tuple[str, str]], str] = {}
    order: list[str] = []
    for f in files:
        for rec in read_jsonl(f):
            if not rec.get("traced") or rec.get("layout") != "window" \
                    or rec.get("flags") == "shrink":  # (repetition_table's)
                continue
            col = (rec["kernel"], rec["platform"])
            if col not in cols:
                cols.append(col)
            if rec["id"] not in order:
                order.append(rec["id"])
            row = compare_records([rec])[0]
            if row["status"] not in ("agree", "disagree"):
                cells[(rec["id"], col)] = row["status"]
                continue
            mark = "" if row["status"] == "agree" else " ≠"
            cells[(rec["id"], col)] = f"{_cell(row['measured'])} ({_cell(row['predicted'])}){mark}"

    def vkey(c):
        import re

        return tuple(int(x) for x in re.findall(r"\d+", c[0])[:3]), c[1]

    cols.sort(key=vkey)
    head = "| case | " + " | ".join(f"{k} {p}" for k, p in cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    lines = [head, sep]
    for cid in order:
        lines.append(f"| {cid} | " + " | ".join(cells.get((cid, c), "-") for c in cols) + " |")
    return "\n".join(lines)


def repetition_table(records: list[dict]) -> str:
    """One row per case of ``records`` (one kernel, several repetitions each): the
    planner's flush calls / full flushes, what each repetition measured, and how many
    repetitions the trace shows a ``need_resched()`` break in (a flush with
    TIF_NEED_RESCHED set, ``need_resched_flushes``) and how many of those counted more
    flushes than the plan; ``≠`` marks a case with a disagreement no break excuses."""
    order: list[str] = []
    by: dict[str, list[dict]] = {}
    for rec in records:
        if not rec.get("traced"):
            continue
        if rec["id"] not in by:
            order.append(rec["id"])
            by[rec["id"]] = []
        by[rec["id"]].append(rec)
    lines = ["| case | planned | measured, each repetition | breaks seen | breaks that added a "
             "flush |", "|---|---|---|---|---|"]
    for cid in order:
        rows = compare_records(by[cid])
        plan = _cell(rows[0]["predicted"])
        got = ", ".join(_cell(r["measured"]) for r in rows)
        seen = sum(int(rec.get("need_resched_flushes") or 0) > 0 for rec in by[cid])
        added = sum(r["measured"]["flush_calls"] > r["predicted"]["flush_calls"] for r in rows)
        mark = " ≠" if any(r["status"] != "agree" for r in rows) else ""
        lines.append(f"| {cid} | {plan} | {got}{mark} | {seen} of {len(rows)} | {added} |")
    return "\n".join(lines)
