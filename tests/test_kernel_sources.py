"""Per-version facts read in Debian's kernel sources (6.1.176, 6.12.117, 7.2.12, 7.3.4).

docs/kernels.md ("Sources read line by line", "Differences found") says which file and
function each test comes from and how to fetch the sources again. Each test plans one small
call with ``perfsim.plan_mremap`` and checks the counts the kernel's code implies. Tests
marked ``xfail(strict=True)`` encode what the kernel does where the planner does not do it
yet; they start passing (and must then lose the mark) when the planner is fixed. Of the five
differences found, 1, 2, 4 and 5 are fixed (their tests pass unmarked); 3 is still marked.
"""

import pytest
from helpers import PUD_DST, PUD_SRC, A, B, G, K, M

from perfsim import resolve_target
from perfsim.mm.build import Population, single_move_space
from perfsim.planner import MoveRequest, plan_mremap

FULL = Population.parse("full")


def move(kernel, length, *, arch="x86_64", src=A, dst=B, **space):
    t = resolve_target(kernel, arch)
    sp = single_move_space(t, src=src, length=length, populate=FULL, **space)
    p = plan_mremap(sp, MoveRequest(src, length, new_addr=dst), t)
    assert p.errno is None
    return p


def shrink(target, length, new_len, *, src=A, **space):
    sp = single_move_space(target, src=src, length=length, populate=FULL, **space)
    p = plan_mremap(sp, MoveRequest(src, length, new_len=new_len, maymove=False, fixed=False),
                    target)
    assert p.errno is None
    return p


# --------------------------------------------------------------- facts the planner gets right
@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.3"])
def test_flush_tlb_mm_range_ceiling_is_33_pages_in_6_1_6_12_and_7_3(kernel):
    """arch/x86/mm/tlb.c (6.1, 6.12: ``flush_tlb_mm_range``; 7.3:
    ``init_flush_tlb_info``): ``tlb_single_page_flush_ceiling`` is 33; more stride pages
    than that become one full flush. A 33-page ``move_ptes`` extent is a ranged flush, a
    34-page one a full flush."""
    p33, p34 = move(kernel, 33 * 4 * K), move(kernel, 34 * 4 * K)
    assert (p33.move.tlb_flushes, p33.move.tlb_full_flushes) == (1, 0)
    assert (p34.move.tlb_flushes, p34.move.tlb_full_flushes) == (1, 1)


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.3"])
def test_normal_pmd_moves_always_take_the_rmap_locks_in_6_1_6_12_and_7_3(kernel):
    """mm/mremap.c: 6.1 and 6.12 ``move_page_tables`` pass ``true`` as ``need_rmap_locks``
    to ``move_pgt_entry`` for NORMAL_PMD/NORMAL_PUD; 7.3 ``should_take_rmap_locks``
    returns true for those entries. An anon move whose ``copy_vma`` needs no rmap locks
    still takes them once per PMD table moved, and ``move_normal_pmd`` flushes the
    whole PMD (512 pages: full)."""
    p = move(kernel, 4 * M)
    assert p.move.pmd_moves == 2 and p.move.rmap_holds == 2
    assert (p.move.tlb_flushes, p.move.tlb_full_flushes) == (2, 2)


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_no_pte_batching_in_move_ptes_before_6_17_even_on_arm64(kernel):
    """6.1 and 6.12 ``move_ptes`` (mm/mremap.c) move one PTE per iteration: there is no
    ``mremap_folio_pte_batch``, so contpte-mapped 64 KiB folios on arm64 still cost one
    batch per PTE."""
    p = move(kernel, M, arch="arm64-4k", folio_size=64 * K)
    assert p.move.ptes_moved == 256 and int(p.steps.batches.sum()) == 256


def test_7_3_batches_a_contpte_mapped_64k_folio_as_one():
    """7.3 ``move_ptes`` calls ``mremap_folio_pte_batch``, which looks the folio up only
    when arm64's ``pte_batch_hint`` (arch/arm64/include/asm/pgtable.h) reports a contpte
    block, then ``folio_pte_batch_flags`` (mm/internal.h) batches to the folio's end: a
    64 KiB folio (one contpte block) is one batch."""
    p = move("7.3", M, arch="arm64-4k", folio_size=64 * K)
    assert p.move.ptes_moved == 256 and int(p.steps.batches.sum()) == 16


