"""A recorded call rebuilt as a perfsim address space, and the planner's prediction for it.

Every VMA the probe saw in ``/proc/self/maps`` before the call becomes a
:class:`perfsim.mm.Vma` (anonymous, shmem or file, MAP_SHARED or MAP_PRIVATE, with its
protection and file offset);
the pages the probe found present (``/proc/self/pagemap``) in the PMDs the source and the
destination touch (for a destination the kernel chose, its neighbours' pages, recorded
after the call: ``near_dst``) become the page tables, a PMD leaf where a THP maps a whole PMD (its
frames contiguous from a 2 MiB boundary, and the VMA's ``AnonHugePages`` /
``ShmemPmdMapped`` agreeing). The request is the call the probe made:
``mremap(src, size, new_size, MAYMOVE|FIXED, dst)`` (``flags=shrink``: ``mremap(src, size,
new_size, 0)``, the tail unmapped in place), in an mm with as many CPUs as threads. With
``flags=maymove`` (a growth past a blocking page) and ``dontunmap-any`` (DONTUNMAP, no
address) the kernel chose the destination: the request fixes none, the space's
``mmap_base`` is the one the probe's process had (the probe ran without randomisation:
:func:`perfsim.planner.unmapped_area.x86_mmap_base`), and the address the planner chooses
is compared with the one the kernel returned. A case
with ``truncate`` (the probe called ``ftruncate`` on the source's file after recording the
layout and before the call) gets the recorded state truncated as
:func:`perfsim.planner.truncate.truncate_pagecache` says (docs/kernel-rules.md R25): the call
is planned on what the truncation left. A case with ``dontneed_len`` (the probe called
``madvise(MADV_DONTNEED)`` on part of the source at the same point) gets that part zapped as
:func:`perfsim.planner.madvise.madvise_dontneed` says (R27).

The trace splits the call into ``dst_unmap``, ``move`` and ``src_unmap`` (see
:mod:`perfsim.host.trace`); they are the planner's UNMAP_DST, MOVE and UNMAP_SRC phases.
"""

from __future__ import annotations

from perfsim.errors import PerfsimError
from perfsim.host.model import COUNTERS, PHASES, phase_counts
from perfsim.mm.pagetable import PMD_LEAF, PMD_TABLE, PUD_TABLE, PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner.madvise import madvise_dontneed
from perfsim.planner.truncate import truncate_pagecache
from perfsim.planner.unmap import need_resched_break_flushes, vma_zap_forces_flush
from perfsim.planner.unmapped_area import x86_mmap_base
from perfsim.profiles import Target


class Unrepresentable(PerfsimError):
    """A recorded layout perfsim.mm cannot express (the reason is the message)."""


def _prot(perms: str) -> str:
    p = "".join(ch for ch in perms[:3] if ch != "-")
    return p or "none"


#: probe ``flags`` with which the kernel chooses the destination
KERNEL_PICKS = ("maymove", "dontunmap-any")

def kernel_picks(rec: dict) -> bool:
    return rec.get("flags") in KERNEL_PICKS


def destination(rec: dict) -> int:
    """Where the call put the range: the probe's ``dst``, or what the kernel returned when it
    chose (``ret``; the planned ``dst`` then unused)."""
    if kernel_picks(rec) and int(rec.get("ret", -1)) != -1:
        return int(rec["ret"])
    return int(rec["dst"])


def shmem_huge_of(rec: dict, path: str) -> bool:
    """Does the superblock of a shmem VMA at ``path`` allow huge pages? The internal mount
    (memfds, MAP_SHARED|MAP_ANONYMOUS, SysV) follows ``shmem_enabled`` (the record's
    ``thp_shmem_enabled``, its selected value in brackets); a tmpfs mount (``/dev/shm``)
    has its own ``huge=`` option, taken as Debian's default ``never``; ``force`` makes every
    one huge, ``deny`` none."""
    text = str(rec.get("thp_shmem_enabled", ""))
    chosen = text[text.find("[") + 1:text.find("]")] if "[" in text else ""
    if chosen == "force":
        return True
    return chosen in ("always", "within_size", "advise") and not path.startswith("/dev/shm/")


