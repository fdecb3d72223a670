"""A run leaves no reference cycles behind: its environment, events and call templates are
freed when the run is, not left to the garbage collector (whose collections a later call
would pay for). The records are the same as ever (bench/digests.py; tests/test_engine_gc.py)."""

from __future__ import annotations

import gc
import importlib

import numpy as np
import pytest
from test_t13_price_counts import _jittery

from perfsim.cost import PARAM_NAMES, load_cost_profile
from perfsim.cost.model import RowCosts, periodic_layout, periodic_prices, row_costs
from perfsim.engine import CallerSpec, MmSpec, SimSpec, WalkerSpec, simulate
from perfsim.mm import AddressSpace, PageTables, Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.profiles import resolve_target
from perfsim.workload import run_workload

sim = importlib.import_module("perfsim.engine.simulate")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BASE = 0x300000000000
TARGET = resolve_target("6.18", "x86_64")


@pytest.fixture
def no_automatic_collections():
    """No collection runs by itself while a test counts the garbage a run leaves (one would
    free the cycles before ``gc.collect()`` could count them)."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if was:
        gc.enable()


def _plan(length: int):
    src, dst = BASE + 2 * MiB + 4 * KiB, BASE + 2 * GiB + 6 * MiB + 8 * KiB
    space = AddressSpace((Vma(src, src + length, name="heap"),),
                         PageTables.empty(TARGET.arch).populate(src, src + length))
    return plan_mremap(space, MoveRequest(old_addr=src, old_len=length, new_addr=dst), TARGET)


def _spec(plans, profile, *, walkers=(), duration_ns=None, cpus=2):
    return SimSpec(cpus=cpus, target=TARGET, profile=profile, mms=(MmSpec("app", (0, 1)),),
                   callers=(CallerSpec("mover", "app", 0, tuple(plans)),),
                   walkers=walkers, duration_ns=duration_ns, seed=7)


def _cycles_left_by(make_result) -> int:
    """Objects in reference cycles (found by a full collection) after ``make_result()``'s
    result, read, is dropped."""
    res = make_result()
    for name in res.TABLES:
        res.frame(name)
    del res
    return gc.collect()


@pytest.mark.parametrize("length", [4 * KiB, 2 * MiB + 12 * KiB, GiB])
@pytest.mark.parametrize("fixed", [True, False])
def test_a_run_of_one_move_leaves_no_reference_cycles(length, fixed, no_automatic_collections):
    profile = load_cost_profile("kvm-host")
    profile = profile.fixed() if fixed else profile
    plan = _plan(length)
    _cycles_left_by(lambda: simulate(_spec([plan], profile)))  # first calls, not counted
    assert _cycles_left_by(lambda: simulate(_spec([plan], profile))) == 0


def test_a_periodic_templates_count_matrix_is_its_materialised_one(no_automatic_collections):
    """The lazily made count matrix of a part-by-part priced plan is given the RowCosts it
    is for (no closure over it): the same matrix and categories as the plan priced row by
    row, and nothing left to the collector once the costs are dropped."""
    steps = _plan(GiB).steps
    for profile in (load_cost_profile("kvm-host").fixed(), _jittery(PARAM_NAMES[:6])):
        medians = profile.medians_ns
        pieces = periodic_layout(steps)
        gc.collect()
        lazy = RowCosts.of_periodic(steps, pieces, periodic_prices(pieces, profile, 1, None,
                                                                   medians), medians, None)
        want = row_costs(steps, profile.fixed(), cpus=1)
        assert np.array_equal(lazy.matrix, want.matrix)
        assert np.array_equal(lazy.total, want.total)
        for c in want.by_category:
            assert np.array_equal(lazy.by_category[c], want.by_category[c]), c
        del lazy
        assert gc.collect() == 0


def test_a_workload_run_leaves_no_reference_cycles(no_automatic_collections):
    _cycles_left_by(lambda: run_workload("exec_stack", seed=1)[0])  # first calls
    assert _cycles_left_by(lambda: run_workload("exec_stack", seed=1)[0]) == 0


def _contended_spec(profile, duration_ns: int) -> SimSpec:
    """A caller moving 4 MiB back and forth while two walkers take its anon_vma lock (as
    bench/bench_engine.py's contention run, shorter): a duration run whose queue still holds
    the walkers' and the caller's next events when it ends."""
    a, b, size = 0x7F0000200000, 0x7F4000200000, 4 * MiB
    space = AddressSpace((Vma(a, a + size, name="heap"),),
                         PageTables.empty(TARGET.arch).populate(a, a + size))
    reqs = (MoveRequest(old_addr=a, old_len=size, new_addr=b),
            MoveRequest(old_addr=b, old_len=size, new_addr=a))
    walkers = tuple(WalkerSpec(f"w{i}", "anon_vma:heap", cpu=1, interval_ns=5_000,
                               hold_ns=2_000, hold_sigma=0.3) for i in range(2))
    return SimSpec(cpus=2, target=TARGET, profile=profile, mms=(MmSpec("app", (0, 1), space),),
                   callers=(CallerSpec("gc", "app", 0, reqs, repeat=40, interval_ns=20_000),),
                   walkers=walkers, duration_ns=duration_ns, seed=3)


@pytest.mark.parametrize("profile", [load_cost_profile("kvm-host").fixed(),
                                     load_cost_profile("kvm-host")])
def test_a_run_records_the_same_whether_or_not_its_queue_is_dropped_at_the_end(profile,
                                                                              monkeypatch):
    spec = _contended_spec(profile, 600_000)
    dropped = simulate(spec)
    monkeypatch.setattr(sim.CountingEnvironment, "close", lambda self: None)
    kept = simulate(spec)
    assert dropped.summary["events"] > 50 and dropped.summary["tables"]["holds"]["rows"] > 0
    for name in dropped.TABLES:
        assert dropped.frame(name).equals(kept.frame(name)), name
    assert dropped.summary == kept.summary and dropped.config == kept.config


def test_closing_the_environment_leaves_its_clock_and_event_count():
    env = sim.CountingEnvironment()
    env.timeout(5)
    env.timeout(9)
    env.run(until=7)
    before = env.scheduled
    env.close()
    assert env.now == 7 and env.scheduled == before
    assert env.peek() == float("inf")  # nothing left queued


@pytest.mark.parametrize("seed", range(4))
def test_a_table_folded_row_by_row_sums_as_one_folded_at_once(seed):
    """A summary read after every row (each fold sees one new row: the one-row path) is
    the summary of the rows folded together, and the frame's own sums and maxima."""
    from perfsim.engine.records import HOLD_COLUMNS, HOLD_NUMERIC, Table

    rng = np.random.default_rng(seed)
    rows = [("anon_vma:heap", "c", "write", int(k), int(rng.integers(0, 5)),
             *map(int, rng.integers(0, 1 << 40, 2)), *map(int, rng.integers(0, 1 << 20, 2)))
            for k in range(int(rng.integers(1, 60)))]
    one_by_one, at_once = Table("holds", HOLD_COLUMNS, numeric=HOLD_NUMERIC), \
        Table("holds", HOLD_COLUMNS, numeric=HOLD_NUMERIC)
    for r in rows:
        one_by_one.add_row(r)
        one_by_one.summary()
        at_once.add_row(r)
    got, want = one_by_one.summary(), at_once.summary()
    assert got == want
    frame = at_once.to_frame()
    for c in HOLD_NUMERIC:
        assert want[f"sum_{c}"] == int(frame[c].sum()) and want[f"max_{c}"] == int(frame[c].max())