def test_x86_has_no_pte_batch_hint_so_7_3_moves_ptes_one_by_one():
    """include/linux/pgtable.h (7.3): the generic ``pte_batch_hint`` returns 1 and x86
    does not override it, so ``mremap_folio_pte_batch`` never looks a folio up on x86."""
    p = move("7.3", M, folio_size=64 * K)
    assert int(p.steps.batches.sum()) == 256


@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_uffd_wp_without_remap_event_refuses_whole_table_moves_in_6_12_and_7_3(kernel):
    """6.12.117 ``move_page_tables`` (the uffd-wp clearing backported to 6.12 stable) and
    7.3 ``uffd_supports_page_table_move``: a VMA registered for uffd write-protect without
    the remap event has its PTEs moved one by one so their uffd-wp bits can be cleared."""
    p = move(kernel, 2 * M, uffd_wp=True)
    assert p.move.pmd_moves == 0 and p.move.ptes_moved == 512


def test_7_3_takes_the_rmap_locks_for_a_normal_pmd_attempt_uffd_refuses():
    """7.3 ``move_pgt_entry`` takes the rmap locks (``should_take_rmap_locks``: always for
    NORMAL_PMD) before ``move_normal_pmd`` refuses for uffd-wp, so the refused attempt
    holds them once; the PTEs then move without them (``need_rmap_locks`` is false)."""
    p = move("7.3", 2 * M, uffd_wp=True)
    assert p.move.rmap_holds == 1


def test_6_1_arm64_tlbirange_flushes_the_asid_at_max_tlbi_range_pages():
    """arch/arm64/include/asm/tlbflush.h (6.1 ``__flush_tlb_range``): with FEAT_TLBIRANGE
    a range of ``MAX_TLBI_RANGE_PAGES`` (8 GiB of 4 KiB pages) or more flushes the whole
    ASID. Shrinking a 16 GiB VMA to 8 GiB zaps exactly 8 GiB: the flush covering it is full."""
    t = resolve_target("6.1", "arm64-4k").with_changes(tlbirange=True)
    p = shrink(t, 16 * G, 8 * G, src=0x7F0000000000)
    assert p.syscall.tlb_full_flushes == 1


# ----------------------- Differences found (docs/kernels.md): 1, 2, 4, 5 fixed; 3 still xfail
def test_6_1_moves_a_uffd_wp_vma_by_whole_pmd_tables():
    """6.1.176 ``move_page_tables``/``move_normal_pmd`` (mm/mremap.c) never look at
    userfaultfd: a uffd-wp VMA's PTE table moves whole like any other."""
    p = move("6.1", 2 * M, uffd_wp=True)
    assert p.move.pmd_moves == 1 and p.move.ptes_moved == 0


def test_6_12_takes_no_rmap_locks_for_a_uffd_wp_vma_it_never_tries_to_move_by_table():
    """6.12.117 ``move_page_tables``: the uffd test is part of the condition that calls
    ``move_pgt_entry(NORMAL_PMD, ...)``, so a uffd-wp VMA never enters it and never takes
    the rmap locks; ``move_ptes`` runs with ``need_rmap_locks`` false."""
    p = move("6.12", 2 * M, uffd_wp=True)
    assert p.move.rmap_holds == 0


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.3"])
def test_zapping_dirty_shmem_ptes_forces_a_flush_before_the_pte_lock_is_dropped(kernel):
    """mm/memory.c ``zap_pte_range`` (6.1: a dirty PTE of a non-anon page sets
    ``force_flush``; 6.12 and 7.3: ``zap_present_folio_ptes`` with ``tlb_delay_rmap``):
    the gathered range is flushed (``tlb_flush_mmu_tlbonly``) at the end of that PTE
    table's walk. Shrinking a written 4 MiB shmem VMA to 2 MiB: one full flush for the
    512 dirty PTEs, then ``tlb_finish_mmu``'s ranged flush for the freed PTE table
    (``pte_free_tlb`` at PMD stride): 2 flushes; an anon VMA needs only the last one.
    Measured on 6.1.0-50 and 7.3.4 under QEMU TCG and on this machine's 6.18.44 (the same
    shrink after an MREMAP_FIXED move; docs/kernels.md has the commands)."""
    t = resolve_target(kernel, "x86_64")
    anon, shm = shrink(t, 4 * M, 2 * M), shrink(t, 4 * M, 2 * M, backing="shmem")
    assert (anon.syscall.tlb_flushes, anon.syscall.tlb_full_flushes) == (1, 1)
    assert (shm.syscall.tlb_flushes, shm.syscall.tlb_full_flushes) == (2, 1)


