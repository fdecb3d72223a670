"""THP and mTHP eligibility as ``thp_vma_suitable_order`` decides it."""

from helpers import A, B, K, M, plan

from perfsim import resolve_target
from perfsim.mm.build import Population, VmaSpec, build_space, single_move_space, thp_suitable
from perfsim.mm.pagetable import PMD_LEAF
from perfsim.mm.vma import Vma

T = resolve_target("6.18")


def leaves(sp):
    return int((sp.pt.pmd_kind == PMD_LEAF).sum())


def test_shmem_pmd_mapping_needs_start_and_offset_congruent_modulo_pmd():
    """A memfd mapped at +4K (file offset 0) never gets a PMD mapping."""
    assert leaves(single_move_space(T, src=A + 4 * K, length=8 * M, backing="shmem", thp=True)) == 0
    assert leaves(single_move_space(T, src=A, length=8 * M, backing="shmem", thp=True)) == 4


def test_shmem_congruent_offset_gets_pmd_mappings_at_an_unaligned_start():
    sp = build_space(T, [VmaSpec(A + 4 * K, 8 * M, backing="shmem", thp=True, pgoff=1)])
    assert leaves(sp) == 3


def test_anon_thp_only_for_pmd_ranges_the_vma_covers():
    sp = single_move_space(T, src=A + 4 * K, length=8 * M, thp=True)
    assert leaves(sp) == 3 and sp.pt.present_ptes(A, A + 10 * M) == 2048


def test_thp_suitable_order_predicate():
    anon = Vma(A + 4 * K, A + 8 * M)
    assert not thp_suitable(anon, A, 2 * M, 12) and thp_suitable(anon, A + 2 * M, 2 * M, 12)
    shm = Vma(A + 4 * K, A + 8 * M, backing="shmem", pgoff=0)
    assert not thp_suitable(shm, A + 2 * M, 2 * M, 12)


def test_unaligned_shmem_thp_move_costs_two_flushes_per_pmd():
    """The +4K/+8K move of a shmem buffer with THP on: it has no PMD mappings, so every PMD
    is copied PTE by PTE in two extents (two flushes), exactly as without THP."""
    p = plan(A + 4 * K, B + 8 * K, 64 * M, backing="shmem", thp=True)
    q = plan(A + 4 * K, B + 8 * K, 64 * M, backing="shmem", thp=False)
    assert p.move.thp_moves == p.move.thp_splits == 0
    assert p.move.tlb_flushes == q.move.tlb_flushes == 2 * 32 + 1


def test_a_touched_pmd_range_is_one_huge_page():
    sp = build_space(T, [VmaSpec(A, 8 * M, thp=True, populate=Population.parse("every:1024"))])
    assert leaves(sp) == 2 and sp.pt.present_ptes(A, A + 8 * M) == 1024


def test_mthp_folio_maps_whole_where_touched():
    sp = build_space(T, [VmaSpec(A, 2 * M, folio_size=64 * K,
                                 populate=Population.parse("every:32"))])
    assert sp.pt.present_ptes(A, A + 2 * M) == 16 * 16


def test_mthp_shmem_needs_congruent_offset():
    sp = build_space(T, [VmaSpec(A + 4 * K, 2 * M, backing="shmem", folio_size=64 * K,
                                 populate=Population.parse("every:32"))])
    assert sp.pt.present_ptes(A, A + 4 * M) == 16
