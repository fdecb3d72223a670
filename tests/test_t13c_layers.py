"""Issue 13, sixth pass ("layers"): the shortcuts of the state and step layers every plan
goes through, each held to the definition it stands for on seeded random inputs."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import numpy as np
import pytest

from perfsim.mm.pagetable import _POPULATE_DEFAULTS, _POPULATE_KW, PageTables, _check_range
from perfsim.mm.vma import BACKINGS, Vma
from perfsim.profiles import load_arch


def _random_vma(rng) -> Vma:
    start = int(rng.integers(1, 1 << 30)) << 12
    backing = str(rng.choice(BACKINGS))
    return Vma(start, start + (int(rng.integers(1, 1 << 12)) << 12), backing=backing,
               thp=bool(rng.integers(2)), uffd_wp=bool(rng.integers(2)),
               anon_vma=bool(rng.integers(2)), pgoff=int(rng.integers(0, 1 << 20)),
               file_id=None if backing == "anon" else f"f{int(rng.integers(9))}",
               anon_id=f"a{int(rng.integers(9))}" if rng.integers(2) else None,
               prot=str(rng.choice(["rw", "r", "rwx"])),
               hugepage_size=int(rng.choice([0, 1 << 21, 1 << 30])),
               folio_size=int(rng.choice([0, 1 << 14, 1 << 16])), stack=bool(rng.integers(2)),
               name=f"v{int(rng.integers(99))}", uffd_mode=str(rng.choice(["", "missing", "wp"])),
               shared=bool(rng.integers(2)))


# ---------------------------------------------------------------- mm/vma.py
@pytest.mark.parametrize("seed", range(20))
def test_with_range_is_dataclasses_replace_of_the_range_and_page_offset(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        v = _random_vma(rng)
        s = int(rng.integers(1, 1 << 30)) << 12
        e = s + (int(rng.integers(1, 1 << 10)) << 12)
        pg = None if rng.random() < 0.5 else int(rng.integers(0, 1 << 20))
        got = v.with_range(s, e, pg)
        want = dataclasses.replace(v, start=s, end=e, pgoff=v.pgoff if pg is None else pg)
        assert type(got) is Vma
        assert got == want and hash(got) == hash(want) and repr(got) == repr(want)
        assert [getattr(got, f.name) for f in dataclasses.fields(Vma)] == \
            [getattr(want, f.name) for f in dataclasses.fields(Vma)]
        assert vars(got) == vars(want)  # no field more or less in the instance
        assert v.moved(s) == dataclasses.replace(v, start=s, end=s + v.length)


def test_with_range_refuses_an_empty_or_inverted_range_like_the_constructor():
    v = Vma(0x1000, 0x3000)
    for s, e in ((0x5000, 0x5000), (0x6000, 0x5000)):
        with pytest.raises(ValueError, match="empty or inverted"):
            v.with_range(s, e)
        with pytest.raises(ValueError, match="empty or inverted"):
            Vma(s, e)


def test_a_vma_stays_frozen_and_pickles_as_the_value_it_is():
    v = Vma(0x1000, 0x3000, backing="file", file_id="x", name="n").with_range(0x2000, 0x4000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.start = 0  # type: ignore[misc]
    back = pickle.loads(pickle.dumps(v))
    assert back == v and hash(back) == hash(v) and vars(back) == vars(v)


# ---------------------------------------------------------------- mm/pagetable.py
def test_populate_each_defaults_are_populates_keyword_defaults_in_its_order():
    params = [p for p in inspect.signature(PageTables.populate).parameters.values()
              if p.kind is p.KEYWORD_ONLY]
    assert list(_POPULATE_DEFAULTS.items()) == [(p.name, p.default) for p in params]
    assert frozenset(_POPULATE_DEFAULTS) == _POPULATE_KW


@pytest.mark.parametrize("page_shift", [12, 14, 16])
def test_check_range_accepts_exactly_the_non_empty_page_aligned_ranges(page_shift):
    page = 1 << page_shift
    rng = np.random.default_rng(page_shift)
    values = [0, page, 3 * page, page - 1, page + 1, 5 << 39, (5 << 39) + page // 2]
    values += [int(x) for x in rng.integers(0, 1 << 48, 40)]
    values += [int(x) * page for x in rng.integers(0, 1 << 30, 40)]
    for start in values:
        for end in values:
            ok = start % page == 0 and end % page == 0 and end > start  # the definition
            if ok:
                _check_range(page_shift, start, end)
            else:
                with pytest.raises(ValueError, match="page aligned"):
                    _check_range(page_shift, start, end)


@pytest.mark.parametrize("arch_name", ["x86_64", "arm64-64k"])
@pytest.mark.parametrize("seed", range(6))
def test_a_small_states_window_is_the_window_of_its_eager_arrays(arch_name, seed):
    arch = load_arch(arch_name)
    rng = np.random.default_rng(seed)
    base = (5 << 39) + (1 << arch.pud_shift) - 3 * arch.pmd_size
    ranges = []
    for _ in range(int(rng.integers(1, 4))):
        lo = base + int(rng.integers(0, 8 * arch.ptrs_per_pte)) * arch.page_size
        hi = lo + int(rng.integers(1, 3 * arch.ptrs_per_pte)) * arch.page_size
        kw = {} if rng.random() < 0.5 else {"fraction": 0.5, "seed": int(rng.integers(99))}
        ranges.append((lo, hi, kw))
    small = PageTables.empty(arch).populate_each(ranges)
    assert "_lists" in small.__dict__ and "_rows" in small.__dict__  # the small path's state
    eager = PageTables(arch, small.pud_tables, small.pud_idx, small.pud_kind, small.pmd_idx,
                       small.pmd_kind, small.pmd_mask, small.masks, small.mask_pop)
    for _ in range(10):
        s = base + int(rng.integers(-4, 12)) * arch.pmd_size
        e = s + int(rng.integers(1, 6 * arch.ptrs_per_pte)) * arch.page_size
        got, want = small.window(s, e), eager.window(s, e)
        assert (got.lo, got.hi, got.pud_tables, got.pud, got.pmd) == \
            (want.lo, want.hi, want.pud_tables, want.pud, want.pmd)
        assert got._read[1:] == want._read[1:] and got._read[0] is small
        assert got.pud is not got._read[3] and got.pmd is not got._read[4]
        assert got.pud_tables is not small.pud_tables
        assert small.replace_window(got) is small
