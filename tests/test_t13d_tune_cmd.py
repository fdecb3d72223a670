"""``perfsim tune`` as a whole command, seventh pass: what is loaded where, and when."""

import subprocess
import sys
import textwrap
import threading
import types

import pytest


@pytest.fixture
def gate(tmp_path, monkeypatch):
    """Two importable modules: ``t13d_first`` (its import waits for ``release``, after
    setting ``started``) and ``t13d_second``."""
    g = types.ModuleType("t13d_gate")
    g.started, g.release = threading.Event(), threading.Event()
    monkeypatch.setitem(sys.modules, "t13d_gate", g)
    (tmp_path / "t13d_first.py").write_text(
        "import t13d_gate\nt13d_gate.started.set()\nt13d_gate.release.wait(10)\n")
    (tmp_path / "t13d_second.py").write_text("VALUE = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield g
    g.release.set()
    for m in ("t13d_first", "t13d_second"):
        sys.modules.pop(m, None)


def test_a_stopped_prefetch_finishes_its_import_and_starts_no_other(gate):
    from perfsim.batch.executors import prefetch_imports

    t = prefetch_imports(["t13d_first", "t13d_second"])
    assert gate.started.wait(10)
    threading.Timer(0.05, gate.release.set).start()
    t.stop()
    assert not t.is_alive()
    assert "t13d_first" in sys.modules
    assert "t13d_second" not in sys.modules


def test_a_prefetch_left_to_run_imports_every_module(gate):
    from perfsim.batch.executors import prefetch_imports

    gate.release.set()
    t = prefetch_imports(["t13d_first", "t13d_second"])
    t.join(10)
    assert {"t13d_first", "t13d_second"} <= set(sys.modules)


def test_the_figure_process_is_forked_before_the_pool_and_the_simulations_modules_load():
    """What ``perfsim tune`` has loaded when it forks its figure process: numpy and numpy.ma
    (which the child needs too), not numpy.random nor concurrent.futures (only the pool's
    simulations need those)."""
    code = textwrap.dedent("""
        import sys
        import numpy, numpy.ma
        from perfsim.report.figure_process import FigureProcess, worth_starting
        worth_starting()
        print([m for m in ("numpy.random", "concurrent.futures", "pandas", "simpy")
               if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_tune_report_module_leaves_the_provenance_to_the_writing():
    code = textwrap.dedent("""
        import sys
        import perfsim.report.tune_report
        print("perfsim.report.provenance" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_a_figure_process_told_it_is_done_exits_by_itself_and_leaves_the_rest_here():
    from perfsim.batch.stats import t_quantile
    from perfsim.report.figure_process import FigureProcess

    fp = FigureProcess().start()
    fp.t_quantile(0.975, 2)  # answered: the child has imported and serves requests
    proc = fp.proc
    fp.done()
    proc.join(30)  # not close(): it exits on its own
    assert not proc.is_alive() and proc.exitcode == 0
    assert fp.t_quantile(0.975, 4) == t_quantile(0.975, 4)  # computed in this process
    fp.close()
    assert fp.proc is None
