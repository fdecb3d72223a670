"""Issue 13, sixth pass ("layers"): the shortcuts of the state and step layers every plan
goes through, each held to the definition it stands for on seeded random inputs."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import numpy as np
import pytest

from perfsim.mm.pagetable import _POPULATE_DEFAULTS, _POPULATE_KW, PageTables, _check_range
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import BACKINGS, Vma
from perfsim.planner.steps import ROW_FIELDS, StepLog
from perfsim.planner.tlb import Flush, flush_range, flush_span
from perfsim.profiles import load_arch, resolve_target


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


# ---------------------------------------------------------------- mm/space.py
def test_with_vma_added_drops_the_vmas_equal_to_one_without_not_only_the_same_objects():
    rng = np.random.default_rng(7)
    page = 4096
    for _ in range(300):
        vmas, at = [], int(rng.integers(1, 64)) * page
        for _ in range(int(rng.integers(1, 7))):
            length = int(rng.integers(1, 32)) * page
            vmas.append(Vma(at, at + length, name=f"v{at}", pgoff=int(rng.integers(3))))
            at += length + int(rng.choice([0, page, 5 * page]))
        space = AddressSpace(vmas, PageTables.empty(load_arch("x86_64")))
        without = []
        for v in space.vmas:
            k = int(rng.integers(4))
            if k == 1:
                without.append(v)  # the same object
            elif k == 2:
                without.append(v.with_range(v.start, v.end))  # an equal copy
            elif k == 3:  # the same start, another field: not equal, the VMA stays
                without.append(v.with_range(v.start, v.end, v.pgoff + 1))
        start = int(rng.integers(0, 400)) * page
        vma = Vma(start, start + int(rng.integers(1, 40)) * page, name="new")
        try:
            got = space.with_vma_added(vma, without=tuple(without))
        except ValueError as e:
            got = str(e)
        try:
            want = space.with_vmas([v for v in space.vmas if v not in without] + [vma])
        except ValueError as e:
            want = str(e)
        if isinstance(want, str):
            assert got == want
        else:
            assert got == want and got._starts == want._starts and got.__dict__ == want.__dict__


# ---------------------------------------------------------------- planner/steps.py
@pytest.mark.parametrize("seed", range(10))
def test_add_row_appends_the_row_add_appends(seed):
    rng = np.random.default_rng(seed)
    flushes = [None, Flush(full=False, pages=3, ipis=2), Flush(full=True, pages=0, ipis=0)]
    names = ("ptes", "slots", "batches", "alloc_p4d", "alloc_pud", "alloc_pmd", "alloc_pte",
             "freed")
    a, b = StepLog(), StepLog()
    for _ in range(50):
        phase, kind = int(rng.integers(5)), int(rng.integers(16))
        pos = [int(x) for x in rng.integers(0, 1 << 40, 3)]
        counts = [int(x) for x in rng.integers(0, 600, len(names))]
        flush = flushes[int(rng.integers(3))]
        rmap = (("i_mmap:f",), (), ("i_mmap:f", "anon_vma:a"))[int(rng.integers(3))]
        ptl, notifier = int(rng.integers(3)), int(rng.integers(2))
        a.add(phase, kind, *pos, **dict(zip(names, counts)), flush=flush, rmap=rmap, ptl=ptl,
              notifier=notifier)
        b.add_row(phase, kind, *pos, *counts, flush, rmap, ptl, notifier)
    assert a.rows == b.rows and a.lock_names == b.lock_names
    fa, fb = a.freeze(), b.freeze()
    for k in ROW_FIELDS:
        assert fa.cols[k].tolist() == fb.cols[k].tolist()


def test_add_row_takes_adds_parameters_in_adds_order():
    add = [p.name for p in inspect.signature(StepLog.add).parameters.values()]
    row = [p.name for p in inspect.signature(StepLog.add_row).parameters.values()]
    assert row == add


# ---------------------------------------------------------------- planner/gather.py
@pytest.mark.parametrize("target_name", [("6.18", "x86_64"), ("6.1", "arm64-4k"), ("7.3", "riscv-sv39")])
def test_tlb_finish_mmus_flushes_are_flush_range_over_their_span(target_name):
    """``tlb_finish_mmu`` reads its flushes from :func:`flush_span` (memoised per target):
    the flush of each stride, CPU count and table-freeing kind it asks for is
    :func:`flush_range`'s over that span."""
    target = resolve_target(*target_name)
    a = target.arch
    rng = np.random.default_rng(3)
    for cpus, lazy in ((1, 0), (4, 0), (4, 2), (64, 8)):
        for shift in (a.page_shift, a.pmd_shift, a.pud_shift, a.p4d_shift):
            for freed in (False, True):
                spans = [a.page_size, a.pmd_size, 3 * a.pmd_size + a.page_size]
                spans += [int(x) * a.page_size for x in rng.integers(1, 1 << 20, 20)]
                for span in spans:
                    assert flush_span(
                        target, span, stride_shift=shift, cpus=cpus, lazy_cpus=lazy,
                        freed_tables=freed) == flush_range(
                        target, 0, span, stride_shift=shift, cpus=cpus, lazy_cpus=lazy,
                        freed_tables=freed)


def _intersecting_by_scan(space: AddressSpace, start: int, end: int) -> list[Vma]:
    return [v for v in space.vmas if v.start < end and v.end > start] if end > start else []


@pytest.mark.parametrize("seed", range(6))
def test_intersecting_is_every_vma_overlapping_the_range_in_order(seed):
    rng = np.random.default_rng(seed)
    page = 4096
    arch = load_arch("x86_64")
    for _ in range(200):
        vmas, at = [], int(rng.integers(0, 16)) * page
        for _ in range(int(rng.integers(0, 8))):
            length = int(rng.integers(1, 16)) * page
            vmas.append(Vma(at, at + length))
            at += length + int(rng.choice([0, 0, page, 7 * page]))
        space = AddressSpace(vmas, PageTables.empty(arch))
        for _ in range(20):
            s = int(rng.integers(-2, at // page + 3)) * page + int(rng.choice([0, 0, 1, 100]))
            e = s + int(rng.integers(-page, 20 * page))
            assert space.intersecting(s, e) == _intersecting_by_scan(space, s, e)
