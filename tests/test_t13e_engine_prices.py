"""Eighth pass, engine side: a periodic plan's rows looked up in the row memo in one pass
(``model._periodic_totals``: every row's memo entry under its columns and the mm's CPUs),
and a record table copied from its prototype in one dict display (``records.Table.like``).
Held to the definitions they replace: the totals-free pricing of the same pieces
(``model._priced_alone``), the materialised plan's column pricing, and a
table made by the constructor."""

from __future__ import annotations

import numpy as np
import pytest
from test_t13_price_counts import _distinct_profile, random_steps

from perfsim.cost.model import (
    RowCosts,
    periodic_layout,
    periodic_prices,
    vector_row_costs,
)
from perfsim.engine.records import _RECORDER_TABLES, Table
from perfsim.planner import steps as S


def _few_phase_plan(rng: np.random.Generator) -> S.Steps:
    """Dense parts and periodic blocks whose phases are drawn from two values only, so a
    part's first row has the phase of the row before it about half the time, and dense
    parts change phase inside them too (a row's price must not depend on the row before
    it: the first-row charges are the only charges that look back)."""
    parts = []
    for _ in range(int(rng.integers(1, 5))):
        if rng.random() < 0.6:
            d = random_steps(rng, int(rng.integers(1, 7)))
            d.cols["phase"][:] = rng.integers(0, 2, len(d))
            parts.append(d)
        t = random_steps(rng, int(rng.integers(1, 5)))
        t.cols["phase"][:] = int(rng.integers(0, 2))
        reps = int(rng.integers(1, 60))
        overrides = {}
        if rng.random() < 0.5:
            m = int(rng.integers(1, min(4, reps * len(t)) + 1))
            pos = rng.choice(reps * len(t), m, replace=False)
            col = str(rng.choice(["flushes", "ptes", "alloc_pte"]))
            overrides[col] = (pos, rng.integers(0, 3, m).astype(t.cols[col].dtype))
        parts.append(S.PeriodicBlock(t, reps, 4096, 8192, overrides))
    if rng.random() < 0.5:
        d = random_steps(rng, int(rng.integers(1, 5)))
        d.cols["phase"][:] = rng.integers(0, 2, len(d))
        parts.append(d)
    return S.Steps(parts=parts)


@pytest.mark.parametrize("seed", range(6))
def test_the_periodic_totals_pass_prices_as_the_totals_free_pass_and_the_columns(seed):
    """Per-row costs, counts, sums and first-row charges of the totals pass equal the
    totals-free pass's and the
    materialised plan's column pricing, through a fresh memo and a shared warm one."""
    rng = np.random.default_rng(1300 + seed)
    prof = _distinct_profile()
    warm: dict = {}
    seen = 0
    for _ in range(14):
        plan = _few_phase_plan(rng)
        pieces = periodic_layout(plan)
        if pieces is None:
            continue
        seen += 1
        dense = S.Steps(plan.cols, plan.lock_sets, plan.lock_set)
        for cpus in (None, 1, 3):
            want = vector_row_costs(dense, prof, cpus=cpus)
            for memo in ({}, warm):
                got = periodic_prices(pieces, prof, cpus, None, prof.medians_ns, memo)
                alone = periodic_prices(pieces, prof, cpus, None, prof.medians_ns, {},
                                        totals=False)
                assert got[:4] == alone[:4]
                rc = RowCosts.of_periodic(plan, pieces, got, prof.medians_ns, None)
                assert np.array_equal(rc.total, want.total)
                assert np.array_equal(rc.ipis, want.ipis)
                assert got[2] == list(want.category_sums().values())
    assert seen >= 8


@pytest.mark.parametrize("name,columns,numeric", _RECORDER_TABLES)
def test_a_table_made_like_its_prototype_is_a_new_empty_table(name, columns, numeric):
    """``Table.like`` gives what the constructor gives for the same name, columns and
    numeric columns, sharing no list or dict with the prototype (rows added to one never
    reach the other)."""
    proto = Table(name, columns, max_rows=5, numeric=numeric)
    made = Table(name, columns, max_rows=5, numeric=numeric)
    got = Table.like(proto)
    assert list(vars(got)) == list(vars(made))
    assert vars(got) == vars(made)
    for attr in ("_rows", "_chunks", "_sums", "_maxes"):
        assert getattr(got, attr) is not getattr(proto, attr)
    got.add_row(tuple(range(len(columns))))
    assert proto.total == 0 and not proto._rows and proto.summary() == made.summary()
    assert got.summary()["rows"] == 1
    if numeric:
        assert got.sums != proto.sums


@pytest.mark.parametrize("seed", range(4))
def test_the_first_paying_row_is_the_first_whose_trigger_count_is_above_zero(seed):
    """``model._first_paying`` (builtins) is the first row, in order, whose count at the
    trigger is above 0 (None when none is), on random count tuples of ints and bools."""
    from perfsim.cost.model import _first_paying

    rng = np.random.default_rng(1400 + seed)
    for _ in range(300):
        n = int(rng.integers(0, 8))
        width = int(rng.integers(1, 6))
        rows = [tuple(bool(v) if rng.random() < 0.3 else int(v)
                      for v in rng.integers(-2, 3, width)) for _ in range(n)]
        at = int(rng.integers(0, width))
        want = next((i for i, c in enumerate(rows) if c[at] > 0), None)
        assert _first_paying(rows, at) == want
