"""docs/kernel-rules.md, Worked examples: the worked examples E1–E7, count for count
(move_page_tables only)."""


from helpers import PUD_DST, PUD_SRC, A, B, G, K, M, plan

from perfsim import resolve_target
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S


def tables(c):
    return c.tables_allocated


def test_e1_pud_aligned_1g_is_one_pud_move():
    p = plan(PUD_SRC, PUD_DST, G)
    m = p.move
    assert p.errno is None and not p.realigned and p.progress_bytes == G
    assert (m.pud_moves, m.pmd_moves, m.ptes_moved) == (1, 0, 0)
    assert (m.tlb_flushes, m.tlb_full_flushes, m.rmap_holds) == (1, 1, 1)
    assert tables(m) == {"p4d": 0, "pud": 0, "pmd": 0, "pte": 0}


def test_e1_without_have_move_pud_is_512_pmd_moves():
    p = plan(PUD_SRC, PUD_DST, G, arch="x86_64")
    t = resolve_target("6.18").with_changes(**{"arch.have_move_pud": False})
    sp = p.before
    q = plan_mremap(sp, MoveRequest(PUD_SRC, G, new_addr=PUD_DST), t)
    assert (q.move.pud_moves, q.move.pmd_moves, q.move.tlb_full_flushes) == (0, 512, 512)
    assert q.move.rmap_holds == 512 and tables(q.move)["pmd"] == 1


def test_e2_realigned_head_moves_as_a_pmd():
    p = plan(A + 4 * K, B + 4 * K, G)
    m = p.move
    assert p.realigned
    assert (m.pmd_moves, m.ptes_moved, m.move_ptes_calls) == (512, 1, 1)
    assert (m.tlb_flushes, m.tlb_full_flushes, m.tlb_pages_invalidated) == (513, 512, 1)
    assert m.rmap_holds == 512
    assert tables(m) == {"p4d": 0, "pud": 0, "pmd": 2, "pte": 1}


def test_e3_vma_below_source_blocks_realignment():
    p = plan(A + 4 * K, B + 4 * K, G, guard_below_src=True)
    m = p.move
    assert not p.realigned
    assert (m.pmd_moves, m.ptes_moved, m.move_ptes_calls) == (511, 512, 2)
    assert (m.tlb_flushes, m.tlb_full_flushes) == (513, 512)
    assert m.rmap_holds == 511
    assert tables(m) == {"p4d": 0, "pud": 0, "pmd": 2, "pte": 2}
    # The guard's PTE stays where it was; the source PTE table at A is not moved or freed.
    assert p.after.pt.present_ptes(A, A + 4 * K) == 1


def test_e3_vma_below_destination_blocks_realignment_too():
    p = plan(A + 4 * K, B + 4 * K, G, guard_below_dst=True)
    assert not p.realigned and p.move.pmd_moves == 511 and p.move.ptes_moved == 512


def test_e4_not_mutually_aligned_copies_every_pte():
    p = plan(A + 4 * K, B + 8 * K, G)
    m = p.move
    assert not p.realigned
    assert (m.pud_moves, m.pmd_moves) == (0, 0)
    assert (m.move_ptes_calls, m.ptes_moved) == (1025, 262144)
    assert (m.tlb_flushes, m.tlb_full_flushes, m.tlb_pages_invalidated) == (1025, 512, 513)
    assert m.ptl_acquisitions == 2050 and m.rmap_holds == 0
    assert tables(m) == {"p4d": 0, "pud": 0, "pmd": 2, "pte": 513}
    # The source's 513 emptied PTE tables are freed by unmap_source_vma.
    assert p.syscall.tables_freed - p.move.tables_freed >= 513


def test_e4_extent_shapes():
    p = plan(A + 4 * K, B + 8 * K, G)
    rows = p.steps.select(p.steps.kind == S.K_PTE_MOVE)
    pages = (rows.length >> 12).tolist()
    assert pages[0] == 510 and pages[-2:] == [1, 1]
    assert pages[1:-2] == [1, 511] * 511


def test_e5a_arm64_16k_short_move_no_realign_per_page_tlbi():
    a16, b16 = 0x7F0002000000, 0x7F4006000000  # 32 MiB aligned, not 64 GiB aligned
    p = plan(a16 + 16 * K, b16 + 16 * K, 4 * M, arch="arm64-16k")
    m = p.move
    assert not p.realigned
    assert (m.move_ptes_calls, m.ptes_moved) == (1, 256)
    assert (m.tlb_flushes, m.tlb_full_flushes, m.tlb_pages_invalidated, m.ipis) == (1, 0, 256, 0)


def test_e5b_x86_1m_move_within_a_pmd():
    p = plan(A + 512 * K, B + 512 * K, M)
    m = p.move
    assert not p.realigned
    assert (m.move_ptes_calls, m.ptes_moved, m.tlb_full_flushes) == (1, 256, 1)


def test_e5_selftest_5m_1m_aligned_realigns_to_three_pmds():
    p = plan(A + M, B + M, 5 * M, backing="shmem")
    m = p.move
    assert p.realigned
    assert (m.pmd_moves, m.ptes_moved, m.tlb_full_flushes, m.rmap_holds) == (3, 0, 3, 3)
    assert set(p.steps.rmap_lock_names[2]) == {"i_mmap:file0"} or any(
        n == ("i_mmap:file0",) for n in p.steps.rmap_lock_names)