def test_7_3_batches_a_contpte_mapped_folio_to_its_end_across_contpte_blocks():
    """7.3 ``mremap_folio_pte_batch`` + ``folio_pte_batch_flags`` (mm/internal.h): once
    ``pte_batch_hint`` says contpte, the batch extends over consecutive PTEs of the same
    folio up to its last PFN (or the extent's end), stepping contpte block by block. A
    128 KiB folio (two contpte blocks) is one batch: 8 batches for 1 MiB."""
    p = move("7.3", M, arch="arm64-4k", folio_size=128 * K)
    assert int(p.steps.batches.sum()) == 8


@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_arm64_tlbirange_uses_range_ops_at_exactly_max_tlbi_range_pages_from_6_12(kernel):
    """arch/arm64/include/asm/tlbflush.h: 6.12 ``__flush_tlb_range`` and 7.3
    ``__flush_tlb_range_limit_excess`` flush the whole ASID only for more than
    ``MAX_TLBI_RANGE_PAGES`` base pages with FEAT_TLBIRANGE, so the 8 GiB flush of the
    16 GiB -> 8 GiB shrink is done with range TLBIs: no full flush."""
    t = resolve_target(kernel, "arm64-4k").with_changes(tlbirange=True)
    p = shrink(t, 16 * G, 8 * G, src=0x7F0000000000)
    assert p.syscall.tlb_full_flushes == 0


def test_6_1_moves_a_uffd_wp_vma_by_whole_pud_tables():
    """6.1.176 ``move_normal_pud`` has no uffd test either: a 1 GiB-aligned uffd-wp VMA's
    PMD table moves whole."""
    p = move("6.1", G, uffd_wp=True, src=PUD_SRC, dst=PUD_DST)
    assert p.move.pud_moves == 1 and p.move.ptes_moved == 0


def test_6_12_never_tries_a_pud_table_move_for_a_uffd_wp_vma():
    """6.12.117 ``move_page_tables``: ``uffd_supports_move`` is also a condition of the
    NORMAL_PUD attempt, so a 1 GiB uffd-wp move is 512 ``move_ptes`` extents and no rmap
    lock for a whole-table attempt."""
    p = move("6.12", G, uffd_wp=True, src=PUD_SRC, dst=PUD_DST)
    assert (p.move.pud_moves, p.move.pmd_moves, p.move.rmap_holds) == (0, 0, 0)
    assert p.move.ptes_moved == G >> 12


@pytest.mark.parametrize("folio_kib,batches", [(128, 17), (256, 9), (2048, 2)])
def test_7_3_batches_one_folio_each_and_unfolded_contpte_ptes_one_by_one(folio_kib, batches):
    """7.3 ``folio_pte_batch_flags`` + arm64 ``pte_batch_hint``: moving a 2 MiB VMA of
    128 KiB, 256 KiB or 2 MiB folios to a destination 4 KiB past a PMD boundary is two
    extents, 511 PTEs and 1. The first is one batch per folio (the last one cut at the
    extent's end); that cut cleared part of the last contpte block, which unfolds it
    (``contpte_try_unfold_partial``), so the second extent's PTE is a batch of its own."""
    p = move("7.3", 2 * M, arch="arm64-4k", folio_size=folio_kib * K, dst=B + 4 * K)
    assert p.move.ptes_moved == 512 and p.move.move_ptes_calls == 2
    assert int(p.steps.batches.sum()) == batches


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.3"])
def test_arm64_tlbirange_flushes_the_asid_one_page_above_max_tlbi_range_pages(kernel):
    """Every version flushes the whole ASID for MAX_TLBI_RANGE_PAGES + 1 base pages.
    Shrinking 16 GiB + 4 KiB to 8 GiB: the last flush covers the freed PTE tables from 8 GiB
    and the zap's last page batch up to the old end, 8 GiB + 4 KiB. (The zap flushes each
    time its page batches fill, so earlier pages are not in that range: shrinking to
    8 GiB - 4 KiB instead would leave exactly 8 GiB in it.)"""
    t = resolve_target(kernel, "arm64-4k").with_changes(tlbirange=True)
    p = shrink(t, 16 * G + 4 * K, 8 * G, src=0x7F0000000000)
    assert p.syscall.tlb_full_flushes == 1
