"""Time (and optionally trace) real mremap() calls on the shapes of :mod:`perfsim.host.layout`."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from typing import Any

from perfsim.host import syscalls as sc
from perfsim.host.layout import SPEC_EXAMPLE, build_layout
from perfsim.host.spinner import Spinner
from perfsim.host.trace import TlbTraceSession, TraceResult

__all__ = ["measure_shape", "host_info", "settle_cpumask", "mem_available"]

_HOST: dict[str, Any] | None = None


def host_info() -> dict[str, Any]:
    """Kernel release, CPU model, CPU count and THP settings of this machine."""
    global _HOST
    if _HOST is None:
        cpu = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass

        def rd(p: str) -> str:
            try:
                with open(p) as f:
                    return f.read().strip()
            except OSError:
                return "?"

        _HOST = {
            "kernel": platform.release(),
            "machine": platform.machine(),
            "cpu_model": cpu,
            "ncpus": os.cpu_count(),
            "thp_enabled": rd("/sys/kernel/mm/transparent_hugepage/enabled"),
            "thp_shmem_enabled": rd("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
        }
    return dict(_HOST)


def mem_available() -> int:
    """MemAvailable in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def settle_cpumask() -> None:
    """Make small TLB flushes of our own so that CPUs which ran this mm earlier but do not any
    more get their stale ``mm_cpumask`` bit cleared ("remote wrong CPU") *before* the measured
    call rather than during it.

    The flushes must come from ``flush_tlb_range`` (which always passes ``freed_tables``):
    mprotect/munmap flushes skip CPUs in lazy-TLB mode, so they would leave the bit of an idle
    CPU that last ran this mm alone.  Two tiny mremap moves are used: the first IPI makes a
    lazy CPU leave the mm, the second finds it on another mm and clears its bit.
    """
    P = sc.PAGE_SIZE
    base = sc.mmap(None, 2 * P, sc.PROT_READ | sc.PROT_WRITE,
                   sc.MAP_PRIVATE | sc.MAP_ANONYMOUS)
    try:
        sc.madvise(base, 2 * P, sc.MADV_NOHUGEPAGE)
        sc.populate(base, P)
        sc.mremap(base, P, P, sc.MREMAP_MAYMOVE | sc.MREMAP_FIXED, base + P)
        sc.mremap(base + P, P, P, sc.MREMAP_MAYMOVE | sc.MREMAP_FIXED, base)
    finally:
        sc.munmap(base, 2 * P)


