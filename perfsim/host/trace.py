"""Count the TLB flushes one real ``mremap()`` call performs, using the kernel's tracefs.

:class:`TlbTraceSession` enables three (optionally four) trace events for the duration of a
``with`` block and puts every tracefs setting it touched back the way it found it on exit --
also on an exception, on Ctrl-C and on SIGTERM.  It refuses to start when somebody else is
already using tracing.

Events used (all on x86-64, kernel 6.x):

* ``raw_syscalls:sys_enter`` / ``sys_exit``, filtered to ``id == 25`` (mremap) and to the
  measuring thread's tid, bracket the call.
* ``tlb:tlb_flush`` (unfiltered, because the flushes that IPIs cause on the *other* CPU are
  recorded in the context of whatever task runs there).  Its ``reason`` says which code path
  emitted it and ``pages`` how many stride units were invalidated (-1 = full flush).
* ``maple_tree:ma_write`` filtered to the measuring thread (optional "markers"): the store of
  the new VMA and the removal of the old VMA split the call into phases
  (``dst_unmap`` / ``move`` / ``src_unmap``), see :func:`_assign_phases`.

How the events map onto ``flush_tlb_mm_range()`` calls is documented in
``docs/host-measurements.md`` and implemented in :meth:`TraceResult.summary`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perfsim.host.syscalls import SYS_mremap, gettid, libc

__all__ = [
    "TRACEFS",
    "REASONS",
    "TracingUnavailable",
    "TracingBusy",
    "TlbEvent",
    "TraceResult",
    "TlbTraceSession",
    "tracing_status",
    "parse_trace",
]

TRACEFS = "/sys/kernel/tracing"
LOCK_PATH = "/run/perfsim-host-trace.lock"

#: ``enum tlb_flush_reason`` value -> the string the tracepoint prints on this kernel.
REASONS: dict[int, str] = {
    0: "flush on task switch",
    1: "remote shootdown",
    2: "local shootdown",
    3: "local MM shootdown",
    4: "remote IPI send",
    5: "remote wrong CPU",
}
R_TASK_SWITCH, R_REMOTE, R_LOCAL, R_LOCAL_MM, R_IPI_SEND, R_WRONG_CPU = range(6)

EVENTS_CORE = ("tlb/tlb_flush", "raw_syscalls/sys_enter", "raw_syscalls/sys_exit")
EVENT_MARKER = "maple_tree/ma_write"


class TracingUnavailable(RuntimeError):
    """Tracing cannot be used here (not root, no tracefs, event missing...)."""


class TracingBusy(RuntimeError):
    """Somebody else is using the tracing system; we refuse to touch it."""


# --------------------------------------------------------------------------------------------
# Parsing


_LINE_RE = re.compile(
    r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>\S+)\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s?(?P<rest>.*)$"
)
_TLB_RE = re.compile(r"pages:(?P<pages>-?\d+) reason:(?P<reason>.*?) \((?P<code>-?\d+)\)\s*$")
_ENTER_RE = re.compile(r"NR (?P<nr>-?\d+) \((?P<args>[0-9a-fA-F, ]*)\)")
_EXIT_RE = re.compile(r"NR (?P<nr>-?\d+) = (?P<ret>-?\d+)")
_MA_RE = re.compile(r"range:(?P<lo>\d+)-(?P<hi>\d+) .*val (?P<val>\S+)")


@dataclass
class RawEvent:
    idx: int
    comm: str
    pid: int
    cpu: int
    ts_us: float
    event: str
    rest: str


def parse_trace(text: str) -> list[RawEvent]:
    """Parse the text of ``/sys/kernel/tracing/trace`` into events (in file order, which is
    timestamp order across CPUs)."""
    out: list[RawEvent] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE_RE.match(line)
        if not m:
            continue
        out.append(RawEvent(len(out), m["comm"].strip(), int(m["pid"]), int(m["cpu"]),
                            float(m["ts"]) * 1e6, m["event"], m["rest"]))
    return out


@dataclass
class TlbEvent:
    """One ``tlb:tlb_flush`` record inside the mremap window."""

    cpu: int
    pid: int
    ts_us: float
    reason: str  #: the string printed by the tracepoint (see :data:`REASONS`)
    reason_code: int
    pages: int  #: stride units invalidated; -1 = full flush; 0 = nothing left to do
    role: str  #: "initiator" (this thread), "remote" (IPI handled on another CPU), "foreign"
    phase: str  #: "dst_unmap", "move", "src_unmap" or "unknown"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _summ(events: list[TlbEvent]) -> dict[str, int]:
    init = [e for e in events if e.role == "initiator"]
    local = [e for e in init if e.reason_code == R_LOCAL_MM]
    rem = [e for e in events if e.role == "remote"]
    return {
        # one "local MM shootdown" per flush_tlb_mm_range() call made by this thread
        "flush_calls": len(local),
        "full_flushes": sum(1 for e in local if e.pages == -1),
        # ranged: pages = (end - start) >> stride_shift, so 0 means a range shorter than one
        # stride unit (seen for the page-table-freeing flush of the source unmap)
        "ranged_flushes": sum(1 for e in local if e.pages >= 0),
        "pages_invalidated": sum(e.pages for e in local if e.pages > 0),
        # one "remote IPI send" per flush call that had another CPU in mm_cpumask
        "ipi_rounds": sum(1 for e in init if e.reason_code == R_IPI_SEND),
        "remote_flushes": sum(1 for e in rem if e.reason_code == R_REMOTE),
        "remote_full_flushes": sum(1 for e in rem if e.reason_code == R_REMOTE and e.pages == -1),
        "remote_wrong_cpu": sum(1 for e in rem if e.reason_code == R_WRONG_CPU),
        "task_switch_flushes": sum(1 for e in init if e.reason_code == R_TASK_SWITCH),
    }


@dataclass
class TraceResult:
    """The tlb_flush events of one mremap call, or why there are none (``skipped``)."""

    available: bool
    skipped: str | None = None
    tid: int | None = None
    cpu: int | None = None  #: CPU the syscall entered on
    ret: int | None = None  #: mremap's return value as the kernel reported it
    args: tuple[int, ...] = ()  #: old_addr, old_len, new_len, flags, new_addr
    kernel_us: float | None = None  #: sys_exit ts - sys_enter ts (µs resolution)
    latency_ns: int | None = None  #: user-space wall time of ``fn`` (includes tracing overhead)
    events: list[TlbEvent] = field(default_factory=list)
    phases_known: bool = False
    overrun: int = 0  #: ring-buffer records lost (should be 0)
    foreign_events: int = 0  #: tlb_flush records in the window from unrelated tasks

    @property
    def counted(self) -> list[TlbEvent]:
        return [e for e in self.events if e.role != "foreign"]

    def counts_by_reason(self, role: str | None = None) -> dict[str, int]:
        c = Counter(e.reason for e in self.counted if role is None or e.role == role)
        return dict(sorted(c.items()))

    def pages_by_reason(self) -> dict[str, list[int]]:
        d: dict[str, list[int]] = {}
        for e in self.counted:
            d.setdefault(e.reason, []).append(e.pages)
        return d

    def summary(self) -> dict[str, int]:
        return _summ(self.events)

    def summary_by_phase(self) -> dict[str, dict[str, int]]:
        phases = sorted({e.phase for e in self.counted})
        return {p: _summ([e for e in self.events if e.phase == p]) for p in phases}

    def counts_by_phase(self) -> dict[str, dict[str, int]]:
        d: dict[str, Counter] = {}
        for e in self.counted:
            d.setdefault(e.phase, Counter())[e.reason] += 1
        return {p: dict(sorted(c.items())) for p, c in d.items()}

    def as_dict(self, *, with_events: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "available": self.available,
            "skipped": self.skipped,
        }
        if not self.available:
            return d
        d.update(
            tid=self.tid, cpu=self.cpu, ret=self.ret, kernel_us=self.kernel_us,
            counts=self.counts_by_reason(), pages=self.pages_by_reason(),
            summary=self.summary(), phases_known=self.phases_known,
            counts_by_phase=self.counts_by_phase(), summary_by_phase=self.summary_by_phase(),
            overrun=self.overrun, foreign_events=self.foreign_events,
        )
        if with_events:
            d["events"] = [e.as_dict() for e in self.events]
        return d


def _assign_phases(window: list[RawEvent], tid: int,
                   args: tuple[int, ...]) -> tuple[list[str], bool]:
    """Phase of each event in ``window`` from the maple-tree writes of this thread.

    * before the store that inserts the new VMA over ``[new_addr, new_addr+new_len)`` (done by
      copy_vma): ``dst_unmap`` (the MREMAP_FIXED do_munmap of the destination and other set-up);
    * from then until the store of NULL over the old range (the source VMA leaves the tree
      in unmap_source_vma): ``move`` (move_page_tables);
    * after it: ``src_unmap`` (unmapping the source, freeing its page tables, mmu_gather).

    The insert is the *last* non-NULL store of exactly the new range before that removal:
    6.1's ``do_mas_align_munmap`` also stores each VMA it unmaps into a detached tree of
    its own, which the tracepoint does not tell apart, so an MREMAP_FIXED unmap of a
    mapping at the destination range (split first or not), before ``copy_vma``, stores it
    too.
    """
    if len(args) < 5:
        return ["unknown"] * len(window), False
    old, _old_len, new_len, _flags, new = args[:5]
    insert = remove = None
    for i, ev in enumerate(window):
        if ev.event == "ma_write" and ev.pid == tid:
            m = _MA_RE.search(ev.rest)
            if m:
                lo, hi, val = int(m["lo"]), int(m["hi"]), m["val"]
                null = set(val) <= {"0"} or val == "(null)"
                if not null and lo == new and hi == new + new_len - 1:
                    insert = i
                elif insert is not None and null and lo <= old <= hi:
                    remove = i
                    break
    if insert is None or remove is None:
        return ["unknown"] * len(window), False
    return (["dst_unmap"] * insert + ["move"] * (remove - insert)
            + ["src_unmap"] * (len(window) - remove)), True


def extract_call(raw: list[RawEvent], tid: int,
                 peers: set[int] | None = None) -> TraceResult:
    """Pick the first mremap enter/exit pair of ``tid`` and the tlb_flush events between.

    An event on another CPU counts as the remote half of one of our flushes ("remote") when
    its reason is ``remote wrong CPU`` (in whatever task's context: the CPU had left our mm),
    or ``remote shootdown`` in the context of one of ``peers`` (the threads of this process;
    ``None`` = any task) or of the idle task (pid 0).  Everything else in the window is
    "foreign" and not counted."""
    start = end = None
    for ev in raw:
        if ev.pid != tid:
            continue
        if start is None and ev.event == "sys_enter":
            m = _ENTER_RE.match(ev.rest)
            if m and int(m["nr"]) == SYS_mremap:
                start = ev
        elif start is not None and ev.event == "sys_exit":
            m = _EXIT_RE.match(ev.rest)
            if m and int(m["nr"]) == SYS_mremap:
                end = ev
                break
    if start is None or end is None:
        return TraceResult(False, skipped="mremap enter/exit not found in the trace buffer",
                           tid=tid)
    args = tuple(int(a, 16) for a in _ENTER_RE.match(start.rest)["args"].split(",") if a.strip())
    ret = int(_EXIT_RE.match(end.rest)["ret"])
    window = raw[start.idx + 1:end.idx]
    phases, known = _assign_phases(window, tid, args)
    events: list[TlbEvent] = []
    foreign = 0
    for ev, ph in zip(window, phases, strict=True):
        if ev.event != "tlb_flush":
            continue
        m = _TLB_RE.search(ev.rest)
        if not m:
            continue
        code = int(m["code"])
        if ev.pid == tid:
            role = "initiator"
        elif ev.cpu != start.cpu and (
                code == R_WRONG_CPU
                or (code == R_REMOTE and (peers is None or ev.pid == 0 or ev.pid in peers))):
            role = "remote"
        else:
            role = "foreign"
            foreign += 1
        events.append(TlbEvent(ev.cpu, ev.pid, ev.ts_us, m["reason"], code, int(m["pages"]),
                               role, ph))
    return TraceResult(
        True, tid=tid, cpu=start.cpu, ret=ret, args=args,
        kernel_us=round(end.ts_us - start.ts_us, 3), events=events, phases_known=known,
        foreign_events=foreign,
    )


# --------------------------------------------------------------------------------------------
# tracefs plumbing


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _tracefs_mounted(root: str = TRACEFS) -> bool:
    return os.path.isdir(os.path.join(root, "events"))


def _busy_reasons(root: str) -> list[str]:
    """Why tracing looks in use by someone else (empty list = free)."""
    why: list[str] = []

    def check(d: str, label: str) -> None:
        try:
            tracer = _read(os.path.join(d, "current_tracer")).strip()
        except OSError:
            tracer = "nop"
        if tracer != "nop":
            why.append(f"{label}current_tracer is {tracer!r}")
        try:
            enabled = [x for x in _read(os.path.join(d, "set_event")).split() if x]
        except OSError:
            enabled = []
        if enabled:
            why.append(f"{label}events already enabled: {', '.join(enabled[:5])}"
                       + (" ..." if len(enabled) > 5 else ""))

    check(root, "")
    inst = os.path.join(root, "instances")
    if os.path.isdir(inst):
        for name in sorted(os.listdir(inst)):
            check(os.path.join(inst, name), f"instance {name!r}: ")
    return why


def tracing_status(root: str = TRACEFS) -> tuple[bool, str]:
    """(usable, reason) without changing anything (does not mount)."""
    if os.uname().sysname != "Linux":
        return False, "not Linux"
    if os.geteuid() != 0:
        return False, "not root: tracefs needs root"
    if not _tracefs_mounted(root):
        return True, "tracefs not mounted (will be mounted by the session)"
    missing = [e for e in EVENTS_CORE if not os.path.isdir(os.path.join(root, "events", e))]
    if missing:
        return False, f"trace events missing: {missing}"
    busy = _busy_reasons(root)
    if busy:
        return False, "tracing in use: " + "; ".join(busy)
    return True, "ok"


def _mount_tracefs(root: str) -> None:
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_void_p]
    if libc.mount(b"nodev", root.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise TracingUnavailable(f"mount -t tracefs nodev {root} failed: "
                                 f"{errno.errorcode.get(err, err)}")


def _umount(root: str) -> None:
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2(root.encode(), 0)


class TlbTraceSession:
    """Trace the TLB flushes of mremap calls made by one thread.

    ``tid`` defaults to the thread that enters the ``with`` block; :meth:`measure_call` must be
    called from that thread.  ``required=False`` turns "cannot trace" (not root, no tracefs,
    tracing busy) into a degraded session whose results have ``available=False`` and a
    ``skipped`` reason instead of an exception.

    Side effects while open: the ring buffer is cleared on every :meth:`measure_call`
    (whatever it held before is lost); ``trace_clock`` is set to ``mono`` (one clock for all
    CPUs so the merged trace is in true order); ``buffer_size_kb`` is raised to at least
    ``buffer_kb``; the events above are enabled with filters.  All of it is restored on exit.
    """

    def __init__(self, tid: int | None = None, *, buffer_kb: int = 8192, markers: bool = True,
                 required: bool = True, root: str = TRACEFS, handle_sigterm: bool = True) -> None:
        self.tid = tid
        self.buffer_kb = buffer_kb
        self.markers = markers
        self.required = required
        self.root = root
        self.handle_sigterm = handle_sigterm
        self.available = False
        self.skipped: str | None = None
        self._saved: list[tuple[str, str]] = []  # (path, value) in save order
        self._events: list[str] = []
        self._mounted_here = False
        self._lock_fd: int | None = None
        self._old_sigterm: Any = None
        self._sigterm_installed = False
        self.restored_ok: bool | None = None

    # -- helpers
    def _p(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def _save(self, rel: str) -> str:
        val = _read(self._p(rel))
        self._saved.append((rel, val))
        return val

    def _fail(self, exc: Exception) -> None:
        if self.required:
            raise exc
        self.available = False
        self.skipped = str(exc)

    # -- lifecycle
    def __enter__(self) -> TlbTraceSession:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.tid is None:
            self.tid = gettid()
        if os.uname().sysname != "Linux" or os.uname().machine != "x86_64":
            return self._fail(TracingUnavailable("needs Linux on x86-64"))
        if os.geteuid() != 0:
            return self._fail(TracingUnavailable("not root: tracefs needs root"))
        if not _tracefs_mounted(self.root):
            try:
                _mount_tracefs(self.root)
            except TracingUnavailable as e:
                return self._fail(e)
            self._mounted_here = True
        missing = [e for e in EVENTS_CORE if not os.path.isdir(self._p(f"events/{e}"))]
        if missing:
            return self._fail(TracingUnavailable(f"trace events missing: {missing}"))
        # One perfsim session at a time on this machine.
        try:
            fd = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return self._fail(TracingBusy(f"another perfsim trace session holds {LOCK_PATH}"))
            self._lock_fd = fd
        except OSError:
            pass  # no /run: carry on with the tracefs checks only
        busy = _busy_reasons(self.root)
        if busy:
            return self._fail(TracingBusy("tracing is in use by someone else, refusing to touch "
                                          "it: " + "; ".join(busy)))
        self._install_sigterm()
        self._configure()
        self.available = True

    def _install_sigterm(self) -> None:
        if not self.handle_sigterm or threading.current_thread() is not threading.main_thread():
            return

        def on_term(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        self._old_sigterm = signal.signal(signal.SIGTERM, on_term)
        self._sigterm_installed = True

    def _configure(self) -> None:
        # Save everything first, then change.
        self._save("tracing_on")
        self._save("trace_clock")
        self._save("buffer_size_kb")
        events = list(EVENTS_CORE)
        if self.markers and os.path.isdir(self._p(f"events/{EVENT_MARKER}")):
            events.append(EVENT_MARKER)
        for ev in events:
            self._save(f"events/{ev}/filter")
            self._save(f"events/{ev}/enable")
        self._events = events

        _write(self._p("tracing_on"), "0")
        clocks = _read(self._p("trace_clock"))
        if re.search(r"\bmono\b", clocks):
            _write(self._p("trace_clock"), "mono")
        cur = _read(self._p("buffer_size_kb"))
        m = re.search(r"expanded:\s*(\d+)", cur) or re.match(r"\s*(\d+)", cur)
        if m and int(m.group(1)) < self.buffer_kb:
            _write(self._p("buffer_size_kb"), str(self.buffer_kb))
        tid = self.tid
        _write(self._p("events/raw_syscalls/sys_enter/filter"),
               f"id == {SYS_mremap} && common_pid == {tid}")
        _write(self._p("events/raw_syscalls/sys_exit/filter"),
               f"id == {SYS_mremap} && common_pid == {tid}")
        if EVENT_MARKER in events:
            _write(self._p(f"events/{EVENT_MARKER}/filter"), f"common_pid == {tid}")
        for ev in events:
            _write(self._p(f"events/{ev}/enable"), "1")
        _write(self._p("trace"), "")
        _write(self._p("tracing_on"), "1")

    def close(self) -> None:
        errors: list[str] = []
        if self._saved:
            # Events off first so nothing more is recorded, then the rest in reverse order.
            order = sorted(self._saved, key=lambda kv: 0 if kv[0].endswith("/enable") else 1)
            for rel, val in order:
                try:
                    self._restore_one(rel, val)
                except OSError as e:
                    errors.append(f"{rel}: {e}")
            try:
                _write(self._p("trace"), "")
            except OSError:
                pass
            self._saved = []
            self.restored_ok = not errors
        if self._sigterm_installed:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._sigterm_installed = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._mounted_here:
            _umount(self.root)
            self._mounted_here = False
        self.available = False
        if errors:
            raise RuntimeError("could not restore tracefs settings: " + "; ".join(errors))

    def _restore_one(self, rel: str, val: str) -> None:
        path = self._p(rel)
        if rel.endswith("/filter"):
            v = val.strip()
            _write(path, "0" if v in ("", "none") else v)
        elif rel.endswith("/enable"):
            _write(path, "1" if val.strip().startswith("1") else "0")
        elif rel == "trace_clock":
            m = re.search(r"\[(\S+)\]", val)
            if m:
                _write(path, m.group(1))
        elif rel == "buffer_size_kb":
            m = re.search(r"expanded:\s*(\d+)", val) or re.match(r"\s*(\d+)", val)
            if m and _read(path).split()[0] != m.group(1):
                _write(path, m.group(1))
        else:
            _write(path, val.strip())

    # -- measuring
    def _overrun(self) -> int:
        total = 0
        base = self._p("per_cpu")
        try:
            cpus = os.listdir(base)
        except OSError:
            return 0
        for c in cpus:
            try:
                m = re.search(r"^overrun:\s*(\d+)", _read(os.path.join(base, c, "stats")), re.M)
            except OSError:
                continue
            if m:
                total += int(m.group(1))
        return total

    def measure_call(self, fn: Callable[[], Any]) -> TraceResult:
        """Clear the buffer, run ``fn`` (which must make exactly one mremap call from this
        session's thread), and return that call's tlb_flush events."""
        if not self.available:
            t0 = time.monotonic_ns()
            fn()
            t1 = time.monotonic_ns()
            return TraceResult(False, skipped=self.skipped or "trace session not open",
                               tid=self.tid, latency_ns=t1 - t0)
        if gettid() != self.tid:
            raise RuntimeError("measure_call must run on the session's thread")
        _write(self._p("trace"), "")
        t0 = time.monotonic_ns()
        fn()
        t1 = time.monotonic_ns()
        text = _read(self._p("trace"))
        try:
            peers = {int(t) for t in os.listdir("/proc/self/task")}
        except OSError:
            peers = None
        res = extract_call(parse_trace(text), self.tid, peers)
        res.latency_ns = t1 - t0
        res.overrun = self._overrun()
        return res
