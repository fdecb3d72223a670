"""A lone caller run without SimPy (``simulate.is_lone_caller``, ``_run_lone``,
``LoneClock``): the same records and the same summary figures (``end_ns``, ``events``,
``scheduled_events``: the count SimPy schedules, derived by the lone run, not given) as the
same spec run through SimPy (``lone=False``), on seeded random specs of every kind of plan
stream, profile, cpumask, start time, interval, repeat, folding, reuse and row bound."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from test_cost import synthetic_plan

from perfsim.cost import load_cost_profile
from perfsim.engine import CallerSpec, MmSpec, SimSpec, UserSpec, WalkerSpec, simulate
from perfsim.engine.simulate import is_lone_caller
from perfsim.mm import AddressSpace, PageTables, Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.profiles import resolve_target

TARGET = resolve_target("6.18", "x86_64")
GENERIC = load_cost_profile("x86_64-generic")      # jitter-free
KVM = load_cost_profile("kvm-host")                # jittered: the caller draws
KiB, MiB = 1 << 10, 1 << 20
SRC = 0x7F0000200000 + 4 * KiB
DST = 0x7F4000600000 + 8 * KiB


def _space(size: int, populated: int | None = None) -> AddressSpace:
    end = SRC + (size if populated is None else populated)
    return AddressSpace((Vma(SRC, SRC + size, name="heap"),),
                        PageTables.empty(TARGET.arch).populate(SRC, end))


def _assert_same_run(a, b) -> None:
    for t in a.TABLES:
        pd.testing.assert_frame_equal(a.frame(t), b.frame(t))
    assert a.summary == b.summary
    assert a.run_totals == b.run_totals
    assert a.config == b.config


def _random_stream(rng):
    """A plan stream of one of the kinds a caller takes: Steps, MovePlans (some failing
    with an errno), MoveRequests planned against the mm's space (moved there and back),
    or a generator of plans."""
    kind = int(rng.integers(4))
    if kind == 0:
        return tuple(synthetic_plan(pmd_moves=int(rng.integers(1, 30)),
                                    ptes=int(rng.integers(1, 512)))
                     for _ in range(int(rng.integers(1, 4)))), None
    size = int(rng.choice([4 * KiB, 64 * KiB, 2 * MiB, 6 * MiB + 12 * KiB]))
    populated = int(rng.integers(1, size // (4 * KiB) + 1)) * 4 * KiB
    space = _space(size, populated)
    if kind == 1:
        reqs = (MoveRequest(old_addr=SRC, old_len=size, new_addr=DST),
                MoveRequest(old_addr=DST, old_len=size, new_addr=SRC))
        return reqs, space
    plans = [plan_mremap(space, MoveRequest(old_addr=SRC, old_len=size, new_addr=DST), TARGET),
             # an unaligned source: EINVAL, no row
             plan_mremap(space, MoveRequest(old_addr=SRC + 1, old_len=size, new_addr=DST),
                         TARGET)]
    if kind == 2:
        return tuple(plans), None
    return (p for p in plans), None  # consumed lazily (repeat 1)


def _random_lone_spec(seed: int) -> tuple[SimSpec, dict]:
    rng = np.random.default_rng(seed)
    plans, space = _random_stream(rng)
    cpus = int(rng.integers(1, 5))
    mm_cpus = tuple(range(int(rng.integers(1, cpus + 1))))
    generator = not isinstance(plans, tuple)
    caller = CallerSpec("mover", "app", int(rng.choice(mm_cpus)), plans,
                        repeat=1 if generator else int(rng.integers(1, 4)),
                        interval_ns=int(rng.choice([0, 0, 700, 50_000])),
                        start_ns=int(rng.choice([0, 0, 1, 12_345])))
    mms = (MmSpec("app", mm_cpus, space), MmSpec("idle", (0,)))[:int(rng.integers(1, 3))]
    spec = SimSpec(cpus=cpus, target=TARGET, profile=GENERIC if rng.random() < 0.6 else KVM,
                   mms=mms, callers=(caller,), seed=int(rng.integers(0, 1000)))
    opts = {"fold": bool(rng.random() < 0.8), "reuse": bool(rng.random() < 0.8),
            "max_rows": int(rng.choice([1_000_000, 2]))}
    return spec, opts


def _both(spec: SimSpec, opts: dict):
    """The lone run and the SimPy run of ``spec`` (a generator of plans is given to each
    run as a new generator of the same plans)."""
    plans = spec.callers[0].plans
    if not isinstance(plans, tuple):
        plans = tuple(plans)
        runs = [replace(spec, callers=(replace(spec.callers[0], plans=(p for p in plans)),))
                for _ in range(2)]
    else:
        runs = [spec, spec]
    return simulate(runs[0], **opts), simulate(runs[1], lone=False, **opts)


@pytest.mark.parametrize("seed", range(60))
def test_lone_caller_run_equals_its_simpy_run_on_random_specs(seed):
    spec, opts = _random_lone_spec(seed)
    assert is_lone_caller(spec)
    lone, simpy_run = _both(spec, opts)
    _assert_same_run(lone, simpy_run)


def test_lone_runs_count_the_events_simpy_schedules_for_them():
    """``scheduled_events`` differs between these specs (start time, interval, folding),
    and the lone run gives SimPy's count for each."""
    counts = set()
    for start_ns, interval_ns, fold in [(0, 0, True), (5_000, 0, True), (0, 3_000, True),
                                        (0, 3_000, False), (7, 9, False)]:
        spec = SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0, 1)),),
                       callers=(CallerSpec("mover", "app", 0, (synthetic_plan(),
                                                               synthetic_plan(3, 7)),
                                           repeat=3, interval_ns=interval_ns,
                                           start_ns=start_ns),))
        lone, via_simpy = simulate(spec, fold=fold), simulate(spec, fold=fold, lone=False)
        assert lone.summary["scheduled_events"] == via_simpy.summary["scheduled_events"]
        assert lone.summary["events"] == via_simpy.summary["events"]
        counts.add(lone.summary["scheduled_events"])
    assert len(counts) >= 4


