"""Count the kernel's TLB flushes for every ``mremap()`` an ordinary program makes.

:func:`trace_program` runs a program that is not perfsim's (``python3`` growing a
bytearray, ``perl`` growing a string, a C program using plain ``realloc()``...) inside a
:class:`~perfsim.host.trace.TlbTraceSession` and splits the trace into one record per mremap
call of any of the program's threads: the call's arguments and return value, the kernel time
between its ``raw_syscalls`` enter and exit, and its ``tlb:tlb_flush`` events counted as
``perfsim.host.trace`` counts them (whole call, and by phase from the maple-tree markers).

The session is the one ``perfsim.host.trace`` defines (mount, restore, refusal when somebody
else is tracing). :class:`ProgramTraceSession` changes only what it filters on: the
program's threads are not known before it starts, so the syscall events are filtered to
mremap alone and each record line carries its thread-group id (``options/record-tgid``,
saved and restored with the rest); calls are then kept by thread group.

With ``strace_log`` the program runs under strace inside the session, so the log and the
counts are of the same calls. It runs with address-space randomisation off
(``personality(ADDR_NO_RANDOMIZE)``, what ``setarch -R`` does), so that runs without strace
make the same calls at the same addresses (a one-thread program). :func:`compare_program`
pairs each logged call with the traced call of the same arguments and result and holds the
trace replay's plan for it against the kernel's counts. See docs/real-programs.md.
"""

from __future__ import annotations

import ctypes
import io
import os
import re
import statistics
import time
from dataclasses import dataclass, replace

from perfsim.errors import PerfsimError
from perfsim.host.syscalls import SYS_mremap, libc
from perfsim.host.trace import (
    EVENT_MARKER,
    RawEvent,
    TlbTraceSession,
    _read,
    _write,
    extract_call,
    parse_trace,
)

ADDR_NO_RANDOMIZE = 0x0040000
"""``personality()`` flag: no ASLR for the exec'd program (``setarch -R``)."""

_TGID_RE = re.compile(r"^\s*.*?-(?P<pid>\d+)\s+\(\s*(?P<tgid>[-\d]+)\)\s+\[")
_ENTER_ARGS = re.compile(r"^(?P<head>NR -?\d+ \()(?P<args>[0-9a-fA-F, ]*)(?P<tail>\).*)$")
MREMAP_FIXED = 2


class ProgramTraceSession(TlbTraceSession):
    """A :class:`TlbTraceSession` for a whole program: syscall events of every task
    filtered to mremap (the program's tids are unknown until it runs), maple-tree markers
    unfiltered, and ``record-tgid`` on so that records can be kept by thread group.

    ``times_only``: ``tlb:tlb_flush`` and the markers off, so that nothing but the syscall
    events is recorded inside a call (each record costs the call time): for kernel times,
    not flush counts."""

    def __init__(self, *args, times_only: bool = False, **kw) -> None:
        super().__init__(*args, **kw)
        self.times_only = times_only

    def _configure(self) -> None:
        super()._configure()
        _write(self._p("tracing_on"), "0")
        if self.times_only:
            for ev in self._events:
                if not ev.startswith("raw_syscalls/"):
                    _write(self._p(f"events/{ev}/enable"), "0")
        for ev in ("raw_syscalls/sys_enter", "raw_syscalls/sys_exit"):
            _write(self._p(f"events/{ev}/filter"), f"id == {SYS_mremap}")
        if EVENT_MARKER in self._events:
            _write(self._p(f"events/{EVENT_MARKER}/filter"), "0")
        if os.path.exists(self._p("options/record-tgid")):
            self._save("options/record-tgid")
            _write(self._p("options/record-tgid"), "1")
        _write(self._p("trace"), "")
        _write(self._p("tracing_on"), "1")

    def read_trace(self) -> str:
        return _read(self._p("trace"))


