"""A synthetic stream's per-call draws (issue 13): converted from columns, the same values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perfsim.workload import load_workload, resolve_workload, workload_names
from perfsim.workload.generate import CHUNK, CallDraw, SyntheticDraws, draws_of

TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _definition(columns) -> list[CallDraw]:
    """Each field of call i converted from the numpy scalar ``column[i]``."""
    fields = dataclasses.fields(CallDraw)
    n = len(columns[0])
    return [CallDraw(*(TYPES[f.type](col[i]) for f, col in zip(fields, columns, strict=True)))
            for i in range(n)]


def _synthetic():
    for name in workload_names():
        w = load_workload(resolve_workload(name))
        for i, s in enumerate(w.streams):
            if hasattr(s, "src_align"):
                yield name, i, s


@pytest.mark.parametrize(("name", "index", "stream"), list(_synthetic()),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_call_draws_are_each_columns_value_converted_to_the_fields_type(name, index, stream):
    for seed in (5, 11):
        draws = SyntheticDraws(stream, np.random.SeedSequence(seed), index)
        for _ in range(2):
            cols = draws._columns()
            got, want = draws_of(cols), _definition(cols)
            assert got == want
            for g, w in zip(got, want, strict=True):
                assert [type(getattr(g, f.name)) for f in dataclasses.fields(CallDraw)] == \
                    [type(getattr(w, f.name)) for f in dataclasses.fields(CallDraw)]
                assert hash(g) == hash(w)


def test_call_draws_of_a_stream_come_in_chunks_of_the_same_calls():
    name, index, stream = next(_synthetic())
    a = iter(SyntheticDraws(stream, np.random.SeedSequence(3), index))
    b = SyntheticDraws(stream, np.random.SeedSequence(3), index)
    first = [next(a) for _ in range(300)]
    assert first == b._chunk() + b._chunk()[:300 - CHUNK]
