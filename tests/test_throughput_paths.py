"""Shortcuts of the per-call hot paths (issue 13) give what the general paths give."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.mm.pagetable import PageTables, _mask_pop
from perfsim.profiles import load_arch

ARCH = load_arch("x86_64")
PMD, PAGE = ARCH.pmd_size, ARCH.page_size
BASE = 7 << 39
FAR = BASE + (3 << 39)  # another top-level slot: populating it first sends the range through the merge


def _entries(pt: PageTables, start: int, end: int):
    win = pt.window(start, end)
    return win.pud, win.pmd, sorted(pt.pud_tables - {pt.top_slot(FAR)})


@pytest.mark.parametrize("kw", [{}, {"fraction": 0.4, "seed": 9}, {"thp": True},
                                {"every": 3}, {"every": 2, "fraction": 0.5, "seed": 1}])
@pytest.mark.parametrize("start,end", [(BASE + 5 * PAGE, BASE + 3 * PMD + 7 * PAGE),
                                       (BASE, BASE + 2 * PMD), (BASE + PAGE, BASE + 2 * PAGE)])
def test_populate_of_an_empty_state_maps_what_populating_a_nonempty_one_maps(kw, start, end):
    fresh = PageTables.empty(ARCH).populate(start, end, **kw)
    merged = PageTables.empty(ARCH).populate(FAR, FAR + PMD).populate(start, end, **kw)
    assert _entries(fresh, start, end) == _entries(merged, start, end)
    assert fresh.present_ptes(start, end) == merged.present_ptes(start, end)


@pytest.mark.parametrize("kw", [{}, {"fraction": 0.3, "seed": 2}, {"thp": True}])
def test_populate_keeps_each_bitmaps_population_equal_to_its_bits(kw):
    pt = PageTables.empty(ARCH).populate(BASE + 3 * PAGE, BASE + 4 * PMD - PAGE, **kw)
    pt = pt.populate(BASE + PMD + 9 * PAGE, BASE + 6 * PMD + 2 * PAGE, **kw)
    assert np.array_equal(pt.mask_pop, _mask_pop(pt.masks))
    assert pt.mask_pop.dtype == np.int32


def test_populate_twice_unions_the_bitmaps():
    a = PageTables.empty(ARCH).populate(BASE, BASE + PMD // 2)
    b = a.populate(BASE + PMD // 2, BASE + PMD)
    assert b.pmd_entry(BASE // PMD) == (1, (1 << ARCH.ptrs_per_pte) - 1)
    assert b.present_ptes(BASE, BASE + PMD) == ARCH.ptrs_per_pte


def test_replace_window_keeps_entries_outside_the_window_and_sorts_the_result():
    pt = PageTables.empty(ARCH).populate(BASE, BASE + 3 * PMD).populate(FAR, FAR + 2 * PMD)
    pt = pt.populate(BASE + (1 << 30), BASE + (1 << 30) + PMD)  # the next PUD slot
    win = pt.window(BASE + PMD, BASE + PMD + PAGE)  # PUD slot of BASE only
    slot = BASE // PMD
    win.pmd[slot + 1] = (1, 0b1011)
    del win.pmd[slot + 2]
    win.pmd[slot + 7] = (2, (1 << ARCH.ptrs_per_pte) - 1)
    out = pt.replace_window(win)
    assert np.all(np.diff(out.pmd_idx) > 0) and np.all(np.diff(out.pud_idx) > 0)
    assert out.pmd_entry(slot) == pt.pmd_entry(slot)
    assert out.pmd_entry(slot + 1) == (1, 0b1011)
    assert out.pmd_entry(slot + 2) == (0, 0)
    assert out.pmd_entry(slot + 7) == (2, 0)
    for far in (FAR // PMD, FAR // PMD + 1, (BASE + (1 << 30)) // PMD):
        assert out.pmd_entry(far) == pt.pmd_entry(far)
    assert np.array_equal(out.mask_pop, _mask_pop(out.masks))


def test_replace_window_refuses_an_entry_outside_its_pud_slots():
    pt = PageTables.empty(ARCH).populate(BASE, BASE + PMD)
    win = pt.window(BASE, BASE + PAGE)
    win.pmd[(BASE + (1 << 30)) // PMD] = (1, 1)
    with pytest.raises(ValueError, match="outside the window"):
        pt.replace_window(win)


def test_address_space_copies_keep_every_other_field():
    from perfsim.mm.space import AddressSpace
    from perfsim.mm.vma import Vma

    pt = PageTables.empty(ARCH)
    space = AddressSpace((Vma(BASE + PMD, BASE + 2 * PMD), Vma(BASE, BASE + PAGE)), pt, cpus=3,
                         lazy_cpus=1, map_count_limit=77, mmap_base_addr=BASE << 1)
    pt2 = pt.populate(BASE, BASE + PAGE)
    moved = space.with_pt(pt2)
    assert moved.pt is pt2 and moved.vmas == space.vmas and moved == AddressSpace(
        space.vmas, pt2, cpus=3, lazy_cpus=1, map_count_limit=77, mmap_base_addr=BASE << 1)
    fewer = space.with_vmas([Vma(BASE + 4 * PMD, BASE + 5 * PMD), Vma(BASE, BASE + PAGE)])
    assert [v.start for v in fewer.vmas] == [BASE, BASE + 4 * PMD]
    assert fewer.find_vma(BASE + 4 * PMD) == Vma(BASE + 4 * PMD, BASE + 5 * PMD)
    assert (fewer.cpus, fewer.lazy_cpus, fewer.map_count_limit) == (3, 1, 77)
    with pytest.raises(ValueError, match="overlap"):
        space.with_vmas([Vma(BASE, BASE + 2 * PAGE), Vma(BASE + PAGE, BASE + 3 * PAGE)])


@pytest.mark.parametrize("name", ["allocator_realloc", "shared_file_reclaim", "exec_stack"])
def test_row_costs_counts_are_param_counts_and_price_to_their_product(name):
    from test_throughput import _plans

    from perfsim.cost import load_cost_profile
    from perfsim.cost.model import PARAM_CATEGORY, param_counts, row_costs

    prof = load_cost_profile("x86_64-generic")
    for plan in _plans(name, 15):
        rc = row_costs(plan, prof, cpus=3)
        counts = param_counts(plan.steps, rc.ipis)
        assert list(rc.counts) == list(counts)
        for p, v in counts.items():
            assert v.dtype == np.int64 and v.shape == (len(plan.steps),)
            assert np.array_equal(rc.counts[p], v)
        total = sum(counts[p] * int(prof.param(p).ns) for p in counts
                    if PARAM_CATEGORY[p] and p != "ipi_receiver_ns")
        assert np.array_equal(rc.total, total)


def test_template_cache_of_a_fixed_profile_prices_without_the_generator():
    from test_throughput import _plans

    from perfsim.cost import load_cost_profile
    from perfsim.engine.pricing import TemplateCache, build_template

    prof = load_cost_profile("x86_64-generic")
    assert prof.is_fixed
    cache = TemplateCache(prof, set(), enabled=False)
    rng = np.random.default_rng(4)
    state = rng.bit_generator.state
    for plan in _plans("ipi_storm", 10):
        got = cache.get(plan.steps, 4, rng)
        want = build_template(plan.steps, prof, 4, None, set(), None)
        assert got.stats == want.stats and got.segments == want.segments
    assert rng.bit_generator.state == state


def test_cpu_credit_many_with_its_stolen_sum_equals_summing_it():
    from perfsim.engine.machine import Cpu, UserThread
    from perfsim.engine.spec import UserSpec

    credits = [(100, 7), (250, 3), (900, 11)]
    a, b = Cpu(0), Cpu(0)
    a.credit_many(credits)
    b.credit_many(credits, 21)
    assert (a.ipis, a.stolen, a.pending) == (b.ipis, b.stolen, b.pending) == (3, 21, [])
    spec = UserSpec(name="u", mm="mm0", cpu=0, quantum_ns=300)
    a.users.append(UserThread(spec))
    b.users.append(UserThread(spec))
    a.credit_many(credits)
    b.credit_many(credits, 21)
    a.settle(1000)
    b.settle(1000)
    assert a.users == b.users and a.users[0].stolen == 21


def test_default_cost_profile_is_the_first_generic_profile_for_the_arch_else_the_first_one():
    from perfsim.cost.profile import cost_profile_names, default_cost_profile, load_cost_profile
    from perfsim.errors import PerfsimError
    from perfsim.profiles import arch_names

    names = cost_profile_names()
    for arch in arch_names():
        fits = [n for n in names if load_cost_profile(n).is_for(arch)]
        if not fits:
            with pytest.raises(PerfsimError, match=f"no built-in cost profile is for arch {arch!r}"):
                default_cost_profile(arch)
            continue
        generic = [n for n in fits if n.endswith("-generic")]
        assert default_cost_profile(arch) == (generic or fits)[0]


def test_row_block_columns_are_shared_constants_or_dense_values():
    from perfsim.planner.fast_rows import RowBlock

    rb = RowBlock(5)
    rb.add(None, kind=3, ptes=np.arange(5), flag=np.int64(2))
    rb.add(np.array([1, 3]), alloc=1)
    shared: dict = {}
    zero_a, zero_b = rb.column("absent", np.int32, shared), rb.column("other", np.int32, shared)
    assert zero_a is zero_b and zero_a.strides == (0,) and not zero_a.flags.writeable
    assert zero_a.tolist() == [0] * 5
    assert rb.column("kind", np.int32, shared).tolist() == [3] * 5
    assert rb.column("flag", np.int64, shared).tolist() == [2] * 5
    assert rb.column("ptes", np.int64).tolist() == [0, 1, 2, 3, 4]
    assert rb.column("alloc", np.int32).tolist() == [0, 1, 0, 1, 0]
    assert rb.column("kind", np.int64, shared).dtype == np.int64  # keyed by dtype too


@pytest.mark.parametrize("seed", [0, 5, 123456789])
@pytest.mark.parametrize("start,end", [(BASE + 5 * PAGE, BASE + 9 * PMD + 7 * PAGE),
                                       (BASE, BASE + 6 * PMD + PAGE), (BASE + PAGE, BASE + 4 * PMD)])
def test_a_sparse_thp_population_draws_the_edge_bitmaps_of_a_full_draw(seed, start, end):
    pt = PageTables.empty(ARCH).populate(start, end, fraction=0.3, seed=seed, thp=True)
    first, last = start // PMD, (end - 1) // PMD
    full = np.random.default_rng(seed).random((last - first + 1, ARCH.ptrs_per_pte)) < 0.3
    for j, slot in enumerate(range(first, last + 1)):
        lo = max(start, slot * PMD) - slot * PMD >> 12
        hi = min(end, (slot + 1) * PMD) - slot * PMD >> 12
        kind, mask = pt.pmd_entry(slot)
        if (lo, hi) == (0, ARCH.ptrs_per_pte):
            assert (kind, mask) == (2, 0)  # a huge leaf
            continue
        want = sum(1 << i for i in range(lo, hi) if full[j, i])
        assert (kind, mask) == ((1, want) if want else (0, 0))


def test_segment_credits_list_per_cpu_the_flushes_that_reach_it_shared_when_equal():
    from test_throughput import _plans

    from perfsim.cost import load_cost_profile
    from perfsim.engine.pricing import build_template

    prof = load_cost_profile("x86_64-generic")
    seen = 0
    for plan in _plans("ipi_storm", 10) + _plans("allocator_realloc", 10):
        for cpus in (1, 2, 6):
            tp = build_template(plan.steps, prof, cpus, None, set(), None)
            for rec in tp.records:
                if rec is None or rec.flush is None:
                    continue
                _rows, off, _full, _pages, targets, stolen = rec.flush
                assert len(rec.credits) == max(targets.tolist(), default=0)
                for j, cr in enumerate(rec.credits):
                    want = tuple((o, s) for o, t, s in zip(off.tolist(), targets.tolist(),
                                                           stolen.tolist()) if t > j)
                    assert cr == want
                    if j and cr == rec.credits[j - 1]:
                        assert cr is rec.credits[j - 1]
                        seen += 1
    assert seen  # some CPUs share their list
