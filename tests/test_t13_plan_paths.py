"""The walked planner's cheaper bookkeeping holds to the definitions it replaces.

Each shortcut of issue 13's planner pass is compared, on seeded random inputs, with what it
stands for: the call's one open page-table window (:class:`CallTables`) with a window read
afresh from the written-back state at every step; the step table's two-block conversion
with one ``np.asarray`` per column; the freed tables' Python ordering and flush groups with
the array versions (``table_order_key`` + stable argsort, ``reduceat``).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from perfsim import resolve_target
from perfsim.mm.pagetable import PMD_NONE, PMD_TABLE, PUD_TABLE, PageTables
from perfsim.planner import steps as S
from perfsim.planner.gather import (
    PMD_TABLE_PAGE,
    PTE_TABLE,
    PUD_TABLE_PAGE,
    MmuGather,
    table_flush_cuts,
    table_flush_groups,
    table_flush_groups_arrays,
    table_order_key,
)
from perfsim.planner.tables import CallTables
from perfsim.planner.unmap import free_pgd_range

ARCHS = ("x86_64", "arm64-4k", "riscv-sv39")


def _content(pt: PageTables):
    """Everything a result reads of page tables: entries and bitmaps, not row numbers."""
    rows = pt.pmd_mask
    words = pt.masks[np.maximum(rows, 0)]
    words[rows < 0] = 0
    return (pt.pmd_idx.tolist(), pt.pmd_kind.tolist(), words.tolist(), pt.pud_idx.tolist(),
            pt.pud_kind.tolist(), sorted(pt.pud_tables))


def _random_tables(rng: random.Random, arch) -> tuple[PageTables, list[int]]:
    pt = PageTables.empty(arch)
    bases = []
    for _ in range(rng.randint(1, 4)):
        base = rng.randint(2, 60) * arch.pud_size + rng.randint(0, 8) * arch.pmd_size
        length = rng.randint(1, 3 * arch.ptrs_per_pte) * arch.page_size
        pt = pt.populate(base, base + length, every=rng.choice([1, 1, 3]),
                         thp=rng.random() < 0.3)
        bases.append(base)
    return pt, bases


def _edit(rng: random.Random, win, arch) -> None:
    """A random change inside the window's slots, as a walk makes them."""
    shift = arch.pud_shift - arch.pmd_shift
    pslot = rng.randrange(win.lo, win.hi)
    slot = (pslot << shift) + rng.randrange(0, 1 << shift)
    r = rng.random()
    if r < 0.4:
        win.pmd[slot] = (PMD_TABLE, rng.getrandbits(arch.ptrs_per_pte))
    elif r < 0.6:
        win.pmd.pop(slot, None)
    elif r < 0.8:
        win.pud[pslot] = PUD_TABLE
    else:
        win.pud_tables.add(pslot >> (arch.p4d_shift - arch.pud_shift))


@pytest.mark.parametrize("arch_name", ARCHS)
def test_call_tables_one_open_window_equals_a_window_per_step(arch_name):
    """``CallTables.window`` (one window, widened) shows each step what a window read from
    the written-back state shows, and its one write-back gives the same tables."""
    arch = resolve_target("6.18", arch_name).arch
    rng = random.Random(7)
    for _ in range(60):
        pt, bases = _random_tables(rng, arch)
        tables = CallTables(pt)
        ref = pt
        for _ in range(rng.randint(1, 4)):
            start = rng.choice(bases) + rng.randint(-3, 3) * arch.pmd_size
            end = start + rng.randint(1, 20) * arch.pmd_size + rng.choice([0, arch.pud_size])
            seen = tables.window(start, end)
            fresh = ref.window(start, end)
            assert seen.pud_tables == fresh.pud_tables
            for pslot in range(fresh.lo, fresh.hi):
                assert seen.pud.get(pslot) == fresh.pud.get(pslot)
            assert {s: e for s, e in seen.pmd.items()
                    if fresh.lo <= s >> (arch.pud_shift - arch.pmd_shift) < fresh.hi} == fresh.pmd
            for _ in range(rng.randint(0, 5)):
                pslot_lo, pslot_hi = fresh.lo, fresh.hi
                _edit(rng, fresh, arch)
                # the same change in the open window (same slot, same value)
                seen.pud_tables.clear()
                seen.pud_tables.update(fresh.pud_tables)
                for s in list(seen.pmd):
                    if pslot_lo <= s >> (arch.pud_shift - arch.pmd_shift) < pslot_hi:
                        del seen.pmd[s]
                seen.pmd.update(fresh.pmd)
                for s in range(pslot_lo, pslot_hi):
                    seen.pud.pop(s, None)
                seen.pud.update(fresh.pud)
            ref = ref.replace_window(fresh)
            if rng.random() < 0.3:  # an array driver takes the value in between
                tables.set_value(tables.value())
        assert _content(tables.value()) == _content(ref)


