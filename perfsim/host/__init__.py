"""Measurements of the real kernel's mremap() on this machine (Linux, x86-64).

* :mod:`perfsim.host.syscalls` -- ctypes wrappers (mmap, mremap, madvise, ...) and
  :class:`~perfsim.host.syscalls.AddressWindow` for exact layouts.
* :mod:`perfsim.host.layout` -- the worked-example shapes (E1-E5) built in real memory.
* :mod:`perfsim.host.trace` -- :class:`~perfsim.host.trace.TlbTraceSession`, which counts the
  ``tlb:tlb_flush`` events of one mremap call and restores tracefs afterwards.
* :mod:`perfsim.host.spinner` -- a second thread on the other CPU so that flushes need IPIs.
* :mod:`perfsim.host.measure` -- :func:`~perfsim.host.measure.measure_shape`.

Nothing here is imported by the rest of perfsim; importing this package has no side effects
beyond loading libc through ctypes.
"""

from perfsim.host.layout import SHAPES, Layout, build_layout
from perfsim.host.measure import host_info, measure_shape
from perfsim.host.trace import (
    TlbTraceSession,
    TraceResult,
    TracingBusy,
    TracingUnavailable,
    tracing_status,
)

__all__ = [
    "SHAPES",
    "Layout",
    "build_layout",
    "host_info",
    "measure_shape",
    "TlbTraceSession",
    "TraceResult",
    "TracingBusy",
    "TracingUnavailable",
    "tracing_status",
]
