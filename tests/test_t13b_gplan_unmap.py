"""The 1 GiB move's plan without its page tables: the closed-form move's state is made when
first read, and the source's unmap is planned from the state before the move.

``plan_regular_closed`` returns a :class:`~perfsim.planner.fast_closed.MovedTables`, made
(by ``_after``) only when one of its fields is read; ``unmap_moved_source`` of the moved
range reads such a state through ``_unmap_pending`` (the state before the move and the
move's shape) instead of its arrays (``_ArraysView``), and returns a deferred state and a
:class:`~perfsim.planner.gather.FreedRun`. Every test here holds one of these to the path
it replaces: the same unmap of the same move with the state made first, the deferred
states to the states they make, the run's flush groups to the arrays' groups.
"""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_t13_big_closed import BASE, case_space, regular_moves

from perfsim import resolve_target
from perfsim.mm.pagetable import PageTables
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.bitmaps import insert_sorted
from perfsim.planner.fast_closed import DeferredTables, MovedTables, _after, plan_regular_closed
from perfsim.planner.fast_unmap import _run_positions, unmap_moved_source
from perfsim.planner.gather import (
    PMD_TABLE_PAGE,
    PTE_TABLE,
    PUD_TABLE_PAGE,
    FreedRun,
    MmuGather,
    table_flush_cuts,
    table_flush_groups,
    table_flush_groups_arrays,
    table_order_key,
    tlb_finish_mmu,
)
from perfsim.planner.pgtable_move import MoveGates
from perfsim.planner.realign import PageTableMoveControl

K, M, G = 1 << 10, 1 << 20, 1 << 30
_FIELDS = ("pud_idx", "pud_kind", "pmd_idx", "pmd_kind", "pmd_mask", "masks", "mask_pop")


def _assert_same_tables(x: PageTables, y: PageTables) -> None:
    assert x.pud_tables == y.pud_tables
    for name in _FIELDS:
        a, b = getattr(x, name), getattr(y, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b), name


def _moved(case):
    """The closed-form move of a ``regular_moves`` case: ``(target, state before, moved
    state (pending), the VMA)``, or None when the case is invalid or not closed form."""
    t, src, length, dst = case["t"], case["src"], case["length"], case["dst"]
    got = case_space(case)
    if got is None:
        return None
    vma, space = got
    new = Vma(dst, dst + length, name="new")
    pmc = PageTableMoveControl(vma, new, src, dst, length)
    out = plan_regular_closed(t, space.pt, pmc, MoveGates.of(t, vma, new, False), S.MOVE,
                              1, 0, None)
    if out is None:
        return None
    return t, space.pt, out[1], vma


def _source_moves():
    """``regular_moves``, half of them with the VMA ending where the move does (so the
    source's edge slots are emptied and its unmap is the closed form's shape)."""
    return st.one_of(regular_moves(), regular_moves().map(lambda c: {**c, "pre": 0, "post": 0}))


def _unmap(t, pt, start, end, floor, ceiling, win):
    tlb = MmuGather(start)
    out = unmap_moved_source(t, pt, start, end, floor, ceiling, win[0], win[1], tlb)
    log = S.StepLog()
    if out is not None:
        tlb_finish_mmu(t, tlb, log, S.UNMAP_SRC, start, end, out[1], out[2], cpus=2,
                       lazy_cpus=1)
    return out, tlb, log.freeze()


def _bounds(rng: random.Random, t, vma: Vma, src: int, length: int):
    """A floor, ceiling and window for the source's unmap: the VMA's own ends (what
    ``do_munmap`` gives when it is alone), or points a few PMD or PUD slots away."""
    a = t.arch
    step = rng.choice((a.pmd_size, a.pud_size))
    floor = rng.choice((0, vma.start, max(0, src - rng.randrange(0, 3) * step)))
    ceiling = rng.choice((0, vma.end, src + length + rng.randrange(0, 3) * step))
    win = (min(src, vma.start), max(src + length, vma.end))
    return floor, ceiling, win


