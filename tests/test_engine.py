"""The SimPy engine (issue 3, part 3–5): exactness, contention, IPIs, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_cost import LOCK, synthetic_plan

from perfsim.cost import load_cost_profile, parse_cost_profile, predict, row_costs
from perfsim.engine import (
    CallerSpec,
    MmSpec,
    RwSem,
    SimSpec,
    UserSpec,
    WalkerSpec,
    segments,
    simulate,
)
from perfsim.errors import PerfsimError
from perfsim.profiles import resolve_target

TARGET = resolve_target("6.18", "x86_64")
GENERIC = load_cost_profile("x86_64-generic")


def spec(plans, *, mm_cpus=(0,), walkers=(), users=(), profile=GENERIC, repeat=1, seed=0,
         interval_ns=0, cpus=2, duration_ns=None) -> SimSpec:
    return SimSpec(cpus=cpus, target=TARGET, profile=profile,
                   mms=(MmSpec("app", tuple(mm_cpus)),),
                   callers=(CallerSpec("mover", "app", mm_cpus[0], tuple(plans), repeat,
                                       interval_ns),),
                   walkers=tuple(walkers), users=tuple(users), seed=seed,
                   duration_ns=duration_ns)


def jitter_profile():
    from importlib import resources

    text = (resources.files("perfsim") / "data" / "cost" / "x86_64-generic.toml").read_text()
    text = text.replace("ns = 12\nsource = \"A1 before",
                        "ns = 12\ndist = \"lognormal\"\nsigma = 0.3\nsource = \"A1 before")
    text = text.replace("ns = 150\nsource = \"A1 after",
                        "ns = 150\ndist = \"normal\"\nsigma = 0.2\nsource = \"A1 after")
    return parse_cost_profile(text, "jitter")


# -- exactness --------------------------------------------------------------------------

@pytest.mark.parametrize("mm_cpus", [(0,), (0, 1)])
def test_engine_equals_closed_form_without_contention(mm_cpus):
    plan = synthetic_plan(pmd_moves=6, ptes=400)
    res = simulate(spec([plan], mm_cpus=mm_cpus))
    call = res.calls.iloc[0]
    pred = predict(plan, GENERIC, cpus=len(mm_cpus))
    assert int(call.latency_ns) == pred.predicted_ns
    assert int(call.end_ns - call.start_ns) == pred.predicted_ns
    for cat, ns in pred.cost_ns.items():
        assert int(call[f"cost_{cat}_ns"]) == ns
    assert int(call.segments) == 1  # nothing contends: one timeout for the whole call


def test_engine_equals_closed_form_with_jitter_drawn_from_the_run_seed():
    prof = jitter_profile()
    plan = synthetic_plan(pmd_moves=6, ptes=400)
    res = simulate(spec([plan, plan], profile=prof, seed=11))
    rng = np.random.default_rng(np.random.SeedSequence(11).spawn(1)[0])
    expect = [predict(plan, prof, cpus=1, rng=rng).predicted_ns for _ in range(2)]
    assert res.calls.latency_ns.tolist() == expect
    assert expect[0] != expect[1]


def test_large_uncontended_move_costs_a_handful_of_events():
    plan = synthetic_plan(pmd_moves=2000, ptes=511)
    res = simulate(spec([plan]))
    assert res.summary["events"] < 20
    assert len(res.holds) == 2000 and len(res.flushes) == 2002


# -- contention -------------------------------------------------------------------------

def test_walkers_wait_for_sections_and_holds_equal_the_plan_sections():
    plan = synthetic_plan(pmd_moves=40, ptes=100)
    w = WalkerSpec("reclaim", LOCK[0], cpu=1, interval_ns=400, hold_ns=150, poisson=True)
    res = simulate(spec([plan] * 3, walkers=[w], interval_ns=2_000, seed=3))
    rc = row_costs(plan, GENERIC, cpus=1)
    holds = res.holds
    assert len(holds) == 3 * 40
    # Every hold lasts exactly its row's cost: the section, flush included.
    assert (holds.hold_ns.to_numpy() == rc.total[holds.step.to_numpy()]).all()
    ww = res.walker_waits
    assert len(ww) > 0 and (ww.wait_ns > 0).all()
    assert ww.wait_ns.max() <= holds.hold_ns.max()
    # The mover waited for walkers at least once, never longer than one walker hold.
    assert 0 < res.calls.rmap_wait_ns.sum()
    assert holds.wait_ns.max() <= w.hold_ns
    # Contention forces per-section stepping.
    assert (res.calls.segments > 1).all()


def test_walker_on_another_lock_does_not_slow_the_mover():
    plan = synthetic_plan(pmd_moves=10)
    w = WalkerSpec("other", "anon_vma:elsewhere", cpu=1, interval_ns=100, hold_ns=90)
    res = simulate(spec([plan], walkers=[w]))
    assert int(res.calls.latency_ns[0]) == predict(plan, GENERIC, cpus=1).predicted_ns
    assert len(res.walker_waits) == 0


def test_rwsem_queued_writer_is_not_starved_by_new_readers():
    import simpy

    env = simpy.Environment()
    sem = RwSem(env, "anon_vma:x")
    order = []

    def reader(name, start, hold):
        yield env.timeout(start)
        if not sem.try_read():
            yield sem.wait_read(name)
        order.append((name, env.now))
        yield env.timeout(hold)
        sem.release_read()

    def writer(start, hold):
        yield env.timeout(start)
        if not sem.try_write("w"):
            yield sem.wait_write("w")
        order.append(("w", env.now))
        yield env.timeout(hold)
        sem.release_write()

    env.process(reader("r1", 0, 10))
    env.process(writer(1, 5))
    env.process(reader("r2", 2, 10))   # arrives while r1 reads and w is queued: must wait
    env.process(reader("r3", 3, 10))
    env.run()
    assert order == [("r1", 0), ("w", 10), ("r2", 15), ("r3", 15)]  # readers woken together


def test_segments_split_around_contended_rows():
    s, e, h = segments(np.array([False, True, True, False, False]))
    assert list(zip(s.tolist(), e.tolist(), h.tolist(), strict=False)) == [
        (0, 1, False), (1, 2, True), (2, 3, True), (3, 5, False)]


# -- IPIs -------------------------------------------------------------------------------

def test_two_thread_mm_pays_ipis_and_a_one_thread_mm_does_not():
    plan = synthetic_plan(pmd_moves=8)
    one = simulate(spec([plan], mm_cpus=(0,), users=[UserSpec("u", "app", 1, 10_000)]))
    two = simulate(spec([plan], mm_cpus=(0, 1), users=[UserSpec("u", "app", 1, 10_000)]))
    assert int(one.calls.ipis[0]) == 0 and int(one.calls.cost_ipi_ns[0]) == 0
    assert int(one.users.stolen_ns[0]) == 0
    flushes = int(plan.flushes.sum())
    assert int(two.calls.ipis[0]) == flushes
    assert int(two.calls.cost_ipi_ns[0]) == flushes * GENERIC.value("ipi_round_trip_ns")
    assert (two.flushes.targets == 1).all()
    stolen = int(two.flushes.stolen_ns.sum())
    assert int(two.users.stolen_ns[0]) == stolen > 0
    assert int(two.users.interrupts[0]) == flushes


# -- determinism and records ------------------------------------------------------------

def test_same_seed_gives_identical_records_and_another_seed_does_not():
    plan = synthetic_plan(pmd_moves=30, ptes=200)
    w = WalkerSpec("reclaim", LOCK[0], cpu=1, interval_ns=500, hold_ns=200, hold_sigma=0.5)
    mk = lambda seed: spec([plan] * 4, profile=jitter_profile(), walkers=[w], seed=seed,  # noqa: E731
                           interval_ns=1000, mm_cpus=(0, 1), users=[UserSpec("u", "app", 1, 5000)])
    a, b, c = simulate(mk(5)), simulate(mk(5)), simulate(mk(6))
    for name, df in a.frames().items():
        pd.testing.assert_frame_equal(df, b.frames()[name])
    assert not a.calls.latency_ns.equals(c.calls.latency_ns)


def test_records_stay_bounded_and_spill_to_disk(tmp_path):
    plan = synthetic_plan(pmd_moves=50)
    kept = simulate(spec([plan] * 4), max_rows=60)
    t = kept.summary["tables"]["holds"]
    assert t["rows"] == 200 and t["kept"] <= 60 and t["dropped"] == 200 - t["kept"]
    spilled = simulate(spec([plan] * 4), max_rows=60, spill_dir=tmp_path / "spill")
    assert len(spilled.holds) == 200
    assert spilled.summary["tables"]["holds"]["spilled_parts"] >= 1


def test_invalid_placement_is_a_user_error():
    plan = synthetic_plan()
    with pytest.raises(PerfsimError, match="cpu 5 out of range"):
        simulate(spec([plan], mm_cpus=(0, 5)))
