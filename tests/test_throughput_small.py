"""Shortcuts of a small call's pricing (issue 13, part 3) give what the definitions give."""

from __future__ import annotations

import numpy as np
import pytest
from test_throughput import _plans

from perfsim.cost import load_cost_profile
from perfsim.cost.model import CATEGORIES, row_costs
from perfsim.engine.pricing import build_template
from perfsim.engine.records import CallStats
from perfsim.planner import steps as S

WORKLOADS = ["allocator_realloc", "ipi_storm", "exec_stack", "random_layout_stress"]


@pytest.mark.parametrize("name", WORKLOADS)
@pytest.mark.parametrize("profile", ["x86_64-generic", "kvm-host"])
def test_category_sums_of_a_fixed_profile_are_each_categorys_row_sum(name, profile):
    prof = load_cost_profile(profile)
    for plan in _plans(name, 12):
        for cpus in (None, 1, 4):
            rc = row_costs(plan, prof, cpus=cpus)
            assert rc.per_category is not None
            got = rc.category_sums()
            assert list(got) == list(CATEGORIES)
            for c in CATEGORIES:
                assert type(got[c]) is int
                assert got[c] == int(rc.by_category[c].sum())
            n = len(plan.steps)
            assert rc.category_sums(1, n) == {c: int(rc.by_category[c][1:].sum())
                                             for c in CATEGORIES}


@pytest.mark.parametrize("name", WORKLOADS)
def test_call_record_totals_are_the_plans_column_sums(name):
    prof = load_cost_profile("x86_64-generic")
    for plan in _plans(name, 12):
        st, cols = plan.steps, plan.steps.cols
        t = build_template(st, prof, 4, None, (), None)
        rec = CallStats(*t.stats)
        assert rec.tlb_flushes == int(cols["flushes"].sum())
        assert rec.tables_freed == int(cols["freed"].sum())
        assert rec.tables_allocated == sum(int(cols[c].sum()) for c in
                                           ("alloc_p4d", "alloc_pud", "alloc_pmd", "alloc_pte"))
        assert rec.ptes_moved == int(cols["ptes"][cols["kind"] == S.K_PTE_MOVE].sum())
        assert all(type(v) is int for v in (rec.tlb_flushes, rec.tables_freed,
                                            rec.tables_allocated))


def test_row_costs_of_an_empty_plan_are_empty():
    prof = load_cost_profile("x86_64-generic")
    plan = _plans("ipi_storm", 1)[0]
    empty = plan.steps.select(np.zeros(len(plan.steps), bool))
    rc = row_costs(empty, prof, cpus=4)
    assert len(rc.total) == 0 and rc.category_sums() == dict.fromkeys(CATEGORIES, 0)
    assert all(len(v) == 0 for v in rc.counts.values())
    assert np.array_equal(rc.stolen, np.zeros(0, np.int64))


def test_replace_window_appends_each_new_bitmap_as_its_words_and_population():
    from perfsim.mm.pagetable import PMD_TABLE, PageTables, _int_to_words, _mask_pop
    from perfsim.profiles import load_arch

    arch = load_arch("x86_64")
    base = 7 << 39
    pt = PageTables.empty(arch).populate(base, base + 2 * arch.pmd_size, fraction=0.5, seed=3)
    win = pt.window(base, base + arch.pmd_size)
    slot = base >> arch.pmd_shift
    full = (1 << arch.ptrs_per_pte) - 1
    wanted = [0b1011, full, 1 << (arch.ptrs_per_pte - 1), 0b1011]  # the last one repeats
    for k, m in enumerate(wanted):
        win.pmd[slot + 3 + k] = (PMD_TABLE, m)
    out = pt.replace_window(win)
    words = arch.ptrs_per_pte // 64
    added = out.masks[len(pt.masks):]
    distinct = {m for kind, m in win.pmd.values() if kind == PMD_TABLE}
    assert len(added) == len(distinct)  # each distinct bitmap of the window once
    for k, m in enumerate(wanted):
        kind, got = out.pmd_entry(slot + 3 + k)
        assert (kind, got) == (PMD_TABLE, m)
    assert np.array_equal(out.mask_pop, _mask_pop(out.masks))
    assert out.mask_pop.dtype == np.int32 and out.masks.dtype == np.uint64
    assert out.masks.shape[1] == words
    rows = {out.pmd_mask[i] for i in range(len(out.pmd_idx)) if out.pmd_kind[i] == PMD_TABLE}
    for r in rows:
        assert r < len(out.masks)
    assert all(np.array_equal(out.masks[out.pmd_mask[np.searchsorted(out.pmd_idx, slot + 3 + k)]],
                              _int_to_words(m, words)) for k, m in enumerate(wanted))


