"""A zap of dirty shared-file PTEs flushes per PTE table (docs/kernel-rules.md, Unmap).

mm/memory.c ``zap_pte_range`` (6.1) / ``zap_present_folio_ptes`` (6.12, 7.3): clearing a
dirty PTE of a page that is not anonymous (shmem, a MAP_SHARED file) forces the gathered
range to be flushed before that PTE table's lock is dropped; mm/mmu_gather.c
``tlb_next_batch``: the gather's page batches are limited (``MAX_GATHER_BATCH_COUNT``) and,
from 6.2, not extended while delayed rmaps are pending. The counts below are the ones
recorded on real kernels in tests/data/groundtruth (the ``zap`` grid,
``perfsim.groundtruth.grid.zap_cases``), under QEMU TCG on 6.1-7.3 and on this machine.
Both unmap drivers (the slot walk of ``PlanOptions("reference")`` and the array driver)
must give the same plan.
"""

import numpy as np
import pytest
from helpers import A, B, K, M

from perfsim import resolve_target
from perfsim.mm.build import Population, VmaSpec, build_space, single_move_space
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.gather import PTE_TABLE, MmuGather, pages_until_forced_flush, tlb_finish_mmu
from perfsim.planner.options import PlanOptions
from perfsim.planner.syscall import do_munmap
from perfsim.planner.unmap import vma_ptes_dirty, vma_zap_forces_flush, zap_forces_flush

FULL = Population.parse("full")
KERNELS = ("6.1", "6.12", "6.18", "7.3")


def shrink(kernel, length, new_len, *, src=A, options=None, **space):
    t = resolve_target(kernel, "x86_64")
    sp = single_move_space(t, src=src, length=length, populate=FULL, **space)
    req = MoveRequest(src, length, new_len=new_len, maymove=False, fixed=False)
    p = plan_mremap(sp, req, t, options) if options else plan_mremap(sp, req, t)
    assert p.errno is None
    return p


def unmap_dst(plan):
    st = plan.steps
    sel = st.phase == S.UNMAP_DST
    return int(st.flushes[sel].sum()), int(st.flush_full[sel].sum())


def fixed_onto(kernel, length, dst_specs, *, options=None):
    """An anon source at A moved with MREMAP_FIXED onto B, where ``dst_specs`` are mapped."""
    t = resolve_target(kernel, "x86_64")
    sp = build_space(t, [VmaSpec(A, length, populate=FULL), *dst_specs])
    req = MoveRequest(A, length, new_addr=B)
    p = plan_mremap(sp, req, t, options) if options else plan_mremap(sp, req, t)
    assert p.errno is None
    return p


# ----------------------------------------------------------------------------- the rule
def test_a_dirty_pte_of_a_shared_shmem_or_file_page_forces_a_flush():
    assert zap_forces_flush("shmem", True, True)
    assert zap_forces_flush("file", True, True)


def test_anon_and_clean_ptes_do_not_force_a_flush():
    assert not zap_forces_flush("anon", False, True)
    assert not zap_forces_flush("anon", True, True)  # anon ignores shared
    assert not zap_forces_flush("shmem", True, False)
    assert not zap_forces_flush("hugetlb", True, True)


def test_a_written_page_of_a_private_file_mapping_is_anonymous_and_does_not_force():
    assert not zap_forces_flush("file", False, True)
    assert not vma_zap_forces_flush(Vma(0, 4 * K, backing="file", shared=False))
    assert vma_zap_forces_flush(Vma(0, 4 * K, backing="file"))


def test_a_read_only_vma_holds_clean_ptes():
    assert not vma_ptes_dirty(Vma(0, 4 * K, backing="shmem", prot="r"))
    assert not vma_zap_forces_flush(Vma(0, 4 * K, backing="shmem", prot="r"))
    assert vma_ptes_dirty(Vma(0, 4 * K, backing="shmem", prot="rw"))


def test_the_gather_holds_8_plus_19_batches_of_510_pages_on_6_1():
    assert pages_until_forced_flush(resolve_target("6.1"), 0, False) == 8 + 19 * 510
    # delayed rmaps do not exist in 6.1
    assert pages_until_forced_flush(resolve_target("6.1"), 0, True) == 8 + 19 * 510


@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_the_gather_holds_7_plus_19_batches_of_509_pages_from_6_9(kernel):
    assert pages_until_forced_flush(resolve_target(kernel), 0, False) == 7 + 19 * 509
    assert pages_until_forced_flush(resolve_target(kernel), 7 + 509, False) == 18 * 509


