"""Page-table windows and their write-back (issue 13): cheap for small states, same state.

``PageTables.window`` reads the entries of a range of PUD slots into dicts and remembers
what it read; ``replace_window`` writes the dicts back, keeping what did not change. Small
states (a synthetic call's layout, a walked plan's states) are held as Python lists and
build their arrays when one is first read. Whatever the path, the state written back is
the definition: the entries outside the window's PUD slots as they were, and the window's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perfsim.mm.pagetable import (
    PMD_LEAF,
    PMD_TABLE,
    PUD_LEAF,
    PUD_TABLE,
    PageTables,
    _mask_pop,
    _words_to_int,
)
from perfsim.profiles import load_arch

FIELDS = ("pud_idx", "pud_kind", "pmd_idx", "pmd_kind", "pmd_mask", "masks", "mask_pop")
DTYPES = (np.int64, np.int8, np.int64, np.int8, np.int32, np.uint64, np.int32)


def entries(pt: PageTables) -> tuple[dict, dict]:
    """Every PUD entry ``slot -> kind`` and PMD entry ``slot -> (kind, bitmap)`` (0 for a
    huge leaf), read from the arrays."""
    pud = dict(zip(pt.pud_idx.tolist(), pt.pud_kind.tolist(), strict=True))
    pmd = {}
    for slot, kind, row in zip(pt.pmd_idx.tolist(), pt.pmd_kind.tolist(), pt.pmd_mask.tolist(),
                               strict=True):
        pmd[slot] = (kind, _words_to_int(pt.masks[row]) if kind == PMD_TABLE else 0)
    return pud, pmd


def assert_well_formed(pt: PageTables) -> None:
    for f, dt in zip(FIELDS, DTYPES, strict=True):
        assert getattr(pt, f).dtype == dt, f
    assert np.all(np.diff(pt.pmd_idx) > 0) and np.all(np.diff(pt.pud_idx) > 0)
    assert np.array_equal(pt.mask_pop, _mask_pop(pt.masks))
    tables = pt.pmd_kind == PMD_TABLE
    assert np.all((pt.pmd_mask[tables] >= 0) & (pt.pmd_mask[tables] < len(pt.masks)))


def assert_same_arrays(got: PageTables, want: PageTables) -> None:
    assert got.pud_tables == want.pud_tables
    for f in FIELDS:
        g, w = getattr(got, f), getattr(want, f)
        assert g.dtype == w.dtype and g.shape == w.shape and np.array_equal(g, w), f


def eager_copy(pt: PageTables) -> PageTables:
    """The same state built the ordinary way, from its arrays (no list form)."""
    return PageTables(pt.arch, pt.pud_tables, *(getattr(pt, f).copy() for f in FIELDS))


def _state(rng, arch, base: int, far: int, n_ranges: int) -> PageTables:
    pt = PageTables.empty(arch)
    for _ in range(n_ranges):
        where = far if rng.random() < 0.25 else base
        start = where + int(rng.integers(0, 3 * arch.ptrs_per_pte ** 2)) * arch.page_size
        # now and then a range of more PMD slots than a small state holds
        pages = int(rng.integers(1, (90 if rng.random() < 0.15 else 4) * arch.ptrs_per_pte))
        kw = [{}, {"fraction": 0.5, "seed": int(rng.integers(99))}, {"thp": True},
              {"every": 3}][int(rng.integers(4))]
        pt = pt.populate(start, start + pages * arch.page_size, **kw)
    return pt


def _edit(rng, arch, win) -> None:
    """Random changes a planner could make: entries removed, rewritten, added, moved."""
    shift = arch.pud_shift - arch.pmd_shift
    lo_pmd, hi_pmd = win.lo << shift, win.hi << shift
    full = (1 << arch.ptrs_per_pte) - 1
    for slot in list(win.pmd):
        u = rng.random()
        if u < 0.2:
            del win.pmd[slot]
        elif u < 0.4:
            win.pmd[slot] = (PMD_TABLE, int(rng.integers(1 << 62)) | 1)
        elif u < 0.5:
            dst = int(rng.integers(lo_pmd, hi_pmd))
            if dst not in win.pmd:
                win.pmd[dst] = win.pmd.pop(slot)
    for _ in range(int(rng.integers(0, 4))):
        slot = int(rng.integers(lo_pmd, hi_pmd))
        win.pmd[slot] = (PMD_LEAF, full) if rng.random() < 0.3 else \
            (PMD_TABLE, int(rng.integers(1 << 62)) << int(rng.integers(0, 400)))
        win.pud.setdefault(slot >> shift, PUD_TABLE)
    if rng.random() < 0.3 and win.pud:
        win.pud.pop(next(iter(win.pud)))
    if rng.random() < 0.2:
        win.pud[int(rng.integers(win.lo, win.hi))] = PUD_LEAF
    if rng.random() < 0.2:
        win.pud_tables.add(int(rng.integers(1 << 8)))
    if rng.random() < 0.2 and win.pud_tables:
        win.pud_tables.discard(next(iter(win.pud_tables)))


def _read_from(win, pt: PageTables):
    """``win`` as if read from ``pt`` (a state with the same arrays)."""
    return dataclasses.replace(win, _read=(pt, *win._read[1:]))


def _want(pt: PageTables, win) -> tuple[dict, dict]:
    shift = pt.arch.pud_shift - pt.arch.pmd_shift
    pud, pmd = entries(pt)
    pud = {k: v for k, v in pud.items() if not win.lo <= k < win.hi} | win.pud
    pmd = {k: v for k, v in pmd.items() if not win.lo <= (k >> shift) < win.hi}
    pmd |= {k: (kind, m if kind == PMD_TABLE else 0) for k, (kind, m) in win.pmd.items()}
    return pud, pmd


@pytest.mark.parametrize("arch_name", ["x86_64", "x86_64-la57", "arm64-64k"])
@pytest.mark.parametrize("seed", range(5))
def test_write_back_keeps_the_entries_outside_the_window_and_writes_the_windows(arch_name,
                                                                                seed):
    arch = load_arch(arch_name)
    rng = np.random.default_rng(seed)
    base = (5 << 39) + (1 << arch.pud_shift) - 30 * arch.pmd_size
    far = base + (3 << 39)
    for n_ranges in [0, 1, 2, 3, 5, 8] * 4:
        pt = _state(rng, arch, base, far, n_ranges)
        if rng.random() < 0.3:
            pt = eager_copy(pt)
        before = entries(pt)
        rows_before = pt.masks.copy()
        start = base + int(rng.integers(-5, 40)) * arch.pmd_size
        end = start + int(rng.integers(1, 3 * arch.ptrs_per_pte)) * arch.page_size
        win = pt.window(start, end)
        assert {k: v for k, v in before[0].items() if win.lo <= k < win.hi} == win.pud
        _edit(rng, arch, win)
        out = pt.replace_window(win)
        assert entries(out) == _want(pt, win)
        assert out.pud_tables == frozenset(win.pud_tables)
        assert_well_formed(out)
        assert np.array_equal(out.masks[:len(rows_before)], rows_before)  # rows only appended
        assert entries(pt) == before  # the state read from is a value: unchanged
        # the same window written back through the array path gives the same arrays
        eager = eager_copy(pt)
        assert_same_arrays(out, eager.replace_window(_read_from(win, eager)))


def test_write_back_of_an_unchanged_window_is_the_state_itself():
    arch = load_arch("x86_64")
    base = 5 << 39
    pt = PageTables.empty(arch).populate(base + 3 * arch.page_size, base + 3 * arch.pmd_size)
    for state in (pt, eager_copy(pt)):
        assert state.replace_window(state.window(base, base + arch.pmd_size)) is state


def test_a_window_written_back_to_another_state_replaces_its_pud_slots_whole():
    arch = load_arch("x86_64")
    base = 5 << 39
    a = PageTables.empty(arch).populate(base, base + 2 * arch.pmd_size)
    b = PageTables.empty(arch).populate(base + 5 * arch.pmd_size, base + 6 * arch.pmd_size,
                                        fraction=0.5, seed=1)
    win = a.window(base, base + arch.page_size)
    out = b.replace_window(win)
    assert entries(out) == _want(b, win) == entries(a)
    assert_well_formed(out)


def test_a_small_states_arrays_are_built_when_first_read_and_equal_the_eager_ones():
    arch = load_arch("x86_64")
    base = 5 << 39
    pt = PageTables.empty(arch).populate_each([
        (base + 7 * arch.page_size, base + 2 * arch.pmd_size, {"fraction": 0.6, "seed": 4}),
        (base + 6 * arch.page_size, base + 7 * arch.page_size, {})])
    assert "pmd_idx" not in pt.__dict__  # held as lists until read
    win = pt.window(base, base + arch.page_size)
    win.pmd[(base >> arch.pmd_shift) + 9] = (PMD_TABLE, 0b101)
    out = pt.replace_window(win)
    assert "pmd_idx" not in out.__dict__
    eager = eager_copy(pt)
    want = eager.replace_window(_read_from(win, eager))
    assert_same_arrays(out, want)
    assert "pmd_idx" in out.__dict__
    assert out.present_ptes(base, base + 16 * arch.pmd_size) == \
        want.present_ptes(base, base + 16 * arch.pmd_size)


def test_a_small_state_has_no_attribute_it_was_not_given():
    pt = PageTables.empty(load_arch("x86_64")).populate(5 << 39, (5 << 39) + 4096)
    with pytest.raises(AttributeError, match="no_such_field"):
        pt.no_such_field  # noqa: B018


def test_replace_window_refuses_an_entry_outside_its_pud_slots_in_a_small_state():
    arch = load_arch("x86_64")
    base = 5 << 39
    pt = PageTables.empty(arch).populate(base, base + arch.pmd_size)
    win = pt.window(base, base + arch.page_size)
    win.pud[win.hi] = PUD_TABLE
    with pytest.raises(ValueError, match="outside the window"):
        pt.replace_window(win)


def test_a_small_state_pickles_and_copies_as_the_state_it_is():
    import copy
    import pickle

    arch = load_arch("x86_64")
    base = 5 << 39
    pt = PageTables.empty(arch).populate_each([
        (base + 3 * arch.page_size, base + 3 * arch.pmd_size, {"fraction": 0.3, "seed": 2})])
    win = pt.window(base, base + arch.page_size)
    win.pmd[(base >> arch.pmd_shift) + 7] = (PMD_TABLE, 0b11)
    small = pt.replace_window(win)
    for other in (pickle.loads(pickle.dumps(small)), copy.deepcopy(small), copy.copy(small)):
        assert_same_arrays(other, small)
        assert entries(other) == entries(small)


def test_page_tables_init_takes_the_fields_in_order():
    import inspect

    params = list(inspect.signature(PageTables.__init__).parameters)[1:]
    assert params == [f.name for f in dataclasses.fields(PageTables)]
    pt = PageTables.empty(load_arch("x86_64")).populate(5 << 39, (5 << 39) + (3 << 21))
    again = PageTables(*(getattr(pt, f.name) for f in dataclasses.fields(PageTables)))
    assert_same_arrays(again, pt)
    assert dataclasses.replace(pt, pud_tables=frozenset({9})).pud_tables == frozenset({9})
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.masks = None
