"""A synthetic call's layout: the shortcut of ``PageTables.populate_each`` and ``populate``
for one range on an empty state (``PageTables._populate_fresh``) held to the general steps,
and an open-loop stream's arrival instants (``_arrival_times``, a running sum) to the gaps
added one by one (issue 13, eighth pass).

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
from perfsim.workload.generate import CHUNK, _arrival_times
from perfsim.workload.schema import Periodic, Poisson


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


def _arrivals_one_by_one(arr, rng, count, duration, start):
    """The definition: gaps drawn ``CHUNK`` at a time, added to the clock one by one."""
    out: list[int] = []
    t = float(start)
    limit = count if count is not None else 10_000_000
    while len(out) < limit:
        gaps = (rng.exponential(1e9 / arr.rate_per_s, CHUNK) if isinstance(arr, Poisson)
                else np.full(CHUNK, float(arr.interval_ns)))
        for g in gaps:
            if len(out) >= limit:
                break
            if isinstance(arr, Periodic) and not out:
                g = 0.0
            t += g
            if duration is not None and t >= duration:
                return out
            out.append(int(t))
    return out


def test_open_loop_arrivals_are_the_gaps_added_one_by_one():
    """``_arrival_times`` (a running sum over each chunk of gaps) gives the instants of the
    gaps added to the clock one at a time: the same floats, truncated the same way, the
    same count, the same stop at ``duration``, the same draws made."""
    rng = random.Random("arrivals")
    for _ in range(300):
        arr = (Poisson(rate_per_s=rng.choice((1.0, 1e3, 5e4, 3.3e6, 1e9)))
               if rng.random() < 0.6 else Periodic(interval_ns=rng.choice((1, 7, 50_000,
                                                                           2_000_000, 10**9))))
        count = rng.choice((None, 1, 2, 100, CHUNK, CHUNK + 1, 3 * CHUNK + 5))
        start = rng.choice((0, 1, 12_345, 10**12 + 7))
        duration = rng.choice((None, start, start + 1, start + 10**6, start + 10**9))
        if count is None:  # (until duration: a few thousand arrivals at most)
            gap = 1e9 / arr.rate_per_s if isinstance(arr, Poisson) else arr.interval_ns
            duration = start + int(min(duration - start if duration else 10**7, 3000 * gap))
        seed = rng.getrandbits(64)
        g1, g2 = np.random.default_rng(seed), np.random.default_rng(seed)
        got = _arrival_times(arr, g1, count, duration, start)
        want = _arrivals_one_by_one(arr, g2, count, duration, start)
        assert got == want
        assert all(type(x) is int for x in got)
        assert g1.random() == g2.random()  # (the same draws made)
