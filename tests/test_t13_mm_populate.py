"""The scalar population of a few PMD slots (issue 13) gives what the array path gives.

``PageTables.populate`` sends a range of at most ``SMALL_SLOTS`` PMD slots on a small state
to ``_populate_small`` (Python ints and lists) and everything else to ``_populate_arrays``
(numpy, per slot). Both must build the same state field for field: the same entries, the
same bitmap rows appended in the same order, the same dtypes, the same top-level set.
"""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.mm.pagetable import SMALL_SLOTS, PageTables, _every_pattern, _mask_pop
from perfsim.profiles import load_arch

FIELDS = ("pud_idx", "pud_kind", "pmd_idx", "pmd_kind", "pmd_mask", "masks", "mask_pop")


def assert_same_state(got: PageTables, want: PageTables) -> None:
    assert got.arch is want.arch
    assert got.pud_tables == want.pud_tables
    for f in FIELDS:
        g, w = getattr(got, f), getattr(want, f)
        assert g.dtype == w.dtype, f
        assert g.shape == w.shape, f
        assert np.array_equal(g, w), f


def _kwargs(rng) -> dict:
    kind = rng.integers(0, 6)
    if kind == 0:
        return {}
    if kind == 1:
        return {"fraction": float(rng.uniform(0.05, 0.95)), "seed": int(rng.integers(1 << 40))}
    if kind == 2:
        return {"every": int(rng.integers(2, 9))}
    if kind == 3:
        return {"thp": True}
    if kind == 4:
        return {"thp": True, "fraction": float(rng.uniform(0.05, 0.95)),
                "seed": int(rng.integers(1 << 40))}
    return {"every": int(rng.integers(2, 6)), "fraction": float(rng.uniform(0.1, 0.9)),
            "seed": int(rng.integers(1 << 40))}


def _range(rng, arch, base: int, max_slots: int) -> tuple[int, int]:
    pages_per_pmd = arch.ptrs_per_pte
    start = base + int(rng.integers(0, 40 * pages_per_pmd)) * arch.page_size
    if rng.random() < 0.3:
        start -= start % arch.pmd_size  # PMD aligned: whole slots, huge leaves possible
    n_pages = int(rng.integers(1, max_slots * pages_per_pmd))
    if rng.random() < 0.3:
        n_pages = -(-n_pages // pages_per_pmd) * pages_per_pmd
    return start, start + n_pages * arch.page_size


@pytest.mark.parametrize("arch_name", ["x86_64", "x86_64-la57", "arm64-64k", "riscv-sv39"])
@pytest.mark.parametrize("seed", range(6))
def test_small_population_builds_the_state_the_array_population_builds(arch_name, seed):
    arch = load_arch(arch_name)
    rng = np.random.default_rng(seed)
    # near a PUD boundary, so ranges cross it; a second top-level slot far away
    base = (5 << 39) + (1 << arch.pud_shift) - 20 * arch.pmd_size
    far = base + (3 << 39)
    for _ in range(25):
        pt = PageTables.empty(arch)
        for _ in range(int(rng.integers(0, 4))):  # a state already holding a few ranges
            where = far if rng.random() < 0.3 else base
            lo, hi = _range(rng, arch, where, 6)
            pt = pt._populate_arrays(lo, hi, 1, 1.0, 0, False, False) if rng.random() < 0.5 \
                else pt.populate(lo, hi, **_kwargs(rng))
        lo, hi = _range(rng, arch, base, SMALL_SLOTS - 1)
        kw = _kwargs(rng)
        full = dict(every=1, fraction=1.0, seed=0, thp=False, pud_leaf=False) | kw
        args = (full["every"], full["fraction"], full["seed"], full["thp"], full["pud_leaf"])
        got = pt._populate_small(lo, hi, *args)
        assert_same_state(got, pt._populate_arrays(lo, hi, *args))
        assert np.array_equal(got.mask_pop, _mask_pop(got.masks))


def test_populate_goes_the_small_way_only_for_few_slots_on_a_small_state():
    arch = load_arch("x86_64")
    base = 5 << 39
    pt = PageTables.empty(arch)
    calls = []
    small, arrays = PageTables._populate_small, PageTables._populate_arrays

    class Spy(PageTables):
        def _populate_small(self, *a):
            calls.append("small")
            return small(self, *a)

        def _populate_arrays(self, *a):
            calls.append("arrays")
            return arrays(self, *a)

    spy = Spy(*(getattr(pt, f) for f in ("arch", "pud_tables", *FIELDS)))
    spy.populate(base, base + SMALL_SLOTS * arch.pmd_size)
    spy.populate(base, base + (SMALL_SLOTS + 1) * arch.pmd_size)
    assert calls == ["small", "arrays"]


def test_a_hugetlb_gib_population_of_few_slots_has_no_pud_leaf():
    arch = load_arch("x86_64")
    base = 5 << 39
    got = PageTables.empty(arch)._populate_small(base, base + 3 * arch.pmd_size, 1, 1.0, 0,
                                                 True, True)
    want = PageTables.empty(arch)._populate_arrays(base, base + 3 * arch.pmd_size, 1, 1.0, 0,
                                                   True, True)
    assert_same_state(got, want)
    assert got.pud_kind.tolist() == [1]


@pytest.mark.parametrize("every", [1, 2, 3, 7, 64, 100, 511, 512, 513])
@pytest.mark.parametrize("phase", [0, 1, 5])
def test_every_pattern_is_the_indices_phase_plus_multiples_of_every(every, phase):
    ptrs = 512
    want = sum(1 << i for i in range(ptrs) if i >= phase and (i - phase) % every == 0)
    assert _every_pattern(ptrs, every, phase) == want


@pytest.mark.parametrize("seed", range(8))
def test_populate_each_builds_the_state_the_chained_array_populations_build(seed):
    arch = load_arch("x86_64" if seed % 2 else "x86_64-la57")
    rng = np.random.default_rng(100 + seed)
    base = (5 << 39) + (1 << arch.pud_shift) - 20 * arch.pmd_size
    for _ in range(20):
        ranges = []
        for _ in range(int(rng.integers(1, 5))):
            where = base + (3 << 39) if rng.random() < 0.2 else base
            lo, hi = _range(rng, arch, where, 80 if rng.random() < 0.2 else 8)
            ranges.append((lo, hi, _kwargs(rng)))
        want = PageTables.empty(arch)
        for lo, hi, kw in ranges:
            full = dict(every=1, fraction=1.0, seed=0, thp=False, pud_leaf=False) | kw
            want = want._populate_arrays(lo, hi, full["every"], full["fraction"], full["seed"],
                                         full["thp"], full["pud_leaf"])
        assert_same_state(PageTables.empty(arch).populate_each(ranges), want)


def test_populate_each_refuses_an_unaligned_range_like_populate():
    arch = load_arch("x86_64")
    with pytest.raises(ValueError, match="page aligned"):
        PageTables.empty(arch).populate_each([(5 << 39, (5 << 39) + 100, {})])


def test_populate_each_refuses_a_keyword_populate_does_not_take():
    arch = load_arch("x86_64")
    with pytest.raises(TypeError, match="density"):
        PageTables.empty(arch).populate_each([(5 << 39, (5 << 39) + 4096, {"density": 1})])
