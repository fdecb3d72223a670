"""One test per kernel decision of the page-table layer, named after the rule.

Each decision is a pure function (perfsim.planner.pgtable_move, batch, tlb, unmap, gather);
both planners call them, so these tests pin the rule itself. The entry tests take ints or
numpy arrays: the vectorised planner calls them over columns, and the last tests hold the
array answers to the scalar ones.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from perfsim import resolve_target
from perfsim.mm.pagetable import PMD_LEAF, PMD_NONE, PMD_TABLE, PUD_LEAF, PUD_NONE, PUD_TABLE
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.batch import mremap_folio_pte_batch, pte_batch_block
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
    for kernel in ("6.6", "6.18"):
        assert vma_has_uffd_without_event_remap(resolve_target(kernel, "x86_64"), wp, plain)
    assert not vma_has_uffd_without_event_remap(resolve_target("6.6", "x86_64"), plain, wp)
    assert vma_has_uffd_without_event_remap(resolve_target("6.18", "x86_64"), plain, wp)


def test_move_gates_are_the_predicates_evaluated_once():
    vma = Vma(0x200000, 0x400000, backing="shmem", file_id="f", folio_size=64 << 10)
    t = resolve_target("6.18", "arm64-4k")
    g = MoveGates.of(t, vma, vma, need_rmap_locks=False)
    assert g.normal_locks == vma.rmap_locks() and g.huge_locks == ()
    assert g.batch_block == pte_batch_block(t, vma) == 16 and not g.uffd_blocks


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
def test_pte_batch_block_per_kernel_mode():
    vma = Vma(0x200000, 0x400000, folio_size=64 << 10)
    small = Vma(0x200000, 0x400000, folio_size=32 << 10)
    arm = resolve_target("6.18", "arm64-4k")                      # "hint", contpte 16
    assert pte_batch_block(arm, vma) == 16
    assert pte_batch_block(arm, small) == 1                          # folio < a contpte block
    assert pte_batch_block(X86, vma) == 1                            # no contpte hint on x86
    assert pte_batch_block(X86.with_changes(**{"kernel.pte_batching": "folio"}), vma) == 16
    assert pte_batch_block(resolve_target("6.6", "arm64-4k"), vma) == 1


@given(st.integers(0, (1 << 64) - 1), st.integers(1, 64), st.integers(0, 63),
       st.sampled_from([1, 2, 4, 16, 32, 128]))
@settings(max_examples=300)
def test_mremap_folio_pte_batch_counts_runs_inside_blocks(bits, n, first, block):
    bits &= (1 << n) - 1
    first %= block
    # one batch starts at every present PTE whose predecessor is absent or in another block
    starts = sum(1 for i in range(n) if bits >> i & 1 and (
        i == 0 or not bits >> (i - 1) & 1 or (first + i) % block == 0 or block == 1))
    assert mremap_folio_pte_batch(bits, first, n, block) == starts


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
    tlb = resolve_target("6.18", "arm64-4k").arch.tlb
    plain = tlb.model_copy(update={"tlbirange": False})
    assert arm64_flush_tlb_range(plain, plain.max_dvm_ops - 1).pages == plain.max_dvm_ops - 1
    assert arm64_flush_tlb_range(plain, plain.max_dvm_ops).full
    ranged = tlb.model_copy(update={"tlbirange": True})
    f = arm64_flush_tlb_range(ranged, plain.max_dvm_ops)
    assert not f.full and 0 < f.pages <= 2 and f.ipis == 0


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
