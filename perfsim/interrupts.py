"""Ctrl-C held back while code runs that an interrupt would leave half done.

matplotlib's C extensions (``ft2font``, the Agg backend) are pybind11 modules: a
``KeyboardInterrupt`` raised while one initialises becomes ``ImportError: initialization
failed`` with the interpreter's state left inconsistent, so a Ctrl-C that lands while a
report imports matplotlib printed a traceback as if perfsim had a bug, and the process then
aborted at exit ("Fatal Python error: PyThreadState_Get", status -6) or died of the signal
after saying "perfsim: interrupted" (status -2 instead of 130). Measured on 2026-12-02
(17:40-17:58 UTC), ``perfsim report --study quick`` sent SIGINT after 2 s of CPU, as
``tests/test_bad_input.py::test_interrupted_report_exits_130_and_writes_no_report`` does:
9 of 85 runs ended so before; with :func:`deferred_interrupt` around the imports, none of
200 (one of them exited 0 with its report written, its interrupt not seen: not explained,
not seen again in the 140 runs after it); interrupted at random points (0.6-4 s of CPU),
none of 100, once the Agg backend's compiled module is loaded in the block too
(:func:`perfsim.report.tune_figure.pyplot`). The interrupt lands just after the import
instead.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def deferred_interrupt():
    """Run the block with SIGINT noted instead of acted on, then act on it: the handler
    that was in place before is called once the block is over (Python's default raises
    ``KeyboardInterrupt`` there, where the caller can stop cleanly). The Python-level
    handler is what is swapped (it always runs in the main thread, whichever thread the
    signal reached), so this works from the main thread only; elsewhere, and where the
    handler is not Python's to swap, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    try:
        before = signal.signal(signal.SIGINT, lambda signum, _frame: noted.append(signum))
    except (ValueError, OSError):  # (no signal handling here: an embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        if noted:  # (also when the block raised: the interrupt is what the user asked for)
            if callable(before):
                before(signal.SIGINT, None)
            elif before == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)