def test_free_pgd_range_pud_table_test_sees_only_the_visible_slots():
    """``free_pgd_range(visible=...)`` on a wider window decides as on the window of
    ``visible`` alone: a PUD table is freed when no PUD entry of the visible slots is left,
    whatever the wider window holds beyond them."""
    t = resolve_target("6.18", "x86_64")
    a = t.arch
    rng = random.Random(3)
    for _ in range(200):
        top = rng.randint(1, 200) << a.p4d_shift
        pt = PageTables.empty(a)
        start = top + rng.randint(0, 4) * a.pud_size + rng.randint(0, 511) * a.pmd_size
        length = rng.randint(1, 600) * a.page_size
        pt = pt.populate(start, start + length)
        far = top + rng.randint(8, 500) * a.pud_size  # the same PUD table, other PUD slots
        if rng.random() < 0.7:
            pt = pt.populate(far, far + a.page_size)
        span = (start, start + length)
        floor = 0 if rng.random() < 0.5 else top
        narrow = pt.window(*span)
        wide = pt.window(min(start, far), max(start + length, far + a.page_size))
        for w in (narrow, wide):  # what a zap leaves: PTE tables, no PTEs
            for s in w.pmd:
                w.pmd[s] = (PMD_TABLE, 0)
        t1, t2 = MmuGather(), MmuGather()
        f1 = free_pgd_range(t, narrow, *span, floor, 0, t1)
        f2 = free_pgd_range(t, wide, *span, floor, 0, t2, visible=span)
        assert (f1, t1.tables) == (f2, t2.tables)
        assert narrow.pud_tables == wide.pud_tables


def _random_rows(rng: random.Random, n: int):
    rows, locks = [], []
    sets = [(), ("anon_vma:a",), ("i_mmap:f", "anon_vma:a"), ("i_mmap:g",)]
    for _ in range(n):
        rows.append(tuple(rng.choice([0, 1, 7, 512, rng.getrandbits(47)]) for _ in range(2))
                    + tuple(rng.choice([0, 1, 3, 511, 2 ** 31 - 1]) for _ in range(18)))
        locks.append(rng.choice(sets[:rng.randint(1, 4)]))
    return rows, locks


