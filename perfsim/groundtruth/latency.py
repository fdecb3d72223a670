"""A call's time as the probe measured it untraced, against the cost model's prediction.

``perfsim groundtruth --native --untraced`` records each call's own time (``call_ns``,
CLOCK_MONOTONIC around the ``mremap``, no tracing to slow it). :func:`latency_rows` plans
each record as :mod:`perfsim.groundtruth.model` rebuilds it and prices the plan with a cost
profile (:func:`perfsim.cost.predict`), charging the profile's cold-cache term for what the
probe wrote just before the call (:func:`written_bytes`), as the calibration does. Records
of the same case (several runs of one grid) are one row: the median of their times.
``scripts/groundtruth_latency.py`` prints the summary.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from perfsim.groundtruth.compare import target_for
from perfsim.groundtruth.model import space_for_record

PAGE = 4096


def written_bytes(rec: dict) -> int:
    """What the probe wrote just before the call: the source's populated pages (``full``,
    ``every:K`` from the buffer start, ``first:BYTES``, ``none``) and a written destination
    (``written`` or ``anon-shmem``: every page of it)."""
    size, pop = int(rec["size"]), str(rec["populate"])
    pages = size // PAGE
    if pop == "full":
        src = size
    elif pop == "none":
        src = 0
    elif pop.startswith("every:"):
        src = -(-pages // int(pop[6:])) * PAGE
    else:  # first:BYTES
        src = int(pop[6:])
    dst = size if rec.get("dst_mode") in ("written", "anon-shmem") else 0
    return src + dst


@dataclass(frozen=True)
class LatencyRow:
    """One case: its median measured time over ``runs`` records, and the prediction."""

    id: str
    measured_ns: int
    predicted_ns: int
    runs: int
    rec: dict

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted_ns - self.measured_ns) / self.measured_ns


def latency_rows(records: list[dict], cost_profile: str) -> list[LatencyRow]:
    """One :class:`LatencyRow` per case id of ``records`` that succeeded and was timed."""
    from perfsim.cost import predict
    from perfsim.planner import plan_mremap

    by_id: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("call_ns") and not r.get("errno"):
            by_id[r["id"]].append(r)
    rows = []
    for case_id, recs in by_id.items():
        rec = recs[0]
        target = target_for(rec)
        space, req = space_for_record(rec, target)
        plan = plan_mremap(space, req, target)
        pred = predict(plan, cost_profile, cpus=int(rec["threads"]),
                       written_before_bytes=written_bytes(rec)).predicted_ns
        measured = int(statistics.median(int(r["call_ns"]) for r in recs))
        rows.append(LatencyRow(case_id, measured, int(pred), len(recs), rec))
    return rows


def size_class(rec: dict) -> str:
    """``< 64K``, ``64K-2M``, ``2M-8M`` or ``>= 8M`` (the source's size)."""
    size = int(rec["size"])
    for limit, name in ((64 << 10, "< 64K"), (2 << 20, "64K-2M"), (8 << 20, "2M-8M")):
        if size < limit:
            return name
    return ">= 8M"


def summary(rows: list[LatencyRow], key) -> list[tuple]:
    """``(group, n, median error, median |error|)`` per ``key(row)``, largest group first,
    then ``("all", ...)``."""
    groups: dict = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r.error)
    out = [(g, len(e), statistics.median(e), statistics.median(abs(x) for x in e))
           for g, e in sorted(groups.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))]
    if rows:
        errs = [r.error for r in rows]
        out.append(("all", len(errs), statistics.median(errs),
                    statistics.median(abs(x) for x in errs)))
    return out