def vma_of(v: dict, rec: dict, page_shift: int) -> Vma:
    """One ``/proc/self/maps`` line as a Vma."""
    start, end, path = int(v["start"]), int(v["end"]), v.get("path", "")
    shared = v["perms"][3:4] == "s"
    is_src = start == int(rec["src"])
    anon_path = path == "" or (path.startswith("[") and path not in ("[vdso]", "[vvar]",
                                                                      "[vvar_vclock]"))
    if shared:
        # (a file in /dev/shm is on tmpfs: shmem to the kernel, as the trace converter says)
        backing = "shmem" if (anon_path or path.startswith(("/dev/zero", "/memfd:", "/SYSV",
                                                             "/dev/shm/"))) else "file"
    else:
        backing = "anon" if anon_path else "file"
    anon = backing == "anon"
    present = v.get("present")
    touched = bool(present) if present is not None else True
    # (MADV_HUGEPAGE went to the whole source range: every VMA split from it keeps it)
    src0 = int(rec["src"])
    in_src = src0 <= start < src0 + int(rec.get("size", 0))
    thp = rec.get("thp") == "on" and in_src
    file_id = None if anon else f"{path or 'shmem'}#{v.get('inode', 0)}"
    return Vma(start, end, backing=backing, thp=thp, anon_vma=anon and touched,
               pgoff=(start >> page_shift) if anon else int(v.get("offset", 0)) >> page_shift,
               file_id=file_id, anon_id=(f"anon@{start:#x}" if anon else None),
               prot=_prot(v["perms"]), name="src" if is_src else (path or f"{start:#x}"),
               shared=shared,
               # msync(MS_SYNC) after the writes (sync = "msync") wrote a shared file's pages
               # back, cleaning their PTEs; a tmpfs file (shmem) has no writeback
               # split_at: the probe wrote the page before mprotect(PROT_READ) (still dirty)
               dirty=(in_src and "w" not in v["perms"][:3]
                      and rec.get("populate") != "none" and int(rec.get("split_at") or 0) > 0),
               shmem_huge=backing == "shmem" and shmem_huge_of(rec, path),
               written_back=(is_src and rec.get("sync") == "msync" and shared
                             and backing == "file" and rec.get("backing") != "tmpfs"))


def pmd_leaves(v: dict) -> list[int]:
    """The PMD-mapped THPs of a VMA (see the module docstring)."""
    cands = [int(a) for a in v.get("pmd_candidates", [])]
    huge_kb = int(v.get("huge_kb", 0))
    if huge_kb == 0:
        return []
    if huge_kb != len(cands) * 2048:
        raise Unrepresentable(f"source at {int(v['start']):#x}: smaps says {huge_kb} kB "
                              f"PMD-mapped but {len(cands)} PMDs look like whole THPs")
    return cands


def page_tables(rec: dict, target: Target) -> PageTables:
    """Present pages and PMD leaves of the record as page-table state."""
    a = target.arch
    ptrs = a.ptrs_per_pte
    masks: dict[int, int] = {}
    leaves: set[int] = set()
    # (near_dst: a kernel-placed call's neighbours around where the range went, taken after
    # the call; records before 2026-12-03 13:40 UTC have none)
    for v in [*rec["vmas"], *rec.get("near_dst", ())]:
        if "present" not in v:
            continue
        # (records before 2026-12-03 say huge_kb for the source VMA only)
        if int(v["start"]) == int(rec["src"]) or "huge_kb" in v:
            leaves.update(x >> a.pmd_shift for x in pmd_leaves(v))
        for lo, hi in v["present"]:
            lo, hi = int(lo), int(hi)
            for slot in range(lo >> a.pmd_shift, ((hi - 1) >> a.pmd_shift) + 1):
                base = slot << a.pmd_shift
                s = (max(lo, base) - base) >> a.page_shift
                e = (min(hi, base + a.pmd_size) - base) >> a.page_shift
                masks[slot] = masks.get(slot, 0) | (((1 << e) - 1) ^ ((1 << s) - 1))
    pt = PageTables.empty(a)
    if not masks:
        return pt
    lo = min(masks) << a.pmd_shift
    hi = (max(masks) + 1) << a.pmd_shift
    win = pt.window(lo, hi)
    full = (1 << ptrs) - 1
    shift = a.pud_shift - a.pmd_shift
    for slot, m in masks.items():
        if slot in leaves:
            win.pmd[slot] = (PMD_LEAF, full)
        else:
            win.pmd[slot] = (PMD_TABLE, m)
        win.pud[slot >> shift] = PUD_TABLE
        if not a.pud_folded:
            win.pud_tables.add((slot << a.pmd_shift) >> a.p4d_shift)
    return pt.replace_window(win)