@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_delayed_rmaps_refuse_a_second_page_batch_from_6_2(kernel):
    t = resolve_target(kernel)
    assert pages_until_forced_flush(t, 0, True) == 7 + 509  # the on-stack batch, then one
    assert pages_until_forced_flush(t, 512, True) == 4  # anon pages already fill batch 1
    assert pages_until_forced_flush(t, 3, True) == 516 - 3


# --------------------------------------------------------------------- shrinks (dst_unmap)
@pytest.mark.parametrize("kernel", KERNELS)
def test_shrinking_written_anon_flushes_once_in_tlb_finish_mmu(kernel):
    """Recorded: pmd_aligned/4M/1t/to-2M and 8M/to-2M: dst_unmap 1 flush, full."""
    assert unmap_dst(shrink(kernel, 4 * M, 2 * M)) == (1, 1)
    assert unmap_dst(shrink(kernel, 8 * M, 2 * M)) == (1, 1)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("backing", ["shmem", "file"])
@pytest.mark.parametrize("length,tables", [(4 * M, 1), (8 * M, 3), (64 * M, 24)])
def test_shrinking_written_shared_pages_flushes_once_per_pte_table_then_for_the_freed_tables(
        kernel, backing, length, tables):
    """Recorded (shmem, memfd): 4M/to-2M dst_unmap 2/1, 8M/to-2M 4/3, 64M/to-16M 25/24: a
    full flush per PTE table of dirty PTEs, then tlb_finish_mmu's ranged flush for the PTE
    tables freed (PMD stride)."""
    new = 2 * M if length <= 8 * M else 16 * M
    assert unmap_dst(shrink(kernel, length, new, backing=backing)) == (tables + 1, tables)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_partial_pte_table_at_the_range_end_gets_a_ranged_forced_flush(kernel):
    """Recorded unaligned/8M/1t/shmem/to-2M (source at +4 KiB): the tail's four PTE tables
    hold 511, 512, 512 and 1 dirty PTEs: three full flushes and a one-page flush, then the
    freed tables' flush: 5 flushes, 3 full."""
    p = shrink(kernel, 8 * M, 2 * M, src=A + 4 * K, backing="shmem")
    assert unmap_dst(p) == (5, 3)
    zaps = p.steps.kind == S.K_ZAP
    assert p.steps.flush_pages[zaps & (p.steps.flush_full == 0)].tolist() == [1]


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_private_file_shrink_flushes_like_anon(kernel):
    t = resolve_target(kernel, "x86_64")
    sp = build_space(t, [VmaSpec(A, 8 * M, backing="file", populate=FULL, shared=False)])
    p = plan_mremap(sp, MoveRequest(A, 8 * M, new_len=2 * M, maymove=False, fixed=False), t)
    assert unmap_dst(p) == (1, 1)