def test_lone_run_of_the_shipped_lone_caller_workload_equals_its_simpy_run():
    from perfsim.workload import load_workload, resolve_workload
    from perfsim.workload.generate import compile_workload

    w = load_workload(resolve_workload("exec_stack"))
    comp = compile_workload(w, resolve_target(w.kernel, w.arch),
                            load_cost_profile(w.cost_profile), np.random.SeedSequence(w.seed))
    spec = replace(comp.spec, callers=tuple(replace(c, plans=list(c.plans)[:60])
                                            for c in comp.spec.callers))
    assert is_lone_caller(spec)
    _assert_same_run(simulate(spec), simulate(spec, lone=False))


def test_a_lone_callers_error_is_raised_as_by_its_simpy_run():
    spec = SimSpec(cpus=1, target=TARGET, profile=GENERIC, mms=(MmSpec("app", (0,)),),
                   callers=(CallerSpec("mover", "app", 0,
                                       (MoveRequest(old_addr=SRC, old_len=4 * KiB,
                                                    new_addr=DST),)),))
    errors = []
    for lone in (True, False):
        with pytest.raises(ValueError) as got:
            simulate(spec, lone=lone)
        errors.append(str(got.value))
    assert errors[0] == errors[1]
    with pytest.raises(ValueError, match="Negative delay") as got:
        simulate(replace(spec, callers=(CallerSpec("mover", "app", 0, (synthetic_plan(),),
                                                   start_ns=-5),)))
    with pytest.raises(ValueError, match="Negative delay"):
        simulate(replace(spec, callers=(CallerSpec("mover", "app", 0, (synthetic_plan(),),
                                                   start_ns=-5),)), lone=False)


def test_only_a_caller_alone_until_it_finishes_is_lone():
    mm = MmSpec("app", (0, 1))
    one = CallerSpec("mover", "app", 0, (synthetic_plan(),))
    base = SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=(mm,), callers=(one,))
    assert is_lone_caller(base)
    assert not is_lone_caller(replace(base, callers=(one, replace(one, name="other",
                                                                     cpu=1))))
    assert not is_lone_caller(replace(base, walkers=(WalkerSpec("w", "anon_vma:heap", 1,
                                                                1000, 100),)))
    assert not is_lone_caller(replace(base, users=(UserSpec("u", "app", 1),)))
    assert not is_lone_caller(replace(base, duration_ns=10_000))
    assert not is_lone_caller(replace(base, callers=()))