def space_for_record(rec: dict, target: Target) -> tuple[AddressSpace, MoveRequest]:
    a = target.arch
    vmas = [vma_of(v, rec, a.page_shift) for v in rec["vmas"]
            if int(v["end"]) <= a.user_va_top]
    base = None
    if kernel_picks(rec):
        if rec.get("randomized", True):
            raise Unrepresentable("the kernel chose the destination in a randomised address "
                                  "space (probe run without -R): mmap_base is not known")
        base = x86_mmap_base(a.user_va_top, int(rec["stack_rlimit"]))
    try:
        space = AddressSpace(tuple(vmas), page_tables(rec, target), cpus=int(rec["threads"]),
                             mmap_base_addr=base)
    except ValueError as exc:
        raise Unrepresentable(str(exc)) from None
    truncate = int(rec.get("truncate", -1))
    if truncate >= 0:  # ftruncate(source's fd, truncate) between the record and the call
        src = next(v for v in space.vmas if v.start == int(rec["src"]))
        space = truncate_pagecache(target, space, src.file_id, truncate)
    dontneed = int(rec.get("dontneed_len", 0))
    if dontneed:  # madvise(src + off, len, MADV_DONTNEED) between the record and the call
        space = madvise_dontneed(target, space, int(rec["src"]) + int(rec["dontneed_off"]),
                                 dontneed).space
    size = int(rec["size"])
    new_size = int(rec.get("new_size") or size)
    if rec.get("flags") == "shrink":  # mremap(src, size, new_size, 0): the tail, in place
        return space, MoveRequest(int(rec["src"]), size, new_size, maymove=False, fixed=False)
    if kernel_picks(rec):  # MREMAP_MAYMOVE, or MAYMOVE|DONTUNMAP with no address
        return space, MoveRequest(int(rec["src"]), size, new_size, fixed=False,
                                  dontunmap=rec["flags"] == "dontunmap-any")
    return space, MoveRequest(int(rec["src"]), size, new_size, new_addr=int(rec["dst"]),
                              dontunmap=rec.get("flags") == "dontunmap")


def predicted(rec: dict, target: Target) -> dict:
    """The planner's flush calls, full flushes and IPI rounds, per trace phase and for the
    whole call, and its errno."""
    space, req = space_for_record(rec, target)
    plan = plan_mremap(space, req, target)
    st = plan.steps
    out: dict = phase_counts(st)
    out["whole"] = {k: sum(out[p][k] for p in PHASES) for k in COUNTERS}
    out["whole"]["flush_calls"] = int(st.flushes.sum())
    out["whole"]["full_flushes"] = int(st.flush_full.sum())
    out["whole"]["ipi_rounds"] = int((st.ipis > 0).sum())
    out["errno"] = plan.errno
    out["new_addr"] = plan.result_addr if kernel_picks(rec) and plan.errno is None else None
    return out


def measured(rec: dict) -> dict:
    """The same counters from a traced record."""
    by = rec.get("summary_by_phase") or {}
    out = {name: {k: int((by.get(name) or {}).get(k, 0)) for k in COUNTERS} for name in PHASES}
    sm = rec.get("summary") or {}
    out["whole"] = {k: int(sm.get(k, 0)) for k in COUNTERS}
    return out


def errno_name(num: int) -> str | None:
    """``0`` -> None, else the symbolic name (``14`` -> ``"EFAULT"``)."""
    import errno

    return None if num == 0 else errno.errorcode.get(num, str(num))


