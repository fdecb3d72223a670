"""A run's fixed cost (issue 13, sixth pass): what a run of one call skips gives the same
records as the general path: a one-call run keys and keeps no call template
(``TemplateCache(single=True)``, ``machine._one_call``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_cost import synthetic_plan

from perfsim.cost import load_cost_profile
from perfsim.engine import CallerSpec, MmSpec, SimSpec, simulate
from perfsim.engine.machine import Machine, _one_call
from perfsim.engine.records import Recorder
from perfsim.engine.reuse import RunCaches
from perfsim.mm import AddressSpace, PageTables, Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.profiles import resolve_target

TARGET = resolve_target("6.18", "x86_64")
GENERIC = load_cost_profile("x86_64-generic")
KiB, MiB = 1 << 10, 1 << 20
SRC = 0x7F0000200000 + 4 * KiB
DST = 0x7F4000600000 + 8 * KiB


def _plan(size: int):
    space = AddressSpace((Vma(SRC, SRC + size, name="heap"),),
                         PageTables.empty(TARGET.arch).populate(SRC, SRC + size))
    return plan_mremap(space, MoveRequest(old_addr=SRC, old_len=size, new_addr=DST), TARGET)


def _spec(plans, repeat=1, mm_cpus=(0, 1)) -> SimSpec:
    return SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=(MmSpec("app", mm_cpus),),
                   callers=(CallerSpec("mover", "app", 0, plans, repeat=repeat),))


def test_a_run_makes_one_call_exactly_when_one_caller_has_one_plan_not_repeated():
    p = synthetic_plan()
    assert _one_call(_spec((p,)))
    assert _one_call(_spec([p]))
    assert not _one_call(_spec((p,), repeat=2))
    assert not _one_call(_spec((p, p)))
    assert not _one_call(_spec(x for x in (p,)))
    two = _spec((p,))
    two = SimSpec(cpus=2, target=TARGET, profile=GENERIC, mms=two.mms,
                  callers=(*two.callers, CallerSpec("other", "app", 1, (p,))))
    assert not _one_call(two)


def test_a_one_call_run_keeps_no_template_unless_it_shares_a_store():
    spec = _spec((synthetic_plan(),))
    m = Machine(spec, Recorder())
    assert m.templates.single
    caches = RunCaches()
    assert not Machine(spec, Recorder(), caches=caches).templates.single
    simulate(spec, caches=caches)
    assert len(caches.templates) == 1  # kept for the batch's next runs


@pytest.mark.parametrize("seed", range(10))
def test_one_call_runs_equal_runs_that_key_their_template(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.choice([4 * KiB, 2 * MiB + 8 * KiB, 6 * MiB]))
    plan = _plan(size) if rng.random() < 0.7 else synthetic_plan(int(rng.integers(1, 9)))
    mm_cpus = tuple(range(int(rng.integers(1, 3))))
    single = simulate(_spec((plan,), mm_cpus=mm_cpus))
    for other in (simulate(_spec((plan,), mm_cpus=mm_cpus), reuse=False),
                  simulate(_spec((plan,), mm_cpus=mm_cpus), caches=RunCaches())):
        for t in single.TABLES:
            pd.testing.assert_frame_equal(single.frame(t), other.frame(t))
        assert single.summary == other.summary


def test_a_table_made_like_an_empty_one_is_the_table_the_constructor_makes():
    from pathlib import Path

    from perfsim.engine.records import CALL_COLUMNS, CALL_NUMERIC, Table

    for kwargs in ({}, {"max_rows": 3, "spill_dir": Path("/nonexistent/spill")}):
        proto = Table("calls", CALL_COLUMNS, numeric=CALL_NUMERIC, **kwargs)
        made = Table.like(proto)
        fresh = Table("calls", CALL_COLUMNS, numeric=CALL_NUMERIC, **kwargs)
        assert made.__dict__ == fresh.__dict__
        for name in ("_rows", "_chunks", "_sums", "_maxes"):  # its own, not the prototype's
            assert getattr(made, name) is not getattr(proto, name)
        made.add(*range(len(CALL_COLUMNS)))
        assert proto.total == 0 and not proto._rows and made.total == 1
        assert proto.summary() == fresh.summary()


@pytest.mark.parametrize("name", ["MmSpec", "CallerSpec", "WalkerSpec", "UserSpec", "SimSpec"])
def test_a_specs_fast_init_makes_what_the_dataclass_init_makes(name):
    import dataclasses
    import inspect

    from perfsim.engine import spec as specs

    cls = getattr(specs, name)
    ref = dataclasses.make_dataclass(
        name, [(f.name, f.type, dataclasses.field(default=f.default,
                                                   default_factory=f.default_factory))
               for f in dataclasses.fields(cls)], frozen=True)
    got, want = inspect.signature(cls), inspect.signature(ref)
    assert [(p.name, p.kind, repr(p.default)) for p in got.parameters.values()] == \
        [(p.name, p.kind, repr(p.default)) for p in want.parameters.values()]
    fs = dataclasses.fields(cls)
    required = [f for f in fs if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    rng = np.random.default_rng(len(name))
    for _ in range(20):
        args = [object() for _ in required]
        kwargs = {f.name: object() for f in fs[len(required):] if rng.random() < 0.5}
        a, b = cls(*args, **kwargs), ref(*args, **kwargs)
        assert a.__dict__ == b.__dict__
        kw = {f.name: v for f, v in zip(required, args, strict=True)} | kwargs
        assert cls(**kw).__dict__ == b.__dict__
    made = [cls(*[object() for _ in required]) for _ in range(2)]
    for f in fs:  # a default_factory's value is made per instance
        if f.default_factory is not dataclasses.MISSING:
            assert getattr(made[0], f.name) is not getattr(made[1], f.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].name = "x"


def test_fast_init_refuses_a_dataclass_with_a_post_init():
    """Its one-update ``__init__`` would never call ``__post_init__``: such a class is
    refused when it is decorated, not silently left unchecked."""
    import dataclasses

    from perfsim.engine.spec import fast_init

    @dataclasses.dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("n < 0")

    with pytest.raises(TypeError, match="__post_init__"):
        fast_init(Checked)
