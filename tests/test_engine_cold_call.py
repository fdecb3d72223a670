"""A ColdCall: a call the cost profile's [cold_cache] charges once, at its start, under
mmap_lock (perfsim.engine.spec.ColdCall; a trace stream's calls, docs/engine.md)."""

from __future__ import annotations

import pytest
from test_cost import synthetic_plan

from perfsim.cost import load_cost_profile, predict
from perfsim.engine import CallerSpec, ColdCall, MmSpec, SimSpec
from perfsim.engine.records import Recorder
from perfsim.engine.simulate import run
from perfsim.profiles import resolve_target

TARGET = resolve_target("6.18", "x86_64")
GENERIC = load_cost_profile("x86_64-generic")


def _spec(items_a, items_b=()) -> SimSpec:
    callers = [CallerSpec("a", "app", 0, tuple(items_a))]
    if items_b:
        callers.append(CallerSpec("b", "app", 1, tuple(items_b)))
    return SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0, 1)),),
                   callers=tuple(callers))


def _calls(spec: SimSpec, lone: bool):
    rec = Recorder()
    run(spec, rec, lone=lone)
    return rec.calls.to_frame()


@pytest.mark.parametrize("lone", [True, False])
def test_a_cold_call_takes_its_charge_longer_all_of_it_fixed(lone):
    plan = synthetic_plan(pmd_moves=3, ptes=200)
    warm = predict(plan, GENERIC, cpus=2)
    got = _calls(_spec([ColdCall(plan, 5_000), plan]), lone)
    assert list(got["latency_ns"]) == [warm.predicted_ns + 5_000, warm.predicted_ns]
    assert list(got["cost_fixed_ns"]) == [warm.cost_ns["fixed"] + 5_000, warm.cost_ns["fixed"]]
    assert int(got["start_ns"][1]) == int(got["end_ns"][0])


def test_a_cold_call_holds_mmap_lock_for_its_charge():
    """Two threads of one mm: the second caller waits for the first's whole call, the
    charge included (the caches refill under the lock)."""
    plan = synthetic_plan(pmd_moves=3, ptes=200)
    warm = _calls(_spec([plan], [plan]), lone=False)
    cold = _calls(_spec([ColdCall(plan, 7_000)], [plan]), lone=False)
    wait = dict(zip(warm["caller"], warm["mmap_lock_wait_ns"], strict=True))
    wait_cold = dict(zip(cold["caller"], cold["mmap_lock_wait_ns"], strict=True))
    assert wait_cold["b"] - wait["b"] == 7_000