def tgids_of(text: str) -> dict[int, int]:
    """tid → thread-group id from trace lines recorded with ``record-tgid``."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        m = _TGID_RE.match(line)
        if m and m["tgid"].lstrip("-").isdigit() and int(m["tgid"]) > 0:
            out[int(m["pid"])] = int(m["tgid"])
    return out


def _with_new_addr(ev: RawEvent, new_addr: int) -> RawEvent:
    """The enter event with its fifth argument set to ``new_addr``: a call without
    MREMAP_FIXED passes garbage there, and the phase markers need the real destination."""
    m = _ENTER_ARGS.match(ev.rest)
    if not m:
        return ev
    args = [a.strip() for a in m["args"].split(",")]
    while len(args) < 5:
        args.append("0")
    args[4] = f"{new_addr:x}"
    return replace(ev, rest=m["head"] + ", ".join(args) + m["tail"])


def split_calls(raw: list[RawEvent], tids: set[int]) -> list[dict]:
    """One record per mremap enter/exit pair of the threads ``tids``, in enter order, each
    with the flush events between its enter and exit (``perfsim.host.trace.extract_call``
    on that window)."""
    open_at: dict[int, int] = {}
    spans: list[tuple[int, int, int]] = []
    for i, ev in enumerate(raw):
        if ev.pid not in tids or ev.event not in ("sys_enter", "sys_exit"):
            continue
        if ev.event == "sys_enter" and ev.rest.startswith(f"NR {SYS_mremap} "):
            open_at[ev.pid] = i
        elif ev.event == "sys_exit" and ev.rest.startswith(f"NR {SYS_mremap} ") \
                and ev.pid in open_at:
            spans.append((open_at.pop(ev.pid), i, ev.pid))
    spans.sort()
    out = []
    for seq, (lo, hi, tid) in enumerate(spans):
        ret = int(raw[hi].rest.split("=")[1].split()[0])
        enter = raw[lo]
        args = _ENTER_ARGS.match(enter.rest)
        flags = int(args["args"].split(",")[3], 16) if args else 0
        if ret > 0 and not flags & MREMAP_FIXED:
            enter = _with_new_addr(enter, ret)
        window = [enter] + raw[lo + 1:hi + 1]
        window = [replace(e, idx=k) for k, e in enumerate(window)]
        res = extract_call(window, tid, peers=tids)
        d = res.as_dict()
        d.update(seq=seq, tid=tid, args=[hex(a) for a in res.args[:4]],
                 ret=hex(ret) if ret > 0 else ret)
        out.append(d)
    return out


@dataclass
class ProgramRun:
    """What :func:`trace_program` saw: the calls, the exit status, the lost records."""

    argv: list[str]
    pid: int
    status: int
    calls: list[dict]
    overrun: int
    wall_ns: int


STRACE_TRACE = "trace=mremap,mmap,munmap,brk,ftruncate,mprotect,madvise"


def strace_argv(argv: list[str], log: str) -> list[str]:
    """``argv`` run under ``strace`` writing ``log`` (the command docs/real-programs.md
    gives: every thread, wall-clock µs timestamps, times spent, file descriptors with their
    paths (``-y``: what ties an ``ftruncate`` to the mappings of its file), the five
    calls)."""
    return ["strace", "-f", "-tt", "-T", "-y", "-e", STRACE_TRACE, "-o", log, "--", *argv]


def log_tids(text: str) -> set[int]:
    """The thread ids an ``strace -f`` log shows (its pid prefixes)."""
    out = set()
    for line in text.splitlines():
        head = line.split(None, 1)[0] if line.strip() else ""
        if head.isdigit():
            out.add(int(head))
    return out


def trace_program(argv: list[str], *, buffer_kb: int = 65536, no_aslr: bool = True,
                  stdout: int | None = None, strace_log: str | None = None,
                  times_only: bool = False) -> ProgramRun:
    """Run ``argv`` to completion inside a :class:`ProgramTraceSession` and return one
    record per mremap call of its threads (root only; raises what the session raises).
    The child waits on a pipe until the session is set up, then execs ``argv``.

    ``strace_log``: run it under ``strace`` (:func:`strace_argv`) writing that log, so that
    the log and the kernel's counts are of the very same calls (a multi-threaded program
    does not repeat its interleaving); the calls kept are those of the threads the log
    shows. ptrace stops the program at each call's entry and exit, outside the window
    between the ``raw_syscalls`` events, so the flush counts are the call's own; the
    kernel times are not the untraced program's (measure those without ``strace_log``, and
    with ``times_only``: no flush events recorded inside the calls)."""
    if strace_log is not None:
        argv = strace_argv(list(argv), strace_log)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: wait for the go, then exec
        try:
            os.close(wfd)
            go = os.read(rfd, 1)
            os.close(rfd)
            if go != b"g":  # the parent could not set up tracing: do not run untraced
                os._exit(126)
            if no_aslr:
                libc.personality(ctypes.c_ulong(ADDR_NO_RANDOMIZE))
            if stdout is not None:
                os.dup2(stdout, 1)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    os.close(rfd)
    status = -1
    try:
        with ProgramTraceSession(tid=pid, buffer_kb=buffer_kb, handle_sigterm=False,
                                 times_only=times_only) as s:
            t0 = time.monotonic_ns()
            os.write(wfd, b"g")
            os.close(wfd)
            wfd = -1
            _, status = os.waitpid(pid, 0)
            t1 = time.monotonic_ns()
            text = s.read_trace()
            overrun = s._overrun()
    finally:
        if wfd >= 0:
            os.close(wfd)  # the child reads no go and exits without running the program
        if status == -1:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
    if strace_log is not None:
        with open(strace_log, encoding="utf-8", errors="replace") as f:
            tids = log_tids(f.read())
    else:
        tg = tgids_of(text)
        tids = {t for t, g in tg.items() if g == pid} | {pid}
    calls = split_calls(parse_trace(text), tids)
    return ProgramRun(list(argv), pid, os.waitstatus_to_exitcode(status), calls, overrun,
                      t1 - t0)


# --------------------------------------------------------------------------------------------
# The replay's answers for the same calls


MIN_KERNEL_US = 10.0
"""Calls faster than this are left out of a latency ratio: the trace's timestamps have
1 µs resolution, so a 2 µs call's time is known to ±50 %."""