@pytest.mark.parametrize("length", [0, 1, 5, 32, 33, 200])
def test_splice_gives_the_concatenation_of_the_kept_rows_and_the_new_ones(length):
    from perfsim.mm.pagetable import _splice

    rng = np.random.default_rng(length)
    cols = (np.sort(rng.integers(0, 1 << 40, length)).astype(np.int64),
            rng.integers(0, 3, length).astype(np.int8),
            rng.integers(-1, 9, length).astype(np.int32))
    dtypes = (np.int64, np.int8, np.int32)
    for i0, i1 in {(0, 0), (0, length), (length // 3, length // 2), (length, length)}:
        vals = ([7, 1 << 35, 9], [2, 0, 1], [-1, 4, 0])
        got = _splice(cols, i0, i1, vals, dtypes)
        for col, v, dt, g in zip(cols, vals, dtypes, got, strict=True):
            want = np.concatenate([col[:i0], np.array(v, dt), col[i1:]])
            assert g.dtype == want.dtype and np.array_equal(g, want)


@pytest.mark.parametrize("pmd_slots", [1, 3, 64, 65, 700])
def test_populate_of_every_page_maps_whole_bitmaps_and_a_pud_entry_per_pud_slot(pmd_slots):
    from perfsim.mm.pagetable import PMD_TABLE, PUD_TABLE, PageTables
    from perfsim.profiles import load_arch

    arch = load_arch("x86_64")
    start = (7 << 39) + (1 << 30) - 3 * arch.pmd_size  # crosses a PUD boundary when long
    end = start + pmd_slots * arch.pmd_size
    pt = PageTables.empty(arch).populate(start, end)
    full = (1 << arch.ptrs_per_pte) - 1
    assert [pt.pmd_entry(s) for s in range(start >> arch.pmd_shift, end >> arch.pmd_shift)] \
        == [(PMD_TABLE, full)] * pmd_slots
    puds = sorted({s >> (arch.pud_shift - arch.pmd_shift)
                   for s in range(start >> arch.pmd_shift, end >> arch.pmd_shift)})
    assert pt.pud_idx.tolist() == puds and pt.pud_kind.tolist() == [PUD_TABLE] * len(puds)
    assert pt.present_ptes(start, end) == pmd_slots * arch.ptrs_per_pte


@pytest.mark.parametrize("where", ["below", "gap", "above", "overlapping"])
def test_populate_next_to_mapped_entries_keeps_them_and_adds_the_new_ones_sorted(where):
    from perfsim.mm.pagetable import PageTables
    from perfsim.profiles import load_arch

    arch = load_arch("x86_64")
    M, P = arch.pmd_size, arch.page_size
    base = 7 << 39
    old = PageTables.empty(arch).populate(base + 10 * M, base + 12 * M + 5 * P,
                                           fraction=0.5, seed=4)
    old = old.populate(base + 40 * M + 3 * P, base + 41 * M)
    lo = {"below": base + 2 * M + 7 * P, "gap": base + 20 * M + P, "above": base + 50 * M,
          "overlapping": base + 11 * M + 9 * P}[where]
    hi = lo + 3 * M + 4 * P
    new = PageTables.empty(arch).populate(lo, hi, every=2)
    got = old.populate(lo, hi, every=2)
    slots = sorted(set(old.pmd_idx.tolist()) | set(new.pmd_idx.tolist()))
    assert got.pmd_idx.tolist() == slots
    assert got.pmd_idx.dtype == old.pmd_idx.dtype and got.pmd_mask.dtype == old.pmd_mask.dtype
    for s in slots:
        ok, om = old.pmd_entry(s)
        nk, nm = new.pmd_entry(s)
        assert got.pmd_entry(s) == (max(ok, nk), om | nm)
    assert np.array_equal(got.mask_pop, _mask_pop_of(got))


def _mask_pop_of(pt):
    from perfsim.mm.pagetable import _mask_pop

    return _mask_pop(pt.masks)
