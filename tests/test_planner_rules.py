"""One test per kernel decision of the page-table layer, named after the rule.

Each decision is a pure function (perfsim.planner.pgtable_move, batch, tlb, unmap, gather);
both planners call them, so these tests pin the rule itself. The entry tests take ints or
numpy arrays: the vectorised planner calls them over columns, and the last tests hold the
array answers to the scalar ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from perfsim import resolve_target
from perfsim.mm.pagetable import PMD_LEAF, PMD_NONE, PMD_TABLE, PUD_LEAF, PUD_NONE, PUD_TABLE
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.batch import (
    NO_BATCHING,
    PteBatching,
    mremap_folio_pte_batch,
    pte_batch_hint,
    pte_batching_of,
)
from perfsim.planner.gather import MmuGather, max_table_batch
from perfsim.planner.pgtable_move import (
    HPAGE_PMD,
    HPAGE_PUD,
    NORMAL_PMD,
    NORMAL_PUD,
    MoveGates,
    alloc_new_pud,
    failed_entry_row,
    get_extent,
    move_huge_pmd,
    move_normal_pmd,
    move_normal_pud,
    move_pgt_entry,
    move_ptes_flushes,
    move_ptes_ptl_count,
    pgt_entry_row,
    pmd_alloc,
    pmd_ptl_count,
    pte_alloc,
    should_take_rmap_locks,
    split_huge_pmd,
    split_huge_pmd_row,
    vma_has_uffd_without_event_remap,
)
from perfsim.planner.tlb import (
    arm64_flush_tlb_range,
    flush_lookup,
    flush_range,
    flush_tlb_mm_range,
    riscv_flush_tlb_range,
)
from perfsim.planner.unmap import (
    free_pmd_table,
    free_pte_table,
    free_pud_table,
    free_range_bounds,
    zap_huge_pmd_whole,
    zap_huge_pud_whole,
    zap_pte_range,
)

X86 = resolve_target("6.18", "x86_64")
M = 1 << 20


# ---------------------------------------------------------------------------- get_extent
@given(st.integers(0, 1 << 40), st.integers(0, 1 << 40), st.integers(1, 1 << 32),
       st.sampled_from([21, 30]))
@settings(max_examples=200)
def test_get_extent_stops_at_the_nearer_boundary_or_the_end(old, new, length, shift):
    size = 1 << shift
    e = get_extent(shift, old, new, old + length)
    assert 0 < e <= length
    assert (old % size + e <= size) and (new % size + e <= size)  # never crosses a boundary
    assert e == length or (old + e) % size == 0 or (new + e) % size == 0  # ... and stops at one


# ---------------------------------------------------------------------------- rmap / uffd gates
def test_should_take_rmap_locks_always_for_normal_moves():
    for entry in (NORMAL_PMD, NORMAL_PUD):
        assert should_take_rmap_locks(X86, False, entry)
    for entry in (HPAGE_PMD, HPAGE_PUD):
        assert not should_take_rmap_locks(X86, False, entry)
        assert should_take_rmap_locks(X86, True, entry)
    before_2021 = X86.with_changes(**{"kernel.rmap_locks_always_for_normal_moves": False})
    assert not should_take_rmap_locks(before_2021, False, NORMAL_PMD)


def test_uffd_gate_checks_the_new_vma_from_6_17():
    plain = Vma(0x200000, 0x400000)
    wp = Vma(0x200000, 0x400000, uffd_wp=True)
    for kernel in ("6.12", "6.18"):
        assert vma_has_uffd_without_event_remap(resolve_target(kernel, "x86_64"), wp, plain)
    assert not vma_has_uffd_without_event_remap(resolve_target("6.12", "x86_64"), plain, wp)
    assert vma_has_uffd_without_event_remap(resolve_target("6.18", "x86_64"), plain, wp)


@pytest.mark.parametrize("kernel", ["6.1", "6.6", "6.7"])
def test_no_uffd_gate_before_the_uffd_wp_mremap_fix(kernel):
    """0cef0bb836e3 (6.13; 6.12.11) added the gate; 6.1, 6.6 and 6.7 lines never got it."""
    wp = Vma(0x200000, 0x400000, uffd_wp=True)
    t = resolve_target(kernel, "x86_64")
    assert not vma_has_uffd_without_event_remap(t, wp, wp)
    g = MoveGates.of(t, wp, wp, need_rmap_locks=False)
    assert g.normal_moves_tried and not g.uffd_blocks


def test_uffd_gate_is_a_loop_condition_in_6_12_and_inside_move_normal_pmd_from_6_13():
    wp = Vma(0x200000, 0x400000, uffd_wp=True)
    g612 = MoveGates.of(resolve_target("6.12", "x86_64"), wp, wp, need_rmap_locks=False)
    assert not g612.normal_moves_tried and not g612.uffd_blocks
    for kernel in ("6.15", "6.16", "6.17", "6.18", "6.19", "7.3"):
        g = MoveGates.of(resolve_target(kernel, "x86_64"), wp, wp, need_rmap_locks=False)
        assert g.normal_moves_tried and g.uffd_blocks, kernel


def test_move_gates_are_the_predicates_evaluated_once():
    vma = Vma(0x200000, 0x400000, backing="shmem", file_id="f", folio_size=64 << 10)
    t = resolve_target("6.18", "arm64-4k")
    g = MoveGates.of(t, vma, vma, need_rmap_locks=False)
    assert g.normal_locks == vma.rmap_locks() and g.huge_locks == ()
    assert g.batching == pte_batching_of(t, vma) == PteBatching(16, 16, 0x200, 0x400)
    assert not g.uffd_blocks
    assert g.normal_moves_tried


# ---------------------------------------------------------------------------- entry moves
def test_move_normal_pmd_refuses_a_populated_destination_or_a_uffd_vma():
    assert move_normal_pmd(False, PMD_NONE)
    assert not move_normal_pmd(False, PMD_TABLE)
    assert not move_normal_pmd(True, PMD_NONE)


def test_move_normal_pud_refuses_a_populated_destination_or_a_uffd_vma():
    assert move_normal_pud(False, PUD_NONE)
    assert not move_normal_pud(False, PUD_TABLE)
    assert not move_normal_pud(True, PUD_NONE)


def test_move_huge_pmd_needs_an_empty_destination_whatever_uffd():
    assert move_huge_pmd(PMD_NONE) and not move_huge_pmd(PMD_TABLE)
    assert move_pgt_entry(HPAGE_PMD, True, PMD_NONE)
    assert move_pgt_entry(HPAGE_PUD, True, PUD_NONE) and not move_pgt_entry(HPAGE_PUD, False, PUD_LEAF)


def test_pmd_ptl_count_one_lock_in_one_table_or_without_split_ptlocks():
    a = X86.arch
    same, other = (5 << 9), (6 << 9)  # PMD slots in PUD slots 5 and 6
    assert pmd_ptl_count(a, same, same + 1) == 1
    assert pmd_ptl_count(a, same, other) == 2
    no_split = X86.with_changes(**{"arch.split_pmd_ptlocks": False}).arch
    assert pmd_ptl_count(no_split, same, other) == 1


def test_split_huge_pmd_keeps_anon_pages_and_unmaps_file_thp():
    a = X86.arch
    assert split_huge_pmd(a, True) == (PMD_TABLE, (1 << 512) - 1)
    assert split_huge_pmd(a, False) == (PMD_NONE, 0)


def test_move_ptes_locks_both_tables_and_flushes_only_what_it_moved():
    assert move_ptes_ptl_count(7, 7) == 1 and move_ptes_ptl_count(7, 9) == 2
    assert move_ptes_flushes(1) and not move_ptes_flushes(0)


def test_alloc_new_pud_allocates_a_p4d_page_only_with_five_levels():
    addr = 0x7f0000000000
    assert alloc_new_pud(X86.arch, set(), addr) == (0, 1)
    la57 = resolve_target("6.18", "x86_64-la57").arch
    assert alloc_new_pud(la57, set(), addr) == (1, 1)
    assert alloc_new_pud(la57, {(addr >> la57.p4d_shift) + 1}, addr) == (0, 1)  # same PGD entry
    assert alloc_new_pud(resolve_target("6.18", "riscv-sv39").arch, set(), addr) == (0, 0)


def test_pmd_and_pte_tables_are_allocated_where_the_destination_entry_is_none():
    assert pmd_alloc(PUD_NONE) and not pmd_alloc(PUD_TABLE)
    assert pte_alloc(PMD_NONE) and not pte_alloc(PMD_TABLE) and not pte_alloc(PMD_LEAF)


def test_entry_rows_carry_the_flush_of_the_level_moved():
    g = MoveGates.of(X86, Vma(0, 1 << 30, anon_id="a"), Vma(0, 1 << 30, anon_id="a"), False)
    pud = pgt_entry_row(X86, g, NORMAL_PUD, 1, 2, cpus=1, lazy_cpus=0)
    assert pud.kind == S.K_PUD_MOVE and pud.flush.full and pud.locks == ("anon_vma:a",)
    thp = pgt_entry_row(X86, g, HPAGE_PMD, 1, 2, cpus=1, lazy_cpus=0)
    assert thp.kind == S.K_THP_MOVE and thp.ptes == 512 and thp.locks == () and thp.ptl == 1
    assert failed_entry_row(g, NORMAL_PMD).flush is None
    split = split_huge_pmd_row(resolve_target("6.18", "arm64-4k"), cpus=1, lazy_cpus=0)
    assert split.kind == S.K_THP_SPLIT and split.flush.pages == 1  # one PMD-stride TLBI


# ---------------------------------------------------------------------------- PTE batching
def test_pte_batching_of_per_kernel_mode():
    vma = Vma(0x200000, 0x400000, folio_size=64 << 10)
    small = Vma(0x200000, 0x400000, folio_size=32 << 10)
    arm = resolve_target("6.18", "arm64-4k")                      # "hint", contpte 16
    assert pte_batching_of(arm, vma) == PteBatching(16, 16, 0x200, 0x400)
    assert pte_batching_of(arm, small) == NO_BATCHING               # folio < a contpte block
    assert pte_batching_of(X86, vma) == NO_BATCHING                 # no contpte hint on x86
    assert pte_batching_of(X86.with_changes(**{"kernel.pte_batching": "folio"}), vma) == \
        PteBatching(16, 0, 0x200, 0x400)
    assert pte_batching_of(resolve_target("6.6", "arm64-4k"), vma) == NO_BATCHING


def test_large_folios_only_where_an_aligned_folio_fits_the_vma():
    """``thp_vma_suitable_order``: the aligned folios inside the VMA; a shmem VMA whose
    start and file offset are not congruent modulo the folio gets none."""
    arm = resolve_target("7.3", "arm64-4k")
    b = pte_batching_of(arm, Vma(0x201000, 0x40F000, folio_size=64 << 10))
    assert (b.first_page, b.end_page) == (0x210, 0x400)
    assert b.window_in_table(0x200, 512) == (16, 512) and b.window_in_table(0x400, 512) == (0, 0)
    skew = Vma(0x200000, 0x400000, backing="shmem", file_id="f", pgoff=1, folio_size=64 << 10)
    assert pte_batching_of(arm, skew) == NO_BATCHING
    assert pte_batching_of(arm, Vma(0x201000, 0x20F000, folio_size=64 << 10)) == NO_BATCHING


def test_pte_batch_hint_is_what_is_left_of_an_intact_contpte_block():
    full = (1 << 32) - 1
    assert [pte_batch_hint(full, i, 16) for i in (0, 1, 15, 16, 31)] == [16, 15, 1, 16, 1]
    assert pte_batch_hint(full & ~1, 5, 16) == 1                       # block partly cleared
    assert pte_batch_hint(full & ~1, 16, 16) == 16                     # the next block is intact


def _batches_by_hand(table, lo, n, folio, cont):
    """The kernel's loop, PTE by PTE: a batch starts at each present PTE not taken by the
    previous batch; it is 1 PTE where the block is not intact or the PTE is its block's
    last, else it extends while the next PTE is present, in the extent and in the folio."""
    count, i = 0, lo
    while i < lo + n:
        if not table >> i & 1:
            i += 1
            continue
        count += 1
        base = i - i % cont if cont else 0
        intact = not cont or all(table >> j & 1 for j in range(base, base + cont))
        if cont and (not intact or i % cont == cont - 1):
            i += 1
            continue
        j = i + 1
        while j < lo + n and j % folio and table >> j & 1:
            j += 1
        i = j
    return count


@given(st.integers(0, (1 << 128) - 1), st.integers(0, 127), st.integers(1, 128),
       st.sampled_from([(1, 0), (4, 0), (32, 0), (16, 16), (32, 16), (64, 16), (128, 16)]))
@settings(max_examples=300)
def test_mremap_folio_pte_batch_runs_to_the_folio_end_behind_the_hint(table, lo, n, shape):
    folio, cont = shape
    n = min(n, 128 - lo)
    got = mremap_folio_pte_batch(PteBatching(folio, cont), table, lo, n, (0, 128))
    if folio == 1:
        assert got == ((table >> lo) & ((1 << n) - 1)).bit_count()
    else:
        assert got == _batches_by_hand(table, lo, n, folio, cont)


def test_7_3_batch_crosses_contpte_blocks_but_not_folios():
    full = (1 << 512) - 1
    arm = PteBatching(32, 16)                                         # 128 KiB folios
    every = (0, 512)
    assert mremap_folio_pte_batch(arm, full, 0, 512, every) == 16
    assert mremap_folio_pte_batch(PteBatching(512, 16), full, 0, 512, every) == 1   # 2 MiB mTHP
    # an extent starting at the last PTE of an intact block: that PTE alone, then the rest
    assert mremap_folio_pte_batch(arm, full, 15, 17, every) == 2
    # small folios outside the window: one batch per PTE, contpte-looking or not
    assert mremap_folio_pte_batch(arm, full, 0, 64, (32, 512)) == 32 + 1


# ---------------------------------------------------------------------------- TLB policy
def test_flush_tlb_mm_range_ceiling_pti_and_lazy_cpus():
    tlb, k, pg = X86.arch.tlb, X86.kernel, 4096

    def flush(policy, pages, **kw):
        return flush_tlb_mm_range(policy, k, pages * pg, 12, **{
            "cpus": 1, "lazy_cpus": 0, "freed_tables": True, **kw})

    assert flush(tlb, 33).full is False and flush(tlb, 34).full is True
    # the ceiling counts whole strides, the invalidations started ones
    partial = flush_tlb_mm_range(tlb, k, 33 * pg + 1, 12, cpus=1, lazy_cpus=0, freed_tables=True)
    assert (partial.full, partial.pages) == (False, 34)
    assert flush(tlb.model_copy(update={"pti": True}), 3).pages == 6
    # lazy CPUs are skipped unless the flush frees page tables
    assert flush(tlb, 1, cpus=4, lazy_cpus=2, freed_tables=False).ipis == 1
    assert flush(tlb, 1, cpus=4, lazy_cpus=2).ipis == 3
    assert flush(tlb.model_copy(update={"invlpgb": True}), 1, cpus=4).ipis == 0


def test_arm64_flush_tlb_range_max_dvm_ops_and_tlbirange():
    t = resolve_target("6.18", "arm64-4k")
    k, tlb = t.kernel, t.arch.tlb
    plain = tlb.model_copy(update={"tlbirange": False})
    dvm = plain.max_dvm_ops
    assert arm64_flush_tlb_range(plain, k, dvm - 1, dvm - 1).pages == dvm - 1
    assert arm64_flush_tlb_range(plain, k, dvm, dvm).full
    ranged = tlb.model_copy(update={"tlbirange": True})
    f = arm64_flush_tlb_range(ranged, k, dvm, dvm)
    assert not f.full and 0 < f.pages <= 2 and f.ipis == 0


@pytest.mark.parametrize("kernel,at,above", [("6.1", True, True), ("6.6", True, True),
                                             ("6.7", True, True), ("6.12", False, True),
                                             ("6.18", False, True), ("7.3", False, True)])
def test_arm64_tlbirange_flushes_the_asid_from_max_tlbi_range_pages_per_version(kernel, at,
                                                                                 above):
    """>= MAX_TLBI_RANGE_PAGES before 73301e464a72 (6.10), > from it; base pages counted."""
    t = resolve_target(kernel, "arm64-4k")
    ranged = t.arch.tlb.model_copy(update={"tlbirange": True})
    top = ranged.max_tlbi_range_pages
    for base, full in ((top - 1, False), (top, at), (top + 1, above)):
        assert arm64_flush_tlb_range(ranged, t.kernel, base, base).full == full, base
    # PMD stride: few stride pages, but the limit is in base pages
    assert arm64_flush_tlb_range(ranged, t.kernel, (top >> 9) + 1, top + 512).full


def test_arm64_range_limit_applies_without_tlbirange_only_before_limit_excess():
    """6.1/6.12 test the base-page limit on every system; 7.3's
    ``__flush_tlb_range_limit_excess`` only with FEAT_TLBIRANGE (1 GiB-stride hugetlb
    flush of 16 GiB: 16 strides, 4M base pages)."""
    for kernel, full in (("6.1", True), ("6.12", True), ("7.3", False)):
        t = resolve_target(kernel, "arm64-4k")
        plain = t.arch.tlb.model_copy(update={"tlbirange": False})
        assert arm64_flush_tlb_range(plain, t.kernel, 16, 16 << 18).full == full, kernel


def test_riscv_flush_tlb_range_threshold_and_ipis():
    tlb = resolve_target("6.18", "riscv-sv39").arch.tlb
    assert not riscv_flush_tlb_range(tlb, tlb.flush_all_threshold, cpus=3).full
    f = riscv_flush_tlb_range(tlb, tlb.flush_all_threshold + 1, cpus=3)
    assert f.full and f.ipis == 2


def test_flush_lookup_is_flush_range_per_length():
    for arch in ("x86_64", "arm64-4k", "riscv-sv39"):
        t = resolve_target("6.18", arch)
        table = flush_lookup(t, t.arch.page_shift, 3, 1, 64)
        for n in range(65):
            f = flush_range(t, 0, n << t.arch.page_shift, cpus=3, lazy_cpus=1)
            assert (bool(table.full[n]), int(table.pages[n]), int(table.ipis[n])) == (f.full, f.pages, f.ipis)


# ---------------------------------------------------------------------------- zap / free
def test_zap_huge_pmd_whole_only_when_the_range_covers_the_slot():
    assert zap_huge_pmd_whole(0, 512, 512)
    assert not zap_huge_pmd_whole(0, 511, 512) and not zap_huge_pmd_whole(1, 512, 512)


def test_zap_huge_pud_whole_only_inside_the_range():
    G = 1 << 30
    assert zap_huge_pud_whole(G, G, G, 2 * G)
    assert not zap_huge_pud_whole(G, G, G + 4096, 3 * G)


def test_zap_pte_range_clears_exactly_the_range():
    left, hit = zap_pte_range(0b1111_0110, 2, 6)
    assert (left, hit) == (0b1100_0010, 0b0011_0100)


@given(st.integers(0, 64), st.integers(1, 64), st.integers(0, 80), st.integers(0, 80))
@settings(max_examples=300)
def test_free_range_bounds_stay_between_floor_and_ceiling(addr_u, len_u, floor_u, ceil_u):
    size = 2 * M
    addr, end = addr_u * M, (addr_u + len_u) * M
    floor, ceiling = floor_u * M, ceil_u * M
    # the callers' contract: the neighbours lie outside the range
    assume(floor <= addr and (ceiling == 0 or ceiling >= end))
    b = free_range_bounds(addr, end, floor, ceiling, size)
    if b is None:
        return
    lo, hi = b
    assert lo % size == 0 and lo >= floor and lo < hi
    assert lo <= addr - addr % size + size  # the unit holding addr or the next
    if ceiling:
        assert hi <= ceiling - ceiling % size


def test_free_tables_keep_what_still_maps():
    assert free_pte_table(PMD_TABLE) and not free_pte_table(PMD_LEAF)
    assert free_pmd_table(PUD_TABLE, 0) and not free_pmd_table(PUD_TABLE, 3)
    assert not free_pmd_table(PUD_LEAF, 0)
    assert free_pud_table(True, 0) and not free_pud_table(True, 1) and not free_pud_table(False, 0)


def test_max_table_batch_is_a_page_of_pointers():
    assert max_table_batch(X86) == 509


def test_tlb_get_unmap_shift_is_the_lowest_level_cleared():
    g = MmuGather()
    assert g.tlb_get_unmap_shift(X86) is None
    g.cleared_pmds = True
    assert g.tlb_get_unmap_shift(X86) == X86.arch.pmd_shift
    g.cleared_ptes = True
    assert g.tlb_get_unmap_shift(X86) == X86.arch.page_shift


# ---------------------------------------------------------------------------- arrays = ints
@given(st.lists(st.sampled_from([PMD_NONE, PMD_TABLE, PMD_LEAF]), min_size=1, max_size=20),
       st.booleans())
def test_entry_moves_answer_arrays_as_they_answer_ints(kinds, uffd):
    arr = np.array(kinds, np.int8)
    for entry in (NORMAL_PMD, HPAGE_PMD):
        col = move_pgt_entry(entry, uffd, arr)
        assert [bool(x) for x in col] == [bool(move_pgt_entry(entry, uffd, k)) for k in kinds]
    assert [bool(x) for x in free_pte_table(arr)] == [bool(free_pte_table(k)) for k in kinds]


@given(st.lists(st.tuples(st.integers(0, 1 << 12), st.integers(0, 1 << 12)), min_size=1, max_size=20))
def test_lock_counts_answer_arrays_as_they_answer_ints(pairs):
    a = X86.arch
    src = np.array([p[0] for p in pairs])
    dst = np.array([p[1] for p in pairs])
    assert pmd_ptl_count(a, src, dst).tolist() == [int(pmd_ptl_count(a, s, d)) for s, d in pairs]
    assert move_ptes_ptl_count(src, dst).tolist() == [int(move_ptes_ptl_count(s, d)) for s, d in pairs]


# ---------------------------------------------------------------------------- the rule table
def test_rule_table_points_at_functions_that_exist():
    # docs/planner.md: one row per kernel function, each naming the perfsim function
    import importlib
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "planner.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) >= 40
    refs = re.findall(r"`(pm|[a-z_]+\.py)::([A-Za-z_][\w.]*)`", text)
    assert len(refs) >= 40
    for module, dotted in refs:
        name = "pgtable_move" if module == "pm" else module[:-3]
        obj = importlib.import_module(f"perfsim.planner.{name}")
        for part in dotted.split("."):
            obj = getattr(obj, part)  # AttributeError names the stale row


def test_tables_per_forced_flush_is_the_table_batch_except_on_old_bare_metal():
    # x86 bare metal up to 6.13 frees page tables with tlb_remove_page: no table-batch flush;
    # a paravirtual KVM guest, and bare metal from 6.14, flush when 509 tables are batched.
    from perfsim.planner.gather import tables_per_forced_flush

    for version, platform, want in (("6.12", "bare-metal", None), ("6.1", "bare-metal", None),
                                    ("6.12", "kvm-guest", 509), ("6.16", "bare-metal", 509),
                                    ("6.18", "kvm-guest", 509)):
        t = resolve_target(version).with_changes(platform=platform)
        assert tables_per_forced_flush(t) == want, (version, platform)


def test_old_bare_metal_unmap_of_515_tables_flushes_once():
    # E4 at 1 GiB: the source unmap frees 515 page tables (recorded under QEMU: 1 flush on
    # 6.1/6.12, 2 on 6.16+ and in a KVM guest).
    from perfsim.mm.build import single_move_space
    from perfsim.planner import MoveRequest, plan_mremap
    from perfsim.planner import steps as S

    def src_unmap_flushes(version, platform):
        t = resolve_target(version).with_changes(platform=platform)
        sp = single_move_space(t, src=0x7F0000201000, length=1 << 30)
        p = plan_mremap(sp, MoveRequest(0x7F0000201000, 1 << 30, new_addr=0x7F4000602000), t)
        st = p.steps
        return int(st.col("flushes")[st.col("phase") == S.UNMAP_SRC].sum())

    assert src_unmap_flushes("6.12", "bare-metal") == 1
    assert src_unmap_flushes("6.12", "kvm-guest") == 2
    assert src_unmap_flushes("6.18", "bare-metal") == 2
