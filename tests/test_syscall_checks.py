"""Rule R22: do_mremap's argument checks return the kernel's errno; unmaps around the move."""

from dataclasses import replace as _replace

import pytest
from helpers import A, B, K, M, plan

from perfsim import resolve_target
from perfsim.mm.build import VmaSpec, build_space, single_move_space
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import checks as C
from perfsim.planner import steps as S
from perfsim.planner.options import DEFAULT
from perfsim.planner.vma_remap import EXPAND, NO_RESIZE, SHRINK, VmaRemap


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
    p = plan_mremap(_replace(sp, map_count_limit=3), MoveRequest(A, M, new_addr=B), t)
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


# ---------------------------------------------------------------------------------------
# The named checks (perfsim.planner.checks), one rule per test, on 6.18 unless named.

T18 = resolve_target("6.18")


def vrm(space, addr=A, old_len=M, new_len=M, new_addr=B, *, maymove=True, fixed=True,
        dontunmap=False, extra_flags=0, target=T18):
    return VmaRemap(addr=addr, old_len=old_len, new_len=new_len, new_addr=new_addr,
                    maymove=maymove, fixed=fixed, dontunmap=dontunmap, extra_flags=extra_flags,
                    target=target, space=space, log=S.StepLog(), options=DEFAULT)


def errno_of(refusal):
    return None if refusal is None else refusal.errno