@given(_source_moves(), st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_unmap_of_a_pending_moved_source_equals_the_unmap_of_the_made_state(case, seed):
    got = _moved(case)
    if got is None:
        return
    t, before, moved, vma = got
    src, length = case["src"], case["length"]
    floor, ceiling, win = _bounds(random.Random(seed), t, vma, src, length)
    made = _after(t, before, moved.shape)
    assert moved.pending
    c_out, c_tlb, c_rows = _unmap(t, moved, src, src + length, floor, ceiling, win)
    e_out, e_tlb, e_rows = _unmap(t, made, src, src + length, floor, ceiling, win)
    assert moved.pending  # the unmap did not make the moved state
    assert (c_out is None) == (e_out is None)
    if c_out is None:
        return
    assert c_out[1:] == e_out[1:]
    assert type(c_out[0]) is DeferredTables and c_out[0].pending
    _assert_same_tables(c_out[0], e_out[0])
    (ca, cl), (ea, el) = c_tlb.table_arrays, e_tlb.table_arrays
    assert ca.dtype == ea.dtype and cl.dtype == el.dtype
    assert np.array_equal(ca, ea) and np.array_equal(cl, el)
    assert len(c_rows) == len(e_rows)
    for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
        assert np.array_equal(c_rows.col(name), e_rows.col(name)), name


def test_the_pending_unmap_cases_reach_the_moved_view():
    """The property above is not vacuous: most of its cases unmap a pending moved state."""
    taken = []

    @given(_source_moves(), st.integers(0, 2**32 - 1))
    @settings(max_examples=100, deadline=None, database=None)
    def probe(case, seed):
        got = _moved(case)
        if got is None:
            return
        t, _before, moved, vma = got
        floor, ceiling, win = _bounds(random.Random(seed), t, vma, case["src"], case["length"])
        out, tlb, _ = _unmap(t, moved, case["src"], case["src"] + case["length"], floor,
                             ceiling, win)
        taken.append(out is not None and tlb.table_run is not None)

    probe()
    assert sum(taken) >= len(taken) // 4 and sum(taken) > 5


def test_the_bench_move_source_is_unmapped_from_the_pending_state():
    """bench/bench_engine.py's 1 GiB unaligned move: 513 PTE tables and 2 PMD tables
    freed (the destination VMA is the ceiling, so the PUD table stays), in two flushes
    (509 tables a batch), neither state made."""
    t = resolve_target("6.18", "x86_64")
    src, dst, n = BASE + 2 * M + 4 * K, BASE + 2 * G + 6 * M + 8 * K, G
    vma = Vma(src, src + n, name="heap")
    pt = PageTables.empty(t.arch).populate(src, src + n)
    new = Vma(dst, dst + n, name="new")
    pmc = PageTableMoveControl(vma, new, src, dst, n)
    _, moved = plan_regular_closed(t, pt, pmc, MoveGates.of(t, vma, new, False), S.MOVE, 1,
                                   0, None)
    assert type(moved) is MovedTables and moved.pending
    out, tlb, rows = _unmap(t, moved, src, src + n, 0, dst, (src, src + n))
    assert out[1:] == (0, 515) and moved.pending and out[0].pending
    assert [int(x) for x in rows.freed] == [509, 6]
    e_out, e_tlb, e_rows = _unmap(t, _after(t, pt, moved.shape), src, src + n, 0, dst,
                                  (src, src + n))
    _assert_same_tables(out[0], e_out[0])
    assert np.array_equal(rows.freed, e_rows.freed)


# ---------------------------------------------------------------------------- deferred states
def test_a_deferred_state_reads_as_the_state_it_makes():
    t = resolve_target("6.18", "x86_64")
    pt = PageTables.empty(t.arch).populate(BASE + 4 * K, BASE + 9 * M).populate(
        BASE + 3 * G, BASE + 3 * G + 8 * K)
    calls = []

    def make():
        calls.append(1)
        return pt

    d = DeferredTables(t.arch, pt.pud_tables, make)
    assert d.pending and not calls
    assert d.present_ptes(BASE, BASE + 10 * M) == pt.present_ptes(BASE, BASE + 10 * M)
    assert calls == [1] and not d.pending
    _assert_same_tables(d, pt)
    w = d.window(BASE, BASE + 10 * M)
    assert w.pmd == pt.window(BASE, BASE + 10 * M).pmd
    assert calls == [1]  # made once


def test_a_deferred_state_pickles_as_the_plain_state():
    t = resolve_target("6.18", "x86_64")
    pt = PageTables.empty(t.arch).populate(BASE + 4 * K, BASE + 9 * M)
    d = DeferredTables(t.arch, pt.pud_tables, lambda: pt)
    back = pickle.loads(pickle.dumps(d))
    assert type(back) is PageTables
    _assert_same_tables(back, pt)


def test_a_deferred_state_has_no_other_attributes():
    t = resolve_target("6.18", "x86_64")
    pt = PageTables.empty(t.arch)
    d = DeferredTables(t.arch, pt.pud_tables, lambda: pt)
    with pytest.raises(AttributeError):
        _ = d.no_such_field
    assert d.pending


# ---------------------------------------------------------------------------- freed runs
def _random_run(rng: random.Random):
    step = 1 << rng.choice((21, 25))
    n = rng.randrange(1, 3000)
    first = rng.randrange(1, 1 << 20) * step
    k = rng.randrange(0, 5)
    pos = sorted(rng.randrange(0, n + 1) for _ in range(k))
    ins = [(p, rng.randrange(0, 1 << 40) << 12, rng.choice((PMD_TABLE_PAGE, PUD_TABLE_PAGE)))
           for p in pos]
    return FreedRun(first, n, step, ins)


@pytest.mark.parametrize("seed", range(40))
def test_a_freed_runs_arrays_are_the_run_with_the_tables_inserted(seed):
    rng = random.Random(seed)
    run = _random_run(rng)
    addrs, levels = run.arrays()
    base = np.arange(run.n, dtype=np.int64) * run.step + run.first
    want_a, want_l = insert_sorted(
        (base, np.full(run.n, PTE_TABLE, np.int8)), [p for p, _, _ in run.inserted],
        (np.array([a for _, a, _ in run.inserted], np.int64),
         np.array([lv for _, _, lv in run.inserted], np.int8)))
    assert addrs.dtype == np.int64 and levels.dtype == np.int8
    assert np.array_equal(addrs, want_a) and np.array_equal(levels, want_l)
    assert len(run) == len(addrs)


@pytest.mark.parametrize("kernel", ("6.1", "6.18"))
@pytest.mark.parametrize("seed", range(40))
def test_a_freed_runs_flush_groups_are_those_of_its_arrays(seed, kernel):
    rng = random.Random(seed)
    t = resolve_target(kernel, "x86_64")
    run = _random_run(rng)
    cuts = table_flush_cuts(t, rng.randrange(0, 600), len(run))
    if rng.random() < 0.5:  # any increasing cuts
        cuts = sorted({0, *rng.sample(range(len(run)), min(len(run), rng.randrange(0, 6)))})
    addrs, levels = run.arrays()
    want = table_flush_groups_arrays(addrs, levels, cuts, 4096)
    assert run.flush_groups(cuts, 4096) == want
    assert want == table_flush_groups(addrs.tolist(), levels.tolist(), cuts, 4096)


@pytest.mark.parametrize("arch", ("x86_64", "x86_64-la57", "arm64-16k", "riscv-sv39"))
@pytest.mark.parametrize("seed", range(10))
def test_run_positions_are_the_searchsorted_of_the_run_keys(arch, seed):
    rng = random.Random(seed)
    t = resolve_target("6.18", arch)
    a = t.arch
    f, n = rng.randrange(0, 1 << 18), rng.randrange(1, 2000)
    addrs = (np.arange(f, f + n, dtype=np.int64) << a.pmd_shift)
    run_keys = table_order_key(t, addrs, PTE_TABLE)
    lo, hi = (f - 3) << a.pmd_shift, (f + n + 3) << a.pmd_shift
    others = [(rng.randrange(max(lo, 0), hi), rng.choice((PMD_TABLE_PAGE, PUD_TABLE_PAGE)))
              for _ in range(6)]
    keys = sorted(table_order_key(t, ad, lv) for ad, lv in others)
    assert _run_positions(t, f, n, keys) == run_keys.searchsorted(keys, side="right").tolist()


def test_the_bench_plan_leaves_its_page_tables_unmade_until_after_is_read():
    """``plan_mremap`` of the 1 GiB move makes neither the moved nor the unmapped state;
    ``after`` holds the unmapped state, made when one of its fields is read, equal to the
    reference walk's."""
    from test_fast_equivalence import assert_same_plan

    from perfsim.mm.space import AddressSpace
    from perfsim.planner import MoveRequest, plan_mremap
    from perfsim.planner.options import PlanOptions

    t = resolve_target("6.18", "x86_64")
    src, dst, n = BASE + 2 * M + 4 * K, BASE + 2 * G + 6 * M + 8 * K, G
    space = AddressSpace((Vma(src, src + n, name="heap"),),
                         PageTables.empty(t.arch).populate(src, src + n))
    req = MoveRequest(old_addr=src, old_len=n, new_addr=dst)
    plan = plan_mremap(space, req, t)
    tables = plan.after_of.tables.value()
    assert type(tables) is DeferredTables and tables.pending
    after = plan.after
    assert after.pt is tables and tables.pending
    assert len(after.pt.pmd_idx) == n // (2 * M) + 1 and not tables.pending
    assert_same_plan(plan_mremap(space, req, t, PlanOptions("reference")), plan,
                     [(src, src + n), (dst, dst + n)])


@pytest.mark.parametrize("arch", ("x86_64", "x86_64-la57", "arm64-4k", "riscv-sv39"))
@pytest.mark.parametrize("layout", ("dst-above", "dst-below", "dst-straddles"))
def test_unmap_of_a_source_sharing_its_pud_entry_with_the_destination(arch, layout):
    """Source and destination in the same PUD entry: the moved-in destination entries keep
    the PMD table the source's unmap would otherwise free (``free_pmd_table`` counts them)."""
    t = resolve_target("6.18", arch)
    a = t.arch
    P, U, pg = a.pmd_size, a.pud_size, a.page_size
    slots = U // P
    base = 8 * U
    length = 12 * P + 3 * pg
    src = base + (slots // 4) * P + pg if layout != "dst-below" else base + (slots // 2) * P + pg
    dst = {"dst-above": base + (slots // 2) * P + 2 * pg,
           "dst-below": base + 2 * P + 5 * pg,
           "dst-straddles": base + U - 6 * P + 7 * pg}[layout]
    vma = Vma(src, src + length, name="heap")
    pt = PageTables.empty(a).populate(src, src + length)
    new = Vma(dst, dst + length, name="new")
    pmc = PageTableMoveControl(vma, new, src, dst, length)
    out = plan_regular_closed(t, pt, pmc, MoveGates.of(t, vma, new, False), S.MOVE, 1, 0, None)
    assert out is not None
    shape = out[1].shape
    for floor, ceiling in ((0, 0), (0, dst if dst > src else 0), (dst + length if dst < src else 0, 0)):
        win = (src, src + length)
        moved = MovedTables(t, pt, shape)  # a pending state per unmap (reading one makes it)
        c_out, c_tlb, c_rows = _unmap(t, moved, src, src + length, floor, ceiling, win)
        e_out, e_tlb, e_rows = _unmap(t, _after(t, pt, shape), src, src + length, floor,
                                      ceiling, win)
        assert moved.pending and c_out is not None and c_out[1:] == e_out[1:]
        _assert_same_tables(c_out[0], e_out[0])
        assert np.array_equal(c_rows.freed, e_rows.freed)
        assert np.array_equal(c_tlb.table_arrays[0], e_tlb.table_arrays[0])


@pytest.mark.parametrize("arch", ("x86_64", "x86_64-la57", "riscv-sv48"))
def test_unmap_counts_the_pmd_table_the_move_allocated_in_the_window(arch):
    """The destination's first PUD entry, new (the move allocated its PMD table), lies in the
    window the source's unmap sees: the top-level table keeps that entry, so it is not freed
    though the source's own PMD table is."""
    t = resolve_target("6.18", arch)
    a = t.arch
    P, U, pg = a.pmd_size, a.pud_size, a.page_size
    top = 1 << a.p4d_shift
    src = 3 * top + 2 * P + pg
    length = 40 * P + 3 * pg
    dst = 3 * top + U + U // 2 + 2 * pg  # the next PUD entry, none before the move
    vma = Vma(src, src + length, name="heap")
    pt = PageTables.empty(a).populate(src, src + length)
    new = Vma(dst, dst + length, name="new")
    pmc = PageTableMoveControl(vma, new, src, dst, length)
    out = plan_regular_closed(t, pt, pmc, MoveGates.of(t, vma, new, False), S.MOVE, 1, 0, None)
    assert out is not None and out[1].shape.pud_added == [dst >> a.pud_shift]
    shape = out[1].shape
    for win_end in (src + length, 3 * top + U + U // 4, 3 * top + 2 * U):
        win = (3 * top, win_end)
        c_out, c_tlb, _ = _unmap(t, MovedTables(t, pt, shape), src, src + length, 0, 0, win)
        e_out, e_tlb, _ = _unmap(t, _after(t, pt, shape), src, src + length, 0, 0, win)
        assert c_out[1:] == e_out[1:]
        _assert_same_tables(c_out[0], e_out[0])
        assert np.array_equal(c_tlb.table_arrays[1], e_tlb.table_arrays[1])
        if win_end > dst:  # the new entry is seen: the PUD table stays
            assert PUD_TABLE_PAGE not in c_tlb.table_arrays[1].tolist()
            assert PMD_TABLE_PAGE in c_tlb.table_arrays[1].tolist()
