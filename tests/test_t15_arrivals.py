"""A caller whose first call comes after time 0 gets its SimPy process when that call comes
(perfsim.engine.arrivals), and the run is the run of making every process before the clock
starts (``late=False``): the same records, the same summary, the same number of scheduled
events, on random runs with ties, the example scenarios and every shipped workload."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_cost import LOCK, synthetic_plan
from test_t13_engine_fold import _random_spec, shipped_spec

from perfsim.cost import load_cost_profile
from perfsim.engine import CallerSpec, MmSpec, SimSpec, WalkerSpec, simulate
from perfsim.planner import MoveRequest
from perfsim.profiles import resolve_target
from perfsim.workload import workload_names

TARGET = resolve_target("6.18", "x86_64")
GENERIC = load_cost_profile("x86_64-generic")
SCENARIOS = sorted((Path(__file__).parents[1] / "workloads" / "scenarios").glob("*.toml"))


def _assert_identical(a, b) -> None:
    for t in a.TABLES:
        pd.testing.assert_frame_equal(a.frame(t), b.frame(t))
    assert a.summary == b.summary  # scheduled_events included: the same events


@pytest.mark.parametrize("seed", range(30))
def test_late_processes_give_the_run_of_processes_made_up_front_on_random_runs(seed):
    spec = _random_spec(seed)
    _assert_identical(simulate(spec), simulate(spec, late=False))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_late_processes_give_the_same_run_on_the_example_scenarios(path):
    for seed in (1, 2):
        _assert_identical(simulate(path, seed=seed), simulate(path, seed=seed, late=False))


@pytest.mark.parametrize("name", workload_names())
def test_late_processes_give_the_same_run_on_every_shipped_workload(name):
    spec = shipped_spec(name, 60)
    _assert_identical(simulate(spec), simulate(spec, late=False))


def _tied_spec(starts, walker_start=1000, duration=None) -> SimSpec:
    """Callers of one mm on two CPUs starting at ``starts`` (in spec order, not sorted,
    with repeats), and a periodic walker of their lock whose visits land on the same
    instants: every start ties with other events."""
    plan = synthetic_plan(pmd_moves=6, ptes=64)
    callers = tuple(CallerSpec(f"c{k}", "app", k % 2, (plan,), start_ns=s)
                    for k, s in enumerate(starts))
    walker = WalkerSpec("w", LOCK[0], cpu=2, interval_ns=1000, hold_ns=400, poisson=False,
                        start_ns=walker_start)
    return SimSpec(cpus=3, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0, 1)),),
                   callers=callers, walkers=(walker,), duration_ns=duration, seed=4)


def test_callers_starting_together_and_out_of_order_run_in_simpys_order():
    starts = [3000, 1000, 0, 2000, 2000, 1000, 0, 5000, 3000, 4000, 1000]
    a, b = simulate(_tied_spec(starts)), simulate(_tied_spec(starts), late=False)
    _assert_identical(a, b)
    assert len(a.calls) == len(starts)
    # callers due at the same instant queue for mmap_lock in spec order (their timeouts' ids)
    order = list(a.calls.sort_values("end_ns").caller)
    assert order.index("c1") < order.index("c5") < order.index("c10")
    assert order.index("c3") < order.index("c4") and order.index("c0") < order.index("c8")


def test_a_run_of_fixed_duration_never_starts_the_callers_due_after_it():
    starts = [0, 500, 40_000, 1500, 900_000]  # (a call takes ~34 us; they queue on mmap_lock)
    a, b = (simulate(_tied_spec(starts, duration=140_000)),
            simulate(_tied_spec(starts, duration=140_000), late=False))
    _assert_identical(a, b)
    assert set(a.calls.caller) == {"c0", "c1", "c2", "c3"}


def test_a_late_caller_that_fails_fails_the_run_as_before():
    """A request against an mm without an address space raises in the caller (at its first
    call): the run ends with that error whether its process was made up front or late."""
    req = MoveRequest(old_addr=0x10000000, old_len=4096, new_addr=0x20000000)
    spec = SimSpec(cpus=1, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0,)),),
                   callers=(CallerSpec("a", "app", 0, (synthetic_plan(pmd_moves=1, ptes=1),)),
                            CallerSpec("b", "app", 0, (req,), start_ns=5000)))
    errors = []
    for late in (True, False):
        with pytest.raises(ValueError) as info:
            simulate(spec, late=late)
        errors.append(str(info.value))
    assert errors[0] == errors[1] and "no address space" in errors[0]


def test_late_callers_hold_one_waiting_process_per_run_of_them():
    """What the change is for: callers not yet due have no process. Counted from the
    queue at the first start: one start event waiting for 200 late callers, not 200."""
    from perfsim.engine.arrivals import CallersDone, start_callers
    from perfsim.engine.machine import Machine
    from perfsim.engine.records import Recorder
    from perfsim.engine.simulate import CountingEnvironment

    spec = _tied_spec([1000 + 10 * k for k in range(200)], walker_start=10**9)
    for late, queued in ((True, 1), (False, 200)):
        env = CountingEnvironment()
        m = Machine(spec, Recorder(), env)
        m.fold, m.progress = True, None
        start_callers(env, m, CallersDone(env, len(spec.callers)), late=late)
        env.run(until=1)  # the initialising events processed, nothing due yet
        waiting = [e for t, *_k, e in env._queue if t > 1]  # (not run()'s own stop at 1)
        assert len(waiting) == queued