@pytest.mark.parametrize("kw,errno", [
    (dict(extra_flags=8), "EINVAL"),
    (dict(addr=A + 12), "EINVAL"),
    (dict(new_len=0), "EINVAL"),
    (dict(new_len=1 << 48, old_len=1 << 48), "EINVAL"),
    (dict(new_addr=0x7FFFFFFFF000), "EINVAL"),
    (dict(new_addr=B + 12), "EINVAL"),
    (dict(maymove=False), "EINVAL"),
    (dict(dontunmap=True, new_len=2 * M), "EINVAL"),
    (dict(new_addr=A + M // 2), "EINVAL"),
    (dict(), None),
])
def test_check_mremap_params(space, kw, errno):
    _, sp = space
    assert errno_of(C.check_mremap_params(vrm(sp, **kw))) == errno


def test_check_mremap_params_ignores_new_addr_without_fixed_or_dontunmap(space):
    _, sp = space
    v = vrm(sp, new_addr=B + 12, fixed=False, maymove=False)
    assert C.check_mremap_params(v) is None


def test_check_mremap_params_map_count_headroom(space):
    _, sp = space
    assert errno_of(C.check_mremap_params(vrm(_replace(sp, map_count_limit=6)))) == "ENOMEM"
    assert C.check_mremap_params(vrm(_replace(sp, map_count_limit=7))) is None


def test_vrm_remap_type_and_move_only(space):
    _, sp = space
    assert C.vrm_remap_type(vrm(sp)) == NO_RESIZE
    assert C.vrm_remap_type(vrm(sp, new_len=M // 2)) == SHRINK
    assert C.vrm_remap_type(vrm(sp, new_len=2 * M)) == EXPAND
    assert C.vrm_move_only(vrm(sp)) and not C.vrm_move_only(vrm(sp, new_len=2 * M))
    assert not C.vrm_move_only(vrm(sp, target=resolve_target("6.15")))


def test_check_prep_vma_efault_without_a_vma(space):
    _, sp = space
    assert errno_of(C.check_prep_vma(vrm(sp, addr=A - 64 * M))) == "EFAULT"


def test_check_prep_vma_lets_a_shrink_cross_the_vma_end(space):
    _, sp = space
    v = vrm(sp, addr=A + 7 * M, old_len=4 * M, new_len=M)
    v.vma = sp.find_vma(v.addr)
    assert C.check_prep_vma(v) is None and v.remap_type == SHRINK
    w = vrm(sp, addr=A + 7 * M, old_len=4 * M, new_len=2 * M)
    w.vma = sp.find_vma(w.addr)
    assert errno_of(C.check_prep_vma(w)) == "EFAULT"


def test_check_prep_vma_no_new_map_skips_the_range_checks(space):
    t, sp = space
    # no resize, no FIXED: returns addr even though the range runs past the VMA's end
    p = plan_mremap(sp, MoveRequest(A + 7 * M, 4 * M, fixed=False), t)
    assert p.errno is None and p.result_addr == A + 7 * M and p.note == "nothing to do"


def test_old_len_zero_duplicates_only_shared_mappings():
    sp = build_space(T18, [VmaSpec(A, 4 * M, backing="shmem")])
    p = plan_mremap(sp, MoveRequest(A, 0, new_len=2 * M, new_addr=B), T18)
    assert p.errno is None and p.after.find_vma(A) is not None and p.after.find_vma(B)
    anon = build_space(T18, [VmaSpec(A, 4 * M)])
    assert plan_mremap(anon, MoveRequest(A, 0, new_len=2 * M, new_addr=B), T18).errno == "EINVAL"


def test_align_hugetlb_refuses_growth_and_unaligned_addresses():
    sp = single_move_space(T18, src=A, length=8 * M, backing="hugetlb")
    assert plan_mremap(sp, MoveRequest(A, 4 * M, new_len=8 * M, fixed=False), T18).errno == "EINVAL"
    assert plan_mremap(sp, MoveRequest(A + 4 * K, 2 * M, new_addr=B), T18).errno == "EINVAL"


def test_vma_multi_allowed():
    assert C.vma_multi_allowed(Vma(A, A + M))
    assert C.vma_multi_allowed(Vma(A, A + M, backing="shmem"))
    # a regular file: ext4 and the other disk filesystems use thp_get_unmapped_area
    assert C.vma_multi_allowed(Vma(A, A + M, backing="file"))
    assert not C.vma_multi_allowed(Vma(A, A + M, uffd_wp=True, uffd_mode="missing"))


def test_file_vma_moves_with_others_from_6_17():
    """Measured on 6.18.44: an ext4 file mapping split by mprotect moves in one call
    (tests/data/groundtruth/host-6.18-files.jsonl); 6.16 refuses any range over two VMAs."""
    sp = build_space(T18, [VmaSpec(A, 2 * M, backing="file"), VmaSpec(A + 4 * M, 2 * M)])
    assert plan_mremap(sp, MoveRequest(A, 2 * M, new_addr=B), T18).errno is None
    p = plan_mremap(sp, MoveRequest(A, 6 * M, new_addr=B), T18)
    assert p.errno is None and len(p.moved) == 2
    t16 = resolve_target("6.16")
    assert plan_mremap(sp, MoveRequest(A, 6 * M, new_addr=B), t16).errno == "EFAULT"
    uffd = build_space(T18, [VmaSpec(A, 2 * M, uffd="missing"),
                             VmaSpec(A + 4 * M, 2 * M)])
    p = plan_mremap(uffd, MoveRequest(A, 6 * M, new_addr=B), T18)
    assert p.errno == "EFAULT" and p.moved == ()


def test_prep_move_vma_map_count(space):
    _, sp = space
    v = vrm(_replace(sp, map_count_limit=4))
    assert errno_of(C.prep_move_vma(v)) == "ENOMEM"
    assert C.prep_move_vma(vrm(_replace(sp, map_count_limit=5))) is None


def test_vrm_can_expand_in_place(space):
    _, sp = space
    v = vrm(sp, addr=A, old_len=8 * M, new_len=16 * M, fixed=False)
    v.vma, v.delta = sp.find_vma(A), 8 * M
    assert C.vrm_can_expand_in_place(v)
    v.addr, v.old_len = A + M, 7 * M
    assert C.vrm_can_expand_in_place(v)
    v.old_len = 6 * M
    assert not C.vrm_can_expand_in_place(v)  # the range does not end at the VMA's end


def test_dontunmap_without_fixed_takes_new_addr_as_a_hint(space):
    t, sp = space
    p = plan_mremap(sp, MoveRequest(A, 4 * M, new_addr=B, fixed=False, dontunmap=True), t)
    assert p.errno is None and p.result_addr == B and p.after.find_vma(A) is not None


def test_dontunmap_of_a_whole_vma_drops_its_anon_vma():
    sp = build_space(T18, [VmaSpec(A, 4 * M)])
    p = plan_mremap(sp, MoveRequest(A, 4 * M, new_addr=B, dontunmap=True), T18)
    assert not p.after.find_vma(A).anon_vma and p.after.find_vma(B).anon_vma


def test_shrink_in_place_across_vmas_before_617():
    sp = build_space(T18, [VmaSpec(A, M), VmaSpec(A + 2 * M, M)])
    p = plan_mremap(sp, MoveRequest(A, 3 * M, new_len=M // 2, fixed=False),
                    resolve_target("6.6"))
    assert p.errno is None and [(v.start, v.end) for v in p.after.vmas] == [(A, A + M // 2)]


def test_expand_in_place_merges_with_a_compatible_next_vma():
    fam = dict(file="buf")
    sp = build_space(T18, [VmaSpec(A, M, pgoff=A >> 12, **fam),
                           VmaSpec(A + 2 * M, M, pgoff=(A + 2 * M) >> 12, **fam)])
    p = plan_mremap(sp, MoveRequest(A, M, new_len=2 * M, fixed=False, maymove=False), T18)
    assert p.errno is None and [(v.start, v.end) for v in p.after.vmas] == [(A, A + 3 * M)]


def test_expand_in_place_keeps_an_incompatible_next_vma():
    sp = build_space(T18, [VmaSpec(A, M), VmaSpec(A + 2 * M, M, prot="r")])
    p = plan_mremap(sp, MoveRequest(A, M, new_len=2 * M, fixed=False, maymove=False), T18)
    assert p.errno is None and len(p.after.vmas) == 2 and p.after.vmas[0].end == A + 2 * M


def test_which_errno_wins_by_version():
    """A missing source VMA and an unaligned new_addr: 6.6 looks the VMA up first (EFAULT);
    6.15's check_mremap_params tests new_addr first (EINVAL), as 6.18 does. A missing VMA
    and an overlap: the overlap test is in mremap_to, after the lookup, until 6.17."""
    sp = build_space(T18, [VmaSpec(A, 4 * M)])
    unaligned = MoveRequest(A - 64 * M, M, new_addr=B + 12)
    overlap = MoveRequest(A - 64 * M, M, new_addr=A - 64 * M + 4 * K)
    got = {v: (plan_mremap(sp, unaligned, resolve_target(v)).errno,
               plan_mremap(sp, overlap, resolve_target(v)).errno) for v in ("6.6", "6.15", "6.18")}
    assert got == {"6.6": ("EFAULT", "EFAULT"), "6.15": ("EINVAL", "EFAULT"),
                   "6.18": ("EINVAL", "EINVAL")}


def test_dontunmap_without_an_address_lets_the_kernel_pick(space):
    t, sp = space
    p = plan_mremap(sp, MoveRequest(A, 4 * M, fixed=False, dontunmap=True), t)
    assert p.errno is None and p.result_addr not in (None, 0, A)
    assert p.result_addr + 4 * M <= sp.mmap_base
