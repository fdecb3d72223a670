"""The vectorised planner (perfsim.planner.fast) and the array unmap hold to the reference.

Both drivers call the same decision functions (perfsim.planner.pgtable_move, batch, tlb,
unmap's predicates; tested rule by rule in test_planner_rules.py), so what these tests hold
is the same rules applied extent by extent and column by column: the bookkeeping of the
vectorised driver (extents, first occurrences, row positions, bitmap splicing).

Every case plans the same request twice, ``PlanOptions("reference")`` (the per-extent walk,
with the slot-walk unmap) and ``PlanOptions("fast")`` (which raises AssertionError if the
fast path declines), and requires identical step columns, identical rmap lock names per
row, identical counters and identical page tables afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import PUD_DST, PUD_SRC, A, B, G, K, M
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from perfsim import resolve_target
from perfsim.mm.build import Population, single_move_space
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.batch import pte_batching_of
from perfsim.planner.bitmaps import bits_in_rows, shift_left, shift_right
from perfsim.planner.fast import flush_table
from perfsim.planner.options import PlanOptions
from perfsim.planner.tlb import flush_range

ARCHS = ("x86_64", "arm64-4k", "arm64-16k", "riscv-sv39")
KERNELS = ("6.6", "6.18")


# ---------------------------------------------------------------------------- comparison
def _pt_view(pt: PageTables, lo: int, hi: int):
    a = pt.arch
    i0, i1 = np.searchsorted(pt.pmd_idx, [lo >> a.pmd_shift, ((hi - 1) >> a.pmd_shift) + 1])
    rows = pt.pmd_mask[i0:i1]
    words = pt.masks[np.maximum(rows, 0)]
    words[rows < 0] = 0
    return (pt.pmd_idx[i0:i1], pt.pmd_kind[i0:i1], words, pt.pud_idx, pt.pud_kind)


def assert_same_plan(r, f, ranges):
    assert r.errno == f.errno
    assert (r.progress_bytes, r.realigned, r.need_rmap_locks) == (f.progress_bytes, f.realigned, f.need_rmap_locks)
    sr, sf = r.steps, f.steps
    assert len(sr) == len(sf)
    for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
        a, b = sr.col(name), sf.col(name)
        if not np.array_equal(a, b):
            bad = np.flatnonzero(a != b)[:5]
            raise AssertionError(f"column {name} differs at rows {bad.tolist()}: "
                                 f"reference {a[bad].tolist()} fast {b[bad].tolist()} "
                                 f"(kinds {[S.KIND_NAMES[k] for k in sr.kind[bad]]})")
    assert sr.lock_names_per_row() == sf.lock_names_per_row()
    assert r.move == f.move
    assert r.syscall == f.syscall
    pa, pb = r.after.pt, f.after.pt
    assert pa.pud_tables == pb.pud_tables
    for lo, hi in ranges:
        va, vb = _pt_view(pa, lo, hi), _pt_view(pb, lo, hi)
        for x, y in zip(va, vb):
            assert np.array_equal(x, y)
        assert pa.present_ptes(lo, hi) == pb.present_ptes(lo, hi)
        if hi - lo <= 64 * M:
            assert np.array_equal(pa.mapping(lo, hi), pb.mapping(lo, hi))


def both(space, req: MoveRequest, target):
    """Plan with the reference (and the dict unmap) and with the fast path (array unmap)."""
    r = plan_mremap(space, req, target, PlanOptions("reference"))
    f = plan_mremap(space, req, target, PlanOptions("fast"))
    assert f.errno is not None or f.planner == "fast"
    n = req.length
    assert_same_plan(r, f, [(req.old_addr, req.old_addr + req.old_len),
                            (req.new_addr, req.new_addr + n)])
    return r, f


def build(src, length, *, kernel="6.18", arch="x86_64", dst=None, guard_below_src=False,
          guard_below_dst=False, backing="anon", thp=False, populate="full", cpus=1, seed=0,
          uffd_wp=False, folio_size=0):
    t = resolve_target(kernel, arch)
    sp = single_move_space(t, src=src, length=length, backing=backing, thp=thp,
                           folio_size=folio_size,
                           populate=Population.parse(populate, seed=seed),
                           guard_below_src=guard_below_src,
                           guard_below_dst=dst if guard_below_dst else None, cpus=cpus,
                           uffd_wp=uffd_wp)
    return t, sp


def check(src, dst, length, **kw):
    req = {k: kw.pop(k) for k in ("fail_alloc_at",) if k in kw}
    t, sp = build(src, length, dst=dst, **kw)
    return both(sp, MoveRequest(src, length, new_addr=dst, **req), t)


# ---------------------------------------------------------------------------- explicit cases
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("size", [16 * M, 64 * M])
def test_worked_example_shapes(kernel, size):
    check(PUD_SRC, PUD_DST, size, kernel=kernel)                              # E1 shape
    check(A + 4 * K, B + 4 * K, size, kernel=kernel)                          # E2
    check(A + 4 * K, B + 4 * K, size, kernel=kernel, guard_below_src=True)    # E3
    check(A + 4 * K, B + 4 * K, size, kernel=kernel, guard_below_dst=True)
    check(A + 4 * K, B + 8 * K, size, kernel=kernel)                          # E4


def test_worked_examples_count_for_count():
    r, f = check(PUD_SRC, PUD_DST, G)
    assert (f.move.pud_moves, f.move.tlb_flushes) == (1, 1)
    r, f = check(A + 4 * K, B + 4 * K, G)
    assert (f.move.pmd_moves, f.move.ptes_moved, f.move.tlb_flushes) == (512, 1, 513)
    r, f = check(A + 4 * K, B + 4 * K, G, guard_below_src=True)
    assert (f.move.pmd_moves, f.move.ptes_moved, f.move.tables_allocated["pte"]) == (511, 512, 2)
    r, f = check(A + 4 * K, B + 8 * K, G)
    assert (f.move.move_ptes_calls, f.move.tlb_full_flushes, f.move.tables_allocated["pte"]) == (1025, 512, 513)
    assert f.syscall.tables_freed == r.syscall.tables_freed


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("backing,thp", [("anon", False), ("anon", True), ("shmem", True),
                                         ("file", False)])
def test_arches_backings_thp(arch, backing, thp):
    a = resolve_target("6.18", arch).arch
    P = a.pmd_size
    base_s, base_d = 8 * a.pud_size, 12 * a.pud_size + 3 * P
    for soff, doff, n in ((0, 0, 5), (a.page_size, a.page_size, 4), (a.page_size, 2 * a.page_size, 3),
                          (P // 2, P // 4, 3)):
        check(base_s + soff, base_d + doff, n * P, arch=arch, backing=backing, thp=thp)
        check(base_s + soff, base_d + doff, n * P + 3 * a.page_size, arch=arch, backing=backing,
              thp=thp, populate="0.4", cpus=2)


def test_partial_population_and_cpus():
    for pop in ("none", "0.05", "0.5", "every:3", "every:600"):
        for cpus in (1, 2, 5):
            check(A + 4 * K, B + 8 * K, 24 * M, populate=pop, cpus=cpus)
            check(A + 4 * K, B + 4 * K, 24 * M, populate=pop, cpus=cpus, guard_below_dst=True)


def test_downward_move_and_uffd():
    check(B + 8 * K, A + 4 * K, 20 * M)
    check(PUD_DST, PUD_SRC, 2 * G + 4 * M, populate="every:1000")
    check(A, B, 20 * M, uffd_wp=True)
    check(PUD_SRC, PUD_DST, G, uffd_wp=True, populate="every:4096")


def test_pud_moves_and_new_top_level_tables():
    # destination in another PGD slot, which has no PUD table yet
    check(PUD_SRC, PUD_SRC + (512 << 30), 2 * G, populate="every:2048")
    check(PUD_SRC + 4 * K, PUD_SRC + (513 << 30) + 4 * K, G + 8 * M, populate="every:2048")
    check(PUD_SRC, PUD_SRC + (512 << 30), G, arch="x86_64", kernel="6.6", thp=True)


def test_destination_pud_slot_shared_with_unpopulated_source_tail():
    # Moving up by less than a PUD: the source's last PUD slot is the destination's first.
    # The source has nothing there, so its PUD entry is none until the destination allocates
    # a PMD table in it; from then on the source's remaining steps see a PMD table.
    t = resolve_target("6.18", "x86_64")
    src = PUD_SRC + G - 6 * M
    vma = Vma(src, src + 12 * M, anon_id="src", name="src", pgoff=src >> 12)
    pt = PageTables.empty(t.arch).populate(src, src + 6 * M)
    sp = AddressSpace((vma,), pt)
    both(sp, MoveRequest(src, 12 * M, new_addr=src + 14 * M), t)


def test_need_rmap_locks_after_merge():
    # the destination merges with a VMA ending at it, with a lower pgoff: need_rmap_locks
    t = resolve_target("6.18", "x86_64")
    src, dst = A + 4 * K, B + 8 * K
    src_vma = Vma(src, src + 16 * M, backing="shmem", file_id="f", pgoff=100, name="src")
    below = Vma(dst - 8 * K, dst, backing="shmem", file_id="f", pgoff=98, name="below")
    pt = PageTables.empty(t.arch).populate(src, src + 16 * M).populate(dst - 8 * K, dst)
    sp = AddressSpace((src_vma, below), pt)
    r, f = both(sp, MoveRequest(src, 16 * M, new_addr=dst), t)
    assert f.need_rmap_locks and f.move.rmap_holds > 0


def test_mapped_destination_and_shrink_use_the_array_unmap():
    t = resolve_target("6.18", "x86_64")
    src, dst = A + 4 * K, B + 8 * K
    vmas = (Vma(src, src + 20 * M, anon_id="s", name="s"), Vma(dst - 4 * K, dst + 30 * M, thp=True,
                                                                anon_id="d", name="d"))
    pt = PageTables.empty(t.arch).populate(src, src + 20 * M).populate(dst - 4 * K, dst + 30 * M, thp=True)
    sp = AddressSpace(vmas, pt, cpus=3)
    both(sp, MoveRequest(src, 20 * M, new_addr=dst), t)
    both(sp, MoveRequest(src, 20 * M, new_len=6 * M + 4 * K, new_addr=dst), t)


def test_injected_allocation_failure_falls_back_or_never_hits():
    t, sp = build(A + 4 * K, 16 * M, dst=B + 8 * K)
    r = plan_mremap(sp, MoveRequest(A + 4 * K, 16 * M, new_addr=B + 8 * K, fail_alloc_at=3), t)
    assert r.planner == "reference" and r.errno == "ENOMEM"
    # a failure beyond the last allocation never hits: the fast path applies
    check(A + 4 * K, B + 8 * K, 16 * M, fail_alloc_at=10_000)


def test_fast_declines_where_it_does_not_apply():
    t, sp = build(A + 4 * K, 16 * M)  # the destination starts in the source's last PMD slot
    req = MoveRequest(A + 4 * K, 16 * M, new_addr=A + 16 * M + 12 * K)
    with pytest.raises(AssertionError):
        plan_mremap(sp, req, t, PlanOptions("fast"))
    assert plan_mremap(sp, req, t).planner == "reference"


@pytest.mark.parametrize("arch,mode", [("arm64-4k", "hint"), ("arm64-16k", "hint"),
                                       ("x86_64", "folio"), ("arm64-4k", "folio")])
@pytest.mark.parametrize("folio_size", [16 * K, 64 * K, 2 * M])
def test_large_folio_pte_batching_takes_the_fast_path(arch, mode, folio_size):
    # 6.17 mremap_folio_pte_batch (with or without the pte_batch_hint gate): the fast path
    # counts batches with the reference's function, so it no longer declines.
    t = resolve_target("6.18", arch).with_changes(**{"kernel.pte_batching": mode})
    a = t.arch
    for src, dst, pop in ((A, B + 4 * K, "full"), (A + 4 * K, B + 12 * K, "0.5"),
                          (A + a.page_size, B + a.page_size, "full"), (A, B, "every:3")):
        src, dst = src - src % a.page_size, dst - dst % a.page_size
        sp = single_move_space(t, src=src, length=24 * a.pmd_size // 8, folio_size=folio_size,
                               populate=Population.parse(pop, seed=2))
        r, f = both(sp, MoveRequest(src, 24 * a.pmd_size // 8, new_addr=dst), t)
        if (src, pop) == (A, "full") and pte_batching_of(t, sp.vmas[0]).batches:
            assert f.move.ptes_moved > int(f.steps.batches.sum()) > 0  # batching happened


# ---------------------------------------------------------------------------- vectorised pieces
@pytest.mark.parametrize("arch", ARCHS + ("arm64-64k",))
@pytest.mark.parametrize("cpus,lazy", [(1, 0), (3, 1)])
def test_flush_table_matches_flush_range(arch, cpus, lazy):
    for tlbirange in (False, True):
        t = resolve_target("6.18", arch)
        if arch.startswith("arm64"):
            t = t.with_changes(**{"arch.tlb.tlbirange": tlbirange})
        n = np.arange(0, t.arch.ptrs_per_pte + 1)
        full, pages, ipis = flush_table(t, n, cpus=cpus, lazy_cpus=lazy)
        for k in range(0, len(n), 7):
            f = flush_range(t, 0, int(n[k]) << t.arch.page_shift, cpus=cpus, lazy_cpus=lazy)
            assert (bool(full[k]), int(pages[k]), int(ipis[k])) == (f.full, f.pages, f.ipis)


@given(st.lists(st.integers(0, (1 << 512) - 1), min_size=1, max_size=4), st.integers(0, 511))
@settings(max_examples=40)
def test_multiword_shifts(values, k):
    from perfsim.mm.pagetable import _int_to_words, _words_to_int
    rows = np.stack([_int_to_words(v, 8) for v in values])
    full = (1 << 512) - 1
    for v, r, left in zip(values, shift_right(rows, k), shift_left(rows, k)):
        assert _words_to_int(r) == v >> k
        assert _words_to_int(left) == (v << k) & full


@given(st.lists(st.tuples(st.integers(0, (1 << 512) - 1), st.integers(0, 512), st.integers(0, 512)),
                min_size=1, max_size=6))
@settings(max_examples=100)
def test_bits_in_rows_counts_like_python_ints(cases):
    from perfsim.mm.pagetable import _int_to_words
    rows = np.stack([_int_to_words(v, 8) for v, _, _ in cases])
    lo = np.array([min(a, b) for _, a, b in cases], np.int64)
    hi = np.array([max(a, b) for _, a, b in cases], np.int64)
    want = [(v >> int(x) & ((1 << int(y - x)) - 1)).bit_count() for (v, _, _), x, y in zip(cases, lo, hi)]
    assert bits_in_rows(rows, np.arange(len(rows)), lo, hi).tolist() == want


@given(st.lists(st.integers(0, (1 << 512) - 1), min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 512), st.integers(0, 512)),
                min_size=1, max_size=12))
@settings(max_examples=100)
def test_bits_in_rows_counts_each_picked_row_like_python_ints(table_ints, picks):
    from perfsim.mm.pagetable import _int_to_words
    table = np.stack([_int_to_words(v, 8) for v in table_ints])
    ids = np.array([i % len(table_ints) for i, _, _ in picks], np.int64)
    lo = np.array([min(a, b) for _, a, b in picks], np.int64)
    hi = np.array([max(a, b) for _, a, b in picks], np.int64)
    want = [(table_ints[i] >> int(x) & ((1 << int(y - x)) - 1)).bit_count()
            for i, x, y in zip(ids.tolist(), lo, hi)]
    assert bits_in_rows(table, ids, lo, hi).tolist() == want


# ---------------------------------------------------------------------------- properties
@st.composite
def move_cases(draw):
    arch = draw(st.sampled_from(ARCHS))
    kernel = draw(st.sampled_from(("6.6", "6.7", "6.18")))
    t = resolve_target(kernel, arch)
    a = t.arch
    pg, P = a.page_size, a.pmd_size
    pages = draw(st.one_of(st.integers(1, 3 * a.ptrs_per_pte + 3),
                           st.sampled_from([a.ptrs_per_pte - 1, a.ptrs_per_pte, 2 * a.ptrs_per_pte + 1])))
    length = pages * pg
    base = draw(st.integers(4, 40)) * a.pud_size
    src = base + draw(st.sampled_from([0, pg, 2 * pg, P - pg, P // 2])) + draw(st.integers(0, 3)) * P
    gap = draw(st.sampled_from([0, pg, P, P + 3 * pg, a.pud_size]))
    up = draw(st.booleans())
    if up:
        dst = src + length + gap + draw(st.sampled_from([0, pg, P]))
    else:
        dst = src - length - gap - draw(st.sampled_from([pg, P, P + pg]))
    if draw(st.booleans()):  # make the two mutually aligned
        dst = dst - dst % P + src % P + (P if up else -P)
    backing = draw(st.sampled_from(["anon", "anon", "shmem", "file"]))
    thp = draw(st.booleans())
    populate = draw(st.sampled_from(["full", "none", "0.3", "every:5"]))
    return dict(src=src, dst=dst, length=length, kernel=kernel, arch=arch, backing=backing,
                thp=thp, populate=populate, guard_below_src=draw(st.booleans()),
                guard_below_dst=draw(st.booleans()), cpus=draw(st.integers(1, 3)),
                seed=draw(st.integers(0, 5)),
                folio_size=draw(st.sampled_from([0, 0, 16 * pg, 64 * 1024, P])))


@given(move_cases())
@settings(max_examples=200, deadline=None)
def test_fast_equals_reference(case):
    src, dst, length = case.pop("src"), case.pop("dst"), case.pop("length")
    a = resolve_target(case["kernel"], case["arch"]).arch
    ms = a.pmd_shift
    assume(2 * a.page_size <= dst and dst + length <= a.user_va_top)
    # the fast path's domain: source and destination PMD slots disjoint
    assume(((src + length - 1) >> ms) < (dst >> ms) or ((dst + length - 1) >> ms) < (src >> ms))
    # a guard page below the destination must not land on the source itself
    assume(not (case["guard_below_dst"] and src < dst < src + length + a.page_size))
    check(src, dst, length, **case)


@st.composite
def unmap_cases(draw):
    arch = draw(st.sampled_from(ARCHS))
    t = resolve_target("6.18", arch)
    a = t.arch
    pg = a.page_size
    base = draw(st.integers(4, 40)) * a.pud_size
    start = base + draw(st.integers(0, 4 * a.ptrs_per_pte)) * pg
    n = draw(st.integers(1, 6 * a.ptrs_per_pte))
    cut = start + draw(st.integers(0, n)) * pg
    cut_len = draw(st.integers(1, 3 * a.ptrs_per_pte)) * pg
    return t, start, n * pg, cut, cut_len, draw(st.booleans()), draw(st.sampled_from(["full", "0.3"])), draw(st.booleans())


@given(unmap_cases())
@settings(max_examples=150, deadline=None)
def test_array_unmap_equals_dict_unmap(case):
    from perfsim.planner.syscall import do_munmap
    t, start, length, cut, cut_len, thp, pop, neighbour = case
    a = t.arch
    vmas = [Vma(start, start + length, thp=thp, anon_id="x", name="x")]
    pt = Population.parse(pop, seed=1).apply(PageTables.empty(a), start, start + length, thp=thp)
    if neighbour:
        n0 = start + length + a.page_size
        vmas.append(Vma(n0, n0 + a.page_size, prot="r", anon_id="n", name="n"))
        pt = pt.populate(n0, n0 + a.page_size)
    sp = AddressSpace(tuple(vmas), pt, cpus=2)
    out = []
    for implementation in ("reference", "fast"):
        log = S.StepLog()
        after = do_munmap(t, sp, cut, cut_len, log, S.UNMAP_DST,
                          options=PlanOptions(implementation))
        out.append((log.freeze(), after))
    (s1, a1), (s2, a2) = out
    for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
        assert np.array_equal(s1.col(name), s2.col(name)), name
    lo, hi = min(start, cut), max(start + length, cut + cut_len) + 2 * a.page_size
    for x, y in zip(_pt_view(a1.pt, lo, hi), _pt_view(a2.pt, lo, hi)):
        assert np.array_equal(x, y)
    assert a1.pt.pud_tables == a2.pt.pud_tables
    assert a1.vmas == a2.vmas


@pytest.mark.parametrize("cut,cut_len", [(0, 8 * M), (2 * M, 32 * M), (M, 3 * M),
                                         (4 * K, 10 * M - 8 * K), (6 * M, 26 * M)])
def test_array_unmap_equals_dict_unmap_on_thp(cut, cut_len):
    """THP zaps (R24): huge PMDs zapped whole (the zap row's ``slots``) and partly covered
    ones split, then their PTEs zapped: the same rows and page tables from both drivers."""
    from perfsim.planner.syscall import do_munmap
    t = resolve_target("6.18", "x86_64")
    start = PUD_SRC
    sp = AddressSpace((Vma(start, start + 32 * M, thp=True, anon_id="x", name="x"),),
                      PageTables.empty(t.arch).populate(start, start + 32 * M, thp=True), cpus=2)
    out = []
    for implementation in ("reference", "fast"):
        log = S.StepLog()
        after = do_munmap(t, sp, start + cut, cut_len, log, S.UNMAP_DST,
                          options=PlanOptions(implementation))
        out.append((log.freeze(), after))
    (s1, a1), (s2, a2) = out
    for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
        assert np.array_equal(s1.col(name), s2.col(name)), name
    first_whole = -(-(start + cut) // (2 * M))  # the first PMD slot the range starts at
    last_whole = min(start + cut + cut_len, start + 32 * M) // (2 * M)
    assert int(s1.slots[s1.kind == S.K_ZAP].sum()) == max(last_whole - first_whole, 0)
    for x, y in zip(_pt_view(a1.pt, start, start + 32 * M), _pt_view(a2.pt, start, start + 32 * M)):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("length", [28 * M, 30 * M, 64 * M, G + 4 * M])
@pytest.mark.parametrize("dst_off", [0, 4 * K])
def test_without_have_move_pmd_the_fast_path_equals_the_reference(length, dst_off):
    # supports_move_pmd = false: mutually PMD-aligned moves copy one full PMD of PTEs per
    # extent (one extent per source PMD, not two), so the periodic interior repeats one row.
    t = resolve_target("6.18", "x86_64").with_changes(supports_move_pmd=False)
    sp = single_move_space(t, src=A, length=length)
    r, f = both(sp, MoveRequest(A, length, new_addr=B + dst_off), t)
    assert f.move.pmd_moves == 0 and f.move.ptes_moved == length // (4 * K)


# ---------------------------------------------------------------------------- issue 11 rules
@pytest.mark.parametrize("kernel", ["6.1", "6.6", "6.12", "6.15", "7.3"])
def test_uffd_wp_vmas_move_alike_under_each_gate_placement(kernel):
    """6.1/6.6: no gate (tables move whole); 6.12: the loop never tries NORMAL_PMD/PUD;
    6.15/7.3: each attempt takes the rmap locks and is refused inside move_normal_pmd."""
    for src, dst, n, pop in ((A, B, 20 * M, "full"), (PUD_SRC, PUD_DST, G + 4 * M, "every:4096"),
                             (A + 4 * K, B + 4 * K, 8 * M, "0.5")):
        r, f = check(src, dst, n, kernel=kernel, uffd_wp=True, populate=pop)
        kinds = f.steps.kind
        failed = int(np.count_nonzero((kinds == S.K_PMD_MOVE_FAILED) | (kinds == S.K_PUD_MOVE_FAILED)))
        moved = f.move.pmd_moves + f.move.pud_moves
        gate = resolve_target(kernel, "x86_64").kernel.uffd_wp_table_move_gate
        assert (moved > 0, failed > 0) == {"none": (True, False), "move_page_tables": (False, False),
                                           "move_normal": (False, True)}[gate], (src, n)


@pytest.mark.parametrize("folio_size", [64 * K, 128 * K, 256 * K, 2 * M])
def test_large_folio_batches_on_arm64_7_3_run_to_the_folio_end(folio_size):
    t = resolve_target("7.3", "arm64-4k")
    for src, dst, pop in ((A, B + 4 * K, "full"), (A + 4 * K, B + 4 * K, "full"),
                          (A + 60 * K, B + 12 * K, "full"), (A + 128 * K, B + 64 * K, "0.5"),
                          (A, B + 20 * K, "every:3")):
        sp = single_move_space(t, src=src, length=12 * M, folio_size=folio_size,
                               populate=Population.parse(pop, seed=3))
        r, f = both(sp, MoveRequest(src, 12 * M, new_addr=dst), t)
        if pop == "full" and src == A:
            # per source PMD: one batch per folio up to the destination boundary (the last
            # folio cut there), then the one PTE left, whose contpte block that cut unfolded
            pmds, per_pmd = 12 * M // t.arch.pmd_size, t.arch.ptrs_per_pte * 4 * K // folio_size
            assert int(f.steps.batches.sum()) == pmds * (per_pmd + 1)


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.3"])
def test_arm64_tlbirange_unmap_at_max_tlbi_range_pages_plus_minus_one(kernel):
    """An munmap of MAX_TLBI_RANGE_PAGES - 1, exactly, + 1 base pages from a PMD boundary in
    the middle of a VMA: the slot-walk and the array unmap flush alike, full from MAX on 6.1
    and above MAX from 6.12. (The last flush covers the freed PTE tables from the boundary
    and the zap's last page batch up to the end, so its range is exactly the unmapped one.)"""
    from perfsim.planner.syscall import do_munmap
    t = resolve_target(kernel, "arm64-4k").with_changes(tlbirange=True)
    a = t.arch
    top = a.tlb.max_tlbi_range_pages
    start = 0x7F0000000000
    length = 2 * top * a.page_size + a.pmd_size
    sp = single_move_space(t, src=start, length=length, populate=Population.parse("full"))
    cut = start + top * a.page_size
    for pages in (top - 1, top, top + 1):
        out = []
        for implementation in ("reference", "fast"):
            log = S.StepLog()
            do_munmap(t, sp, cut, pages * a.page_size, log, S.UNMAP_DST,
                      options=PlanOptions(implementation))
            out.append(log.freeze())
        s1, s2 = out
        for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
            assert np.array_equal(s1.col(name), s2.col(name)), name
        full = int(s1.col("flush_full").sum())
        limit = t.kernel.arm64_tlbi_range_limit
        assert full == (pages > top or (pages == top and limit == "ge")), pages