def test_e5_selftest_5m_with_preamble_below_destination():
    p = plan(A + M, B + M, 5 * M, backing="shmem", guard_below_dst=True)
    m = p.move
    assert not p.realigned
    assert (m.pmd_moves, m.ptes_moved, m.tlb_full_flushes, m.tlb_flushes) == (2, 256, 3, 3)
    assert m.tables_allocated["pte"] == 1


def test_e6_thp_64m_moves_32_huge_pmds():
    p = plan(A, B, 64 * M, thp=True)
    m = p.move
    assert (m.thp_moves, m.tlb_full_flushes, m.ptes_moved, m.rmap_holds) == (32, 32, 0, 0)
    assert 1 <= m.tables_allocated["pmd"] <= 2


def test_e6_thp_arm64_flushes_one_tlbi_per_thp():
    p = plan(A, B, 64 * M, thp=True, arch="arm64-4k")
    m = p.move
    assert (m.thp_moves, m.tlb_flushes, m.tlb_full_flushes, m.tlb_pages_invalidated) == (32, 32, 0, 32)


def test_e6_thp_not_mutually_aligned_splits_every_thp():
    p = plan(A, B + 4 * K, 64 * M, thp=True)
    m = p.move
    assert m.thp_splits == 32 and m.thp_moves == 0
    assert m.ptes_moved == 16384
    # The source is PMD aligned, the destination 4 KiB past a boundary: every PMD splits
    # into a 511-page and a 1-page extent (the spec's "about 65" is for E4-like offsets).
    assert m.move_ptes_calls == 64
    assert m.tlb_flushes == 32 + 64 and m.tlb_full_flushes == 32 + 32


def test_e6_thp_1g_pud_aligned_is_one_pud_move():
    p = plan(PUD_SRC, PUD_DST, G, thp=True)
    assert (p.move.pud_moves, p.move.thp_moves, p.move.tlb_flushes) == (1, 0, 1)


def test_e7_exec_stack_relocation():
    t = resolve_target("6.18")
    top = 0x7FFFFFFFF000
    start = top - 12 * K
    shift = 0x2B3A5E000
    pt = PageTables.empty(t.arch).populate(start, top)
    sp = AddressSpace((Vma(start, top, stack=True, name="stack", anon_id="stack"),), pt)
    p = plan_mremap(sp, MoveRequest(start, 12 * K, new_addr=start - shift, for_stack=True), t)
    m = p.move
    assert p.errno is None and not p.realigned
    assert (m.move_ptes_calls, m.ptes_moved, m.rmap_holds) == (1, 3, 0)
    assert (m.tlb_flushes, m.tlb_full_flushes, m.tlb_pages_invalidated) == (1, 0, 3)
    assert m.tables_allocated == {"p4d": 0, "pud": 0, "pmd": 1, "pte": 1}
    # free_pgd_range frees the source PTE table (and its PMD table); tlb_finish_mmu flushes once.
    assert p.syscall.tables_freed >= 1 and p.syscall.tlb_flushes == 2
    assert p.after.vmas[0].start == start - shift and p.after.vmas[0].end == top - shift
    assert p.after.pt.present_ptes(start - shift, top - shift) == 3


def test_e7_stack_realigns_in_vma_when_shift_is_pmd_multiple():
    """for_stack relaxation (R4d): the aligned-down address may lie inside the VMA."""
    t = resolve_target("6.18")
    top = 0x7FFFFFFFF000
    start = top - 3 * M  # the argument area reaches the PMD boundary below the top
    shift = 512 * M
    pt = PageTables.empty(t.arch).populate(start, top)
    vma = Vma(start - 2 * M, top, stack=True, name="stack", anon_id="stack")
    sp = AddressSpace((vma,), pt.populate(start - 2 * M, start))
    req = MoveRequest(start - 2 * M, vma.length, new_addr=start - 2 * M - shift, for_stack=True)
    p = plan_mremap(sp, req, t)
    assert p.errno is None
    t66 = resolve_target("6.6")
    q = plan_mremap(sp, req, t66)
    assert q.errno is None and not q.realigned
    assert p.move.ptes_moved <= q.move.ptes_moved


def test_sparse_population_creates_no_table_for_an_untouched_slot():
    """Faulting creates page tables only on the way to a page it maps: every 1024th page
    touches every other PMD slot, and the untouched ones have no PTE table to move."""
    from perfsim.mm.build import Population

    t = resolve_target("6.18")
    pt = PageTables.empty(t.arch)
    sparse = Population.parse("every:1024").apply(pt, A, A + 8 * M)
    assert len(sparse.pmd_idx) == 2 and sparse.present_ptes(A, A + 8 * M) == 2
    p = plan(A + 4 * K, B + 8 * K, 8 * M, populate="every:1024")
    # Only the extents over the two populated slots flush (one page each).
    assert p.move.tlb_flushes == 2 and p.move.ptes_moved == 2
