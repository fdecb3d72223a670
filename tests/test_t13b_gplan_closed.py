"""The closed-form move's shortcuts (perfsim.planner.fast_closed) held to what they replace.

``Progressions.bounds`` to ``bound`` one at a time; ``_all_equal`` (a byte comparison) to
numpy's element comparison; the flush-table memo keyed by the target's identity to
``flush_lookup``; the closed form's dense parts, kept as row tuples, to their columns; a
periodic block's phase read from its template's rows to the one read from its columns.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_t13_big_closed import BASE, _closed_and_array, _space

from perfsim import resolve_target
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.fast_closed import Progressions, _all_equal, _flush_lists
from perfsim.planner.tlb import flush_lookup

K, M, G = 1 << 10, 1 << 20, 1 << 30


@given(st.integers(0, 1 << 20), st.integers(0, 1 << 20), st.integers(1, 40 << 9),
       st.sampled_from([1 << 9, 1 << 11, 1 << 12]), st.data())
@settings(max_examples=300, deadline=None)
def test_progression_bounds_are_each_bound(src_pages, dst_pages, pages, ptrs, data):
    pg, pmd = 4096, 4096 * ptrs
    o0, n0 = src_pages * pg, (dst_pages + (1 << 30)) * pg
    ext = Progressions.of(o0, n0, o0 + pages * pg, pmd)
    lo = data.draw(st.integers(0, ext.n_ext))
    hi = data.draw(st.integers(lo, ext.n_ext))
    assert ext.bounds(lo, hi) == [ext.bound(i) for i in range(lo, hi + 1)]


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("seed", range(20))
def test_all_equal_is_every_element_equal(dtype, seed):
    rng = random.Random(seed)
    n = rng.randrange(0, 700)
    v = rng.choice((0, 1, 2, 77))
    x = np.full(n, v, dtype)
    if n and rng.random() < 0.5:
        x[rng.randrange(n)] = rng.choice((0, 1, 3, 127))
    for value in (v, 1, 0):
        assert _all_equal(x, value) == bool((x == value).all())
    assert _all_equal(x[1:-1], v) == bool((x[1:-1] == v).all())


@pytest.mark.parametrize("cpus,lazy", [(1, 0), (3, 1), (8, 0)])
def test_flush_lists_are_flush_lookups_table(cpus, lazy):
    t = resolve_target("6.18", "x86_64")
    twin = resolve_target("6.18", "x86_64").with_changes(single_page_flush_ceiling=1)
    for target in (t, twin, t):
        full, pages, ipis = _flush_lists(target, 12, cpus, lazy, 512)
        f = flush_lookup(target, 12, cpus, lazy, 512)
        assert (full, pages, ipis) == (f.full.tolist(), f.pages.tolist(), f.ipis.tolist())


@pytest.mark.parametrize("length", [64 * M, G, 3 * G + 6 * M])
def test_the_closed_forms_dense_parts_keep_rows_equal_to_the_array_paths(length):
    t = resolve_target("6.18", "x86_64")
    src, dst = BASE + 2 * M + 4 * K, BASE + 8 * G + 6 * M + 8 * K
    space = _space(t, Vma(src, src + length, name="heap"), [(src, src + length)])
    (sc, _), (sa, _) = _closed_and_array(t, space, src, length, dst)
    for pc, pa in zip(sc.parts(), sa.parts(), strict=True):
        if isinstance(pc, S.PeriodicBlock):
            assert pc.phase == pa.phase == S.MOVE
            pc = pc.template
            pa = pa.template
        rows, locks = pc.row_tuples
        assert all(type(v) is int for r in rows for v in r)
        assert locks == pa.lock_names_per_row()
        for j, name in enumerate(S.ROW_FIELDS):
            assert [r[j] for r in rows] == pa.col(name).tolist(), name
            assert pc.col(name).dtype == pa.col(name).dtype, name


def test_a_periodic_blocks_phase_reads_its_template_rows_or_columns():
    log = S.StepLog()
    for i in range(3):
        log.add(S.UNMAP_SRC, S.K_ZAP, i << 12, 0, 4096, ptes=1)
    from_rows = log.freeze()
    from_cols = S.Steps(dict(from_rows.cols), from_rows.lock_sets, from_rows.lock_set)
    assert from_rows.row_tuples is not None and from_cols.row_tuples is None
    a = S.PeriodicBlock(from_rows, 4, 1 << 21, 1 << 21)
    b = S.PeriodicBlock(from_cols, 4, 1 << 21, 1 << 21)
    assert a.phase == b.phase == S.UNMAP_SRC
    mixed = S.StepLog()
    mixed.add(S.MOVE, S.K_PTE_MOVE)
    mixed.add(S.UNMAP_SRC, S.K_ZAP)
    with pytest.raises(AssertionError):
        S.PeriodicBlock(mixed.freeze(), 2, 0, 0)


@pytest.mark.parametrize("seed", range(30))
def test_columns_of_few_rows_equal_the_fromiter_columns(seed, monkeypatch):
    """``_columns_of_rows`` converts up to ``_FEW_ROWS`` rows with one ``np.array`` per
    dtype: the same columns (values, dtypes, contiguity) and lock ids as ``np.fromiter``."""
    rng = random.Random(seed)
    n = rng.randrange(0, 2 * S._FEW_ROWS)
    rows = [tuple(rng.randrange(-(1 << 40), 1 << 40) if f in S.ADDR_COLUMNS else
                  rng.randrange(0, 1 << 20) for f in S.ROW_FIELDS) for _ in range(n)]
    locks = [rng.choice(((), ("anon_vma",), ("anon_vma", "i_mmap"))) for _ in range(n)]
    sets = S._lock_sets_of(locks)
    few, few_ids = S._columns_of_rows(rows, locks, sets)
    monkeypatch.setattr(S, "_FEW_ROWS", -1)
    many, many_ids = S._columns_of_rows(rows, locks, sets)
    assert few.keys() == many.keys()
    for name in S.ROW_FIELDS:
        a, b = few[name], many[name]
        assert a.dtype == b.dtype and a.shape == b.shape == (n,), name
        assert a.flags.c_contiguous and np.array_equal(a, b), name
    assert few_ids.dtype == many_ids.dtype and np.array_equal(few_ids, many_ids)
