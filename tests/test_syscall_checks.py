"""Rule R22: do_mremap's argument checks return the kernel's errno; unmaps around the move."""

import pytest
from helpers import A, B, K, M, plan

from perfsim import resolve_target
from perfsim.mm.build import single_move_space
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S


@pytest.fixture
def space():
    t = resolve_target("6.18")
    return t, single_move_space(t, src=A, length=8 * M)


@pytest.mark.parametrize("req,errno", [
    (dict(old_addr=A + 1, old_len=M, new_addr=B), "EINVAL"),          # unaligned old_addr
    (dict(old_addr=A, old_len=M, new_addr=B + 12), "EINVAL"),          # unaligned new_addr
    (dict(old_addr=A, old_len=M, new_addr=A + M // 2), "EINVAL"),      # overlapping fixed move
    (dict(old_addr=A, old_len=M, new_addr=B, maymove=False), "EINVAL"),  # FIXED without MAYMOVE
    (dict(old_addr=A, old_len=M, new_len=2 * M, new_addr=B, dontunmap=True), "EINVAL"),
    (dict(old_addr=A, old_len=M, new_addr=B, extra_flags=8), "EINVAL"),  # unknown flag
    (dict(old_addr=A, old_len=0, new_len=0, new_addr=B), "EINVAL"),     # new_len 0
    (dict(old_addr=A - 64 * M, old_len=M, new_addr=B), "EFAULT"),       # no VMA there
    (dict(old_addr=A + 7 * M, old_len=2 * M, new_len=4 * M, new_addr=B), "EFAULT"),  # beyond
    (dict(old_addr=A, old_len=M, new_addr=0x7FFFFFFFF000 - 4 * K), "EINVAL"),  # past TASK_SIZE
])
def test_errno(space, req, errno):
    t, sp = space
    p = plan_mremap(sp, MoveRequest(**req), t)
    assert p.errno == errno
    assert p.result_addr is None and len(p.steps) == 0


def test_map_count_limit_is_enomem(space):
    t, sp = space
    from dataclasses import replace
    p = plan_mremap(replace(sp, map_count_limit=3), MoveRequest(A, M, new_addr=B), t)
    assert p.errno == "ENOMEM"


def test_fixed_destination_mapped_is_unmapped_first(space):
    t, sp = space
    dst = Vma(B, B + 4 * M, anon_id="d", name="dst")
    sp2 = sp.with_vmas(list(sp.vmas) + [dst]).with_pt(sp.pt.populate(B, B + 4 * M))
    p = plan_mremap(sp2, MoveRequest(A, 4 * M, new_addr=B), t)
    assert p.errno is None
    unmap = p.steps.select(p.steps.phase == S.UNMAP_DST)
    assert int(unmap.ptes.sum()) == 1024 and int(unmap.flushes.sum()) == 1
    assert p.syscall.ptes_zapped == 1024 and p.move.ptes_zapped == 0
    assert p.after.pt.present_ptes(B, B + 4 * M) == 1024


def test_grow_in_place_moves_nothing(space):
    t, sp = space
    p = plan_mremap(sp, MoveRequest(A, 8 * M, new_len=16 * M, fixed=False), t)
    assert p.errno is None and p.result_addr == A and p.move.tlb_flushes == 0
    assert p.after.find_vma(A).end == A + 16 * M


def test_grow_blocked_moves_with_maymove(space):
    t, sp = space
    blocker = Vma(A + 8 * M, A + 9 * M, anon_id="x", prot="r")
    sp2 = sp.with_vmas(list(sp.vmas) + [blocker])
    p = plan_mremap(sp2, MoveRequest(A, 8 * M, new_len=16 * M, fixed=False), t)
    assert p.errno is None and p.result_addr not in (None, A)
    assert p.after.pt.present_ptes(p.result_addr, p.result_addr + 16 * M) == 2048
    q = plan_mremap(sp2, MoveRequest(A, 8 * M, new_len=16 * M, fixed=False, maymove=False), t)
    assert q.errno == "ENOMEM"


def test_shrink_unmaps_the_tail(space):
    t, sp = space
    p = plan_mremap(sp, MoveRequest(A, 8 * M, new_len=2 * M, fixed=False), t)
    assert p.errno is None and p.result_addr == A
    assert p.after.pt.present_ptes(A, A + 8 * M) == 512


def test_dontunmap_keeps_the_source_vma(space):
    t, sp = space
    p = plan_mremap(sp, MoveRequest(A, 4 * M, new_addr=B, dontunmap=True), t)
    assert p.errno is None
    assert p.after.find_vma(A) is not None and p.after.find_vma(B) is not None
    assert p.after.pt.present_ptes(A, A + 4 * M) == 0
    assert p.syscall.tables_freed == 0


def test_hugetlb_moves_under_one_lock_hold_and_one_flush():
    t = resolve_target("6.18")
    sp = single_move_space(t, src=A, length=64 * M, backing="hugetlb")
    p = plan_mremap(sp, MoveRequest(A, 64 * M, new_addr=B), t)
    m = p.move
    assert p.errno is None and not p.realigned
    assert m.hugetlb_moves == 32 and m.tlb_flushes == 1 and m.rmap_holds == 1
    # 32 huge pages <= 33: one INVLPG per 2 MiB page (x86 stride = huge page size).
    assert m.tlb_full_flushes == 0 and m.tlb_pages_invalidated == 32
    assert p.after.pt.present_ptes(B, B + 64 * M) == 64 * M // 4096
    bad = plan_mremap(sp, MoveRequest(A, 64 * M, new_addr=B + 4 * K), t)
    assert bad.errno == "EINVAL"


def test_two_cpus_pay_ipis_one_cpu_does_not():
    one = plan(A + 4 * K, B + 8 * K, 64 * M, cpus=1)
    two = plan(A + 4 * K, B + 8 * K, 64 * M, cpus=4)
    assert one.move.ipis == 0
    assert two.move.ipis == 3 * two.move.tlb_flushes


def test_uffd_wp_disables_pmd_moves():
    t = resolve_target("6.18")
    sp = single_move_space(t, src=A, length=8 * M, uffd_wp=True)
    p = plan_mremap(sp, MoveRequest(A, 8 * M, new_addr=B), t)
    assert p.move.pmd_moves == 0 and p.move.ptes_moved == 2048
    # The failed attempts still took and dropped the rmap locks.
    assert p.move.rmap_holds == 4


def test_multi_vma_move_617_moves_each_piece_and_keeps_gaps():
    """R23: 6.17+ moves a fixed, same-length range spanning VMAs piece by piece."""
    t = resolve_target("6.18")
    a = Vma(A, A + 4 * M, anon_id="a", name="a")
    b = Vma(A + 6 * M, A + 10 * M, anon_id="b", name="b", prot="r")
    pt = t and single_move_space(t, src=A, length=4 * M).pt.populate(b.start, b.end)
    sp = single_move_space(t, src=A, length=4 * M).with_vmas([a, b]).with_pt(pt)
    p = plan_mremap(sp, MoveRequest(A, 10 * M, new_addr=B), t)
    assert p.errno is None and "2 pieces" in p.note
    assert p.move.pmd_moves == 4 and p.move.notifier_pairs == 2
    assert p.after.pt.present_ptes(B, B + 4 * M) == 1024
    assert p.after.pt.present_ptes(B + 4 * M, B + 6 * M) == 0
    assert p.after.pt.present_ptes(B + 6 * M, B + 10 * M) == 1024
    assert p.after.find_vma(B + 5 * M) is None
    old = plan_mremap(sp, MoveRequest(A, 10 * M, new_addr=B), resolve_target("6.15"))
    assert old.errno == "EFAULT"


def test_range_past_the_vma_end():
    """Before 6.17 a range past the VMA's end is EFAULT. From 6.17 a fixed move of unchanged
    length takes the multi-VMA path and moves what is mapped; checked on this machine's
    6.18 kernel (one VMA followed by a hole: mremap succeeds)."""
    t = resolve_target("6.18")
    sp = single_move_space(t, src=A, length=8 * M)
    req = MoveRequest(A + 7 * M, 2 * M, new_addr=B)
    assert plan_mremap(sp, req, resolve_target("6.15")).errno == "EFAULT"
    p = plan_mremap(sp, req, t)
    assert p.errno is None and p.after.pt.present_ptes(B, B + M) == 256