def test_freeze_rows_equals_one_asarray_per_column():
    """``StepLog._freeze_rows`` gives every column the values and dtype of
    ``np.asarray(column, dtype)``, and the lock-set numbering of the sorted distinct sets."""
    rng = random.Random(11)
    names = S.ADDR_COLUMNS + S.INT_COLUMNS
    for n in [0, 1, 2, 3, 5, 8, 13, 40] * 10:
        rows, locks = _random_rows(rng, n)
        st = S.StepLog._freeze_rows(rows, locks)
        data = list(zip(*rows)) if rows else [()] * len(names)
        assert list(st.cols) == list(names)
        for name, d in zip(names, data):
            want = np.asarray(d, dtype=S._DTYPES.get(name, np.int32))
            got = st.cols[name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            assert np.array_equal(got, want), name
        uniq = sorted(set(locks))
        assert st.lock_sets == tuple(uniq)
        assert st.lock_set.dtype == np.int32
        assert st.lock_set.tolist() == [uniq.index(x) for x in locks]


def _random_freed(rng: random.Random, a):
    tables = []
    for _ in range(rng.randint(1, 30)):
        level = rng.choice([PTE_TABLE, PTE_TABLE, PTE_TABLE, PMD_TABLE_PAGE, PUD_TABLE_PAGE])
        shift = {PTE_TABLE: a.pmd_shift, PMD_TABLE_PAGE: a.pud_shift,
                 PUD_TABLE_PAGE: a.p4d_shift}[level]
        tables.append(((rng.randint(0, 1 << 12) + (1 << 20)) << shift, level))
    return tables


@pytest.mark.parametrize("kernel", ["6.6", "6.18"])
def test_freed_tables_in_python_order_and_group_like_the_arrays(kernel):
    """``MmuGather.freed`` (sorted on Python ints) is the stable argsort of
    :func:`table_order_key` over arrays, and :func:`table_flush_groups` the ``reduceat``
    groups of :func:`table_flush_groups_arrays`, for every cut of the flushes."""
    t = resolve_target(kernel, "x86_64")
    a = t.arch
    rng = random.Random(5)
    for _ in range(300):
        tlb = MmuGather()
        for addr, level in _random_freed(rng, a):
            tlb.free_table(addr, level)
        addrs, levels = tlb.freed(t)
        arr_a = np.array([x for x, _ in tlb.tables], np.int64)
        arr_l = np.array([y for _, y in tlb.tables], np.int8)
        order = np.argsort(table_order_key(t, arr_a, arr_l), kind="stable")
        assert addrs == arr_a[order].tolist() and levels == arr_l[order].tolist()
        for addr, level in tlb.tables:
            one = table_order_key(t, np.array([addr], np.int64), np.array([level], np.int8))
            assert table_order_key(t, addr, level) == int(one[0])
        n = len(addrs)
        for cuts in (table_flush_cuts(t, rng.randint(0, 600), n),
                     sorted({0, *rng.sample(range(n), rng.randint(0, n - 1))})):
            got = table_flush_groups(addrs, levels, cuts, a.page_size)
            want = table_flush_groups_arrays(arr_a[order], arr_l[order], cuts, a.page_size)
            assert got == want


def test_empty_window_slots_read_as_none():
    """A slot no step touched reads as none in the open window, as in a fresh one."""
    a = resolve_target("6.18", "x86_64").arch
    tables = CallTables(PageTables.empty(a))
    win = tables.window(a.pud_size, 2 * a.pud_size)
    assert win.pmd.get(a.pud_size >> a.pmd_shift, (PMD_NONE, 0)) == (PMD_NONE, 0)
    win = tables.window(5 * a.pud_size, 6 * a.pud_size)
    assert (win.lo, win.hi) == (1, 6)


def test_row_tuples_hold_the_values_of_the_columns():
    """A table frozen from rows alone exposes them (``row_tuples``, in ``ROW_FIELDS``
    order) with the values its columns are made of; rows added to the log after the freeze
    are not in it."""
    rng = random.Random(17)
    for n in (0, 1, 4, 9):
        log = S.StepLog()
        rows, locks = _random_rows(rng, n)
        log.rows.extend(rows)
        log.lock_names.extend(locks)
        st = log.freeze()
        log.add(S.MOVE, S.K_NOTIFIER, 1, 2, 3, notifier=1)
        got_rows, got_locks = st.row_tuples
        assert len(st) == n == len(got_rows)
        assert got_rows == rows and got_locks == locks
        for j, name in enumerate(S.ROW_FIELDS):
            assert st.cols[name].tolist() == [r[j] for r in got_rows]
        assert st.lock_names_per_row() == locks


def test_a_walked_plan_is_frozen_from_rows():
    """Every walked plan's steps carry their Python rows (the fast path's do not need to)."""
    from helpers import A, B, M, plan

    p = plan(A + 4096, B + 4096, 3 * M)
    rows, _ = p.steps.row_tuples
    assert [S.KIND_NAMES[r[S.ROW_FIELDS.index("kind")]] for r in rows][:2] == ["syscall", "notifier"]


def test_vma_replaced_equals_dataclasses_replace():
    """``Vma.replaced`` (the syscall layer's VMA edits) makes the VMA ``dataclasses.replace``
    makes."""
    import dataclasses

    from perfsim.mm.vma import Vma

    rng = random.Random(23)
    for _ in range(200):
        v = Vma(0x1000 * rng.randint(1, 50), 0x1000 * rng.randint(51, 99),
                backing=rng.choice(["anon", "file", "shmem"]), thp=rng.random() < 0.5,
                anon_vma=rng.random() < 0.5, pgoff=rng.randint(0, 9), file_id="f",
                prot=rng.choice(["rw", "r"]), folio_size=rng.choice([0, 65536]), name="n")
        changes = {k: x for k, x in (("start", v.start - 0x1000), ("end", v.end + 0x2000),
                                     ("pgoff", 7), ("anon_vma", False)) if rng.random() < 0.5}
        assert v.replaced(**changes) == dataclasses.replace(v, **changes)


def test_plan_of_fields_equals_the_dataclass_constructor():
    """``MovePlan.of_fields`` makes the plan the generated ``__init__`` makes, and names a
    missing or unknown field."""
    import dataclasses

    from perfsim.planner.result import MovePlan

    values = {f.name: i for i, f in enumerate(dataclasses.fields(MovePlan))}
    a, b = MovePlan.of_fields(**values), MovePlan(**values)
    assert all(getattr(a, k) == getattr(b, k) for k in values)
    values.pop("moved")
    with pytest.raises(TypeError, match="moved"):
        MovePlan.of_fields(**values)


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_plan_walk.py"
    spec = importlib.util.spec_from_file_location("bench_plan_walk", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_window_per_call_plans_what_a_window_per_step_plans(monkeypatch):
    """Every field of a plan (steps, lock names, outcome, VMAs and page tables after) is
    the same whether the call's steps share one open window (``CallTables``) or each step
    reads a fresh window from the tables written back after the step before (the planner
    before issue 13's pass), on a seeded grid of moves, shrinks, expands, non-fixed,
    DONTUNMAP, mapped-destination, multi-VMA, failing and exec-stack calls."""
    bench = _bench_module()
    from perfsim.planner import plan_mremap
    from perfsim.planner.options import PlanOptions

    cases = list(bench._random_cases(random.Random(29), 250))
    assert len(cases) > 200

    def digests():
        out = []
        for space, req, t in cases:
            for opt in (PlanOptions(), PlanOptions("reference")):
                try:
                    out.append(bench._plan_digest(plan_mremap(space, req, t, opt)))
                except NotImplementedError as e:
                    out.append(str(e))
        return out

    shared = digests()
    open_window = CallTables.window

    def window_per_step(self, start, end):
        self.value()  # write back what the steps before did, then read afresh
        return open_window(self, start, end)

    monkeypatch.setattr(CallTables, "window", window_per_step)
    assert digests() == shared
