"""Rule R4 (a)–(e): when try_realign_addr realigns, one test per condition."""

from helpers import A, B, K, M, plan

from perfsim import resolve_target
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap


def test_r4a_range_must_reach_the_next_boundary():
    assert not plan(A + 4 * K, B + 4 * K, 2 * M - 8 * K).realigned
    # Ending exactly on the boundary counts as reaching it.
    assert plan(A + 4 * K, B + 4 * K, 2 * M - 4 * K).realigned


def test_r4b_aligned_start_is_left_alone():
    assert not plan(A, B, 4 * M).realigned


def test_r4c_starts_must_be_mutually_aligned():
    assert not plan(A + 4 * K, B + 8 * K, 4 * M).realigned


def test_r4d_source_must_start_its_vma():
    t = resolve_target("6.18")
    vma = Vma(A + 4 * K, A + 8 * M, anon_id="a")
    sp = AddressSpace((vma,), PageTables.empty(t.arch).populate(vma.start, vma.end))
    p = plan_mremap(sp, MoveRequest(A + 2 * M + 4 * K, 4 * M, new_addr=B + 4 * K), t)
    assert not p.realigned


def test_r4d_vma_in_the_gap_below_source_blocks():
    assert not plan(A + 4 * K, B + 4 * K, 4 * M, guard_below_src=True).realigned


def test_r4e_vma_in_the_gap_below_destination_blocks():
    assert not plan(A + 4 * K, B + 4 * K, 4 * M, guard_below_dst=True).realigned


def test_r4e_merge_into_previous_vma_blocks():
    """copy_vma merges the destination into a VMA ending at new_addr: vm_start < new_addr."""
    t = resolve_target("6.18")
    src = Vma(A + 4 * K, A + 4 * M, anon_id="a", pgoff=100)
    # The left neighbour maps the pages right before the moved range (same anon_vma, pgoff
    # contiguous): copy_vma merges into it, and need_rmap_locks = (its pgoff <= 100).
    left = Vma(B + 4 * K - 64 * K, B + 4 * K, anon_id="a", pgoff=100 - 16)
    pt = PageTables.empty(t.arch).populate(src.start, src.end).populate(left.start, left.end)
    sp = AddressSpace((src, left), pt)
    p = plan_mremap(sp, MoveRequest(src.start, src.length, new_addr=B + 4 * K), t)
    assert p.errno is None and not p.realigned and p.need_rmap_locks
    # need_rmap_locks: every move_ptes row holds the anon_vma lock.
    assert p.move.rmap_holds == p.move.move_ptes_calls + p.move.pmd_moves


def test_kernel_6_6_never_realigns():
    p = plan(A + 4 * K, B + 4 * K, 64 * M, kernel="6.6")
    q = plan(A + 4 * K, B + 4 * K, 64 * M, kernel="6.7")
    assert not p.realigned and q.realigned
    assert p.move.ptes_moved == 512 + 0 and q.move.ptes_moved == 1
    assert q.move.pmd_moves == p.move.pmd_moves + 1


def test_what_if_pud_realignment():
    t = resolve_target("6.18").with_changes(realign_pud=True)
    src, dst = 0x7F0000000000 + 4 * K, 0x7F4000000000 + 4 * K
    sp = plan(src, dst, 2 << 30).before
    p = plan_mremap(sp, MoveRequest(src, 2 << 30, new_addr=dst), t)
    assert p.realigned and p.move.pud_moves == 2 and p.move.ptes_moved == 1
