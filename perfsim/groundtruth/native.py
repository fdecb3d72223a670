"""Run the probe on the host kernel.

tracefs is saved, configured and restored by :class:`perfsim.host.trace.TlbTraceSession`
(which also mounts it for the session, takes perfsim's trace lock and refuses to touch
tracing somebody else is using); inside the session the probe sets the filters for its own
thread and reads the buffer after each call.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from perfsim.errors import PerfsimError
from perfsim.groundtruth.grid import probe_input
from perfsim.groundtruth.probe import build_probe
from perfsim.groundtruth.records import parse_probe_output
from perfsim.host.trace import TRACEFS, TlbTraceSession, TracingBusy, TracingUnavailable


def host_platform() -> str:
    """``kvm-guest`` when the CPU says it runs under KVM, else ``bare-metal``."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    if " hypervisor" not in flags:
        return "bare-metal"
    try:
        with open("/sys/hypervisor/type") as f:
            if f.read().strip() == "xen":
                return "xen-guest"
    except OSError:
        pass
    return "kvm-guest"


def run_native(cases: list[dict], *, link: str = "static", timeout_s: float = 3600,
               progress: Callable[[str], None] | None = None,
               untraced: bool = False) -> tuple[dict, list[dict]]:
    """Run ``cases`` with the probe on this kernel; ``(grid header, records)``. Needs root
    and tracefs (one-line :class:`PerfsimError` otherwise). ``untraced``: the probe runs
    with ``-n`` (no tracefs, no root needed), so each record says only the call's own time
    (``call_ns``), what a latency comparison needs; tracing slows a call down."""
    if os.uname().machine != "x86_64":
        raise PerfsimError("the probe measures x86-64 kernels; this machine is "
                           f"{os.uname().machine}")
    probe = build_probe(link)
    text = probe_input(cases)

    def run(argv: list[str]) -> tuple[list[str], int]:
        t0 = time.monotonic()
        proc = subprocess.Popen([str(probe), *argv], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(text)
        proc.stdin.close()
        lines = []
        done = 0
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("@@PERFSIM-CASE-END") and progress:
                done += 1
                progress(f"native: {done}/{len(cases)} calls ({time.monotonic() - t0:.0f} s)")
        return lines, proc.wait(timeout=timeout_s)

    try:
        if untraced:
            lines, rc = run(["-n", "-R"])
        else:
            with TlbTraceSession(markers=True) as _session:
                lines, rc = run(["-R", "-T", TRACEFS])
    except (TracingUnavailable, TracingBusy) as exc:
        # (chained: a caller, e.g. a test, can tell "someone else is tracing" from a failure)
        raise PerfsimError(f"cannot trace the host kernel: {exc}") from exc
    if rc != 0:
        tail = next((ln for ln in reversed(lines) if ln.startswith("@@PERFSIM-ERROR")),
                    f"exit status {rc}")
        raise PerfsimError(f"probe failed on the host kernel: {tail.strip()}")
    return parse_probe_output(lines, platform=host_platform(), source="native")
