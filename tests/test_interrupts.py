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
