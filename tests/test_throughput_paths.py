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
