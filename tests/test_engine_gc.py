"""A run collects garbage less often (engine.simulate.fewer_collections), with the same records."""

import gc
import importlib

import pandas as pd
import pytest

from perfsim.workload import run_workload

sim = importlib.import_module("perfsim.engine.simulate")


@pytest.fixture
def thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def _tables(res):
    return {t: pd.util.hash_pandas_object(res.frame(t), index=True).sum() for t in res.TABLES}


def test_the_threshold_is_raised_while_a_run_simulates_and_restored_after(thresholds):
    gc.set_threshold(700, 10, 10)
    seen = []
    with sim.fewer_collections():
        seen.append(gc.get_threshold())
    assert seen == [(sim.GC_YOUNG_THRESHOLD, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_setting_or_a_disabled_collector_is_left_alone(thresholds):
    gc.set_threshold(10 * sim.GC_YOUNG_THRESHOLD, 5, 5)
    with sim.fewer_collections():
        assert gc.get_threshold() == (10 * sim.GC_YOUNG_THRESHOLD, 5, 5)
    gc.set_threshold(0, 10, 10)
    with sim.fewer_collections():
        assert gc.get_threshold()[0] == 0
    assert gc.get_threshold() == (0, 10, 10)


def test_the_threshold_is_restored_when_a_run_fails(thresholds):
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), sim.fewer_collections():
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("name", ["ipi_storm", "gc_compaction"])
def test_records_are_the_same_with_collections_as_often_as_cpython_makes_them(name, thresholds,
                                                                                monkeypatch):
    fast = _tables(run_workload(name, seed=2)[0])
    monkeypatch.setattr(sim, "GC_YOUNG_THRESHOLD", 1)  # never raised: CPython's own rate
    gc.set_threshold(700, 10, 10)
    assert _tables(run_workload(name, seed=2)[0]) == fast


def test_simulate_runs_under_the_raised_threshold(thresholds, monkeypatch):
    gc.set_threshold(700, 10, 10)
    seen = []
    real = sim.run

    def spy(*a, **k):
        seen.append(gc.get_threshold()[0])
        return real(*a, **k)

    monkeypatch.setattr(sim, "run", spy)
    run_workload("trace_replay")
    assert seen == [sim.GC_YOUNG_THRESHOLD]
    assert gc.get_threshold() == (700, 10, 10)
