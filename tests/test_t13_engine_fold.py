"""A caller's clock running ahead of SimPy's (issue 13: fewer events per call) gives the
records of stepping every segment and contended row with its own timeout (``fold=False``,
the general path), on random runs, the example scenarios and the shipped workloads with
walkers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cost import LOCK, synthetic_plan

from perfsim.cost import load_cost_profile
from perfsim.engine import CallerSpec, MmSpec, SimSpec, UserSpec, WalkerSpec, simulate
from perfsim.profiles import resolve_target

TARGET = resolve_target("6.18", "x86_64")
GENERIC = load_cost_profile("x86_64-generic")
SCENARIOS = sorted((Path(__file__).parents[1] / "workloads" / "scenarios").glob("*.toml"))


def _assert_same_run(a, b) -> None:
    for t in a.TABLES:
        pd.testing.assert_frame_equal(a.frame(t), b.frame(t))
    sa = {k: v for k, v in a.summary.items() if k != "scheduled_events"}
    sb = {k: v for k, v in b.summary.items() if k != "scheduled_events"}
    assert sa == sb
    assert a.summary["scheduled_events"] <= b.summary["scheduled_events"] == b.summary["events"]


def _random_spec(seed: int) -> SimSpec:
    rng = np.random.default_rng(seed)
    plans = [synthetic_plan(pmd_moves=int(rng.integers(1, 25)), ptes=int(rng.integers(1, 512)))
             for _ in range(3)]
    mms = (MmSpec("a", (0, 1, 2)), MmSpec("b", (2, 3)))
    callers = tuple(CallerSpec(f"c{k}", mm, cpu, tuple(plans), repeat=int(rng.integers(1, 3)),
                               interval_ns=int(rng.choice([0, 500, 5000])),
                               start_ns=int(rng.integers(0, 3000)))
                    for k, (mm, cpu) in enumerate([("a", 0), ("a", 1), ("b", 3)]))
    walkers = [WalkerSpec("reclaim", LOCK[0], cpu=2, interval_ns=int(rng.choice([300, 3000, 30000])),
                          hold_ns=int(rng.choice([0, 100, 2000])),
                          hold_sigma=float(rng.choice([0.0, 0.5])), poisson=bool(rng.random() < 0.7))]
    if rng.random() < 0.5:  # a walker of mm a's page tables too (page_vma_mapped_walk)
        walkers.append(WalkerSpec("migrate", LOCK[0], cpu=1, interval_ns=2000, hold_ns=700,
                                  ptl_mm="a", ptl_range=(0x10000000, 0x10000000 + (16 << 20)),
                                  ptl_hold_ns=200))
    users = tuple(UserSpec(f"u{k}", "a" if k % 2 else "b", k % 4, int(rng.choice([2000, 10_000])))
                  for k in range(4))
    duration = int(rng.integers(20_000, 400_000)) if rng.random() < 0.3 else None
    return SimSpec(cpus=4, target=TARGET, profile=GENERIC, mms=mms, callers=callers,
                   walkers=tuple(walkers), users=users, seed=seed, duration_ns=duration)


@pytest.mark.parametrize("seed", range(30))
def test_folded_run_equals_stepping_every_segment_on_random_runs(seed):
    spec = _random_spec(seed)
    _assert_same_run(simulate(spec), simulate(spec, fold=False))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_folded_run_equals_stepping_every_segment_on_the_example_scenarios(path):
    for seed in (1, 2):
        _assert_same_run(simulate(path, seed=seed), simulate(path, seed=seed, fold=False))


def shipped_spec(name: str, calls: int) -> SimSpec:
    """The shipped workload ``name`` compiled on its own seed, each caller cut to its first
    ``calls`` plans, made once (a stream's generator can be consumed by one run only)."""
    from perfsim.workload import load_workload, resolve_workload
    from perfsim.workload.generate import compile_workload

    w = load_workload(resolve_workload(name))
    comp = compile_workload(w, resolve_target(w.kernel, w.arch),
                            load_cost_profile(w.cost_profile), np.random.SeedSequence(w.seed))
    return replace(comp.spec, callers=tuple(replace(c, plans=list(c.plans)[:calls])
                                            for c in comp.spec.callers))


@pytest.mark.parametrize("name", ["gc_compaction", "random_layout_stress", "shared_file_reclaim"])
def test_folded_run_equals_stepping_every_segment_on_shipped_workloads(name):
    spec = shipped_spec(name, 40)
    folded, stepped = simulate(spec), simulate(spec, fold=False)
    _assert_same_run(folded, stepped)
    assert folded.summary["scheduled_events"] < stepped.summary["scheduled_events"]
    assert len(folded.walker_waits) > 0


def test_a_call_whose_contended_rows_meet_no_other_event_is_one_timeout():
    """A walker of the lock that only visits after the call: 40 contended rows, and
    the call's only events are its start and its one timeout."""
    plan = synthetic_plan(pmd_moves=40, ptes=100)
    late = WalkerSpec("late", LOCK[0], cpu=1, interval_ns=10**12, hold_ns=1, poisson=False,
                      start_ns=10**12)
    spec = SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0,)),),
                   callers=(CallerSpec("mover", "app", 0, (plan,)),), walkers=(late,),
                   duration_ns=None)
    folded, stepped = simulate(spec), simulate(spec, fold=False)
    _assert_same_run(folded, stepped)
    assert int(folded.calls.segments[0]) > 40
    # every timeout but one folded (segments of zero cost have none either way)
    assert stepped.summary["scheduled_events"] - folded.summary["scheduled_events"] >= 40
    assert folded.summary["scheduled_events"] <= 8


