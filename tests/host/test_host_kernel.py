"""Tests of perfsim.host against the real kernel of this machine.

The tracing tests need root, tracefs and Linux on x86-64 and are skipped (with the reason)
otherwise; so are they when somebody else is already using tracing.  The parser tests run
everywhere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

IS_LINUX_X86 = sys.platform.startswith("linux") and os.uname().machine == "x86_64"

pytestmark = pytest.mark.host

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)

# Lines of a real trace, shortened. Long lines are the point here.
SAMPLE = textwrap.dedent("""\
    # tracer: nop
    #
    #           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
    #              | |         |   |||||     |         |
             python3-100     [000] .....   10.000001: sys_enter: NR 25 (300000201000, 200000, 200000, 3, 300100601000, 0)
             python3-100     [000] .....   10.000002: ma_write: mas_store_prealloc\tNode 00000000c11e3c1d (0 1) range:52780859396096-52780861493247 piv (0) val 00000000960a8bf8
             python3-100     [000] ...3.   10.000003: tlb_flush: pages:-1 reason:remote IPI send (4)
             python3-100     [000] d..4.   10.000004: tlb_flush: pages:-1 reason:local MM shootdown (3)
             python3-101     [001] d.h..   10.000005: tlb_flush: pages:-1 reason:remote shootdown (1)
               other-7       [001] d....   10.000006: tlb_flush: pages:-1 reason:local MM shootdown (3)
             python3-100     [000] .....   10.000007: ma_write: mas_wr_node_store\tNode 0000000085587508 (0 1) range:0-52780855205887 piv (0) val 0000000000000000
             python3-100     [000] d..4.   10.000008: tlb_flush: pages:1 reason:local MM shootdown (3)
             python3-100     [000] .....   10.000009: sys_exit: NR 25 = 52780859396096
             python3-100     [000] d..4.   10.000010: tlb_flush: pages:5 reason:local MM shootdown (3)
    """)  # noqa: E501


def test_parse_and_extract_call():
    from perfsim.host.trace import extract_call, parse_trace

    raw = parse_trace(SAMPLE)
    assert [e.event for e in raw][:2] == ["sys_enter", "ma_write"]
    res = extract_call(raw, 100)
    assert res.available and res.ret == 0x300100601000 and res.cpu == 0
    assert res.args[:5] == (0x300000201000, 0x200000, 0x200000, 3, 0x300100601000)
    assert res.phases_known
    assert res.foreign_events == 1
    assert res.counts_by_reason() == {"local MM shootdown": 2, "remote IPI send": 1,
                                      "remote shootdown": 1}
    s = res.summary()
    assert (s["flush_calls"], s["full_flushes"], s["ipi_rounds"], s["remote_flushes"]) == \
        (2, 1, 1, 1)
    ph = res.summary_by_phase()
    assert ph["move"]["flush_calls"] == 1 and ph["src_unmap"]["flush_calls"] == 1
    assert ph["src_unmap"]["pages_invalidated"] == 1


def test_extract_call_missing_window():
    from perfsim.host.trace import extract_call, parse_trace

    res = extract_call(parse_trace(SAMPLE), 999)
    assert not res.available and "not found" in res.skipped


# ---------------------------------------------------------------------------- real kernel


def _tracing_reason() -> str | None:
    if not IS_LINUX_X86:
        return "needs Linux on x86-64"
    if os.geteuid() != 0:
        return "needs root (tracefs)"
    from perfsim.host.trace import tracing_status

    ok, why = tracing_status()
    return None if ok else why


_SKIP = _tracing_reason()
needs_tracing = pytest.mark.skipif(_SKIP is not None, reason=f"host tracing unusable: {_SKIP}")

T = "/sys/kernel/tracing"
_EVENTS = ("tlb/tlb_flush", "raw_syscalls/sys_enter", "raw_syscalls/sys_exit",
           "maple_tree/ma_write")


def _snapshot() -> dict[str, str]:
    def rd(rel: str) -> str:
        try:
            with open(os.path.join(T, rel)) as f:
                return f.read().strip()
        except OSError as e:
            return f"<{e.errno}>"

    snap = {rel: rd(rel) for rel in ("tracing_on", "trace_clock", "current_tracer",
                                     "set_event", "set_event_pid")}
    buf = rd("buffer_size_kb")
    m = re.search(r"expanded:\s*(\d+)", buf) or re.match(r"(\d+)", buf)
    snap["buffer_size_kb"] = m.group(1) if m else buf
    for ev in _EVENTS:
        for f in ("enable", "filter"):
            snap[f"events/{ev}/{f}"] = rd(f"events/{ev}/{f}")
    return snap


@needs_tracing
def test_session_restores_state():
    from perfsim.host.layout import build_layout
    from perfsim.host.trace import TlbTraceSession

    before = _snapshot()
    with TlbTraceSession() as s:
        assert s.available
        with open(os.path.join(T, "events/tlb/tlb_flush/enable")) as f:
            assert f.read().strip() == "1"
        lay = build_layout("small", 64 << 10)
        try:
            res = s.measure_call(lay.do_move)
        finally:
            lay.cleanup()
        assert res.available, res.skipped
        assert res.summary()["flush_calls"] >= 1
    assert s.restored_ok
    assert _snapshot() == before


@needs_tracing
def test_session_restores_state_on_exception():
    from perfsim.host.trace import TlbTraceSession

    before = _snapshot()
    with pytest.raises(ZeroDivisionError), TlbTraceSession():
        1 / 0  # noqa: B018
    assert _snapshot() == before


@needs_tracing
def test_session_restores_state_on_sigterm():
    before = _snapshot()
    code = ("import os, signal, time\n"
            "from perfsim.host.trace import TlbTraceSession\n"
            "with TlbTraceSession():\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(10)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=30,
                       env={**os.environ, "PYTHONPATH": os.path.abspath(ROOT)})
    assert p.returncode == 128 + signal.SIGTERM
    assert _snapshot() == before


@pytest.fixture
def tracefs_mounted():
    """tracefs mounted for the test body (the test writes its files directly); a mount made
    here is undone afterwards, so the machine is left as it was found."""
    from perfsim.host.trace import _mount_tracefs, _tracefs_mounted, _umount

    mounted_here = not _tracefs_mounted(T)
    if mounted_here:
        _mount_tracefs(T)
    try:
        yield
    finally:
        if mounted_here:
            _umount(T)


@needs_tracing
def test_session_refuses_when_tracing_in_use(tracefs_mounted):
    from perfsim.host.trace import TlbTraceSession, TracingBusy

    # Simulate another user: enable an unrelated event, then put it back.
    ev = os.path.join(T, "events/mmap/vm_unmapped_area/enable")
    if not os.path.exists(ev):
        ev = os.path.join(T, "events/sched/sched_process_exec/enable")
    with open(ev) as f:
        old = f.read().strip()
    before = _snapshot()
    try:
        with open(ev, "w") as f:
            f.write("1")
        with pytest.raises(TracingBusy, match="in use"), TlbTraceSession():
            pass
        s = TlbTraceSession(required=False)
        with s:
            assert not s.available and "in use" in s.skipped
            res = s.measure_call(lambda: None)
            assert not res.available and res.latency_ns is not None
    finally:
        with open(ev, "w") as f:
            f.write(old)
    assert _snapshot() == before


@needs_tracing
@pytest.mark.parametrize("threads", [1, 2])
def test_e1_one_gib_single_full_flush(threads):
    """E1: 1 GiB, source and destination 1 GiB aligned, nothing at the destination.

    Seen on 6.18.44 (x86-64 KVM, 2 CPUs): exactly one flush_tlb_mm_range for the whole call,
    a full flush made by the NORMAL_PUD move; the source unmap flushes nothing (no page
    tables are left to free under the moved PUD entry).  With a second thread running on the
    other CPU the one flush is also one IPI round ("remote IPI send" + "remote shootdown").
    """
    from perfsim.host.measure import measure_shape_isolated

    # A fresh process: this one may hold thread pools of other tests on the other CPU.
    (rec,) = measure_shape_isolated("pud_aligned", 1 << 30, threads=threads, reps=1,
                                    warmup=0, trace="on")
    assert rec["traced"], rec["trace_skipped"]
    assert rec["phases_known"]
    s = rec["summary"]
    assert s["flush_calls"] == 1
    assert s["full_flushes"] == 1
    assert rec["pages"]["local MM shootdown"] == [-1]
    assert rec["summary_by_phase"]["move"]["flush_calls"] == 1
    if threads == 1:
        assert s["ipi_rounds"] == 0
        assert rec["counts"] == {"local MM shootdown": 1}
    else:
        assert s["ipi_rounds"] == 1
        assert s["remote_flushes"] + s["remote_wrong_cpu"] <= 1
