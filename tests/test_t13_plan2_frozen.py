"""The planner's records built by :func:`perfsim.planner.frozen.direct_init` are the records
the dataclass's own ``__init__`` builds; :func:`perfsim.planner.tlb.flush_of` is ``Flush``."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
import random

import numpy as np
import pytest

from perfsim.mm.vma import Vma
from perfsim.planner.frozen import direct_init
from perfsim.planner.pgtable_move import EntryRow, MoveGates
from perfsim.planner.realign import PageTableMoveControl
from perfsim.planner.result import MoveRequest
from perfsim.planner.steps import StepLog
from perfsim.planner.tlb import Flush, flush_of
from perfsim.planner.unmap import UnmapRegion
from perfsim.planner.vma_remap import MovedRange, VmaRemap
from perfsim.profiles import resolve_target

TARGET = resolve_target("6.18", "x86_64")


def _cases(rng: random.Random):
    """(class, positional args, keyword args) for each decorated class, on varied values."""
    for _ in range(50):
        a, b = rng.randrange(1 << 30) << 12, rng.randrange(1 << 30) << 12
        va, vb = Vma(a, a + 4096), Vma(b, b + 8192, backing="file", file_id="f")
        yield MovedRange, (a, a + 4096, b, rng.randrange(4096), rng.random() < .5, "R4a",
                           rng.random() < .5, "reference"), {"reverted": rng.random() < .5}
        yield MovedRange, (a, a + 4096, b, 0, False, "", True, "fast"), {}
        yield UnmapRegion, (a, a + 4096, 0, rng.randrange(1 << 40), (a, a + 8192)), \
            {"forcing": ((a, a + 4096),) * rng.randrange(3)}
        yield UnmapRegion, (a, a + 4096, a, 0, (a, a + 4096)), {}
        flush = flush_of(rng.random() < .5, rng.randrange(40), rng.randrange(8))
        yield MoveGates, (rng.random() < .5, ("i_mmap:f",), (), None), \
            {"normal_moves_tried": rng.random() < .5}
        yield EntryRow, (rng.randrange(20), rng.randrange(512), flush, 1, ("anon_vma:x",)), {}
        yield PageTableMoveControl, (va, vb, a, b, 4096 * rng.randrange(1, 9)), \
            {"need_rmap_locks": rng.random() < .5}
        yield PageTableMoveControl, (va, vb, a, b, 4096), {"for_stack": True}
        yield MoveRequest, (a, 4096 * rng.randrange(1, 9)), {
            "new_len": rng.choice([None, 8192]), "new_addr": rng.choice([None, b]),
            "fixed": rng.random() < .5, "dontunmap": rng.random() < .5,
            "fail_alloc_at": rng.choice([None, 1, 3]), "extra_flags": rng.choice([0, 8])}
        yield MoveRequest, (a, 4096, 4096, b, False, False, True, True, 2, 16), {}
        yield StepLog, (), {}
        yield StepLog, ([(1, 2)],), {"lock_names": [("x",)]}
        yield VmaRemap, (a, 4096, 8192, b, True, False, False, 0, TARGET, None, StepLog(),
                         None), {"fail_alloc_at": rng.choice([None, 2]),
                                 "moved": rng.choice([[], [1]]), "delta": 5}
        yield VmaRemap, (a, 4096, 8192, b, True, False, False, 0, TARGET, None, StepLog(),
                         None), {}


DECORATED = (MovedRange, UnmapRegion, MoveGates, EntryRow, PageTableMoveControl,
             MoveRequest, VmaRemap, StepLog)
FROZEN = (MovedRange, UnmapRegion, MoveGates, EntryRow, MoveRequest)


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_direct_init_keeps_the_dataclass_signature(cls):
    ours, theirs = (inspect.signature(f).parameters.values()
                    for f in (cls.__init__, cls.__dataclass_init__))
    for p, q in zip(ours, theirs, strict=True):
        assert (p.name, p.kind, p.annotation) == (q.name, q.kind, q.annotation)
        if repr(q.default) == "<factory>":  # made per instance when not given
            assert repr(p.default) == "<factory>"
        else:
            assert p.default is q.default


def test_direct_init_builds_what_the_dataclass_init_builds():
    rng = random.Random(13)
    for cls, args, kwargs in _cases(rng):
        ours = cls(*args, **kwargs)
        theirs = object.__new__(cls)
        cls.__dataclass_init__(theirs, *args, **kwargs)
        assert vars(ours) == vars(theirs)
        assert list(vars(ours)) == list(vars(theirs))  # same attribute order
        assert repr(ours) == repr(theirs)
        if cls.__hash__ is not None:
            assert ours == theirs and hash(ours) == hash(theirs)
        if cls in FROZEN:  # the records plans carry (and caches pickle)
            back = pickle.loads(pickle.dumps(ours))
            assert back == ours and vars(back) == vars(ours)
        assert vars(copy.copy(ours)) == vars(ours)
        for name, value in vars(ours).items():  # a default_factory value is made per instance
            if isinstance(value, list) and name not in kwargs and len(args) <= list(
                    vars(ours)).index(name):
                assert value is not getattr(cls(*args, **kwargs), name)
        if cls is not VmaRemap:
            changed = dataclasses.replace(ours)
            assert vars(changed) == vars(ours)


def test_direct_init_keeps_frozen_classes_frozen():
    r = MovedRange(0, 4096, 8192, 4096, False, "", False, "reference")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.progress_bytes = 0  # type: ignore[misc]


def test_direct_init_refuses_a_field_it_cannot_set_the_same_way():
    @dataclasses.dataclass
    class KeywordOnly:
        x: int = dataclasses.field(default=0, kw_only=True)

    @dataclasses.dataclass
    class NotInit:
        x: int = dataclasses.field(default=0, init=False)

    @dataclasses.dataclass(slots=True)
    class Slotted:
        x: int

    for cls in (KeywordOnly, NotInit, Slotted):
        with pytest.raises(TypeError, match="direct_init"):
            direct_init(cls)


def test_direct_init_refuses_a_missing_argument_as_the_dataclass_does():
    with pytest.raises(TypeError):
        UnmapRegion(0, 4096, 0)  # type: ignore[call-arg]


def test_flush_of_is_the_flush_of_its_fields():
    rng = random.Random(5)
    for _ in range(500):
        full, pages, ipis = rng.random() < .5, rng.randrange(100), rng.randrange(64)
        f = flush_of(full, pages, ipis)
        assert f == Flush(full, pages, ipis) and repr(f) == repr(Flush(full, pages, ipis))
        assert type(f.pages) is int and type(f.full) is bool
    # a numpy integer stays a numpy integer, as in a constructed Flush
    f = flush_of(False, np.int64(3), 0)
    assert type(f.pages) is np.int64 and flush_of(False, 3, 0).pages.__class__ is int