@pytest.mark.parametrize("row", [3, 10])
def test_a_walker_arriving_exactly_as_a_row_ends_is_not_folded_past(row):
    """Another event at the very end of a contended row: SimPy runs the earlier-scheduled
    one first, so the caller must not run ahead through that instant."""
    plan = synthetic_plan(pmd_moves=20, ptes=100)

    def run(walker_start: int, fold: bool):
        w = WalkerSpec("w", LOCK[0], cpu=1, interval_ns=1000, hold_ns=500, poisson=False,
                       start_ns=walker_start)
        spec = SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0,)),),
                       callers=(CallerSpec("mover", "app", 0, (plan,)),), walkers=(w,))
        return simulate(spec, fold=fold)

    alone = run(10**12, False).holds
    end = int(alone.acquire_ns[row] + alone.hold_ns[row])
    folded, stepped = run(end - 1000, True), run(end - 1000, False)
    _assert_same_run(folded, stepped)
    assert int(stepped.calls.rmap_wait_ns[0]) > 0  # the walker got in between


@pytest.mark.parametrize("row", [3, 10])
def test_a_walker_whose_gap_ends_exactly_as_a_row_ends_queues_behind_the_caller(row):
    """The walker starts its gap during a contended row and the gap ends exactly as the row
    does: the row's end was scheduled first, so the caller releases and takes its next row
    before the walker asks; the walker must not run ahead through that instant either."""
    plan = synthetic_plan(pmd_moves=20, ptes=100)

    def run(start: int, interval: int, fold: bool):
        w = WalkerSpec("w", LOCK[0], cpu=1, interval_ns=interval, hold_ns=500, poisson=False,
                       start_ns=start)
        spec = SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0,)),),
                       callers=(CallerSpec("mover", "app", 0, (plan,)),), walkers=(w,))
        return simulate(spec, fold=fold)

    alone = run(10**12, 1000, False).holds
    a, d = int(alone.acquire_ns[row]), int(alone.hold_ns[row])
    start = a + d // 2
    folded, stepped = run(start, a + d - start, True), run(start, a + d - start, False)
    _assert_same_run(folded, stepped)
    assert int(stepped.walker_waits.wait_ns[0]) > 0  # it queued behind the next row


def test_a_caller_queued_on_a_walkers_page_table_lock_gets_it_when_the_walker_drops_it():
    """Two walkers holding one PMD's spinlock for long inside their rmap holds, and a
    caller whose PMD move takes that spinlock: waiters queue behind a walker that got the
    lock by waiting, and its unlock must hand it over at the walker's time."""
    plan = synthetic_plan(pmd_moves=1, ptes=300)  # the PMD move's source: 0x10000000
    ws = tuple(WalkerSpec(f"migrate{k}", f"anon_vma:elsewhere{k}", cpu=1, interval_ns=9000,
                          hold_ns=6000, ptl_mm="app",
                          ptl_range=(0x10000000, 0x10000000 + (2 << 20)), ptl_hold_ns=6000)
               for k in range(2))
    spec = SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0,)),),
                   callers=(CallerSpec("mover", "app", 0, (plan,), repeat=30,
                                       interval_ns=700),), walkers=ws, seed=4)
    folded, stepped = simulate(spec), simulate(spec, fold=False)
    _assert_same_run(folded, stepped)
    assert int(stepped.calls.ptl_wait_ns.sum()) > 0


@pytest.mark.parametrize("duration_ns", [None, 1_000_000, 2_345_678])
def test_a_lone_callers_whole_stream_folds_and_a_duration_cuts_it_where_stepping_does(
        duration_ns):
    """One caller, no walker, a user thread: nothing else has events, so its calls, think
    times and segments fold into one timeout; a run duration stops it at the same call."""
    plans = [synthetic_plan(pmd_moves=int(n), ptes=int(p))
             for n, p in zip((3, 9, 1, 20), (40, 511, 7, 300), strict=True)]
    spec = SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0, 1)),),
                   callers=(CallerSpec("mover", "app", 0, tuple(plans), repeat=25,
                                       interval_ns=3_000, start_ns=1_000),),
                   users=(UserSpec("u", "app", 1, 7_000),), duration_ns=duration_ns)
    folded, stepped = simulate(spec), simulate(spec, fold=False)
    _assert_same_run(folded, stepped)
    assert folded.summary["scheduled_events"] <= 6 < stepped.summary["scheduled_events"]
    assert (len(folded.calls) == 100) == (duration_ns is None)