def test_a_read_only_shared_mapping_flushes_like_anon():
    t = resolve_target("6.18", "x86_64")
    sp = build_space(t, [VmaSpec(A, 8 * M, backing="shmem", prot="r", populate=FULL)])
    p = plan_mremap(sp, MoveRequest(A, 8 * M, new_len=2 * M, maymove=False, fixed=False), t)
    assert unmap_dst(p) == (1, 1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_more_anon_pages_than_the_gather_batches_hold_force_a_flush(kernel):
    """Recorded pmd_aligned/64M/1t/to-16M: 12288 anon PTEs zapped, about 9,700 per
    gather: dst_unmap 2 flushes, both full."""
    assert unmap_dst(shrink(kernel, 64 * M, 16 * M)) == (2, 2)


# ---------------------------------------------------------------------------- munmap
@pytest.mark.parametrize("kernel", KERNELS)
def test_munmap_of_written_shmem_flushes_once_per_pte_table(kernel):
    t = resolve_target(kernel, "x86_64")
    sp = build_space(t, [VmaSpec(A, 8 * M, backing="shmem", populate=FULL)])
    log = S.StepLog()
    after = do_munmap(t, sp, A, 8 * M, log, S.UNMAP_DST)
    st = log.freeze()
    assert not after.vmas
    assert (int(st.flushes.sum()), int(st.flush_full.sum())) == (5, 4)
    zaps = st.kind == S.K_ZAP
    assert int(st.flushes[zaps].sum()) == 4 and int(st.ptes[zaps].sum()) == 2048
    assert st.ptes[zaps].tolist() == [512] * 4


# ------------------------------------------------------------- MREMAP_FIXED onto mappings
@pytest.mark.parametrize("kernel", KERNELS)
def test_mremap_fixed_onto_written_shmem_unmaps_it_with_a_flush_per_pte_table(kernel):
    """Recorded pmd_aligned/4M/1t/shmem/written: dst_unmap 3 flushes, 2 full (anon: 1, 1)."""
    shm = fixed_onto(kernel, 4 * M, [VmaSpec(B, 4 * M, backing="shmem", populate=FULL)])
    anon = fixed_onto(kernel, 4 * M, [VmaSpec(B, 4 * M, populate=FULL)])
    assert unmap_dst(shm) == (3, 2)
    assert unmap_dst(anon) == (1, 1)


@pytest.mark.parametrize("kernel,length,expect", [
    ("6.1", 4 * M, (2, 1)), ("6.1", 8 * M, (3, 2)),
    ("6.12", 4 * M, (3, 2)), ("6.12", 8 * M, (4, 3)),
    ("6.18", 4 * M, (3, 2)), ("6.18", 8 * M, (4, 3)),
    ("7.3", 4 * M, (3, 2)), ("7.3", 8 * M, (4, 3)),
])
def test_anon_pages_gathered_before_shmem_ones_force_a_flush_inside_its_first_table_from_6_2(
        kernel, length, expect):
    """Recorded pmd_aligned/{4M,8M}/1t/anon-shmem (the destination's lower half written
    anon, its upper half written shmem): on 6.1 the first shmem PTE table flushes once, at
    its end; from 6.2 ``tlb_next_batch`` refuses a new batch while the shmem rmaps are
    delayed, so the anon pages already in batch 1 make it flush within that table too."""
    half = length // 2
    p = fixed_onto(kernel, length, [VmaSpec(B, half, populate=FULL),
                                    VmaSpec(B + half, half, backing="shmem", populate=FULL)])
    assert unmap_dst(p) == expect


def test_two_adjacent_shmem_vmas_in_one_pte_table_flush_once_each():
    """``unmap_vmas`` zaps VMA by VMA: two shmem VMAs sharing a PTE table are two
    ``zap_pte_range`` calls, each forcing its flush."""
    t = resolve_target("6.18", "x86_64")
    sp = build_space(t, [VmaSpec(A, M, backing="shmem", populate=FULL, file="f1"),
                         VmaSpec(A + M, M, backing="shmem", populate=FULL, file="f2")])
    log = S.StepLog()
    do_munmap(t, sp, A, 2 * M, log, S.UNMAP_DST)
    st = log.freeze()
    assert int(st.flushes[st.kind == S.K_ZAP].sum()) == 2


def test_tables_freed_as_pages_join_the_pages_the_zap_left_in_the_batches():
    """6.1 on bare metal frees page tables with ``tlb_remove_page``: into the same page
    batches as the zapped pages, so 20 tables after 9,690 gathered pages fill them."""
    t = resolve_target("6.1", "x86_64").with_changes(platform="bare-metal")
    tlb = MmuGather(0)
    tlb.batched = 9690
    for i in range(20):
        tlb.free_table(i << 21, PTE_TABLE)
    log = S.StepLog()
    tlb_finish_mmu(t, tlb, log, S.UNMAP_DST, 0, 40 * M, 0, 20, cpus=1, lazy_cpus=0)
    st = log.freeze()
    assert st.freed.tolist() == [8, 12] and int(st.flushes.sum()) == 2


# ------------------------------------------------------- the two unmap drivers, one plan
def assert_same(r, f):
    sr, sf = r.steps, f.steps
    assert len(sr) == len(sf)
    for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
        assert np.array_equal(sr.col(name), sf.col(name)), name
    assert r.syscall == f.syscall
    assert r.after.pt.present_ptes(A - 4 * M, A + 80 * M) == f.after.pt.present_ptes(A - 4 * M, A + 80 * M)


REF, FAST = PlanOptions("reference"), PlanOptions("fast")


@pytest.mark.parametrize("kernel", ["6.1", "6.18"])
@pytest.mark.parametrize("backing", ["anon", "shmem"])
@pytest.mark.parametrize("src,length,new_len", [
    (A, 4 * M, 2 * M), (A + 4 * K, 8 * M, 2 * M), (A, 64 * M, 16 * M), (A + 12 * K, 3 * M, 40 * K),
])
def test_the_slot_walk_and_the_array_unmap_give_the_same_shrink(kernel, backing, src, length,
                                                                 new_len):
    r = shrink(kernel, length, new_len, src=src, backing=backing, options=REF)
    f = shrink(kernel, length, new_len, src=src, backing=backing, options=FAST)
    assert_same(r, f)


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
@pytest.mark.parametrize("populate", ["full", "every:3", "first:1M"])
def test_the_slot_walk_and_the_array_unmap_give_the_same_fixed_move_onto_anon_then_shmem(
        kernel, populate):
    pop = Population.parse(populate)
    dst = [VmaSpec(B, 2 * M + 12 * K, populate=pop),
           VmaSpec(B + 2 * M + 12 * K, 2 * M - 12 * K, backing="shmem", populate=pop)]
    r = fixed_onto(kernel, 4 * M, dst, options=REF)
    f = fixed_onto(kernel, 4 * M, dst, options=FAST)
    assert_same(r, f)


@pytest.mark.parametrize("kernel,first", [("6.1", 8 + 19 * 510), ("6.12", 7 + 19 * 509),
                                          ("7.3", 7 + 19 * 509)])
def test_the_zap_flushes_after_the_pte_that_fills_the_last_page_batch(kernel, first):
    """``force_break``: the zap stops right after the PTE that filled the gather, flushes
    and frees, and goes on; the rest is flushed by tlb_finish_mmu."""
    p = shrink(kernel, 64 * M, 16 * M)
    st = p.steps
    zaps = (st.kind == S.K_ZAP) & (st.phase == S.UNMAP_DST)
    assert st.ptes[zaps].tolist() == [first, 12288 - first]
    assert st.flushes[zaps].tolist() == [1, 0]
    assert int(st.length[zaps][0]) == first * 4 * K


@pytest.mark.parametrize("backing", ["anon", "shmem"])
def test_huge_pmds_zapped_whole_do_not_force_a_flush(backing):
    """``zap_huge_pmd`` gathers the THP as one entry and forces nothing, dirty shmem too:
    one flush in tlb_finish_mmu, at PMD stride (3 huge pages: ranged)."""
    p = shrink("6.18", 8 * M, 2 * M, backing=backing, thp=True)
    assert unmap_dst(p) == (1, 0)
    zaps = p.steps.kind == S.K_ZAP
    # (three huge entries, no PTEs: R24; the row counted 1536 PTEs before 2026-12-02)
    assert p.steps.ptes[zaps].tolist() == [0] and p.steps.slots[zaps].tolist() == [3]
    assert p.steps.flushes[zaps].tolist() == [0]


@pytest.mark.parametrize("kernel", ["6.1", "6.18"])
@pytest.mark.parametrize("backing", ["anon", "shmem"])
@pytest.mark.parametrize("src", [A, A + 4 * K])
def test_the_slot_walk_and_the_array_unmap_give_the_same_thp_shrink(kernel, backing, src):
    r = shrink(kernel, 64 * M, 6 * M + 8 * K, src=src, backing=backing, thp=True, options=REF)
    f = shrink(kernel, 64 * M, 6 * M + 8 * K, src=src, backing=backing, thp=True, options=FAST)
    assert_same(r, f)


def test_a_partly_zapped_anon_thp_is_split_into_ptes_with_a_flush_of_its_own():
    """``__split_huge_pmd`` (``pmdp_invalidate``: ``flush_pmd_tlb_range``, which x86 leaves
    to ``flush_tlb_range``: 512 pages, full), then the tail's PTEs are zapped; recorded
    pmd_aligned/8M/1t/thp-on/to-3M: dst_unmap 2 flushes, both full."""
    p = shrink("6.18", 8 * M, 3 * M, thp=True)
    st = p.steps
    dst = st.phase == S.UNMAP_DST
    splits = dst & (st.kind == S.K_THP_SPLIT)
    assert st.flushes[splits].tolist() == [1] and st.flush_full[splits].tolist() == [1]
    assert unmap_dst(p) == (2, 2)
    assert p.after.pt.present_ptes(A + 2 * M, A + 3 * M) == 256


def test_a_partly_zapped_shmem_thp_is_unmapped_whole():
    """``__split_huge_pmd`` of a file THP clears the PMD (``pmdp_huge_clear_flush``): no
    PTEs are left, not even in the part of the VMA that stays; recorded
    pmd_aligned/8M/1t/memfd/thp-on/to-3M: dst_unmap 2 flushes, 1 full (the split's; the
    two huge PMDs zapped whole are one PMD-stride flush)."""
    p = shrink("6.18", 8 * M, 3 * M, thp=True, backing="shmem")
    assert unmap_dst(p) == (2, 1)
    assert int(np.count_nonzero(p.steps.kind == S.K_THP_SPLIT)) == 1
    assert p.after.pt.present_ptes(A + 2 * M, A + 3 * M) == 0
    assert p.after.pt.present_ptes(A, A + 2 * M) == 512
