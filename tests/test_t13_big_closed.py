"""The closed form of a regular move (perfsim.planner.fast_closed) holds to the array path
and to the reference walk.

``plan_regular_closed`` plans a regular, fully populated, periodic move of a few PUD
segments from the closed form of its extents, without arrays over extents or slots. Every
case here plans the same move three ways: the closed form, the array path of
``perfsim.planner.fast`` (``plan_move(..., closed=False)``) and, through ``plan_mremap``,
the per-extent reference walk; all must give the same step columns, lock sets and page
tables. The shapes vary what the closed form computes itself: the in-PMD offsets of both
ends (the two progressions, or one), partly populated edge slots and pages left outside
the range, PUD and top-level boundaries crossed (table allocations at the head, inside the
periodic run and at the tail), destination PUD tables already present, large-folio
batching, CPUs, and five-level and folded-PUD geometries.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import B, G, K, M
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fast_equivalence import _pt_view, assert_same_plan

from perfsim import resolve_target
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.bitmaps import interleave
from perfsim.planner.fast import plan_move
from perfsim.planner.fast_closed import Progressions, plan_regular_closed
from perfsim.planner.options import PlanOptions
from perfsim.planner.pgtable_move import MoveGates
from perfsim.planner.realign import PageTableMoveControl

ARCHS = ("x86_64", "x86_64-la57", "arm64-4k", "arm64-16k", "riscv-sv39", "riscv-sv57")


def _space(t, vma: Vma, populated: list[tuple[int, int]], others=()) -> AddressSpace:
    pt = PageTables.empty(t.arch)
    for lo, hi in populated:
        if hi > lo:
            pt = pt.populate(lo, hi)
    for v in others:
        pt = pt.populate(v.start, v.end)
    return AddressSpace((vma, *others), pt, cpus=1)


def _closed_and_array(t, space: AddressSpace, src: int, length: int, dst: int, *, cpus=1,
                      lazy_cpus=0):
    """Plan the move of ``[src, src + length)`` to ``dst`` on ``space`` with the closed form
    and with the array path; return ``(closed, array)``, closed None if it declined."""
    vma = space.find_vma(src)
    new = Vma(dst, dst + length, backing=vma.backing, folio_size=vma.folio_size, name="new")
    pmc = PageTableMoveControl(vma, new, src, dst, length)
    gates = MoveGates.of(t, vma, new, False)
    closed = plan_regular_closed(t, space.pt, pmc, gates, S.MOVE, cpus, lazy_cpus, None)
    array = plan_move(t, space.pt, pmc, cpus=cpus, lazy_cpus=lazy_cpus, closed=False)
    return closed, array


def _assert_same_move(closed, array, t, ranges) -> None:
    (sc, pc), (sa, pa) = closed, array
    assert len(sc) == len(sa)
    assert [type(p).__name__ for p in sc.parts()] == [type(p).__name__ for p in sa.parts()]
    for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
        a, b = sc.col(name), sa.col(name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b), (name, np.flatnonzero(a != b)[:5])
    assert sc.lock_names_per_row() == sa.lock_names_per_row()
    assert pc.pud_tables == pa.pud_tables
    for lo, hi in ranges:
        for x, y in zip(_pt_view(pc, lo, hi), _pt_view(pa, lo, hi), strict=True):
            assert np.array_equal(x, y)
        assert pc.present_ptes(lo, hi) == pa.present_ptes(lo, hi)


# ---------------------------------------------------------------------------- the extents
@given(st.integers(0, 1 << 20), st.integers(0, 1 << 20), st.integers(1, 40 << 9),
       st.sampled_from([1 << 9, 1 << 11, 1 << 12]))
@settings(max_examples=300, deadline=None)
def test_progressions_are_the_interleaved_pmd_boundaries(src_pages, dst_pages, pages, ptrs):
    pg, pmd = 4096, 4096 * ptrs
    o0, n0 = src_pages * pg, (dst_pages + (1 << 30)) * pg
    oe = o0 + pages * pg
    inner = interleave(o0 - o0 % pmd + pmd, (n0 - n0 % pmd + pmd) - (n0 - o0), oe, pmd)
    bounds = [o0, *inner.tolist(), oe]
    ext = Progressions.of(o0, n0, oe, pmd)
    assert ext.n_ext == len(bounds) - 1
    assert [ext.bound(i) for i in range(len(bounds))] == bounds
    assert [ext.index(v) for v in bounds] == list(range(len(bounds)))


# ---------------------------------------------------------------------------- the bench shapes
BASE = 0x300000000000


@pytest.mark.parametrize("length", [64 * M, G, 3 * G + 6 * M])
def test_the_unaligned_bench_move_is_planned_in_closed_form(length):
    t = resolve_target("6.18", "x86_64")
    src, dst = BASE + 2 * M + 4 * K, BASE + 8 * G + 6 * M + 8 * K
    vma = Vma(src, src + length, name="heap")
    space = _space(t, vma, [(src, src + length)])
    closed, array = _closed_and_array(t, space, src, length, dst)
    assert closed is not None
    _assert_same_move(closed, array, t, [(src, src + length), (dst, dst + length)])
    req = MoveRequest(old_addr=src, old_len=length, new_addr=dst)
    r = plan_mremap(space, req, t, PlanOptions("reference"))
    f = plan_mremap(space, req, t)
    assert f.planner == "fast"
    assert_same_plan(r, f, [(src, src + length), (dst, dst + length)])


def test_without_have_move_pmd_an_aligned_move_is_one_progression():
    t = resolve_target("6.18", "x86_64").with_changes(supports_move_pmd=False)
    src, dst = BASE + 2 * M, BASE + 8 * G + 2 * M
    vma = Vma(src - 4 * K, src + G, name="heap")
    space = _space(t, vma, [(src - 4 * K, src + G)])
    closed, array = _closed_and_array(t, space, src, G, dst)
    assert closed is not None and len(closed[0]) == G // (2 * M)
    _assert_same_move(closed, array, t, [(src - 4 * K, src + G), (dst, dst + G)])


@pytest.mark.parametrize("why", ["sparse interior", "destination mapped", "many segments",
                                 "mutually aligned"])
def test_the_closed_form_declines_other_shapes(why):
    t = resolve_target("6.18", "x86_64")
    src, dst, length = BASE + 2 * M + 4 * K, BASE + 8 * G + 6 * M + 8 * K, 64 * M
    pop = [(src, src + length)]
    others = ()
    if why == "sparse interior":
        pop = [(src, src + 20 * M), (src + 22 * M, src + length)]
    elif why == "destination mapped":
        others = (Vma(dst + 8 * M, dst + 8 * M + 4 * K, name="d"),)
    elif why == "many segments":
        length, dst = 70 * G, BASE + 128 * G + 6 * M + 8 * K
        pop = [(src, src + length)]
    elif why == "mutually aligned":
        dst = BASE + 8 * G + 6 * M + 4 * K
    vma = Vma(src, src + length, name="heap")
    space = _space(t, vma, pop, others)
    if why == "destination mapped":
        space = AddressSpace((vma,), space.pt)  # the table stays, the VMA is gone
    closed, array = _closed_and_array(t, space, src, length, dst)
    assert closed is None


# ---------------------------------------------------------------------------- properties
@st.composite
def regular_moves(draw):
    arch = draw(st.sampled_from(ARCHS))
    kernel = draw(st.sampled_from(("6.6", "6.18", "7.3")))
    t = resolve_target(kernel, arch)
    a = t.arch
    pg, P, U, ptrs = a.page_size, a.pmd_size, a.pud_size, a.ptrs_per_pte
    slots = draw(st.integers(7, 40))
    length = slots * P + draw(st.integers(0, ptrs - 1)) * pg
    # start near a PUD boundary sometimes, so the move crosses it at the head, the middle
    # or the tail (or crosses two)
    base = draw(st.integers(8, 24)) * U
    lead = draw(st.sampled_from([0, 1, 3, slots // 2, slots - 2, slots + 5]))
    src = base - lead * P + draw(st.integers(0, ptrs - 1)) * pg
    far = draw(st.sampled_from([2 * U, 5 * U, 32 * U, 1 << a.p4d_shift]))
    dlead = draw(st.sampled_from([0, 2, slots // 2, slots + 3]))
    doff = draw(st.integers(0, ptrs - 1)) * pg
    up = draw(st.booleans())
    dst_base = (base + far) if up else (base - far)
    dst = dst_base - dlead * P + doff
    # the VMA may extend beyond the move on either side (pages left in the edge slots)
    pre = draw(st.sampled_from([0, 0, 1, ptrs // 2, ptrs])) * pg
    post = draw(st.sampled_from([0, 0, 1, 7, ptrs])) * pg
    # edge slots partly populated inside the range
    h0 = draw(st.sampled_from([0, 0, 1, ptrs // 3])) * pg
    h1 = draw(st.sampled_from([0, 0, 2, ptrs // 4])) * pg
    folio = draw(st.sampled_from([0, 0, 16 * pg, 64 * K, P]))
    dst_neighbour = draw(st.booleans())
    return dict(t=t, src=src, length=length, dst=dst, pre=pre, post=post, h0=h0, h1=h1,
                folio=folio, dst_neighbour=dst_neighbour, cpus=draw(st.integers(1, 3)),
                lazy=draw(st.integers(0, 1)))


def _valid(a, lo: int, hi: int, dst: int, length: int) -> bool:
    """The VMA ``[lo, hi)`` and the destination fit and touch PMD slots at least two apart."""
    ms = a.pmd_shift
    if dst < 4 * a.pud_size or dst + length > a.user_va_top or lo < a.pmd_size:
        return False
    return ((hi - 1) >> ms) < (dst >> ms) - 2 or ((dst + length - 1) >> ms) < (lo >> ms) - 2


def case_space(case) -> tuple[Vma, AddressSpace] | None:
    """The source VMA and the address space of a :func:`regular_moves` case, or None when
    the case does not fit (:func:`_valid`)."""
    t, src, length, dst = case["t"], case["src"], case["length"], case["dst"]
    a = t.arch
    lo, hi = src - case["pre"], src + length + case["post"]
    if not _valid(a, lo, hi, dst, length):
        return None
    vma = Vma(lo, hi, folio_size=case["folio"], name="heap")
    pop = [(lo, src), (src + case["h0"], src + length - case["h1"]), (src + length, hi)]
    others = ()
    if case["dst_neighbour"]:
        # a small VMA in the destination's first PUD slot, clear of its PMD slots: that
        # PUD slot already has a PMD table
        n0 = dst >> a.pud_shift << a.pud_shift
        if (dst - n0) >> a.pmd_shift > 1 and not (n0 < hi and lo < n0 + a.page_size):
            others = (Vma(n0, n0 + a.page_size, name="nb"),)
    return vma, _space(t, vma, pop, others)


def case_move(case) -> tuple[AddressSpace, PageTableMoveControl, MoveGates] | None:
    """The address space, the move control and the gates of a :func:`regular_moves` case
    (the source VMA moved to a new one at ``dst``), or None when the case does not fit."""
    got = case_space(case)
    if got is None:
        return None
    vma, space = got
    t, src, length, dst = case["t"], case["src"], case["length"], case["dst"]
    new = Vma(dst, dst + length, name="new")
    return (space, PageTableMoveControl(vma, new, src, dst, length),
            MoveGates.of(t, vma, new, False))


@given(regular_moves())
@settings(max_examples=150, deadline=None)
def test_closed_form_equals_array_path_and_reference(case):
    t, src, length, dst = case["t"], case["src"], case["length"], case["dst"]
    got = case_space(case)
    if got is None:
        return
    lo, hi = got[0].start, got[0].end
    space = got[1]
    closed, array = _closed_and_array(t, space, src, length, dst, cpus=case["cpus"],
                                      lazy_cpus=min(case["lazy"], case["cpus"] - 1))
    if closed is not None:
        _assert_same_move(closed, array, t, [(lo, hi), (dst, dst + length)])
    space = AddressSpace(space.vmas, space.pt, cpus=case["cpus"],
                         lazy_cpus=min(case["lazy"], case["cpus"] - 1))
    req = MoveRequest(old_addr=src, old_len=length, new_addr=dst)
    r = plan_mremap(space, req, t, PlanOptions("reference"))
    f = plan_mremap(space, req, t, PlanOptions("fast"))
    assert_same_plan(r, f, [(lo, hi), (dst, dst + length)])


def test_the_property_cases_reach_the_closed_form():
    """The strategy above is not vacuous: most of its moves take the closed form."""
    taken = []

    @given(regular_moves())
    @settings(max_examples=40, deadline=None, database=None)
    def probe(case):
        t, src, length, dst = case["t"], case["src"], case["length"], case["dst"]
        a = t.arch
        lo, hi = src - case["pre"], src + length + case["post"]
        if not _valid(a, lo, hi, dst, length):
            return
        vma = Vma(lo, hi, folio_size=case["folio"], name="heap")
        pop = [(lo, src), (src + case["h0"], src + length - case["h1"]), (src + length, hi)]
        closed, _ = _closed_and_array(t, _space(t, vma, pop), src, length, dst)
        taken.append(closed is not None)

    probe()
    assert sum(taken) >= len(taken) // 3 and sum(taken) > 5


def test_a_move_next_to_b_matches():
    # a mapped page right below the destination's first PMD slot (its PUD slot has a table)
    t = resolve_target("6.18", "x86_64")
    src, length, dst = BASE + 2 * M + 4 * K, 40 * M, B + 6 * M + 8 * K
    vma = Vma(src, src + length, name="heap")
    nb = Vma(dst - 6 * M, dst - 6 * M + 4 * K, name="nb")
    space = _space(t, vma, [(src, src + length)], (nb,))
    closed, array = _closed_and_array(t, space, src, length, dst)
    assert closed is not None
    _assert_same_move(closed, array, t, [(src, src + length), (dst - 6 * M, dst + length)])


# ---------------------------------------------------------------------------- few segments
@given(st.sampled_from(ARCHS), st.integers(0, 1 << 12), st.integers(0, 1 << 12),
       st.integers(1, 18), st.booleans())
@settings(max_examples=120, deadline=None)
def test_geometry_of_a_few_segments_equals_the_array_form(arch, src_pages, dst_pages, puds, up):
    """``_geometry`` works a move of at most ``_FEW_SEGMENTS`` PUD boundaries out on Python
    ints: the same segments, first extents and counts as the array form."""
    import perfsim.planner.fast as F

    t = resolve_target("6.18", arch)
    a = t.arch
    pg = a.page_size
    src = 16 * a.pud_size + src_pages * 97 * pg
    length = puds * a.pud_size // 3 + dst_pages * pg + pg
    dst = src + length + a.pud_size + dst_pages * 13 * pg if up else src - length - 2 * a.pud_size
    if dst <= 0:
        return
    pmc = PageTableMoveControl(Vma(src, src + length), Vma(dst, dst + length), src, dst, length)
    few = F._geometry(t, pmc)
    saved = F._FEW_SEGMENTS
    try:
        F._FEW_SEGMENTS = -1
        arr = F._geometry(t, pmc)
    finally:
        F._FEW_SEGMENTS = saved
    for name in ("bounds", "seg_start", "seg_end", "seg_first", "seg_count"):
        x, y = getattr(few, name), getattr(arr, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


@pytest.mark.parametrize("populate", ["0.3", "every:7", "full"])
@pytest.mark.parametrize("thp", [False, True])
def test_few_ids_paths_of_the_array_move_equal_its_array_forms(populate, thp):
    """``bits_in_rows`` and the destination bitmaps of ``apply_move`` work a few distinct
    rows out on Python ints: the same plan and page tables as with the arrays throughout."""
    import perfsim.planner.bitmaps as Bm
    import perfsim.planner.fast_state as FS
    from perfsim.mm.build import Population, single_move_space

    t = resolve_target("6.18", "x86_64")
    src, dst, length = BASE + 2 * M + 4 * K, BASE + 8 * G + 6 * M + 8 * K, 40 * M + 12 * K
    space = single_move_space(t, src=src, length=length, thp=thp,
                              populate=Population.parse(populate, seed=2))
    vma = space.vmas[0]
    new = Vma(dst, dst + length, name="new")
    pmc = PageTableMoveControl(vma, new, src, dst, length)
    few = plan_move(t, space.pt, pmc, closed=False)
    saved = Bm.FEW_IDS, FS.FEW_IDS
    try:
        Bm.FEW_IDS = FS.FEW_IDS = 0
        arrays = plan_move(t, space.pt, pmc, closed=False)
    finally:
        Bm.FEW_IDS, FS.FEW_IDS = saved
    _assert_same_move(few, arrays, t, [(src, src + length), (dst, dst + length)])
