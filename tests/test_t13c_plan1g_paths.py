"""The 1 GiB move's plan with less read per plan (issue 13, sixth pass): each shortcut
held to the path or the definition it stands for.

* The source's unmap after a closed-form move reads the state before the move: its PUD
  entries, its PMD counts and whether the move left a present PTE in an edge slot come
  from what ``_regular_shape`` read (``_Shape.view_l``, ``view_k``, ``below``, ``left``):
  each equals what the made state's arrays (``_ArraysView``) hold.
* ``_regular_shape`` reads a state of few PUD entries as two lists searched by bisection:
  the same shape as the numpy search of its arrays.
* ``Steps(parts=...)`` takes the one lock set every part holds without a set: the same
  ``lock_sets`` as the sorted union, on random parts.
* ``FreedRun.flush_groups`` folds each flush's range and lowest level in one pass: the
  groups of its arrays, including flushes holding only inserted tables.
* ``AddressSpace.find_vma`` and ``intersecting`` (one bisection, one pass): what a scan of
  every VMA gives.
* ``fast_closed._all_first`` is ``_all_equal(x, x[0])``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_t13_big_closed import regular_moves
from test_t13b_gplan_unmap import _moved

from perfsim import resolve_target
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.fast_closed import _after, _all_equal, _all_first
from perfsim.planner.fast_unmap import _ArraysView
from perfsim.planner.gather import (
    PMD_TABLE_PAGE,
    PUD_TABLE_PAGE,
    FreedRun,
    table_flush_groups_arrays,
)

K, M, G = 1 << 10, 1 << 20, 1 << 30


def _views(case):
    got = _moved({**case, "pre": 0, "post": 0} if case["pre"] or case["post"] else case)
    if got is None:
        return None
    t, before, moved, _vma = got
    made = _after(t, before, moved.shape)
    return t, moved, _ArraysView(made)


@given(regular_moves(), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_what_the_shape_keeps_for_the_unmap_is_the_made_states_arrays(case, seed):
    """The pending unmap (``fast_unmap._unmap_pending``) reads the moved state from the
    shape: its PUD entries in the view (``view_l``/``view_k``), the PMD entries below the
    source's PUD bounds in the state before (``below``) plus the destination's, and whether
    the move left a present PTE (``left``). Each is what the made state's arrays hold."""
    got = _views(case)
    if got is None:
        return
    t, moved, av = got
    a = t.arch
    ms, us = a.pmd_shift, a.pud_shift
    sh = moved.shape
    ext = sh.ext
    lo, hi = sh.view
    assert (sh.view_l, sh.view_k) == av.pud_entries(lo, hi)
    s_lo = ext.start >> ms
    run = av.empty_run(s_lo, (ext.end - 1) >> ms)
    assert (run is None) == sh.left
    if run is not None:
        assert run == (s_lo, sh.n_src)
    # PMD entries under the source's PUD slots: the state before's and the destination's
    k_pp = us - ms
    d_lo = (ext.start + sh.delta) >> ms
    p_lo, p_hi = ext.start >> us, (ext.end - 1) >> us
    under = []
    for c in range(p_lo, p_hi + 1):
        b_lo, b_hi = sh.below[c << k_pp], sh.below[(c + 1) << k_pp]
        under.append(b_hi - b_lo + max(0, min((c + 1) << k_pp, d_lo + sh.n_dst)
                                       - max(c << k_pp, d_lo)))
    # (the made state holds the source's emptied tables too: under the source's slots)
    made_under = av.pmd_under(list(range(p_lo, p_hi + 1)), k_pp)
    assert under == made_under
    assert moved.pending  # none of it made the moved state


def test_the_pending_unmap_of_the_bench_move_reads_no_array():
    """bench/bench_engine.py's 1 GiB move: the PMD counts come from the shape, and the
    pending unmap gives what the unmap of the made state gives."""
    from perfsim.planner.fast_closed import plan_regular_closed
    from perfsim.planner.fast_unmap import unmap_moved_source
    from perfsim.planner.gather import MmuGather
    from perfsim.planner.pgtable_move import MoveGates
    from perfsim.planner.realign import PageTableMoveControl

    t = resolve_target("6.18", "x86_64")
    base = 0x300000000000
    src, dst = base + 2 * M + 4 * K, base + 2 * G + 6 * M + 8 * K
    vma, new = Vma(src, src + G), Vma(dst, dst + G)
    pt = PageTables.empty(t.arch).populate(src, src + G)
    _steps, moved = plan_regular_closed(t, pt, PageTableMoveControl(vma, new, src, dst, G),
                                        MoveGates.of(t, vma, new, False), S.MOVE, 1, 0, None)
    sh = moved.shape
    k_pp = t.arch.pud_shift - t.arch.pmd_shift
    puds = list(range(src >> t.arch.pud_shift, ((src + G - 1) >> t.arch.pud_shift) + 1))
    assert all(c << k_pp in sh.below and (c + 1) << k_pp in sh.below for c in puds)
    assert not sh.left
    tlb = MmuGather(src)
    out = unmap_moved_source(t, moved, src, src + G, 0, 0, src, src + G, tlb)
    assert moved.pending and out[0].pending
    made_tlb = MmuGather(src)
    made = unmap_moved_source(t, _after(t, pt, sh), src, src + G, 0, 0, src, src + G, made_tlb)
    assert out[1:] == made[1:]
    assert tlb.table_run.arrays()[0].tolist() == made_tlb.table_run.arrays()[0].tolist()
    assert tlb.table_run.arrays()[1].tolist() == made_tlb.table_run.arrays()[1].tolist()
    assert out[0].made().pud_tables == made[0].pud_tables
    for name in ("pud_idx", "pud_kind", "pmd_idx", "pmd_kind", "pmd_mask"):
        assert getattr(out[0], name).tolist() == getattr(made[0], name).tolist(), name