def _sched_counters(tid: int) -> tuple[int, int] | None:
    """(run_delay ns, involuntary context switches) of one thread of this process."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            run_delay = int(f.read().split()[1])
        with open(f"/proc/self/task/{tid}/status") as f:
            m = re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", f.read(), re.M)
        return run_delay, int(m.group(1)) if m else 0
    except (OSError, IndexError, ValueError):
        return None


def _set_nice(tid: int, value: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, tid, value)
    except OSError:
        pass


def timed_move(lay, session, spinner, tid: int, *, untraced: str = "tracing off"):
    """Time (and, with a trace ``session``, trace) one ``lay.do_move()``; return
    ``(TraceResult, caller disturbed, spinner disturbed or None)``. The layout is left for
    the caller to clean up.

    Was a thread kept from its CPU around the call? For an untraced call: did its run delay
    or involuntary context switches grow (a window slightly larger than the call). For a
    traced call the window also holds the tracefs reads and writes, which sleep, so the
    trace itself decides: a task switch of the mremap thread, or a flush without an IPI while
    the spinner should have been running."""
    if spinner is None:
        settle_cpumask()
    else:
        spinner.wait_running()
    watch = [tid] + ([spinner.tid] if spinner is not None and spinner.tid else [])
    before = [_sched_counters(t) for t in watch]
    if session is not None:
        res = session.measure_call(lay.do_move)
    else:
        t0 = sc.monotonic_ns()
        lay.do_move()
        t1 = sc.monotonic_ns()
        res = TraceResult(False, skipped=untraced, latency_ns=t1 - t0)
    after = [_sched_counters(t) for t in watch]
    if res.available:
        sm = res.summary()
        main_d = sm["task_switch_flushes"] > 0
        spin_d = (sm["ipi_rounds"] < sm["flush_calls"]) if spinner is not None else None
    else:
        d = [b is not None and a is not None and (a[0] > b[0] or a[1] > b[1])
             for b, a in zip(before, after, strict=True)]
        main_d, spin_d = d[0], (d[1] if len(d) > 1 else None)
    return res, bool(main_d), spin_d


def measure_shape(shape: str, size_bytes: int, *, backing: str = "anon", thp: bool = False,
                  threads: int = 1, reps: int = 5, warmup: int = 1,
                  trace: bool | str | TlbTraceSession = "auto", dst_mode: str = "hole",
                  main_cpu: int = 0, spinner_cpu: int = 1, nice: int | None = -20,
                  with_events: bool = False) -> list[dict[str, Any]]:
    """Move a freshly built and populated ``shape`` of ``size_bytes`` with one
    ``mremap(MAYMOVE|FIXED)`` per repetition and return one record per measured repetition.

    ``threads=2`` runs a :class:`Spinner` of this process on ``spinner_cpu`` during the calls;
    the calling thread is pinned to ``main_cpu`` (its previous affinity is restored).  Both
    threads run at ``nice`` (default -20, needs root; ignored otherwise; ``None`` = leave) so
    that other work on a shared machine preempts them less; the old nice value is restored.

    With ``threads=2`` the record's ``ipi_coverage`` (traced runs) is ipi_rounds/flush_calls:
    below 1 means the spinner was not on its CPU for part of the call.

    ``trace``: ``"auto"`` traces if possible and otherwise records why not; ``True``/``"on"``
    requires tracing; ``False``/``"off"`` never traces; or pass an open
    :class:`TlbTraceSession` to share one between calls.
    """
    if threads not in (1, 2):
        raise ValueError("threads must be 1 or 2")
    info = host_info()
    old_aff = os.sched_getaffinity(0)
    sc.pin_current_thread(main_cpu)
    tid = sc.gettid()
    old_nice = os.getpriority(os.PRIO_PROCESS, tid)
    if nice is not None:
        try:  # fewer preemptions by other tasks on a shared machine (root only)
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            pass
    records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        session: TlbTraceSession | None
        if isinstance(trace, TlbTraceSession):
            session = trace
        elif trace in (False, "off"):
            session = None
        else:
            session = stack.enter_context(
                TlbTraceSession(required=trace in (True, "on")))
        stack.callback(os.sched_setaffinity, 0, old_aff)
        stack.callback(_set_nice, tid, old_nice)
        spinner = (stack.enter_context(Spinner(spinner_cpu, nice=nice)) if threads == 2
                   else None)

        for i in range(warmup + reps):
            lay = build_layout(shape, size_bytes, backing=backing, thp=thp, dst_mode=dst_mode)
            try:
                res, main_d, spin_d = timed_move(lay, session, spinner, tid)
            finally:
                lay.cleanup()
            disturbed = [main_d] if spin_d is None else [main_d, spin_d]
            if i < warmup:
                continue
            tr = res.as_dict(with_events=with_events)
            rec: dict[str, Any] = {
                "shape": shape,
                "example": SPEC_EXAMPLE.get(shape, "-"),
                "size": size_bytes,
                "backing": backing,
                "thp": thp,
                "thp_kb": lay.thp_kb,
                "threads": threads,
                "dst_mode": dst_mode,
                "rep": i - warmup,
                "latency_ns": res.latency_ns,
                "src": lay.src,
                "dst": lay.dst,
                "populate_method": lay.populate_method,
                "populate_ns": lay.populate_ns,
                "traced": res.available,
                "trace_skipped": res.skipped,
                "kernel_us": tr.get("kernel_us"),
                "counts": tr.get("counts"),
                "pages": tr.get("pages"),
                "summary": tr.get("summary"),
                "counts_by_phase": tr.get("counts_by_phase"),
                "summary_by_phase": tr.get("summary_by_phase"),
                "phases_known": tr.get("phases_known"),
                "trace_overrun": tr.get("overrun"),
                "foreign_events": tr.get("foreign_events"),
                "main_disturbed": disturbed[0],
                "spinner_disturbed": disturbed[1] if len(disturbed) > 1 else None,
                "ipi_coverage": (round(tr["summary"]["ipi_rounds"]
                                       / max(1, tr["summary"]["flush_calls"]), 4)
                                 if tr.get("summary") else None),
                **{k: info[k] for k in ("kernel", "cpu_model", "ncpus")},
            }
            if with_events:
                rec["events"] = tr.get("events")
            records.append(rec)
    return records


def measure_shape_isolated(shape: str, size_bytes: int, *, timeout_s: float = 300,
                           **kwargs) -> list[dict[str, Any]]:
    """:func:`measure_shape` in a fresh Python process, returning its records.

    Which CPUs an mm is active on decides whether a flush sends IPIs, so a measurement must
    run in a process holding only the threads it controls; a long-lived process (a test
    run, a notebook) may have thread pools of its own parked on other CPUs. Raises
    :class:`~perfsim.host.trace.TracingBusy` if the child found tracing in use, and
    ``RuntimeError`` with the child's error otherwise."""
    import json
    import subprocess
    import sys

    from perfsim.host.trace import TracingBusy

    code = ("import json, sys; from perfsim.host.measure import measure_shape; "
            "a = json.loads(sys.argv[1]); "
            "print(json.dumps(measure_shape(a.pop('shape'), a.pop('size'), **a)))")
    args = json.dumps({"shape": shape, "size": size_bytes, **kwargs})
    out = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                         timeout=timeout_s)
    if out.returncode != 0:
        if "TracingBusy" in out.stderr:
            raise TracingBusy(out.stderr.strip().splitlines()[-1])
        raise RuntimeError(f"measure_shape({shape!r}, {size_bytes}) failed: "
                           f"{out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def syscall_entry_ns(reps: int = 201) -> dict:
    """The cost of entering and leaving mremap() at all, timed exactly like a measured call
    (``monotonic_ns`` around the ctypes call): an mremap whose ``old_address`` is not page
    aligned, which the kernel rejects with EINVAL before taking ``mmap_lock`` or looking at a
    VMA. Returns the median, p10 and p90 (ns) over ``reps`` calls."""
    lat = []
    for _ in range(reps):
        t0 = sc.monotonic_ns()
        r = sc.mremap_raw(1, sc.PAGE_SIZE, sc.PAGE_SIZE, sc.MREMAP_MAYMOVE)
        t1 = sc.monotonic_ns()
        if r != sc.MAP_FAILED:  # pragma: no cover - would mean the kernel accepted it
            raise RuntimeError("an unaligned mremap() succeeded")
        lat.append(t1 - t0)
    lat.sort()
    return {"median_ns": lat[len(lat) // 2], "p10_ns": lat[len(lat) // 10],
            "p90_ns": lat[(9 * len(lat)) // 10], "reps": reps,
            "how": "mremap(old_address=1) -> EINVAL before mmap_lock, timed like every "
                   "calibration call"}
