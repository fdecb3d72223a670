"""The 1 GiB move's plan with fewer Python calls and numpy calls (issue 13, seventh pass):
each shortcut held to the path or the definition it stands for.

* ``Progressions.of`` sets its fields without ``__init__``: its bounds are the merged
  progressions of the source's PMD boundaries and the shifted destination's (the
  definition); ``Progressions.ends`` is the two ``bounds`` calls it replaces.
* ``_regular_shape`` reads the source's bitmap rows (int32) and a small mask table
  (little-endian uint64) as bytes: the same shape as the numpy reads it falls back to.
* ``plan_regular_closed`` sets its ``MovedTables`` fields as ``MovedTables(t, pt, sh)`` does.
* ``Steps.periodic_run`` is the three tables and the periodic block ``Steps(parts=...)``
  of them builds, column for column.
* ``fast_unmap._unmap_pending`` (the source's unmap from a pending moved state) is held to
  the unmap of the made state in ``tests/test_t13b_gplan_unmap.py`` and
  ``tests/test_t13c_plan1g_paths.py``; here the bench move's freed tables, flushes and
  rows against a plan made with the pending path turned off.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from hypothesis import given, settings
from test_t13_big_closed import case_move, regular_moves

import perfsim.planner.fast_closed as fc
from perfsim import resolve_target
from perfsim.mm.pagetable import PageTables
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.pgtable_move import MoveGates
from perfsim.planner.realign import PageTableMoveControl

K, M, G = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize("seed", range(40))
def test_progressions_bounds_are_the_merged_pmd_boundaries(seed):
    rng = random.Random(seed)
    for _ in range(25):
        pmd = 1 << rng.choice((21, 25, 29))
        page = 4096
        old = rng.randrange(1, 1 << 20) * page
        length = rng.randrange(1, 12 * (pmd // page)) * page
        new = old + rng.choice((1, -1)) * rng.randrange(1, 1 << 22) * page
        end = old + length
        ext = fc.Progressions.of(old, new, end, pmd)
        delta = new - old
        a0 = old - old % pmd + pmd
        b0 = new - new % pmd + pmd - delta
        inner = sorted({*range(a0, end, pmd), *range(b0, end, pmd)})
        assert ext.n_inner == len(inner)
        assert [ext.bound(i) for i in range(ext.n_ext + 1)] == [old, *inner, end]
        ref = fc.Progressions(ext.start, ext.end, ext.c0, ext.c1, ext.period, ext.n_inner,
                              ext.two)
        assert [getattr(ext, n) for n in fc.Progressions.__slots__] == \
            [getattr(ref, n) for n in fc.Progressions.__slots__]
        for v in [old, *inner, end]:
            assert ext.bound(ext.index(v)) == v


@pytest.mark.parametrize("seed", range(40))
def test_progressions_ends_are_the_first_and_last_bounds(seed):
    rng = random.Random(seed)
    for _ in range(25):
        pmd = 1 << 21
        old = rng.randrange(1, 1 << 20) << 12
        length = rng.randrange(8, 64) * pmd + rng.randrange(0, 512) * 4096
        new = old + (rng.randrange(1, 1 << 16) << 12) + 8 * G
        ext = fc.Progressions.of(old, new, old + length, pmd)
        hi = rng.randrange(0, ext.n_inner + 1)
        lo = rng.randrange(1, ext.n_ext + 1)
        assert ext.ends(hi, lo) == (ext.bounds(0, hi), ext.bounds(lo, ext.n_ext))


def _shape_fields(sh):
    out = {}
    for f in dataclasses.fields(sh):
        x = getattr(sh, f.name)
        if f.name == "ext":
            x = [getattr(x, n) for n in fc.Progressions.__slots__]
        elif f.name == "bitmaps":
            x = (x.full_int, x.ints, x.added, x.ids)
        out[f.name] = x
    return out


@given(regular_moves())
@settings(max_examples=150, deadline=None)
def test_the_shape_reads_rows_and_masks_as_bytes_as_the_arrays_give(case):
    """The bytes reads (``_I32`` rows, a mask table of at most ``_FEW_MASKS`` rows) and the
    numpy reads they stand for (forced by making neither apply) give the same shape."""
    t = case["t"]
    got = case_move(case)
    if got is None:
        return
    space, pmc, gates = got
    assert space.pt.pmd_mask.dtype is fc._I32 and len(space.pt.masks) <= fc._FEW_MASKS
    fast = fc._regular_shape(t, space.pt, pmc, gates)
    saved = fc._I32, fc._FEW_MASKS
    try:
        fc._I32, fc._FEW_MASKS = np.dtype(np.int16), -1
        slow = fc._regular_shape(t, space.pt, pmc, gates)
    finally:
        fc._I32, fc._FEW_MASKS = saved
    assert (fast is None) == (slow is None)
    if fast is not None:
        a, b = _shape_fields(fast), _shape_fields(slow)
        bm_a, bm_b = a.pop("bitmaps"), b.pop("bitmaps")
        assert a == b
        # the bytes read seeds the edge rows' ints the numpy read makes when first asked
        assert bm_a[0] == bm_b[0] and bm_a[2] == bm_b[2] == [] and bm_a[3] == bm_b[3]
        for row, m in bm_a[1].items():
            assert slow.bitmaps.int_of(row) == m


def _bench_move():
    t = resolve_target("6.18", "x86_64")
    base = 0x300000000000
    src, dst = base + 2 * M + 4 * K, base + 2 * G + 6 * M + 8 * K
    vma, new = Vma(src, src + G), Vma(dst, dst + G)
    pt = PageTables.empty(t.arch).populate(src, src + G)
    return t, pt, PageTableMoveControl(vma, new, src, dst, G), MoveGates.of(t, vma, new, False)


def test_the_closed_forms_moved_tables_are_what_moved_tables_sets():
    t, pt, pmc, gates = _bench_move()
    _steps, moved = fc.plan_regular_closed(t, pt, pmc, gates, S.MOVE, 1, 0, None)
    ref = fc.MovedTables(t, pt, moved.shape)
    mine, want = dict(moved.__dict__), dict(ref.__dict__)
    assert callable(mine.pop("_make")) and callable(want.pop("_make"))
    assert mine == want
    made, ref_made = moved.made(), ref.made()
    for name in ("pud_idx", "pud_kind", "pmd_idx", "pmd_kind", "pmd_mask", "masks", "mask_pop"):
        assert getattr(made, name).tolist() == getattr(ref_made, name).tolist(), name
    assert made.pud_tables == ref_made.pud_tables


def _rows(rng: random.Random, n: int, phase: int) -> list[tuple]:
    return [(rng.randrange(1 << 40), rng.randrange(1 << 40), phase, S.K_PTE_MOVE,
             rng.randrange(1, 1 << 21), *[rng.randrange(0, 600) for _ in range(15)])
            for _ in range(n)]


@pytest.mark.parametrize("seed", range(30))
def test_a_periodic_run_is_the_steps_of_its_parts(seed):
    rng = random.Random(seed)
    locks = rng.choice(((), ("anon_vma:a",), ("i_mmap:f", "anon_vma:a")))
    head, period, tail = (_rows(rng, rng.randrange(1, 6), S.MOVE) for _ in range(3))
    reps = rng.randrange(1, 40)
    over = {}
    if rng.random() < 0.7:
        pos = np.array(sorted(rng.sample(range(reps * len(period)), min(3, reps))), np.int64)
        over["alloc_pmd"] = (pos, np.ones(len(pos), np.int32))
    got = S.Steps.periodic_run(head, period, reps, 1 << 21, 1 << 21, over, tail, locks)
    want = S.Steps(parts=[S.Steps(rows=(head, [locks] * len(head))),
                          S.PeriodicBlock(S.Steps(rows=(period, [locks] * len(period))), reps,
                                          1 << 21, 1 << 21, over),
                          S.Steps(rows=(tail, [locks] * len(tail)))])
    assert len(got) == len(want) and got.lock_sets == want.lock_sets
    for p, q in zip(got.parts(), want.parts(), strict=True):
        assert type(p) is type(q) and len(p) == len(q) and p.lock_sets == q.lock_sets
        if isinstance(p, S.PeriodicBlock):
            assert (p.reps, p.old_stride, p.new_stride, p.overrides) == \
                (q.reps, q.old_stride, q.new_stride, q.overrides)
            assert p.template.row_tuples == q.template.row_tuples and p.phase == q.phase
        else:
            assert p.row_tuples == q.row_tuples
    for name in S.ROW_FIELDS:
        assert got.col(name).tolist() == want.col(name).tolist(), name
    assert got.lock_set.tolist() == want.lock_set.tolist()


def test_the_bench_move_plan_is_the_plan_with_the_unmap_of_the_made_state():
    """The whole 1 GiB plan with the pending unmap, and with the moved state made before
    its source is unmapped (``unmap_moved_source`` then reads its arrays)."""
    from perfsim.mm.space import AddressSpace
    from perfsim.planner import MoveRequest, plan_mremap

    t, pt, pmc, _gates = _bench_move()
    src, dst = pmc.old_addr, pmc.new_addr
    req = MoveRequest(old_addr=src, old_len=G, new_addr=dst)
    plan = plan_mremap(AddressSpace((Vma(src, src + G, name="heap"),), pt), req, t)
    saved = fc.plan_regular_closed

    def made_first(*args):
        out = saved(*args)
        return out if out is None else (out[0], out[1].made())

    import perfsim.planner.fast as fast
    try:
        fast.plan_regular_closed = made_first
        ref = plan_mremap(AddressSpace((Vma(src, src + G, name="heap"),), pt), req, t)
    finally:
        fast.plan_regular_closed = saved
    assert len(plan.steps) == len(ref.steps)
    for name in S.ROW_FIELDS:
        assert plan.steps.col(name).tolist() == ref.steps.col(name).tolist(), name
    for name in ("pud_idx", "pud_kind", "pmd_idx", "pmd_kind", "pmd_mask"):
        assert getattr(plan.after.pt, name).tolist() == getattr(ref.after.pt, name).tolist()


@pytest.mark.parametrize("seed", range(40))
def test_freeze_makes_the_row_tables_steps_of_rows_makes(seed):
    """``StepLog.freeze`` around blocks: its row tables (``_rows_part``) hold the rows and
    the lock sets ``Steps(rows=...)`` finds, for rows under one lock set or several."""
    rng = random.Random(seed)
    names = [(), ("anon_vma:a",), ("i_mmap:f", "anon_vma:a"), ("anon_vma:b",)]
    log = S.StepLog()
    want_parts = []
    for _ in range(rng.randrange(1, 5)):
        n = rng.randrange(0, 4)
        rows, locks = _rows(rng, n, S.SYSCALL), []
        for r in rows:
            locks.append(rng.choice(names[:rng.randrange(1, 5)]))
            log.rows.append(r)
            log.lock_names.append(locks[-1])
        if n:
            want_parts.append(S.Steps(rows=(rows, locks)))
        block = S.Steps.periodic_run(_rows(rng, 2, S.MOVE), _rows(rng, 2, S.MOVE), 3, 1 << 21,
                                     1 << 21, {}, _rows(rng, 1, S.MOVE), ())
        log.append_block(block)
        want_parts.extend(block.parts())
    tail = rng.randrange(0, 3)
    rows = _rows(rng, tail, S.UNMAP_SRC)
    locks = [rng.choice(names) for _ in rows]
    log.rows.extend(rows)
    log.lock_names.extend(locks)
    if tail:
        want_parts.append(S.Steps(rows=(rows, locks)))
    got = log.freeze()
    assert len(got.parts()) == len(want_parts)
    for p, q in zip(got.parts(), want_parts, strict=True):
        assert type(p) is type(q) and len(p) == len(q) and p.lock_sets == q.lock_sets
        if type(p) is S.Steps:
            assert p.row_tuples == q.row_tuples
    want = S.Steps(parts=want_parts)
    assert got.lock_sets == want.lock_sets and len(got) == len(want)
    for name in S.ROW_FIELDS:
        assert got.col(name).tolist() == want.col(name).tolist(), name
    assert got.lock_names_per_row() == want.lock_names_per_row()


@pytest.mark.parametrize("kernel,arch", [("6.6", "x86_64"), ("6.18", "x86_64"),
                                         ("6.18", "arm64-4k"), ("7.3", "riscv-sv48"),
                                         ("6.18", "x86_64-la57")])
@pytest.mark.parametrize("seed", range(10))
def test_tlb_finish_mmu_flushes_are_flush_range_of_each_group(kernel, arch, seed):
    """The freed tables' flushes (``flush_span``'s memo read inline, filled or not): each
    row's flush is ``flush_range`` over its group's span, with the group's level stride."""
    from perfsim.planner.gather import (
        PMD_TABLE_PAGE,
        PTE_TABLE,
        FreedRun,
        MmuGather,
        table_flush_cuts,
        tlb_finish_mmu,
    )
    from perfsim.planner.tlb import flush_range

    rng = random.Random(seed)
    t = resolve_target(kernel, arch)
    a = t.arch
    shift_of = {PTE_TABLE: a.pmd_shift, PMD_TABLE_PAGE: a.pud_shift}
    for _ in range(4):
        cpus = rng.randrange(1, 5)
        lazy = rng.randrange(0, cpus)
        n = rng.choice((1, 2, 5, 16, 32, 33, 34, 100, rng.randrange(1, 1200)))
        first = rng.randrange(1, 1 << 20) << a.pmd_shift
        ins = sorted((rng.randrange(0, n + 1), rng.randrange(1, 1 << 30) << a.pud_shift,
                      PMD_TABLE_PAGE) for _ in range(rng.randrange(0, 3)))
        run = FreedRun(first, n, a.pmd_size, ins)
        groups = run.flush_groups(table_flush_cuts(t, 0, len(run)), a.page_size)
        for _twice in range(2):  # (the memo empty or not)
            tlb = MmuGather(first)
            tlb.table_run, tlb.freed_tables = run, True
            log = S.StepLog()
            tlb_finish_mmu(t, tlb, log, S.UNMAP_SRC, first, first + n * a.pmd_size, 0, len(run),
                           cpus=cpus, lazy_cpus=lazy)
            assert len(log.rows) == len(groups)
            for row, (lo, hi, lv, k) in zip(log.rows, groups, strict=True):
                f = flush_range(t, lo, hi, stride_shift=shift_of[lv], cpus=cpus,
                                lazy_cpus=lazy, freed_tables=True)
                assert row[S.ROW_FIELDS.index("freed")] == k
                assert row[S.ROW_FIELDS.index("flush_full")] == int(f.full)
                assert row[S.ROW_FIELDS.index("flush_pages")] == f.pages
                assert row[S.ROW_FIELDS.index("ipis")] == f.ipis
