"""A synthetic call's layout: the shortcut of ``PageTables.populate_each`` for one fully
mapped range on an empty state (``PageTables._populate_fresh``) held to the general steps
(issue 13, eighth pass).

The general steps: ``_SmallState``'s ``populate`` and ``freeze`` (``_populate_small``), and
the array path (``_populate_arrays``), which ``tests/test_t13_mm_populate.py`` holds the
small one to. Compared: every list and row the small state keeps (so later windows, write
backs and populations see the same rows), and the arrays it reads as.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from perfsim.mm.pagetable import _ARRAYS, SMALL_SLOTS, PageTables
from perfsim.profiles import arch_names, load_arch


def _ranges(rng: random.Random, a, count: int):
    pg, pmd, pud = a.page_size, a.pmd_size, a.pud_size
    for _ in range(count):
        base = rng.choice((rng.randrange(1, 64) * pud, rng.randrange(1, 1 << 12) * pmd,
                           (1 << a.p4d_shift) - rng.randrange(1, 8) * pmd if not a.pud_folded
                           else 3 * pud - rng.randrange(1, 8) * pmd))
        start = base + rng.choice((0, rng.randrange(a.ptrs_per_pte) * pg))
        slots = rng.choice((0, 1, 2, rng.randrange(SMALL_SLOTS)))
        end = start + rng.choice((pg, rng.randrange(1, 3 * a.ptrs_per_pte) * pg,
                                  slots * pmd + rng.randrange(1, a.ptrs_per_pte + 1) * pg))
        if ((end - 1) >> a.pmd_shift) - (start >> a.pmd_shift) >= SMALL_SLOTS:
            end = ((start >> a.pmd_shift) + SMALL_SLOTS) << a.pmd_shift
        yield start, end


def _state(pt: PageTables) -> dict:
    d = pt.__dict__
    return {k: d[k] for k in ("pud_tables", "_lists", "_rows", "_ints", "_g")}


def _same_rows(x, y) -> None:
    assert np.array_equal(x[0], y[0]) and x[0].dtype == y[0].dtype
    assert np.array_equal(x[1], y[1]) and x[1].dtype == y[1].dtype
    assert x[2] == y[2] and x[3] == y[3]


@pytest.mark.parametrize("arch", arch_names())
def test_one_range_on_an_empty_state_is_the_small_states_population(arch, monkeypatch):
    """``populate_each`` of one range and ``populate`` on an empty small state, every page
    mapped or a seeded fraction of them (down to none: a slot, or every slot, without a
    table), give the state ``_SmallState`` gives: its lists, rows, caches and geometry,
    and the arrays the array path builds."""
    a = load_arch(arch)
    taken = []
    fresh = PageTables._populate_fresh
    monkeypatch.setattr(PageTables, "_populate_fresh",
                        lambda self, *args: taken.append(1) or fresh(self, *args))
    rng = random.Random(f"fresh{arch}")
    kws = ({}, {"fraction": 1.0}, {"fraction": 1.0, "seed": 7, "thp": False},
           {"fraction": 2.5, "pud_leaf": False}, {"seed": 3}, {"fraction": 0.3},
           {"fraction": 0.5, "seed": 11, "thp": False}, {"fraction": 0.002, "seed": 5},
           {"fraction": 0.0, "seed": 2}, {"fraction": 0.9, "seed": 1 << 63})
    cases = 0
    for start, end in _ranges(rng, a, 300):
        kw = dict(rng.choice(kws))
        if "seed" in kw and rng.random() < 0.5:
            kw["seed"] = rng.getrandbits(62)
        fraction, seed = kw.get("fraction", 1.0), kw.get("seed", 0)
        want = PageTables.empty(a)._populate_small(start, end, 1, fraction, seed, False, False)
        arrays = PageTables.empty(a)._populate_arrays(start, end, 1, fraction, seed, False,
                                                      False)
        for got in (PageTables.empty(a).populate_each([(start, end, kw)]),
                    PageTables.empty(a).populate(start, end, **kw)):
            cases += 1
            assert "_lists" in got.__dict__
            g, w = _state(got), _state(want)
            _same_rows(g.pop("_rows"), w.pop("_rows"))
            assert g == w
            assert type(g["pud_tables"]) is frozenset
            for name in _ARRAYS:
                x, y = getattr(got, name), getattr(arrays, name)
                assert x.dtype == y.dtype and np.array_equal(x, y), name
            if fraction >= 1.0:
                assert got.present_ptes(start, end) == (end - start) >> a.page_shift
    assert len(taken) == cases  # (every case went the shortcut's way)


@pytest.mark.parametrize("arch", ("x86_64", "arm64-4k", "riscv-sv39"))
def test_what_the_shortcut_leaves_to_the_general_steps(arch):
    """A strided, random or huge population, more than one range, a range of
    ``SMALL_SLOTS`` slots or more, or a state that is not empty go the general way: the
    same states as ``populate`` one range after another."""
    a = load_arch(arch)
    rng = random.Random(f"left{arch}")
    pmd, pg = a.pmd_size, a.page_size
    for start, end in _ranges(rng, a, 80):
        cases = [[(start, end, {"every": 3})], [(start, end, {"fraction": 0.5, "seed": 4})],
                 [(start, end, {"thp": True})],
                 [(start, end, {}), (end + pg, end + 2 * pg, {})],
                 [(start, start + SMALL_SLOTS * pmd, {})]]
        for ranges in cases:
            got = PageTables.empty(a).populate_each(ranges)
            want = PageTables.empty(a)
            for s, e, kw in ranges:
                want = want.populate(s, e, **kw)
            for name in _ARRAYS:
                assert np.array_equal(getattr(got, name), getattr(want, name)), name
        base = PageTables.empty(a).populate(end + 4 * pmd, end + 5 * pmd)
        got = base.populate_each([(start, end, {})])
        want = base.populate(start, end)
        for name in _ARRAYS:
            assert np.array_equal(getattr(got, name), getattr(want, name)), name


def test_bad_input_is_refused_as_before():
    a = load_arch("x86_64")
    empty = PageTables.empty(a)
    with pytest.raises(ValueError, match="page aligned"):
        empty.populate_each([(a.pmd_size + 1, 2 * a.pmd_size, {})])
    with pytest.raises(ValueError, match="non-empty"):
        empty.populate_each([(a.pmd_size, a.pmd_size, {})])
    with pytest.raises(TypeError, match="unexpected keyword"):
        empty.populate_each([(a.pmd_size, 2 * a.pmd_size, {"bogus": 1})])
