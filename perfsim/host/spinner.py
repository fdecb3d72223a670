"""A second thread of this process that keeps another CPU busy *in this mm*.

With a thread of the same process running on CPU 1, CPU 1 is in the mm's ``mm_cpumask`` and
actually running the mm, so every ``flush_tlb_mm_range`` the mremap makes on CPU 0 has to send
an IPI ("remote IPI send" on CPU 0, "remote shootdown" on CPU 1).

The thread must spin *without the GIL*, or the main thread would wait for the GIL after the
syscall (up to the 5 ms switch interval) and the spinner would sleep on the GIL before it.  It
therefore spends its time inside one long ctypes call: ``memchr`` for a byte that is not there
over a large read-only anonymous mapping whose pages are all the shared zero page (no RAM
used).  ctypes releases the GIL for the duration of the call.
"""

from __future__ import annotations

import ctypes
import os
import threading

from perfsim.host import syscalls as sc

__all__ = ["Spinner", "SpinnerStalled"]

_memchr = sc.libc.memchr
_memchr.restype = ctypes.c_void_p
_memchr.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]


class SpinnerStalled(RuntimeError):
    """The spinner thread did not get its CPU in time (the machine is busy): a call measured
    now would not have the other CPU running this mm."""


class Spinner:
    """``with Spinner(cpu=1) as s: s.wait_running(); <do the call>``.

    ``scan_bytes`` is what one GIL-free ``memchr`` covers: small (16 MiB, a few ms) so that
    :meth:`wait_running` sees the thread come round again quickly even when it gets only a
    share of its CPU."""

    def __init__(self, cpu: int = 1, scan_bytes: int = 1 << 24, nice: int | None = -20) -> None:
        self.cpu = cpu
        self.nice = nice
        self.scan_bytes = scan_bytes
        self._buf = 0
        self._stop = False
        self._calls = 0
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.tid: int | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.tid = sc.gettid()
            sc.pin_current_thread(self.cpu)
            if self.nice is not None:
                try:  # a nice-0 task sharing the CPU would otherwise take it from us at times
                    os.setpriority(os.PRIO_PROCESS, self.tid, self.nice)
                except OSError:
                    pass
            self._started.set()
            buf, n = self._buf, self.scan_bytes
            while not self._stop:
                self._calls += 1
                _memchr(buf, 1, n)  # GIL released inside
        except BaseException as e:  # pragma: no cover - reported to the caller
            self.error = e
            self._started.set()

    def start(self) -> Spinner:
        self._buf = sc.mmap(None, self.scan_bytes, sc.PROT_READ,
                            sc.MAP_PRIVATE | sc.MAP_ANONYMOUS | sc.MAP_NORESERVE)
        try:
            sc.madvise(self._buf, self.scan_bytes, sc.MADV_HUGEPAGE)  # huge zero page if allowed
        except OSError:
            pass
        sc.populate(self._buf, self.scan_bytes, write=False)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="perfsim-spinner", daemon=True)
        self._thread.start()
        self._started.wait(5)
        if self.error:
            self.stop()
            raise self.error
        try:
            self.wait_running()
        except SpinnerStalled:
            self.stop()
            raise
        return self

    def wait_running(self, timeout_s: float = 5.0) -> None:
        """Return once the spinner has (re)entered its GIL-free scan, so it is on its CPU;
        raise :class:`SpinnerStalled` if it has not within ``timeout_s``."""
        import time

        c0 = self._calls
        t_end = time.monotonic() + timeout_s
        while self._calls == c0 and time.monotonic() < t_end:
            time.sleep(0)  # yields the GIL
        if self._calls == c0:
            raise SpinnerStalled(f"the spinner thread on CPU {self.cpu} did not run for "
                                 f"{timeout_s:g} s (machine busy)")

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._buf:
            sc.munmap(self._buf, self.scan_bytes)
            self._buf = 0

    def __enter__(self) -> Spinner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
