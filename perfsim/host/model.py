"""The planner's view of a measured layout: the address space and request a real
``perfsim.host`` measurement record describes, and the whole-call TLB flush counts the
planner predicts for it, phase by phase, in the same terms the trace gives.

The trace (``perfsim.host.trace``) splits one mremap call into ``dst_unmap``, ``move`` and
``src_unmap``; they map to the planner's phases UNMAP_DST, MOVE and UNMAP_SRC.
"""

from __future__ import annotations

from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.profiles import Target

PHASES = {"dst_unmap": S.UNMAP_DST, "move": S.MOVE, "src_unmap": S.UNMAP_SRC}
"""The phases a trace can tell apart (by the maple-tree markers), by their names in it."""
COUNTERS = ("flush_calls", "full_flushes", "ipi_rounds")
"""What a trace counts per call and phase, in :meth:`~perfsim.host.trace.TraceResult.summary`'s
names."""


def phase_counts(steps: S.Steps) -> dict[str, dict[str, int]]:
    """Per trace phase (:data:`PHASES`): the flush calls, full flushes and IPI rounds of a
    plan's rows, in the terms a trace counts the kernel's (:data:`COUNTERS`)."""
    out = {}
    for name, ph in PHASES.items():
        sel = steps.phase == ph
        out[name] = {"flush_calls": int(steps.flushes[sel].sum()),
                     "full_flushes": int(steps.flush_full[sel].sum()),
                     "ipi_rounds": int(((steps.ipis > 0) & sel).sum())}
    return out


def space_for_record(rec: dict, target: Target) -> tuple[AddressSpace, MoveRequest]:
    """The mm of one measurement: the source VMA (populated), the blocking guard page of
    the ``blocked`` shape (read-faulted, so present), and the mm's threads as CPUs."""
    a = target.arch
    src, dst, size = int(rec["src"]), int(rec["dst"]), int(rec["size"])
    backing = "anon" if rec.get("backing", "anon") == "anon" else "shmem"
    anon = backing == "anon"
    vmas = [Vma(src, src + size, backing=backing, thp=bool(rec.get("thp")), anon_vma=anon,
                pgoff=src >> a.page_shift if anon else 0, file_id=None if anon else "memfd",
                anon_id="src" if anon else None, name="src")]
    pt = PageTables.empty(a).populate(src, src + size, thp=bool(rec.get("thp")) and anon)
    if rec["shape"] == "blocked":
        g = src - src % a.pmd_size
        vmas.append(Vma(g, g + a.page_size, prot="r", anon_id="guard", name="guard"))
        pt = pt.populate(g, g + a.page_size)
    space = AddressSpace(tuple(vmas), pt, cpus=int(rec.get("threads", 1)))
    return space, MoveRequest(src, size, new_addr=dst)


def predicted_flushes(rec: dict, target: Target) -> dict:
    """Per trace phase: flush calls, full flushes and IPI rounds the planner predicts."""
    space, req = space_for_record(rec, target)
    plan = plan_mremap(space, req, target)
    out: dict = phase_counts(plan.steps)
    out["errno"] = plan.errno
    return out


def measured_flushes(rec: dict) -> dict:
    """The same counters from a traced record (``summary_by_phase``)."""
    by = rec.get("summary_by_phase") or {}
    return {name: {k: int((by.get(name) or {}).get(k, 0)) for k in COUNTERS} for name in PHASES}