def _part(rng: random.Random):
    names = [(), ("anon_vma:a",), ("i_mmap:f", "anon_vma:a"), ("anon_vma:b",)]
    n = rng.randrange(0, 4)
    locks = [rng.choice(names[:rng.randrange(1, 5)]) for _ in range(n)]
    rows = [(0, 0, S.MOVE, S.K_PTE_MOVE, 4096, *([0] * 15)) for _ in range(n)]
    part = S.Steps(rows=(rows, locks))
    if n and rng.random() < 0.3 and len(set(locks)) == 1:
        return S.PeriodicBlock(part, rng.randrange(1, 5), 1 << 21, 1 << 21)
    return part


@pytest.mark.parametrize("seed", range(60))
def test_steps_of_parts_hold_the_sorted_union_of_their_lock_sets(seed):
    rng = random.Random(seed)
    parts = [_part(rng) for _ in range(rng.randrange(0, 6))]
    got = S.Steps(parts=parts)
    kept = [p for p in parts if len(p)]
    assert got.lock_sets == tuple(sorted({n for p in kept for n in p.lock_sets}))
    assert len(got) == sum(len(p) for p in parts)
    assert got.parts() == kept


def test_a_periodic_block_takes_one_phase_only():
    rows = [(0, 0, S.MOVE, S.K_PTE_MOVE, 4096, *([0] * 15)),
            (0, 0, S.UNMAP_SRC, S.K_PTE_MOVE, 4096, *([0] * 15))]
    with pytest.raises(AssertionError, match="one phase"):
        S.PeriodicBlock(S.Steps(rows=(rows, [(), ()])), 3, 1 << 21, 1 << 21)
    block = S.PeriodicBlock(S.Steps(rows=(rows[:1], [()])), 3, 1 << 21, 1 << 21)
    assert len(block) == 3 and block.phase == S.MOVE


@pytest.mark.parametrize("seed", range(60))
def test_flush_groups_of_a_run_are_those_of_its_arrays_with_only_inserted_flushes(seed):
    """A few run tables among many inserted ones, cut everywhere: flushes of inserted
    tables only, of run tables only, and of both."""
    rng = random.Random(seed)
    n = rng.randrange(1, 6)
    step = 1 << 21
    first = rng.randrange(1, 1 << 20) * step
    pos = sorted(rng.randrange(0, n + 1) for _ in range(rng.randrange(1, 8)))
    run = FreedRun(first, n, step, [(p, rng.randrange(0, 1 << 40) << 12,
                                     rng.choice((PMD_TABLE_PAGE, PUD_TABLE_PAGE))) for p in pos])
    total = len(run)
    cuts = sorted({0, *rng.sample(range(total), rng.randrange(0, total))})
    addrs, levels = run.arrays()
    assert run.flush_groups(cuts, 4096) == table_flush_groups_arrays(addrs, levels, cuts, 4096)


@pytest.mark.parametrize("seed", range(40))
def test_find_vma_and_intersecting_are_a_scan_of_the_vmas(seed):
    rng = random.Random(seed)
    t = resolve_target("6.18", "x86_64")
    vmas, at = [], rng.randrange(1, 64) << 12
    for _ in range(rng.randrange(0, 7)):
        start = at + (rng.randrange(0, 4) << 12)
        end = start + (rng.randrange(1, 6) << 12)
        vmas.append(Vma(start, end))
        at = end
    space = AddressSpace(tuple(vmas), PageTables.empty(t.arch))
    for _ in range(60):
        x = rng.randrange(0, at + (8 << 12))
        y = x + rng.randrange(-2, 12) * 4096
        want = next((v for v in vmas if v.start <= x < v.end), None)
        assert space.find_vma(x) == want
        assert space.intersecting(x, y) == [v for v in vmas if v.start < y and v.end > x] \
            if y > x else space.intersecting(x, y) == []


@pytest.mark.parametrize("dtype", (np.int8, np.int32, np.int64))
def test_all_first_is_all_equal_to_the_first(dtype):
    rng = np.random.default_rng(7)
    for n in range(1, 40):
        for _ in range(5):
            x = rng.integers(0, 3, n).astype(dtype)
            if rng.random() < 0.5:
                x[:] = x[0]
            assert _all_first(x) == _all_equal(x, int(x[0])) == bool((x == x[0]).all())


@given(regular_moves())
@settings(max_examples=150, deadline=None)
def test_the_shape_reads_few_pud_entries_as_the_arrays_search_gives(case):
    """``_regular_shape`` reads a state of few PUD entries as lists (bisection): the same
    shape as the numpy search of its arrays (``_FEW_PUDS`` = 0 forces that)."""
    import dataclasses

    from test_t13_big_closed import case_move

    import perfsim.planner.fast_closed as fc

    t = case["t"]
    got = case_move(case)
    if got is None:
        return
    space, pmc, gates = got
    assert len(space.pt.pud_idx) <= fc._FEW_PUDS
    lists = fc._regular_shape(t, space.pt, pmc, gates)
    saved = fc._FEW_PUDS
    try:
        fc._FEW_PUDS = 0
        arrays = fc._regular_shape(t, space.pt, pmc, gates)
    finally:
        fc._FEW_PUDS = saved
    assert (lists is None) == (arrays is None)
    if lists is not None:
        for f in dataclasses.fields(lists):
            x, y = getattr(lists, f.name), getattr(arrays, f.name)
            if f.name == "ext":
                x, y = ([getattr(e, n) for n in fc.Progressions.__slots__] for e in (x, y))
            if f.name != "bitmaps":
                assert x == y, f.name
        assert lists.bitmaps.ints == arrays.bitmaps.ints
