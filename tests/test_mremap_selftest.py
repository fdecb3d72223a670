"""kernel-model.md §7.1: the mremap_test functional and perf cases, count for count.

The selftest maps shmem (MAP_SHARED|MAP_ANONYMOUS), places the source at a multiple of the
requested alignment that is *not* a multiple of twice that alignment, leaves 40 MiB free
below it (6.7+), and times one MREMAP_MAYMOVE|MREMAP_FIXED call. We populate the whole
region (the selftest's ``-t 0``). Expected counts are derived by hand from rules R4–R16.
"""

import pytest
from helpers import G, K, M, plan

BASE_SRC = 0x7E0000000000  # 512 GiB aligned: every alignment below divides it
BASE_DST = 0x7E8000000000


def at(base, align):
    """An address that is a multiple of ``align`` but not of ``2 * align``."""
    return base + align  # 1 x align: an odd multiple


@pytest.mark.parametrize("case,src,dst,size,errno", [
    ("overlapping page/page", at(BASE_SRC, 4 * K), at(BASE_SRC, 4 * K) + 4 * K, 8 * K, "EINVAL"),
    ("src page, dst 1 KiB", at(BASE_SRC, 4 * K), at(BASE_DST, 4 * K) + K, 8 * K, "EINVAL"),
    ("src 1 KiB, dst page", at(BASE_SRC, 4 * K) + K, at(BASE_DST, 4 * K), 8 * K, "EINVAL"),
])
def test_functional_failures(case, src, dst, size, errno):
    from perfsim import resolve_target
    from perfsim.mm.build import single_move_space
    from perfsim.planner import MoveRequest, plan_mremap

    t = resolve_target("6.18")
    base = src - src % (4 * K)
    sp = single_move_space(t, src=base, length=size + 4 * K, backing="shmem")
    p = plan_mremap(sp, MoveRequest(src, size, new_addr=dst), t)
    assert p.errno == errno, case
    assert len(p.steps) == 0 and p.after is sp


def counts(p):
    m = p.move
    return dict(pud=m.pud_moves, pmd=m.pmd_moves, ptes=m.ptes_moved, calls=m.move_ptes_calls,
                flushes=m.tlb_flushes, full=m.tlb_full_flushes, realigned=p.realigned)


@pytest.mark.parametrize("name,salign,dalign,size,expect", [
    # 2 pages inside one PMD: one move_ptes, INV(2).
    ("PTE/PTE 8K", 4 * K, 4 * K, 8 * K,
     dict(pud=0, pmd=0, ptes=2, calls=1, flushes=1, full=0, realigned=False)),
    # src at +1M, dst at +4K (in their PMDs): extents 256, 255, 1 pages.
    ("1M/PTE 2M", M, 4 * K, 2 * M,
     dict(pud=0, pmd=0, ptes=512, calls=3, flushes=3, full=2, realigned=False)),
    # mutually aligned at +1M, nothing below: realign, one PMD move, then the 1 MiB tail.
    ("1M/1M 2M", M, M, 2 * M,
     dict(pud=0, pmd=1, ptes=256, calls=1, flushes=2, full=2, realigned=True)),
    ("PMD/PTE 4M", 2 * M, 4 * K, 4 * M,
     dict(pud=0, pmd=0, ptes=1024, calls=4, flushes=4, full=2, realigned=False)),
    ("PMD/1M 4M", 2 * M, M, 4 * M,
     dict(pud=0, pmd=0, ptes=1024, calls=4, flushes=4, full=4, realigned=False)),
    ("PMD/PMD 4M", 2 * M, 2 * M, 4 * M,
     dict(pud=0, pmd=2, ptes=0, calls=0, flushes=2, full=2, realigned=False)),
    ("PUD/PTE 2G", G, 4 * K, 2 * G,
     dict(pud=0, pmd=0, ptes=524288, calls=2048, flushes=2048, full=1024, realigned=False)),
    ("PUD/1M 2G", G, M, 2 * G,
     dict(pud=0, pmd=0, ptes=524288, calls=2048, flushes=2048, full=2048, realigned=False)),
    ("PUD/PMD 2G", G, 2 * M, 2 * G,
     dict(pud=0, pmd=1024, ptes=0, calls=0, flushes=1024, full=1024, realigned=False)),
    ("PUD/PUD 2G", G, G, 2 * G,
     dict(pud=2, pmd=0, ptes=0, calls=0, flushes=2, full=2, realigned=False)),
    ("1M/1M 5M", M, M, 5 * M,
     dict(pud=0, pmd=3, ptes=0, calls=0, flushes=3, full=3, realigned=True)),
])
def test_functional_and_perf_cases(name, salign, dalign, size, expect):
    p = plan(at(BASE_SRC, salign), at(BASE_DST, dalign), size, backing="shmem")
    assert p.errno is None and p.progress_bytes == size
    assert counts(p) == expect, name
    # shmem: rmap sections take i_mmap_rwsem only.
    assert all(n in ((), ("i_mmap:file0",)) for n in p.steps.rmap_lock_names)


def test_1m_1m_5m_with_40m_preamble_below_destination():
    p = plan(at(BASE_SRC, M), at(BASE_DST, M), 5 * M, backing="shmem", guard_below_dst=True)
    assert counts(p) == dict(pud=0, pmd=2, ptes=256, calls=1, flushes=3, full=3, realigned=False)


def test_move_1mb_from_start_at_1mb_256kb_aligned_src():
    """Realignment is refused when the start is not the VMA start (R4d) even if the range
    below is free: this is 'mremap move 1mb from start at 1MB+256KB aligned src'."""
    from perfsim import resolve_target
    from perfsim.mm.build import single_move_space
    from perfsim.planner import MoveRequest, plan_mremap

    t = resolve_target("6.18")
    src_vma = at(BASE_SRC, 2 * M) + 256 * K
    sp = single_move_space(t, src=src_vma, length=4 * M, backing="shmem")
    p = plan_mremap(sp, MoveRequest(src_vma + M, M, new_addr=at(BASE_DST, 2 * M) + 256 * K + M), t)
    assert p.errno is None and not p.realigned and p.move.ptes_moved == 256
    # The rest of the source VMA survives on both sides of the hole.
    assert [(v.start, v.end) for v in p.after.vmas if v.name == "src"][:2] == [
        (src_vma, src_vma + M), (src_vma + 2 * M, src_vma + 4 * M)]