def ipi_comparable(rec: dict) -> bool:
    """IPI rounds are compared where they are determined: one thread (nobody else in
    mm_cpumask once it is settled), or a spinner that was on its CPU for every flush."""
    return int(rec["threads"]) == 1 or rec.get("ipi_coverage") == 1.0


def zaps_forcing_ptes(rec: dict, target: Target) -> bool:
    """Does the call unmap a VMA whose present PTEs force a flush when zapped
    (:func:`~perfsim.planner.unmap.vma_zap_forces_flush`: written MAP_SHARED shmem or file
    pages)? The source and destination ranges are looked at (a shrink's tail, the
    MREMAP_FIXED destination)."""
    space, req = space_for_record(rec, target)
    spans = [(req.old_addr, req.old_addr + req.old_len)]
    if req.fixed and req.new_addr is not None:
        spans.append((req.new_addr, req.new_addr + (req.new_len or req.old_len)))
    return any(vma_zap_forces_flush(v) for lo, hi in spans for v in space.intersecting(lo, hi))


def resched_allowance(rec: dict, target: Target) -> int:
    """Flushes the trace may count beyond the plan because the zap saw ``need_resched()``:
    :func:`~perfsim.planner.unmap.need_resched_break_flushes` for each flush of the call the
    trace shows with TIF_NEED_RESCHED set (``need_resched_flushes``, counted by
    :func:`perfsim.groundtruth.records.need_resched_flushes`; each break flushes once with
    the flag still set), where the call zaps PTEs that force a flush (:func:`zaps_forcing_ptes`)."""
    breaks = int(rec.get("need_resched_flushes") or 0)
    if not breaks:
        return 0
    return breaks * need_resched_break_flushes(zaps_forcing_ptes(rec, target))


def _excused(d: dict, allowance: int) -> bool:
    """A scope's differences are the resched breaks': flush calls over the plan by at most
    ``allowance``, full flushes over it by no more than the flush calls (a split table's
    two flushes may both be full, or one ranged), IPI rounds likewise (with a second
    thread on its CPU each extra flush is a shootdown too), nothing else."""
    calls = d.get("flush_calls", (0, 0))
    full = d.get("full_flushes", (0, 0))
    ipis = d.get("ipi_rounds", (0, 0))
    extra = calls[1] - calls[0]
    return (set(d) <= {"flush_calls", "full_flushes", "ipi_rounds"} and 0 < extra <= allowance
            and 0 <= full[1] - full[0] <= extra and 0 <= ipis[1] - ipis[0] <= extra)


def compare(rec: dict, target: Target) -> dict:
    """``{"agree": bool, "diff": {scope: {key: (predicted, measured)}}, ...}`` over the
    whole call and, where the trace found the phase markers, phase by phase. A scope whose
    only differences are flushes the zap's ``need_resched()`` breaks added
    (:func:`resched_allowance`) agrees; ``excused`` lists those scopes and their
    differences."""
    p, m = predicted(rec, target), measured(rec)
    keys = ["flush_calls", "full_flushes"] + (["ipi_rounds"] if ipi_comparable(rec) else [])
    scopes = ["whole"] + (list(PHASES) if rec.get("phases_known") else [])
    diff = {s: {k: (p[s][k], m[s][k]) for k in keys if p[s][k] != m[s][k]} for s in scopes}
    diff = {s: d for s, d in diff.items() if d}
    allowance = resched_allowance(rec, target) if diff else 0
    excused = {s: d for s, d in diff.items() if allowance and _excused(d, allowance)}
    diff = {s: d for s, d in diff.items() if s not in excused}
    got = errno_name(int(rec.get("errno", 0)))
    if p["errno"] != got:
        diff["errno"] = {"errno": (p["errno"], got)}
    if kernel_picks(rec) and got is None and p["new_addr"] != int(rec["ret"]):
        diff["new_addr"] = {"new_addr": (p["new_addr"], int(rec["ret"]))}
    return {"agree": not diff, "diff": diff, "predicted": p, "measured": m,
            "scopes": scopes, "keys": keys, "excused": excused}
