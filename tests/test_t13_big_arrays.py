"""Array helpers of the vectorised planner (perfsim.planner.bitmaps) hold to the numpy
functions they replace."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfsim.planner.bitmaps import insert_sorted


@given(st.lists(st.integers(-2**40, 2**40), max_size=40),
       st.lists(st.tuples(st.integers(0, 1000), st.integers(-100, 100)), max_size=12))
@settings(max_examples=300, deadline=None)
def test_insert_sorted_is_np_insert_at_non_decreasing_positions(base, inserts):
    a = np.array(sorted(base), np.int64)
    k = np.arange(len(a), dtype=np.int8)
    pos = np.array(sorted(p % (len(a) + 1) for p, _ in inserts), np.int64)
    va = np.array([v for _, v in inserts], np.int64)
    vk = np.array([v for _, v in inserts], np.int8)
    got = insert_sorted((a, k), pos, (va, vk))
    for g, want in zip(got, (np.insert(a, pos, va), np.insert(k, pos, vk)), strict=True):
        assert g.dtype == want.dtype
        assert np.array_equal(g, want)


@given(st.one_of(st.integers(-2**31, 2**31 - 1), st.booleans(),
                 st.integers(0, 2**31 - 1).map(np.int64), st.booleans().map(np.bool_)),
       st.sampled_from([np.int32, np.int64, np.int8]), st.integers(0, 50))
@settings(max_examples=200, deadline=None)
def test_zero_stride_is_broadcast_to(v, dtype, n):
    from perfsim.planner.fast_rows import zero_stride
    if dtype is np.int8 and not -128 <= int(v) < 128:
        return
    want = np.broadcast_to(np.asarray(v, dtype=dtype), (n,))
    got = zero_stride(v, dtype, n)
    assert got.dtype == want.dtype and got.shape == want.shape and got.strides == want.strides
    assert np.array_equal(got, want)
    assert not got.flags.writeable


@given(st.lists(st.integers(-3, 3), max_size=30), st.sampled_from([bool, np.int8, np.int32, np.int64]))
@settings(max_examples=200, deadline=None)
def test_any_all_where_set_are_the_numpy_reductions(values, dtype):
    from perfsim.planner.bitmaps import all_set, any_set, where_set
    x = np.array(values, dtype)
    assert any_set(x) is bool(x.any())
    assert all_set(x) is bool(x.all())
    w = where_set(x)
    assert w.dtype == np.flatnonzero(x).dtype and np.array_equal(w, np.flatnonzero(x))


@given(st.integers(0, 40), st.integers(-5, 5), st.sampled_from([bool, np.int8, np.int32, np.int64]))
@settings(max_examples=100, deadline=None)
def test_filled_is_np_full(n, value, dtype):
    from perfsim.planner.bitmaps import filled
    want = np.full(n, value, dtype)
    got = filled(n, value, dtype)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@given(st.lists(st.integers(-2**40, 2**40), max_size=30), st.integers(-10, 10), st.integers(0, 50),
       st.sampled_from([np.int32, np.int64]))
@settings(max_examples=150, deadline=None)
def test_clipped_is_np_clip(values, lo, span, dtype):
    from perfsim.planner.bitmaps import clipped
    x = np.array([v % 2**31 if dtype is np.int32 else v for v in values], dtype)
    want = np.clip(x, lo, lo + span)
    got = clipped(x, lo, lo + span)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@given(st.lists(st.integers(0, (1 << 512) - 1), min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 512), st.integers(0, 512)),
                min_size=1, max_size=20))
@settings(max_examples=150, deadline=None)
def test_bits_in_rows_few_ids_path_equals_the_prefix_count_path(table_ints, picks):
    import perfsim.planner.bitmaps as B
    from perfsim.mm.pagetable import _int_to_words
    table = np.stack([_int_to_words(v, 8) for v in table_ints])
    ids = np.array([i % len(table_ints) for i, _, _ in picks], np.int64)
    lo = np.array([min(a, b) for _, a, b in picks], np.int64)
    hi = np.array([max(a, b) for _, a, b in picks], np.int64)
    few = B.bits_in_rows(table, ids, lo, hi)
    saved = B.FEW_IDS
    try:
        B.FEW_IDS = 0
        arrays = B.bits_in_rows(table, ids, lo, hi)
    finally:
        B.FEW_IDS = saved
    assert few.dtype == arrays.dtype and np.array_equal(few, arrays)


@pytest.mark.parametrize("n", [0, 1, 1023, 1024, 1025, 5000])
@pytest.mark.parametrize("fill", ["none", "one", "all", "random"])
def test_reductions_on_long_and_short_arrays(n, fill):
    from perfsim.planner.bitmaps import all_set, any_set, clipped, where_set
    rng = np.random.default_rng(n)
    x = {"none": np.zeros(n, bool), "all": np.ones(n, bool),
         "random": rng.random(n) < 0.5}.get(fill)
    if x is None:
        x = np.zeros(n, bool)
        x[n // 2:n // 2 + 1] = True
    assert any_set(x) is bool(x.any()) and all_set(x) is bool(x.all())
    assert np.array_equal(where_set(x), np.flatnonzero(x))
    v = rng.integers(-50, 5000, n)
    assert np.array_equal(clipped(v, 3, 4000), np.clip(v, 3, 4000))
