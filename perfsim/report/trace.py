"""Per-call timelines as Chrome trace-event JSON (open in https://ui.perfetto.dev or
chrome://tracing).

One call's plan is laid out on the calling CPU with the cost model's per-row durations (the
no-contention timeline the engine replays): a ``mremap`` span, one span per phase named after
the kernel function that runs it (``move_page_tables``, ``unmap_source_vma``, ...), one span
per step named after its kernel function (``move_ptes``, ``move_normal_pmd``,
``move_normal_pud``, ``move_huge_pmd``, ...), the rmap-lock hold around a step that takes it
(``rmap lock anon_vma:src (write)``: the whole step, flush included), and the step's
``flush_tlb_mm_range`` at its end with the IPI round (``native_flush_tlb_multi``) inside.
Each IPI target CPU gets a ``flush_tlb_func`` span for the time the interrupt steals there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from perfsim.cost import load_cost_profile, row_costs
from perfsim.planner import steps as S

PHASE_FUNCS = {S.SYSCALL: "do_mremap", S.UNMAP_DST: "do_munmap (destination)",
               S.MOVE: "move_page_tables", S.REVERT: "move_page_tables (revert)",
               S.UNMAP_SRC: "unmap_source_vma"}
KIND_FUNCS = dict(enumerate(S.KIND_NAMES))
KIND_FUNCS.update({S.K_SYSCALL: "mremap fixed work (checks, vma_lookup, copy_vma)",
                   S.K_NOTIFIER: "mmu_notifier_invalidate_range_start/end",
                   S.K_SKIP_PUD: "skip (PUD none)", S.K_SKIP_PMD: "skip (PMD none)",
                   S.K_ZAP: "unmap_vmas (zap)", S.K_FREE_TABLES: "free_pgtables",
                   S.K_MUNMAP: "do_vmi_munmap"})
MAX_EVENTS = 500_000


def trace_events(plan, profile, *, cpus: int = 1, rng: np.random.Generator | None = None,
                 title: str = "mremap") -> dict:
    """The trace-event document of one planned call (a dict; ``json.dump`` it)."""
    prof = load_cost_profile(profile)
    steps = plan.steps
    rc = row_costs(plan, prof, cpus=cpus, rng=rng)
    total = rc.total.astype(np.int64)
    start = np.concatenate([[0], np.cumsum(total)[:-1]]) if len(total) else np.zeros(0, np.int64)
    flush_part = rc.by_category["tlb_flush"] + rc.by_category["ipi"]
    ipi_part = rc.by_category["ipi"]
    locks = steps.lock_names_per_row()
    kind, phase = steps.kind, steps.phase
    pid = 1
    ev: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"{title} (simulated)"}},
        {"ph": "M", "name": "thread_name", "pid": pid, "tid": 0,
         "args": {"name": "CPU 0 (caller)"}},
    ]
    for cpu in range(1, cpus):
        ev.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": cpu,
                   "args": {"name": f"CPU {cpu} (IPI target)"}})

    def span(name, t0, dur, tid=0, cat="mremap", **args):
        ev.append({"name": name, "cat": cat, "ph": "X", "ts": t0 / 1000.0, "dur": dur / 1000.0,
                   "pid": pid, "tid": tid, "args": args})

    end = int(total.sum())
    span(title, 0, end, cat="syscall", latency_ns=end, realigned=bool(plan.realigned),
         errno=plan.errno or "", cost_profile=prof.name, cpus=cpus)
    # phases: maximal runs of one phase
    n = len(steps)
    if n:
        cuts = np.flatnonzero(phase[1:] != phase[:-1]) + 1
        for a, b in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [n]]).tolist()):
            dur = int(total[a:b].sum())
            if int(phase[a]) != S.SYSCALL:
                span(PHASE_FUNCS.get(int(phase[a]), "phase"), int(start[a]), dur, cat="phase",
                     steps=b - a)
    truncated = 0
    for i in range(n):
        if len(ev) > MAX_EVENTS:
            truncated = n - i
            break
        t0, d = int(start[i]), int(total[i])
        k = int(kind[i])
        if locks[i]:
            for lk in locks[i]:
                span(f"rmap lock {lk} (write)", t0, d, cat="rmap", lock=lk, hold_ns=d)
        fp = int(flush_part[i]) if int(steps.flushes[i]) else 0
        args = {"old_addr": hex(int(steps.old_addr[i])), "new_addr": hex(int(steps.new_addr[i])),
                "length": int(steps.length[i]), "ptes": int(steps.ptes[i]), "cost_ns": d}
        if k != S.K_SYSCALL or d - fp > 0:
            span(KIND_FUNCS.get(k, "step"), t0, d - fp, cat="step", **args)
        if fp:
            full = bool(steps.flush_full[i])
            span("flush_tlb_mm_range", t0 + d - fp, fp, cat="tlb",
                 full=full, pages=int(steps.flush_pages[i]), ipis=int(rc.ipis[i]))
            ip = int(ipi_part[i])
            if ip and int(rc.ipis[i]):
                span("native_flush_tlb_multi", t0 + d - ip, ip, cat="ipi",
                     targets=int(rc.ipis[i]))
                for cpu in range(1, min(cpus, int(rc.ipis[i]) + 1)):
                    span("flush_tlb_func", t0 + d - ip, int(rc.stolen[i]), tid=cpu, cat="ipi",
                         stolen_ns=int(rc.stolen[i]))
    return {"traceEvents": ev, "displayTimeUnit": "ns",
            "metadata": {"title": title, "latency_ns": end, "steps": n,
                         "cost_profile": prof.name, "cost_profile_digest": prof.digest,
                         "truncated_steps": truncated,
                         "note": "timestamps in µs (trace-event format); one call, no "
                                 "contention (the cost model's closed form)"}}


def export_call(call, path: str | Path, *, arch: str = "x86_64",
                default_profile: str | None = None) -> dict:
    """Plan a :class:`~perfsim.report.study.TraceCall` and write its trace to ``path``.
    The call's cost profile, else ``default_profile``, else the arch's own
    (:func:`perfsim.cost.default_cost_profile`). Returns the document's metadata."""
    from perfsim.cost import default_cost_profile
    from perfsim.report.shapes import plan_call, target_for
    from perfsim.units import parse_size

    target = target_for(call.kernel, arch)
    size = parse_size(call.size)
    plan = plan_call(target, call.cls, size, backing=call.backing, thp=call.thp)
    profile = call.cost_profile or default_profile or default_cost_profile(target.arch.name)
    doc = trace_events(plan, profile, cpus=call.threads,
                       title=f"mremap {call.ident}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, separators=(",", ":")))
    return doc["metadata"]
