"""The built-in profile names, listed once per process, are the package data folder's."""
from importlib import resources

import pytest

from perfsim.cost.profile import cost_profile_names
from perfsim.profiles import arch_names, builtin_names, kernel_names


def _listing(sub: str) -> list[str]:
    folder = resources.files("perfsim") / "data" / sub
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


@pytest.mark.parametrize("sub", ["arch", "kernels", "cost"])
def test_the_builtin_names_are_the_data_folders_toml_files(sub):
    assert list(builtin_names(sub)) == _listing(sub)
    assert builtin_names(sub)  # every folder ships profiles


def test_each_names_function_is_its_folders_listing_in_its_order():
    assert arch_names() == _listing("arch")
    assert cost_profile_names() == _listing("cost")
    assert kernel_names() == sorted(_listing("kernels"),
                                    key=lambda n: tuple(int(x) for x in n.split(".")))


def test_a_callers_list_of_names_is_its_own():
    names = cost_profile_names()
    names.clear()
    assert cost_profile_names() == _listing("cost")
    arch = arch_names()
    arch.append("not-an-arch")
    assert "not-an-arch" not in arch_names()


def _printed(code: str) -> str:
    """What ``code`` prints, run by a fresh interpreter (which must succeed)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


_FIRST_POINT = r'''
import sys
import numpy as np
from pathlib import Path

import perfsim.batch.api  # noqa: F401 (what `perfsim sweep` has loaded before its first point)
from perfsim.batch.runner import run_point
from perfsim.batch.sweep import parse_sweep, plan_sweep


def compiled():
    return {n for n, m in list(sys.modules.items())
            if (getattr(m, "__file__", None) or "").endswith((".so", ".pyd"))}


sweep = parse_sweep({"name": "t", "base": {"workload": "trace_replay"}, "replications": 1},
                    Path.cwd(), "<test>")
point = plan_sweep(sweep)[0]
before = compiled()
row = run_point(point)
assert row["status"] == "ok", row
print(sorted(compiled() - before))
'''


def test_a_sweep_point_loads_no_compiled_module_first():
    # A Ctrl-C that lands while a compiled module initialises can come out of the import as
    # an ordinary exception, which run_point records as a failed point: the interrupt would
    # be lost. So everything compiled a point needs is loaded before the first point.
    assert _printed(_FIRST_POINT) == "[]"


_FIRST_RUN = r'''
import sys
import perfsim.tune.search as search

calls = []
real = search.evaluate_point


def evaluate_point(p, caches=None):
    calls.append({n for n, m in list(sys.modules.items())
                  if (getattr(m, "__file__", None) or "").endswith((".so", ".pyd"))})
    return real(p, caches)


search.evaluate_point = evaluate_point
from perfsim.tune.spec import parse_tune

spec = parse_tune({"name": "t", "workload": "trace_replay", "replications": 2,
                   "knobs": {"arch.tlb.single_page_flush_ceiling": [33]}})
rows = search.evaluate_batch(search.settings_points(spec, [{}])[:1])
assert rows[0]["status"] == "ok", rows
loaded = {n for n, m in list(sys.modules.items())
          if (getattr(m, "__file__", None) or "").endswith((".so", ".pyd"))}
print(sorted(n for n in loaded - calls[0] if n.startswith("numpy.random")))
'''


def test_a_tune_task_loads_numpy_random_before_its_first_run():
    assert _printed(_FIRST_RUN) == "[]"


_INTERRUPTED_START = r'''
import multiprocessing as mp
import concurrent.futures.process as cfp
from perfsim.batch.executors import ProcessExecutor

real, spawned = cfp.ProcessPoolExecutor._spawn_process, []


def spawn(self):  # the first worker forks, then a Ctrl-C lands
    real(self)
    spawned.append(1)
    raise KeyboardInterrupt


cfp.ProcessPoolExecutor._spawn_process = spawn
try:
    ProcessExecutor(2, start_method="fork")
except KeyboardInterrupt:
    print(len(spawned), len(mp.active_children()))
'''


def test_a_pool_interrupted_while_its_workers_start_leaves_none_behind():
    # Before the fix the interpreter's exit waited forever for the forked worker.
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_START], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the process did not exit: it waits for a worker of the failed pool")
    assert proc.returncode == 0, err
    assert out.split() == ["1", "0"], (out, err)


_CTRL_C_IN_INITIALIZER = r'''
import os
import signal

import perfsim.batch.executors as ex


def pdeathsig():  # a Ctrl-C at the terminal lands while the initializer runs
    os.kill(os.getpid(), signal.SIGINT)
    return True


ex._set_pdeathsig = pdeathsig
ex._worker_init(os.getppid())
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
'''


def test_a_worker_initializer_is_not_ended_by_a_ctrl_c_and_restores_the_handler():
    # raised there it would end the worker ("Exception in initializer") and break the pool
    assert _printed(_CTRL_C_IN_INITIALIZER) == "True"
