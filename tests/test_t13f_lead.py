"""A pool's sweep imports what its store's first write needs while the workers simulate."""
import subprocess
import sys
from pathlib import Path

import pytest

_FIRST_WRITE = r'''
import sys
import perfsim.batch.api as api
from perfsim.batch.store import ResultStore, schema_for

if sys.argv[1] == "prefetched":
    import importlib
    for m in api.WRITER_IMPORTS:
        importlib.import_module(m)
store = ResultStore(sys.argv[2], schema_for({"x": [1, 2]}))
row = {"key": "k", "status": "ok", "p:x": 1, "cpu_s": 0.5}
before = set(sys.modules)
assert store.write([row]) is not None
print(" ".join(sorted(set(sys.modules) - before)))
'''


def _first_write_imports(how: str, tmp_path: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _FIRST_WRITE, how, str(tmp_path / how)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def _heavy(modules: set[str]) -> set[str]:
    """Those of ``modules`` that are pandas or pyarrow's pandas integration (the costly
    part of a first write; a small helper module of pyarrow may still load there)."""
    return {m for m in modules if m.split(".")[0] == "pandas" or m == "pyarrow.pandas_compat"}


def test_the_writer_imports_are_what_a_stores_first_write_would_import(tmp_path):
    cold = _first_write_imports("cold", tmp_path)
    assert {"pandas", "pyarrow.pandas_compat"} <= cold  # (why the list exists)
    assert _heavy(_first_write_imports("prefetched", tmp_path)) == set()


def _tiny_sweep():
    from perfsim.batch.sweep import parse_sweep

    return parse_sweep({"name": "t13f", "base": {"workload": "trace_replay"},
                        "replications": 2}, Path.cwd(), "<test>")


class _InThreadPool:
    """An executor that says it is a pool but runs each task here (records the prefetch)."""

    name = "process"
    workers = 1

    def map_unordered(self, fn, items):
        for x in items:
            yield fn(x)


@pytest.mark.parametrize("executor, prefetched", [("serial", False), ("pool", True)])
def test_only_a_pool_sweep_prefetches_the_writer_and_its_rows_are_the_same(
        tmp_path, monkeypatch, executor, prefetched):
    import perfsim.batch.api as api
    from perfsim.batch import load_results
    from perfsim.batch.executors import SerialExecutor

    started = []
    real = api.prefetch_imports

    def recording(modules):
        started.append(tuple(modules))
        return real(modules)

    monkeypatch.setattr(api, "prefetch_imports", recording)
    ex = _InThreadPool() if executor == "pool" else SerialExecutor()
    rep = api.run_sweep(_tiny_sweep(), tmp_path / executor, executor=ex, quiet=True)
    assert started == ([api.WRITER_IMPORTS] if prefetched else [])
    assert rep.ran == 2 and rep.failed == 0
    again = api.run_sweep(_tiny_sweep(), tmp_path / "again", executor=SerialExecutor(),
                          quiet=True)
    cols = ["key", "status", "calls", "lat_mean_ns"]
    assert load_results(rep.path)[cols].equals(load_results(again.path)[cols])


def test_a_sweep_with_nothing_left_to_run_prefetches_nothing(tmp_path, monkeypatch):
    import perfsim.batch.api as api

    api.run_sweep(_tiny_sweep(), tmp_path, executor=_InThreadPool(), quiet=True)
    started = []
    monkeypatch.setattr(api, "prefetch_imports", lambda m: started.append(m))
    rep = api.run_sweep(_tiny_sweep(), tmp_path, executor=_InThreadPool(), quiet=True)
    assert rep.skipped == 2 and rep.ran == 0 and started == []