KERNEL_TIME_STATISTICS = {"median": statistics.median, "least": min}
"""How a call's untraced kernel times become one figure. ``least``: on a machine that is
not quiet a run's time includes the waits for its CPU (a call preempted at a
cond_resched(), a vCPU the hypervisor took), which only ever add; the least of several
runs is the closest to the call's own work."""


def untraced_kernel_ns(row: dict, statistic: str = "median") -> float | None:
    """The kernel's time for one compared call (a row of :func:`compare_program`), ns: the
    ``statistic`` of its runs without strace (``kernel_us_untraced``), or ``None`` where it
    has none or the figure is below :data:`MIN_KERNEL_US`."""
    us = row.get("kernel_us_untraced") or []
    if not len(us):
        return None
    k_us = KERNEL_TIME_STATISTICS[statistic](us)
    return k_us * 1000.0 if k_us >= MIN_KERNEL_US else None


def latency_ratios(rows: list[dict], key: str = "predicted_ns",
                   statistic: str = "median") -> list[float]:
    """predicted (``key``) / :func:`untraced_kernel_ns` for every row that has both."""
    return [r[key] / k for r in rows
            if r.get(key) and (k := untraced_kernel_ns(r, statistic)) is not None]


def call_key(old_addr: int, old_len: int, new_len: int, result: int | str) -> tuple:
    """What pairs a logged call with a traced one: its arguments and what it returned."""
    r = result if isinstance(result, int) else (int(result, 16) if str(result).startswith(
        "0x") else str(result))
    return (int(old_addr), int(old_len), int(new_len), r)


