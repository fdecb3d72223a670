"""What ``perfsim plan`` prints: the JSON document, the human table, and the step trace
with runs of same-shaped steps folded into "×N" groups (:func:`compress`).

Pure functions of a :class:`~perfsim.planner.result.MovePlan` and the resolved request
(:class:`~perfsim.planner.request.Resolved`); nothing here decides anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from perfsim.cost import predict
from perfsim.cost.batching import folio_batching_of_plan
from perfsim.cost.profile import FALLBACK_MARK, resolve_cost_profile
from perfsim.planner import steps as S
from perfsim.planner.request import Resolved
from perfsim.planner.result import COUNTER_FIELDS, MovePlan, MoveRequest
from perfsim.planner.unmapped_area import mremap_hint, placement
from perfsim.profiles import Target
from perfsim.units import fmt_size

MAX_PERIOD = 4
"""Longest repeating block of step shapes the trace folds into one "× N" group."""


def cost_profile(name: str, *, arch: str | None = None, force: bool = False):
    """The cost profile ``name`` (a built-in name or a TOML path), loaded before planning;
    refused in one line when it does not declare ``arch`` (unless ``force``)."""
    return resolve_cost_profile(name, arch=arch, force=force)


def predict_cost(plan: MovePlan, profile, cpus: int, *, target=None,
                 written_before_bytes: int = 0) -> dict[str, Any]:
    """The call's predicted duration with a cost profile (:mod:`perfsim.cost`); with the
    ``target``, the large-folio batching of the source VMA is priced too
    (:func:`perfsim.cost.batching.folio_batching`); ``written_before_bytes``: what the
    program wrote just before the call (a ``[cold_cache]`` profile charges it)."""
    name = profile
    if isinstance(profile, str):
        profile = cost_profile(profile)
    pred = predict(plan, profile, cpus=cpus, folio=folio_batching_of_plan(plan, target),
                   written_before_bytes=written_before_bytes)
    out: dict[str, Any] = {
        "predicted_ns": _jsonable(pred.predicted_ns),
        "cost_ns": {str(k): _jsonable(x) for k, x in dict(pred.cost_ns).items()},
        "cost_profile": {"name": getattr(profile, "name", str(name))},
    }
    digest = getattr(profile, "digest", None)
    if digest is not None:
        out["cost_profile"]["digest"] = digest() if callable(digest) else digest
    fallbacks = getattr(profile, "fallbacks", ())
    if fallbacks:  # a profile that predates these parameters (cost.profile.FALLBACKS)
        out["cost_profile"]["fallbacks"] = {n: profile.param(n).source for n in fallbacks}
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return x


def flags_of(req: MoveRequest) -> list[str]:
    if req.for_stack:
        return ["relocate_vma_down"]
    flags = ["MAYMOVE"] if req.maymove else []
    if req.fixed:
        flags.append("FIXED")
    if req.dontunmap:
        flags.append("DONTUNMAP")
    return flags


def request_json(res: Resolved, file: str | None) -> dict[str, Any]:
    s, req = res.settings, res.request
    return {
        "old_addr": req.old_addr, "old_len": req.old_len, "new_len": req.new_len,
        "new_addr": req.new_addr,
        "flags": flags_of(req), "backing": s["backing"], "thp": bool(s["thp"]),
        "hugepage_size": s["hugepage_size"], "populate": s["populate"], "seed": s["seed"],
        "guard_below_src": bool(s["guard_below_src"]),
        "guard_below_dst": bool(s["guard_below_dst"]), "cpus": s["cpus"],
        "fail_alloc_at": req.fail_alloc_at, "for_stack": req.for_stack,
        "folio_size": s["folio_size"], "vma": s.get("vma"),
        "description": s["description"], "file": file,
    }


def target_json(target: Target) -> dict[str, Any]:
    return {"arch": target.arch.name, "kernel": target.kernel.name,
            "platform": target.kernel.platform, "profile_digest": target.digest}


def plan_document(plan: MovePlan, res: Resolved, file: str | None,
                  cost: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = plan.to_json()
    doc["request"] = request_json(res, file)
    doc["target"] = target_json(res.target)
    if cost:
        doc.update(cost)
    return doc


def _call_text(req: MoveRequest) -> str:
    if req.for_stack:
        return f"relocate_vma_down(stack at {req.old_addr:#x}, new start {req.new_addr:#x})"
    new_len = req.old_len if req.new_len is None else req.new_len
    dst = "NULL" if req.new_addr is None else f"{req.new_addr:#x}"
    return (f"mremap({req.old_addr:#x}, {fmt_size(req.old_len)}, {fmt_size(new_len)}, "
            f"{'|'.join(flags_of(req)) or '0'}, {dst})")


def _space_text(res: Resolved) -> str:
    s = res.settings
    handed_back = [f"MADV_DONTNEED {r} first" for r in s.get("dontneed") or ()]
    if s.get("vma"):
        return ", ".join([f"{len(s['vma'])} VMAs as given ([[vma]]), {s['cpus']} CPU(s)",
                          *handed_back])
    space = [s["backing"], f"THP {'on' if s['thp'] else 'off'}", f"populate {s['populate']}"]
    if s["folio_size"]:
        space.append(f"folios {s['folio_size']}")
    space += [g for g, on in (("guard below src", s["guard_below_src"]),
                              ("guard below dst", s["guard_below_dst"])) if on]
    space.append(f"{s['cpus']} CPU{'s' if s['cpus'] != 1 else ''}")
    if res.request.fail_alloc_at:
        space.append(f"allocation {res.request.fail_alloc_at} fails")
    return ", ".join(space + handed_back)


def _result_text(plan: MovePlan) -> str:
    if plan.errno:
        return f"errno {plan.errno}" + (f" ({plan.note})" if plan.note else "")
    result = "ok"
    if plan.result_addr is not None:
        result += f", returns {plan.result_addr:#x}"
    return result + (f" ({plan.note})" if plan.note else "")


def _placed_lines(plan: MovePlan, res: Resolved) -> list[str]:
    """Where the kernel chose the destination (no MREMAP_FIXED, and the range moved): which
    ``get_unmapped_area`` path placed it (kernel-rules.md R26)."""
    req = res.request
    if req.fixed or req.for_stack or plan.errno or plan.result_addr in (None, req.old_addr):
        return []
    vma = res.space.find_vma(req.old_addr)
    if vma is None:
        return []
    return [f"placed      {placement(res.target, res.space, vma, req.length, mremap_hint(req))}"]


def _moved_lines(plan: MovePlan) -> list[str]:
    out = []
    for m in plan.moved:
        state = " (reverted)" if m.reverted else ""
        out.append(f"moved       [{m.src_start:#x}, {m.src_end:#x}) -> {m.dst_start:#x}"
                   f"{state}: realigned {'yes' if m.realigned else 'no'}, {m.realign}")
    return out


def render_table(plan: MovePlan, res: Resolved, cost: dict[str, Any] | None = None) -> str:
    """The human summary: call, result, why it was or was not realigned, the counters."""
    s, t = res.settings, res.target
    lines = [
        f"target      {t.arch.name}, kernel {t.kernel.name}, {t.kernel.platform} "
        f"(profile {t.digest})",
        f"request     {_call_text(res.request)}",
        f"source      {_space_text(res)}",
    ]
    if s["description"]:
        lines.append(f"about       {s['description']}")
    lines += [
        f"result      {_result_text(plan)}",
        *_placed_lines(plan, res),
        f"realigned   {'yes' if plan.realigned else 'no'}"
        + (f" — {'rule ' if plan.realign_reason.startswith('(') else ''}{plan.realign_reason}"
           if plan.realign_reason else ""),
        *(_moved_lines(plan) if len(plan.moved) > 1 or any(m.reverted for m in plan.moved) else []),
        f"progress    {fmt_size(plan.progress_bytes)} ({plan.progress_bytes} bytes)",
        f"need_rmap_locks  {'true' if plan.need_rmap_locks else 'false'} (copy_vma: "
        + ("the destination merged below the source, so move_ptes takes the rmap locks)"
           if plan.need_rmap_locks else "move_ptes runs without rmap locks; NORMAL_PMD/PUD "
           "moves take them anyway, see rmap_holds)"),
        f"vmas after  {len(plan.after.vmas)} · {len(plan.steps)} steps · {plan.planner} planner",
    ]
    if cost:
        ns = cost["predicted_ns"]
        top = sorted(cost["cost_ns"].items(), key=lambda kv: -float(kv[1]))[:3]
        parts = ", ".join(f"{k} {_fmt_ns(x)}" for k, x in top if float(x) > 0)
        lines.append(f"predicted   {_fmt_ns(ns)} (cost profile {cost['cost_profile']['name']})"
                     + (f"; largest: {parts}" if parts else ""))
        for name, source in cost["cost_profile"].get("fallbacks", {}).items():
            lines.append(f"note        the cost profile predates {name}: "
                         + source.removeprefix(FALLBACK_MARK))
    lines.append("")
    lines += _counter_table(plan)
    return "\n".join(lines)


def _counter_table(plan: MovePlan) -> list[str]:
    mv, sc = plan.move.as_dict(), plan.syscall.as_dict()
    rows = [(name, mv[name], sc[name]) for name in COUNTER_FIELDS]
    for lvl in ("p4d", "pud", "pmd", "pte"):
        rows.append((f"tables_allocated.{lvl}", mv["tables_allocated"][lvl],
                     sc["tables_allocated"][lvl]))
    width = max(len(r[0]) for r in rows)
    cw = max(9, *(len(str(r[1])) for r in rows), *(len(str(r[2])) for r in rows))
    lines = [f"{'counter':<{width}}  {'move':>{cw}}  {'syscall':>{cw}}",
             f"{'-' * width}  {'-' * cw}  {'-' * cw}"]
    lines += [f"{name:<{width}}  {a:>{cw}}  {b:>{cw}}" for name, a, b in rows]
    lines += ["", "move = move_page_tables alone; syscall = the whole call "
              "(what tlb:tlb_flush sees)"]
    return lines


def _fmt_ns(ns: float) -> str:
    ns = float(ns)
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns:.3g} ns"


_SHAPE_COLUMNS = ("phase", "kind", "length", "ptes", "slots", "batches", "alloc_p4d",
                  "alloc_pud", "alloc_pmd", "alloc_pte", "freed", "flushes", "flush_full",
                  "flush_pages", "ipis", "rmap", "ptl", "notifier")


@dataclass(frozen=True)
class TraceGroup:
    """``period`` consecutive step rows starting at ``start``, repeated ``repeat`` times."""

    start: int
    period: int
    repeat: int

    @property
    def rows(self) -> int:
        return self.period * self.repeat


def shape_ids(steps: S.Steps) -> np.ndarray:
    """One integer per row; equal ids mean equal shape (everything but the addresses)."""
    if len(steps) == 0:
        return np.zeros(0, dtype=np.int64)

    key = np.zeros(len(steps), dtype=np.int64)
    for col in [steps.col(c) for c in _SHAPE_COLUMNS] + [steps.lock_set]:
        codes, uniques = pd.factorize(col)
        if len(uniques) > 1:
            # Mixed-radix combination, re-factorised so it never overflows.
            key, _ = pd.factorize(key * len(uniques) + codes)
    return np.asarray(key, dtype=np.int64)


def _run_lengths(eq: np.ndarray) -> np.ndarray:
    """``r[i]`` = how many consecutive True values start at ``eq[i]``."""
    n = len(eq)
    idx = np.arange(n)
    false_at = np.where(eq, n, idx)
    next_false = np.minimum.accumulate(false_at[::-1])[::-1]
    return next_false - idx


def compress(steps: S.Steps, max_groups: int | None = None,
             max_period: int = MAX_PERIOD) -> list[TraceGroup]:
    """Fold the step table into groups: at each row, the block of 1..``max_period`` rows
    whose back-to-back repetition covers the most rows (shortest block on a tie)."""
    ids = shape_ids(steps)
    n = len(ids)
    runs = {p: _run_lengths(ids[p:] == ids[:-p]) for p in range(1, max_period + 1) if n > p}
    groups: list[TraceGroup] = []
    i = 0
    while i < n and (max_groups is None or len(groups) < max_groups):
        best = TraceGroup(i, 1, 1)
        for p, r in runs.items():
            if i >= len(r):
                continue
            k = int(r[i]) // p + 1
            if k >= 2 and k * p > best.rows:
                best = TraceGroup(i, p, k)
        groups.append(best)
        i += best.rows
    return groups


def _step_fields(steps: S.Steps, j: int) -> dict[str, Any]:
    c = steps.cols
    allocs = [lvl for lvl in ("p4d", "pud", "pmd", "pte") for _ in range(int(c[f"alloc_{lvl}"][j]))]
    if int(c["flushes"][j]):
        flush = "full" if int(c["flush_full"][j]) else f"pages={int(c['flush_pages'][j])}"
    else:
        flush = None
    return {
        "phase": S.PHASE_NAMES[int(c["phase"][j])],
        "kind": S.KIND_NAMES[int(c["kind"][j])],
        "old_addr": int(c["old_addr"][j]), "new_addr": int(c["new_addr"][j]),
        "length": int(c["length"][j]), "ptes": int(c["ptes"][j]),
        "allocs": allocs, "freed": int(c["freed"][j]), "flush": flush,
        "ipis": int(c["ipis"][j]), "rmap_locks": list(steps.lock_sets[int(steps.lock_set[j])]),
    }


def trace_json(steps: S.Steps, limit: int) -> dict[str, Any]:
    groups = compress(steps, max_groups=limit or None)
    covered = sum(g.rows for g in groups)
    return {
        "rows": len(steps),
        "truncated": covered < len(steps),
        "groups": [{"first_row": g.start + 1, "repeat": g.repeat,
                    "steps": [_step_fields(steps, g.start + q) for q in range(g.period)]}
                   for g in groups],
    }


def render_trace(steps: S.Steps, limit: int) -> str:
    """The step list, one line per step, repeated blocks folded into "×N" groups; at most
    ``limit`` lines of steps (0: no limit)."""
    head = (f"{'#':>14}  {'phase':<9} {'kind':<24} {'old_addr':>14} {'new_addr':>14} "
            f"{'length':>10} {'ptes':>6}  {'alloc':<8} {'freed':>5}  {'flush':<10} "
            f"{'ipis':>4}  rmap")
    out = [f"trace: {len(steps)} steps", head]
    printed = 0
    groups = compress(steps, max_groups=limit or None)
    covered = 0
    for g in groups:
        if limit and printed >= limit:
            break
        covered += g.rows
        first, last = g.start + 1, g.start + g.rows
        if g.repeat == 1:
            out.append(_trace_line(steps, g.start, f"{first}"))
            printed += 1
        elif g.period == 1:
            out.append(_trace_line(steps, g.start, f"{first}-{last} ×{g.repeat}"))
            printed += 1
        else:
            out.append(f"{f'{first}-{last}':>14}  ×{g.repeat} of the {g.period} steps:")
            for q in range(g.period):
                out.append(_trace_line(steps, g.start + q, f"{g.start + q + 1}", indent=True))
                printed += 1
    if covered < len(steps):
        out.append(f"... {len(steps) - covered} more steps not shown "
                   f"(--trace-limit {limit}; 0 shows all)")
    return "\n".join(out)


def _trace_line(steps: S.Steps, j: int, label: str, indent: bool = False) -> str:
    f = _step_fields(steps, j)
    alloc = ",".join(f["allocs"]) or "-"
    rmap = ",".join(f["rmap_locks"]) or "-"
    label = f"  {label:>12}" if indent else f"{label:>14}"
    new = f"{f['new_addr']:#x}" if f["new_addr"] or f["phase"] == "move" else "-"
    return (f"{label}  {f['phase']:<9} {f['kind']:<24} {f['old_addr']:>#14x} "
            f"{new:>14} {fmt_size(f['length']):>10} {f['ptes']:>6}  {alloc:<8} "
            f"{f['freed'] or '-':>5}  {f['flush'] or '-':<10} {f['ipis'] or '-':>4}  {rmap}")


