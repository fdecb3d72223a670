"""perfsim.interrupts: Ctrl-C held back while matplotlib's C extensions import."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from perfsim.interrupts import deferred_interrupt


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # (the handler runs at the next bytecode boundary of the main thread)


def test_an_interrupt_in_the_block_is_raised_after_it():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            _ctrl_c()
            reached.append("after the signal")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_an_interrupt_the_block_runs_as_it_is():
    with deferred_interrupt():
        x = 1 + 1
    assert x == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_wins_over_an_error_the_block_raised():
    with pytest.raises(KeyboardInterrupt) as info:
        with deferred_interrupt():
            _ctrl_c()
            raise ImportError("initialization failed")
    assert isinstance(info.value.__context__, ImportError)


def test_an_ignored_interrupt_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_interrupt():
            _ctrl_c()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_nested_blocks_raise_once_after_the_outer_one():
    order = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            with deferred_interrupt():
                _ctrl_c()
            order.append("between")
    assert order == ["between"]


def test_outside_the_main_thread_the_block_runs_unchanged():
    seen = []

    def work():
        with deferred_interrupt():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]


def test_the_report_figures_import_matplotlib_with_interrupts_held_back(monkeypatch):
    """Where the report and the validation import matplotlib, they do it inside
    deferred_interrupt (a Ctrl-C that lands in a pybind11 module's initialisation
    otherwise turns into ImportError and a fatal error at exit)."""
    import perfsim.interrupts as I
    from perfsim.report import tune_figure

    entered = []
    real = I.deferred_interrupt

    def spy():
        entered.append(1)
        return real()

    monkeypatch.setattr(I, "deferred_interrupt", spy)
    tune_figure.pyplot()
    tune_figure.new_figure((1.0, 1.0))
    assert len(entered) == 2


def test_after_pyplot_a_report_loads_no_other_compiled_module_of_matplotlib(tmp_path):
    """Every compiled (pybind11) module a report draws with is loaded inside pyplot()'s
    deferred block: a whole report run after it loads none (the Agg backend's
    ``_backend_agg`` used to load at the first figure, where a Ctrl-C became
    ``ImportError: initialization failed``)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "def exts():\n"
        "    return {n for n, m in list(sys.modules.items()) if n.startswith('matplotlib')\n"
        "            and (getattr(m, '__file__', '') or '').endswith('.so')}\n"
        "from perfsim.report.tune_figure import pyplot\n"
        "pyplot()\n"
        "before = exts()\n"
        "from perfsim.cli.main import main\n"
        f"assert main(['report', '--study', 'quick', '--executor', 'serial', '--out', "
        f"{str(tmp_path / 'r')!r}, '--quiet']) == 0\n"
        "print(sorted(exts() - before), 'matplotlib.backends._backend_agg' in before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "[] True"