def planned_counts(plan) -> dict:
    """Per trace phase (and ``whole``): flush calls, full flushes and IPI rounds of a plan,
    in the terms :meth:`perfsim.host.trace.TraceResult.summary` counts the kernel's."""
    from perfsim.host.model import COUNTERS, PHASES, phase_counts

    out: dict = phase_counts(plan.steps)
    out["whole"] = {k: sum(out[p][k] for p in PHASES) for k in COUNTERS}
    return out


def kernel_counts(rec: dict) -> dict:
    """The same counters from one :func:`split_calls` record (phases only when known)."""
    from perfsim.host.model import COUNTERS, PHASES

    s = rec.get("summary") or {}
    out = {"whole": {k: int(s.get(k, 0)) for k in COUNTERS}}
    if rec.get("phases_known"):
        by = rec.get("summary_by_phase") or {}
        for p in PHASES:
            out[p] = {k: int((by.get(p) or {}).get(k, 0)) for k in COUNTERS}
    return out


def replay_plans(entries, target, threads: int, *, written=None,
                 thp_enabled: str = "madvise") -> list:
    """The plans a trace replay makes for ``entries`` (``perfsim.workload`` entries, their
    ``populate`` already set): a fresh mm whose ``threads`` threads are on as many CPUs,
    the recorded calls planned in order with the growth of each mremap faulted in
    (:class:`perfsim.workload.generate.StatefulPlanner`, as ``kind = "trace"`` does).

    ``written(entry, plan) -> bytes`` makes the population explicit instead: after each
    successful mremap, the first ``bytes`` of the mapping where it ended up are what the
    program has written by the mapping's next call (the rest stays as the call left it).
    ``thp_enabled``: the recorded system's ``transparent_hugepage/enabled``."""
    from perfsim.mm.pagetable import PageTables
    from perfsim.mm.space import AddressSpace
    from perfsim.workload.generate import StatefulPlanner, fault_in

    space = AddressSpace((), PageTables.empty(target.arch), cpus=threads)
    sp = StatefulPlanner(space, list(entries), target, seed=0, populate_growth=written is None,
                         thp_enabled=thp_enabled)
    mremaps = iter([e for e in sp.entries if e.op == "mremap"])
    out = []
    ps = target.arch.page_size
    for plan in sp:
        e = next(mremaps)
        out.append(plan)
        if written is None or plan.errno is not None:
            continue
        lo = plan.result_addr
        hi = plan.result_addr + min(-(-int(written(e, plan)) // ps) * ps,
                                    -(-(e.new_len or e.old_len) // ps) * ps)
        if hi > lo:  # (all of it, THPs where the system's setting gives them)
            sp.space = fault_in(sp.space, lo, hi, 1.0, 0, thp_enabled)
    return out


def exec_layout(maps_text: str, arch) -> tuple:
    """What exec left at the top of a process's mmap area, which an strace log does not
    show: from the ``/proc/PID/maps`` text of a dynamically linked program run without
    randomisation, the VMAs from the lowest of ``[vvar]``/``[vvar_vclock]``/``[vdso]`` up
    (the vDSO pages and the interpreter, ``ld.so``, whose end is ``mmap_base``) and the
    stack, as opaque VMAs (those below ``arch``'s top of user space: not ``[vsyscall]``).
    Everything ``ld.so`` and the program mapped later lies below them and is in the log.
    Empty when the text has no vDSO."""
    from perfsim.mm.vma import Vma

    rows = []
    for line in maps_text.splitlines():
        parts = line.split()
        if len(parts) < 5 or "-" not in parts[0]:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        rows.append((lo, hi, parts[1], parts[5] if len(parts) > 5 else ""))
    special = [lo for lo, _, _, path in rows if path in ("[vvar]", "[vvar_vclock]", "[vdso]")]
    if not special:
        return ()
    floor = min(special)
    return tuple(Vma(lo, hi, backing="anon" if path in ("", "[stack]") else "file",
                     file_id=None if path in ("", "[stack]") else path or f"{lo:#x}",
                     anon_id=f"exec@{lo:#x}", prot="".join(c for c in perms[:3] if c != "-")
                     or "none", pgoff=lo >> arch.page_shift, name=path or f"{lo:#x}")
                 for lo, hi, perms, path in rows if lo >= floor and hi <= arch.user_va_top)


def exec_maps_text() -> str:
    """``/proc/self/maps`` of ``cat`` run without randomisation (as ``setarch -R`` does): on
    this machine, what exec leaves at the top of the mmap area of any program with the same
    interpreter (:func:`exec_layout`), recorded beside a program's log."""
    import subprocess

    def no_aslr() -> None:
        libc.personality(ctypes.c_ulong(ADDR_NO_RANDOMIZE))

    return subprocess.run(["cat", "/proc/self/maps"], check=True, capture_output=True,
                          text=True, preexec_fn=no_aslr).stdout


def placement_rows(log_rows: list[dict], entries, target, threads: int, exec_vmas: tuple,
                   mmap_base: int, thp_enabled: str = "madvise") -> list[dict]:
    """Each logged mremap the kernel moved to an address it chose (no MREMAP_FIXED in the
    log, a result that is not the old address), planned again without the address on the
    replay's space just before it plus ``exec_vmas`` (:func:`exec_layout`), with
    ``mmap_base``: ``{"addr", "old_len", "new_len", "result", "placed", "agree"}``, where
    ``placed`` is the address perfsim's ``get_unmapped_area`` chose (docs/kernel-rules.md
    R26) or its errno."""
    from perfsim.mm.pagetable import PageTables
    from perfsim.mm.space import AddressSpace
    from perfsim.planner import MoveRequest, plan_mremap
    from perfsim.workload.generate import StatefulPlanner
    from perfsim.workload.trace import MREMAP_FLAGS, kernel_placed, parse_flags

    space = AddressSpace((), PageTables.empty(target.arch), cpus=threads)
    sp = StatefulPlanner(space, list(entries), target, seed=0, populate_growth=True,
                         thp_enabled=thp_enabled)
    mremaps = [r for r in log_rows if r["op"] == "mremap"]
    out = []
    for row, _plan in zip(mremaps, sp, strict=True):
        flags = parse_flags(row.get("flags", ""))
        if not kernel_placed(flags, int(row["addr"], 16), row["result"]):
            continue
        before = sp.before
        try:
            full = replace(before, vmas=before.vmas + exec_vmas, mmap_base_addr=mmap_base)
        except ValueError:  # a logged mapping over what exec left: not this exec layout
            out.append({"addr": row["addr"], "old_len": int(row["old_len"]),
                        "new_len": int(row["new_len"]), "result": row["result"],
                        "placed": "overlaps the exec layout", "agree": False})
            continue
        req = MoveRequest(int(row["addr"], 16), int(row["old_len"]), int(row["new_len"]),
                          fixed=False, dontunmap=bool(flags & MREMAP_FLAGS["MREMAP_DONTUNMAP"]))
        plan = plan_mremap(full, req, target)
        placed = plan.errno or hex(plan.result_addr)
        out.append({"addr": row["addr"], "old_len": int(row["old_len"]),
                    "new_len": int(row["new_len"]), "result": row["result"], "placed": placed,
                    "agree": placed == hex(int(row["result"], 16))})
    return out


def replay_inputs(text: str, origin: str, populate: float = 1.0, *,
                  csv_text: str | None = None) -> tuple[list[dict], list]:
    """The converter's CSV rows of an strace log (or of ``csv_text``, a CSV written from
    it) and the replay entries a ``kind = "trace"`` stream with that ``populate`` makes of
    them (a row's own ``populate`` column stands)."""
    import csv

    from perfsim.workload.trace import convert_strace, parse_trace_csv

    if csv_text is None:
        buf = io.StringIO()
        convert_strace(text, buf, origin)
        csv_text = buf.getvalue()
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    entries = [e if e.op == "munmap" or e.populate is not None else replace(e, populate=populate)
               for e in parse_trace_csv(csv_text, origin)]
    return rows, entries


def thp_enabled_of(text: str) -> str | None:
    """The selected word of ``/sys/kernel/mm/transparent_hugepage/enabled`` (``always
    [madvise] never`` → ``madvise``), or None when the text has none."""
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def recorded_thp_enabled(records: list[dict]) -> str:
    """The ``transparent_hugepage/enabled`` the records were made under (their
    ``thp_enabled``, written by scripts/record_program.py since 2026-12-03; ``madvise``,
    this machine's setting, for records made before)."""
    modes = {r.get("thp_enabled") or "madvise" for r in records}
    if len(modes) > 1:
        raise PerfsimError(f"records made under different transparent_hugepage settings: "
                           f"{', '.join(sorted(modes))}")
    return modes.pop() if modes else "madvise"


def compare_program(log_rows: list[dict], entries, records: list[dict], target,
                    threads: int, *, ipis: bool = True, cost: str | None = None,
                    written=None, plans: list | None = None,
                    thp_enabled: str | None = None) -> list[dict]:
    """One row per logged mremap: the replay's counts, the kernel's (the traced call with the
    same arguments and result, taken in order), and whether they agree on flush calls and
    full flushes (and IPI rounds when ``ipis``) for the whole call and for every phase the
    trace could tell. ``log_rows`` are the converter's CSV rows of the log, ``entries`` the
    replay entries made of them (:func:`replay_inputs`); ``written`` as in
    :func:`replay_plans`; ``cost``: a cost profile whose prediction for each call is added
    (``predicted_ns``); ``plans``: those :func:`replay_plans` made of ``entries`` already
    (with the same ``threads`` and ``written``), not made again; ``thp_enabled``: the
    recorded system's THP setting (None: :func:`recorded_thp_enabled` of ``records``)."""
    from perfsim.host.model import COUNTERS
    from perfsim.workload.written import written_before_calls

    if thp_enabled is None:
        thp_enabled = recorded_thp_enabled(records)
    pool: dict[tuple, list[dict]] = {}
    for r in records:
        if not r.get("available", True):
            continue
        a = [int(x, 16) for x in r["args"]]
        pool.setdefault(call_key(a[0], a[1], a[2], r["ret"]), []).append(r)
    if plans is None:
        plans = replay_plans(entries, target, threads, written=written, thp_enabled=thp_enabled)
    if cost is not None:
        from perfsim.cost.model import predict
        from perfsim.cost.profile import load_cost_profile

        profile = load_cost_profile(cost)
    mremaps = [r for r in log_rows if r["op"] == "mremap"]
    keys = COUNTERS if ipis else COUNTERS[:2]
    out = []
    written = written_before_calls(entries, plans)
    for row, plan, wb in zip(mremaps, plans, written, strict=True):
        key = call_key(int(row["addr"], 16), row["old_len"], row["new_len"], row["result"])
        got = pool.get(key) or []
        rec = got.pop(0) if got else None
        pred = planned_counts(plan)
        item = {"addr": row["addr"], "old_len": int(row["old_len"]),
                "new_len": int(row["new_len"]), "result": row["result"],
                "replay_result": plan.errno or hex(plan.result_addr),
                "planned": pred, "kernel": None, "agree": None, "phases_compared": False}
        if cost is not None and plan.errno is None:
            item["predicted_ns"] = predict(plan, profile, cpus=threads).predicted_ns
            # what the program wrote just before the call, as far as the log tells
            # (perfsim.workload.written: the block's previous growth, new memory since)
            item["written_before_bytes"] = wb
            item["predicted_cold_ns"] = predict(plan, profile, cpus=threads,
                                                written_before_bytes=wb).predicted_ns
        if rec is not None:
            k = kernel_counts(rec)
            phases = [p for p in k if p != "whole"]
            item.update(kernel=k, kernel_us=rec.get("kernel_us"),
                        kernel_us_untraced=rec.get("kernel_us_untraced") or [],
                        untraced=rec.get("untraced") or {},
                        phases_compared=bool(phases),
                        agree=all(pred[p][c] == k[p][c] for p in ["whole", *phases]
                                  for c in keys))
        out.append(item)
    return out
