"""Issue 13, seventh pass: a periodic plan's totals summed in packed lanes
(``perfsim.cost.lanes``), held to their definition: the weighted sum lane by lane, and the
plan's sums of its materialised rows."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.cost import lanes
from perfsim.cost.counts import ROW_PARAMS
from perfsim.cost.model import (
    CATEGORIES,
    N_LANES,
    periodic_layout,
    periodic_prices,
    vector_row_costs,
)


def _definition(weights, vectors):
    return [sum(w * v[i] for w, v in zip(weights, vectors, strict=True))
            for i in range(len(vectors[0]))]


@pytest.mark.parametrize("seed", range(10))
def test_a_weighted_sum_of_packed_lanes_is_the_sum_lane_by_lane(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        n, m = int(rng.integers(1, 20)), int(rng.integers(1, 50))
        top = int(rng.choice([2, 1000, 1 << 20, lanes.VALUE_LIMIT]))
        vectors = [tuple(int(v) for v in rng.integers(0, top, m)) for _ in range(n)]
        weights = [int(w) for w in rng.integers(0, int(rng.choice([2, 600, 1 << 20])), n)]
        packed = [lanes.pack(v) for v in vectors]
        assert None not in packed
        assert lanes.weighted_sum(weights, vectors, packed) == _definition(weights, vectors)


def test_the_largest_values_and_weights_still_sum_exactly():
    big = lanes.VALUE_LIMIT - 1
    vectors = [(big, 0, big), (big, big, 1)]
    weights = [lanes.VALUE_LIMIT // 2 - 1, lanes.VALUE_LIMIT // 2]  # summing to LIMIT - 1
    got = lanes.weighted_sum(weights, vectors, [lanes.pack(v) for v in vectors])
    assert got == _definition(weights, vectors)
    assert got[0] < 1 << lanes.LANE_BITS


@pytest.mark.parametrize("values", [(-1, 0), (0, lanes.VALUE_LIMIT), (1 << 70,), ()])
def test_a_value_that_cannot_be_packed_exactly_packs_to_none(values):
    assert lanes.pack(values) is None


@pytest.mark.parametrize("case", ["unpacked", "negative", "too_many", "not_int"])
def test_what_cannot_be_summed_packed_is_summed_lane_by_lane(case):
    vectors = [(3, -2, 5), (1, 2, 3)] if case == "negative" else [(3, 2, 5), (1, 2, 3)]
    weights = [2, 5]
    packed = [lanes.pack(v) for v in vectors]
    if case == "unpacked":
        packed[1] = None
    elif case == "too_many":
        weights = [lanes.VALUE_LIMIT, 1]
    elif case == "not_int":
        weights = [np.int64(2), 5]
    assert lanes.weighted_sum(weights, vectors, packed) == _definition(weights, vectors)


@pytest.mark.parametrize("seed", range(5))
def test_lane_sums_are_the_weighted_sums_lane_by_lane(seed):
    rng = np.random.default_rng(50 + seed)
    for _ in range(40):
        n, m = int(rng.integers(1, 16)), int(rng.integers(1, 30))
        vectors = [tuple(int(v) for v in rng.integers(-1000, 1000, m)) for _ in range(n)]
        weights = [int(w) for w in rng.choice([0, 1, 1, 1, 2, 509], n)]
        assert lanes.lane_sums(weights, vectors) == _definition(weights, vectors)
    assert lanes.lane_sums([], []) == []


def test_lanes_unpack_what_they_packed():
    v = (0, 1, 7, lanes.VALUE_LIMIT - 1, 12345)
    assert lanes.unpack(lanes.pack(v), len(v)) == v


def test_a_rows_lanes_are_its_categories_counts_and_flags():
    assert N_LANES == len(CATEGORIES) + len(ROW_PARAMS) + 3


@pytest.mark.parametrize("seed", range(4))
def test_a_periodic_plans_totals_are_the_sums_of_its_materialised_rows(seed):
    """Sums over seeded random periodic plans (blocks with overrides, dense parts), with
    the lanes packed and with them summed one by one: per category, per count, the rows
    that flush, their widest shootdown, the IPIs and the rows taking rmap locks."""
    from test_t13_price_counts import _distinct_profile, random_steps
    from test_t13b_geng_periodic import _dense, _plans

    from perfsim.cost.model import _ROW, _count_matrix, column_lists, scalar_row_costs
    from perfsim.planner import steps as S

    rng = np.random.default_rng(700 + seed)
    prof = _distinct_profile()
    shared: dict = {}  # one row memo for every plan, partly filled by small plans' pricing
    seen = 0
    for plan in _plans(rng, 12):
        pieces = periodic_layout(plan)
        if pieces is None:
            continue
        seen += 1
        scalar_row_costs(column_lists(random_steps(rng, 8)), prof, 3, None, shared)
        dense = _dense(S.Steps(parts=plan.parts()))
        for cpus in (None, 1, 3):
            for memo in ({}, None, shared):
                _costs, _counts, sums, _firsts, totals = periodic_prices(
                    pieces, prof, cpus, None, prof.medians_ns, memo)
                want = vector_row_costs(dense, prof, cpus=cpus)
                assert sums == list(want.category_sums().values())
                matrix = _count_matrix(dense, want.ipis, None)
                assert totals.counts == [int(matrix[_ROW[p]].sum()) for p in ROW_PARAMS]
                flushing = dense.cols["flushes"] != 0
                assert totals.flush_rows == int(np.count_nonzero(flushing))
                assert totals.top == int(want.ipis[flushing].max(initial=0))
                assert totals.ipis == int(want.ipis.sum())
                assert totals.rmap_rows == int(np.count_nonzero(dense.cols["rmap"] > 0))
                alone = periodic_prices(pieces, prof, cpus, None, prof.medians_ns, memo,
                                        totals=False)
                assert alone[:4] == (_costs, _counts, sums, _firsts) and alone[4] is None
    assert seen >= 6


@pytest.mark.parametrize("seed", range(3))
def test_periodic_prices_through_a_warm_memo_equal_prices_through_a_fresh_one(seed):
    """Rows found in a memo other plans and CPU counts filled (under both of its key
    forms, ``model._periodic_entry``) price a plan as a memo of its own does."""
    from test_t13_price_counts import _distinct_profile
    from test_t13b_geng_periodic import _plans

    rng = np.random.default_rng(800 + seed)
    prof = _distinct_profile()
    warm: dict = {}
    plans = [p for p in _plans(rng, 12) if periodic_layout(p) is not None]
    assert len(plans) >= 4
    for _ in range(2):  # the second pass finds every row in the warm memo
        for plan in plans:
            for cpus in (None, 1, 2, 4):
                got = periodic_prices(periodic_layout(plan), prof, cpus, None,
                                      prof.medians_ns, warm)
                want = periodic_prices(periodic_layout(plan), prof, cpus, None,
                                       prof.medians_ns)
                assert got[:4] == want[:4]
                assert vars_of(got[4]) == vars_of(want[4])


def vars_of(totals) -> dict:
    return {k: getattr(totals, k) for k in totals.__slots__}
