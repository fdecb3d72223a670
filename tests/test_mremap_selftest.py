"""The kernel's mremap selftest (tools/testing/selftests/mm/mremap_test.c): its
functional and perf cases, count for count.

The selftest maps shmem (MAP_SHARED|MAP_ANONYMOUS), places the source at a multiple of the
requested alignment that is *not* a multiple of twice that alignment, leaves 40 MiB free
below it (6.7+), and times one MREMAP_MAYMOVE|MREMAP_FIXED call. We populate the whole
region (the selftest's ``-t 0``). Expected counts are derived by hand from rules R4–R16.
"""

from dataclasses import replace as _replace

import pytest
from helpers import G, K, M, plan

from perfsim.mm.build import Population, VmaSpec, build_space
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.syscall import do_munmap

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


# ---------------------------------------------------------------------------------------
# Every case of tools/testing/selftests/mm/mremap_test.c (6.18), rebuilt as the selftest
# builds it (described in our own words): the layout it maps, the call, and what it then
# checks (errno or success, the VMAs in /proc/self/maps, the bytes it wrote, which here are
# the pages faulted in), plus the progress of move_page_tables.

T618 = None
PAGE = 4 * K
MMAP_MIN_ADDR = 64 * K          # vm.mmap_min_addr on this machine
HEADROOM = 40 * M               # the selftest keeps 10 x 4 MiB free above mmap_min_addr
THRESHOLD = 4 * M               # its default validation threshold (-t 4)
ANY = 0x7F3000000000            # where a top-down mmap(NULL, ...) would land


def target():
    global T618
    if T618 is None:
        from perfsim import resolve_target
        T618 = resolve_target("6.18")
    return T618


def odd_multiple(addr, align):
    """The selftest's alignment test: a multiple of ``align`` (tested with bit masks, which
    is what it does even for 1.25 MiB) whose ``align`` bit is set."""
    return not addr & (align - 1) and bool(addr & align)


def source_address(align, size, taken=()):
    """Where the selftest's source mapping lands: the first multiple of ``align`` at least
    40 MiB above mmap_min_addr that passes the odd-multiple test and overlaps nothing."""
    addr = 0
    while True:
        addr += align
        if addr < MMAP_MIN_ADDR + HEADROOM or not odd_multiple(addr, align):
            continue
        if all(addr + size <= s or addr >= s + n for s, n in taken):
            return addr


def remap_region(salign, dalign, size, *, overlapping=False, preamble=0, threshold=THRESHOLD):
    """The selftest's remap_region(): a shmem source written up to the threshold, the
    destination just past the source's end (aligned down to ``dalign``, moved past the
    preamble, with its ``dalign`` bit forced on), an optional written shmem preamble right
    below it, and one MREMAP_MAYMOVE|MREMAP_FIXED call. Returns (plan, src, dst, written)."""
    src = source_address(salign, size)
    offset = -dalign if overlapping else dalign
    dst = (src + size + offset) & ~(dalign - 1)
    dst += preamble
    if not dst & dalign:
        dst |= dalign
    written = min(threshold, size) if threshold else size
    specs = [VmaSpec(src, size, backing="shmem", file="src",
                     populate=Population("first", prefix_bytes=written))]
    if preamble:
        specs.append(VmaSpec(dst - preamble, preamble, backing="shmem", file="preamble"))
    sp = build_space(target(), specs)
    return plan_mremap(sp, MoveRequest(src, size, new_addr=dst), target()), src, dst, written


SELFTEST_CASES = [
    # name, src alignment, dst alignment, size, overlapping, preamble, expected errno
    ("Source and Destination Regions Overlapping", PAGE, PAGE, PAGE, True, 0, "EINVAL"),
    ("Destination Address Misaligned (1KB-aligned)", PAGE, PAGE // 4, PAGE, False, 0, "EINVAL"),
    ("8KB: Source PTE-aligned, Destination PTE-aligned", PAGE, PAGE, 8 * K, False, 0, None),
    ("2MB: Source 1MB-aligned, Destination PTE-aligned", M, PAGE, 2 * M, False, 0, None),
    ("2MB: Source 1MB-aligned, Destination 1MB-aligned", M, M, 2 * M, False, 0, None),
    ("4MB: Source PMD-aligned, Destination PTE-aligned", 2 * M, PAGE, 4 * M, False, 0, None),
    ("4MB: Source PMD-aligned, Destination 1MB-aligned", 2 * M, M, 4 * M, False, 0, None),
    ("4MB: Source PMD-aligned, Destination PMD-aligned", 2 * M, 2 * M, 4 * M, False, 0, None),
    ("2GB: Source PUD-aligned, Destination PTE-aligned", G, PAGE, 2 * G, False, 0, None),
    ("2GB: Source PUD-aligned, Destination 1MB-aligned", G, M, 2 * G, False, 0, None),
    ("2GB: Source PUD-aligned, Destination PMD-aligned", G, 2 * M, 2 * G, False, 0, None),
    ("2GB: Source PUD-aligned, Destination PUD-aligned", G, G, 2 * G, False, 0, None),
    ("5MB: Source 1MB-aligned, Destination 1MB-aligned", M, M, 5 * M, False, 0, None),
    ("5MB: Source 1MB-aligned, Dest 1MB-aligned with 40MB Preamble", M, M, 5 * M, False,
     40 * M, None),
    ("perf 1GB: Source PTE-aligned, Destination PTE-aligned", PAGE, PAGE, G, False, 0, None),
    ("perf 1GB: Source PMD-aligned, Destination PMD-aligned", 2 * M, 2 * M, G, False, 0, None),
    ("perf 1GB: Source PUD-aligned, Destination PUD-aligned", G, G, G, False, 0, None),
]


@pytest.mark.parametrize("threshold", [THRESHOLD, 0], ids=["t4", "t0"])
@pytest.mark.parametrize("name,salign,dalign,size,overlapping,preamble,errno", SELFTEST_CASES,
                         ids=[c[0] for c in SELFTEST_CASES])
def test_selftest_remap_region_case(name, salign, dalign, size, overlapping, preamble, errno,
                                    threshold):
    """Each remap_region() case: the errno it expects, or success with the written bytes
    (the first ``threshold`` bytes, or all of them with -t 0) found at the destination,
    the source range gone, the preamble untouched, and move_page_tables' progress whole."""
    p, src, dst, written = remap_region(salign, dalign, size, overlapping=overlapping,
                                        preamble=preamble, threshold=threshold)
    assert p.errno == errno, name
    if errno:
        assert len(p.steps) == 0 and p.after is p.before
        return
    assert p.result_addr == dst and p.progress_bytes == size
    assert p.after.pt.present_ptes(dst, dst + written) == written // PAGE
    assert p.after.pt.present_ptes(dst + written, dst + size) == 0
    assert p.after.intersecting(src, src + size) == []
    assert [(v.start, v.end) for v in p.after.intersecting(dst, dst + size)] == [(dst, dst + size)]
    if preamble:
        assert [(v.start, v.end) for v in p.after.intersecting(dst - preamble, dst)] == [
            (dst - preamble, dst)]
        assert p.after.pt.present_ptes(dst - preamble, dst) == preamble // PAGE


def test_selftest_source_address_misaligned_1kb():
    """"Source Address Misaligned (1KB-aligned)": the selftest's mmap() refuses a 1 KiB
    aligned address, so the case fails before mremap; mremap() itself refuses such an
    old_addr with EINVAL, before looking at any VMA."""
    src = source_address(PAGE // 4, PAGE)
    assert src % PAGE
    base = src - src % PAGE
    sp = build_space(target(), [VmaSpec(base, 2 * PAGE, backing="shmem")])
    p = plan_mremap(sp, MoveRequest(src, PAGE, new_addr=base + 64 * M), target())
    assert p.errno == "EINVAL" and "old_addr" in p.note and len(p.steps) == 0


def anon_family(ranges, base, *, touched=True, uffd=None):
    """Anonymous private VMAs left by munmap()s inside one mmap() at ``base``: pieces
    ``(first_page, pages)`` sharing one anon_vma family, page offsets following the
    addresses (as an anon mapping's do)."""
    return [VmaSpec(base + i * PAGE, n * PAGE, file="buf", pgoff=(base >> 12) + i,
                    touched=touched, uffd=uffd) for i, n in ranges]


def vma_ranges(space, lo, hi, base):
    """VMAs intersecting ``[lo, hi)`` as (first page, pages) relative to ``base``."""
    return [((v.start - base) // PAGE, v.length // PAGE) for v in space.intersecting(lo, hi)]


def pages_present(space, base, npages):
    return [int(i) for i in space.pt.mapping(base, base + npages * PAGE)]


def test_selftest_expand_merge():
    """"mremap expand merge": three pages, the middle one unmapped, the first grown in place
    to two pages (no flags): it reaches the third and merges with it, one VMA of 3 pages."""
    sp = build_space(target(), anon_family([(0, 1), (2, 1)], ANY, touched=False))
    p = plan_mremap(sp, MoveRequest(ANY, PAGE, new_len=2 * PAGE, maymove=False, fixed=False),
                    target())
    assert p.errno is None and p.result_addr == ANY
    assert vma_ranges(p.after, ANY, ANY + 3 * PAGE, ANY) == [(0, 3)]
    assert p.progress_bytes == 0 and p.moved == ()


def test_selftest_expand_merge_offset():
    """"mremap expand merge offset": three pages, the last unmapped, the second page grown
    to two in place: the mapping is whole again (one VMA of 3 pages)."""
    sp = build_space(target(), anon_family([(0, 2)], ANY, touched=False))
    p = plan_mremap(sp, MoveRequest(ANY + PAGE, PAGE, new_len=2 * PAGE, maymove=False,
                                    fixed=False), target())
    assert p.errno is None and p.result_addr == ANY + PAGE
    assert vma_ranges(p.after, ANY, ANY + 3 * PAGE, ANY) == [(0, 3)]


def test_selftest_move_within_range():
    """"mremap move within range": in a 20 MiB written anon mapping, the upper 1 MiB of a
    2 MiB-aligned block moves onto the upper 1 MiB of the block below it. The lower 1 MiB of
    the source block (not moved) keeps its data; the moved pages are at the destination."""
    ptr = ANY + 0x345000
    sp = build_space(target(), [VmaSpec(ptr, 20 * M, file="buf")])
    src = (ptr + 6 * M) & ~(2 * M - 1)
    dest = src - 2 * M
    p = plan_mremap(sp, MoveRequest(src + M, M, new_addr=dest + M), target())
    assert p.errno is None and p.result_addr == dest + M and p.progress_bytes == M
    assert p.after.pt.present_ptes(src, src + M) == M // PAGE
    assert p.after.pt.present_ptes(dest + M, dest + 2 * M) == M // PAGE
    assert p.after.pt.present_ptes(src + M, src + 2 * M) == 0
    assert not p.realigned and p.moved[0].realign.startswith("(d)")
    assert p.after.find_vma(src + M) is None


def test_selftest_move_1mb_from_start():
    """"mremap move 1mb from start at 1MB+256KB aligned src": source and destination 6 MiB
    mappings at 1.25 MiB 'alignments', the destination's first 1 MiB unmapped; moving the
    source's second MiB onto the destination's second MiB must not realign (the start is
    not its VMA's start), so the source's first MiB keeps its data."""
    align = M + 256 * K
    src = source_address(align, 6 * M)
    dest = source_address(align, 6 * M, taken=[(src, 6 * M)])
    sp = build_space(target(), [
        VmaSpec(src, 6 * M, backing="shmem", file="src", populate=Population("first", prefix_bytes=2 * M)),
        VmaSpec(dest + M, 5 * M, backing="shmem", file="dst", pgoff=M // PAGE, touched=False)])
    p = plan_mremap(sp, MoveRequest(src + M, M, new_addr=dest + M), target())
    assert p.errno is None and p.result_addr == dest + M
    assert not p.realigned and p.moved[0].realign.startswith("(d)")
    assert p.after.pt.present_ptes(src, src + M) == M // PAGE
    assert p.after.pt.present_ptes(dest + M, dest + 2 * M) == M // PAGE


@pytest.mark.parametrize("inplace", [True, False], ids=["inplace", "move"])
def test_selftest_shrink_multiple_vmas(inplace):
    """"mremap shrink multiple vmas": ten pages with every odd page unmapped (five one-page
    VMAs), shrunk to one page across all the VMAs and gaps: in place (no flags) or moved
    (MAYMOVE|FIXED) to a free target. Both succeed: the shrink may cross VMA boundaries."""
    ptr, tgt = ANY, ANY + G
    sp = build_space(target(), anon_family([(i, 1) for i in range(0, 10, 2)], ptr))
    if inplace:
        req = MoveRequest(ptr, 10 * PAGE, new_len=PAGE, maymove=False, fixed=False)
    else:
        req = MoveRequest(ptr, 10 * PAGE, new_len=PAGE, new_addr=tgt)
    p = plan_mremap(sp, req, target())
    assert p.errno is None
    if inplace:
        assert p.result_addr == ptr and vma_ranges(p.after, ptr, ptr + 10 * PAGE, ptr) == [(0, 1)]
        assert pages_present(p.after, ptr, 10) == [0]
    else:
        assert p.result_addr == tgt and p.after.intersecting(ptr, ptr + 10 * PAGE) == []
        assert vma_ranges(p.after, tgt, tgt + 10 * PAGE, tgt) == [(0, 1)]
        assert pages_present(p.after, tgt, 10) == [0] and p.progress_bytes == PAGE


MULTI_PAGES = [0, 2, 4, 5, 6, 8, 10]  # the pages mremap_move_multiple_vmas writes


def mmap_fixed(space, start, length, **spec):
    """mmap(MAP_FIXED) of an untouched anon VMA over ``[start, start + length)``."""
    space = do_munmap(target(), space, start, length, S.StepLog(), S.UNMAP_DST)
    new = Vma(start, start + length, anon_vma=False, pgoff=start >> 12,
              anon_id=spec.pop("family", f"map{start:#x}"), **spec)
    return space.with_vmas(list(space.vmas) + [new])


@pytest.mark.parametrize("dontunmap", [False, True], ids=["move", "dontunmap"])
def test_selftest_move_multiple_vmas(dontunmap):
    """"mremap move multiple vmas": eleven pages with pages 1, 3, 7 and 9 unmapped (VMAs
    0, 2, 4-6, 8, 10), written; then three MAYMOVE|FIXED moves of the whole 11-page range
    (with DONTUNMAP in the second run): to a free target, next to itself, and onto a
    PROT_NONE mapping it replaces. After each, the written pages are at the destination in
    the same places (the gaps are kept), and each move moved every VMA; the third leaves the
    PROT_NONE mapping in the gaps, since each piece unmaps only its own destination."""
    ptr, tgt = ANY, ANY + G
    size = 11 * PAGE
    sp = build_space(target(), anon_family([(0, 1), (2, 1), (4, 3), (8, 1), (10, 1)], ptr))
    moves = [(ptr, tgt), (tgt, tgt + size), (tgt + size, tgt)]
    for n, (a, b) in enumerate(moves):
        if n == 2:
            sp = mmap_fixed(sp, tgt, size, prot="none")
        p = plan_mremap(sp, MoveRequest(a, size, new_addr=b, dontunmap=dontunmap), target())
        assert p.errno is None and p.result_addr == b, (n, p.note)
        assert pages_present(p.after, b, 11) == MULTI_PAGES
        moved = [(0, 1), (2, 1), (4, 3), (8, 1), (10, 1)]
        if n == 2:  # each piece unmaps only its own destination: PROT_NONE stays in the gaps
            moved = sorted(moved + [(1, 1), (3, 1), (7, 1), (9, 1)])
            assert {v.prot for v in p.after.intersecting(b, b + size)} == {"rw", "none"}
        assert vma_ranges(p.after, b, b + size, b) == moved
        assert len(p.moved) == 5 and p.progress_bytes == 7 * PAGE
        left = vma_ranges(p.after, a, a + size, a)
        assert left == ([(0, 1), (2, 1), (4, 3), (8, 1), (10, 1)] if dontunmap else [])
        assert pages_present(p.after, a, 11) == []
        sp = p.after


@pytest.mark.parametrize("dontunmap", [False, True], ids=["move", "dontunmap"])
def test_selftest_move_multiple_vmas_split(dontunmap):
    """"mremap move multiple vmas split": ten written pages with page 5 unmapped (VMAs 0-4
    and 6-9); pages 2..8 (seven pages, two partial VMAs and the gap) move to a free target:
    target pages 0-2 and 4-6 hold source pages 2-4 and 6-8, page 3 is the kept gap."""
    ptr, tgt = ANY, ANY + G
    sp = build_space(target(), anon_family([(0, 5), (6, 4)], ptr))
    p = plan_mremap(sp, MoveRequest(ptr + 2 * PAGE, 7 * PAGE, new_addr=tgt, dontunmap=dontunmap),
                    target())
    assert p.errno is None and p.result_addr == tgt
    assert pages_present(p.after, tgt, 7) == [0, 1, 2, 4, 5, 6]
    assert vma_ranges(p.after, tgt, tgt + 7 * PAGE, tgt) == [(0, 3), (4, 3)]
    assert [(m.src_start - ptr) // PAGE for m in p.moved] == [2, 6]
    kept = [0, 1, 9] if not dontunmap else [0, 1, 9]
    assert pages_present(p.after, ptr, 10) == kept
    assert vma_ranges(p.after, ptr, ptr + 10 * PAGE, ptr) == (
        [(0, 5), (6, 4)] if dontunmap else [(0, 2), (9, 1)])


def test_selftest_move_multi_invalid_vmas():
    """"mremap move multiple invalid vmas": five one-page VMAs (every other page of ten),
    each registered with userfaultfd (MISSING).
    1. Moving the whole range: EFAULT, and nothing moved (the first VMA cannot be one of
       several, checked before it moves).
    2. Moving just the first VMA succeeds (a single VMA needs no multi-VMA permission).
    3. With a plain VMA mapped again at the start, the whole range: EFAULT after moving the
       first VMA only.
    4. With plain VMAs at pages 0, 2, 4 and 6 and the armed one at 8: EFAULT after moving
       all but the last."""
    ptr, tgt = ANY, ANY + G
    size = 10 * PAGE
    sp = build_space(target(), anon_family([(i, 1) for i in range(0, 10, 2)], ptr,
                                           touched=False, uffd="missing"))
    whole = MoveRequest(ptr, size, new_addr=tgt)
    p = plan_mremap(sp, whole, target())
    assert p.errno == "EFAULT" and p.after.find_vma(tgt) is None and p.moved == ()

    p = plan_mremap(sp, MoveRequest(ptr, PAGE, new_addr=tgt), target())
    assert p.errno is None and p.after.find_vma(tgt) is not None

    sp = do_munmap(target(), p.after, tgt, PAGE, S.StepLog(), S.UNMAP_DST)
    sp = mmap_fixed(sp, ptr, PAGE)
    p = plan_mremap(sp, whole, target())
    assert p.errno == "EFAULT"
    assert p.after.find_vma(tgt) is not None and p.after.find_vma(tgt + 2 * PAGE) is None
    assert [m.src_start for m in p.moved] == [ptr] and "1 VMA piece(s) moved" in p.note

    sp = do_munmap(target(), p.after, tgt, PAGE, S.StepLog(), S.UNMAP_DST)
    sp = do_munmap(target(), sp, ptr, size - 2 * PAGE, S.StepLog(), S.UNMAP_DST)
    for i in range(0, 8, 2):
        sp = mmap_fixed(sp, ptr + i * PAGE, PAGE)
    p = plan_mremap(sp, whole, target())
    assert p.errno == "EFAULT"
    assert [p.after.find_vma(tgt + i * PAGE) is not None for i in range(0, 10, 2)] == [
        True, True, True, True, False]
    assert len(p.moved) == 4


def test_multi_vma_move_with_a_gap_at_the_start_is_efault():
    """remap_move: the range must begin inside a VMA (EFAULT otherwise), even when VMAs
    follow."""
    sp = build_space(target(), anon_family([(2, 2)], ANY))
    p = plan_mremap(sp, MoveRequest(ANY, 4 * PAGE, new_addr=ANY + G), target())
    assert p.errno == "EFAULT" and len(p.steps) == 0


def test_map_count_thresholds():
    """check_mremap_params refuses a move unless map_count + 2 < max_map_count - 3
    (ENOMEM); prep_move_vma, for a move without a caller address, needs map_count <
    max_map_count - 3. So with 1 VMA, a fixed move needs max_map_count >= 7 and an expand
    that has to move needs >= 5."""
    sp = build_space(target(), [VmaSpec(ANY, 4 * PAGE), VmaSpec(ANY + 4 * PAGE, PAGE, prot="r")])
    # two VMAs: fixed moves need 2 + 2 < limit - 3, i.e. limit >= 8.
    fixed = MoveRequest(ANY, 4 * PAGE, new_addr=ANY + G)
    assert plan_mremap(_replace(sp, map_count_limit=7), fixed, target()).errno == "ENOMEM"
    assert plan_mremap(_replace(sp, map_count_limit=8), fixed, target()).errno is None
    grow = MoveRequest(ANY, 4 * PAGE, new_len=8 * PAGE, fixed=False)
    assert plan_mremap(_replace(sp, map_count_limit=5), grow, target()).errno == "ENOMEM"
    assert plan_mremap(_replace(sp, map_count_limit=6), grow, target()).errno is None


@pytest.mark.parametrize("req,errno", [
    # flags before alignment
    (dict(old_addr=ANY + 1, old_len=PAGE, new_addr=ANY + G, extra_flags=8), "EINVAL"),
    # old_addr alignment before the zero length
    (dict(old_addr=ANY + 1, old_len=PAGE, new_len=0, fixed=False), "EINVAL"),
    # EINVAL for a bad new_addr wins over EFAULT for a missing source VMA
    (dict(old_addr=ANY + 64 * M, old_len=PAGE, new_addr=ANY + G + 1), "EINVAL"),
    # ENOMEM map count is checked after every EINVAL but before the VMA lookup (EFAULT)
    (dict(old_addr=ANY + 64 * M, old_len=PAGE, new_addr=ANY + G), "ENOMEM"),
])
def test_which_errno_wins_617(req, errno):
    """The order of check_mremap_params (6.17+): every argument check before the lookup."""
    sp = _replace(build_space(target(), [VmaSpec(ANY, 4 * PAGE)]), map_count_limit=6)
    assert plan_mremap(sp, MoveRequest(**req), target()).errno == errno


def test_which_errno_wins_pre617():
    """Before 6.17 the destination checks (and the map count) come after the VMA lookup: a
    missing source VMA is EFAULT even with an unaligned new_addr."""
    from perfsim import resolve_target
    sp = _replace(build_space(target(), [VmaSpec(ANY, 4 * PAGE)]), map_count_limit=6)
    req = MoveRequest(ANY + 64 * M, PAGE, new_addr=ANY + G + 1)
    assert plan_mremap(sp, req, resolve_target("6.6")).errno == "EFAULT"
    assert plan_mremap(sp, req, target()).errno == "EINVAL"


# ---------------------------------------------------------------------------------------
# The same layouts on the running kernel (when it is Linux 6.17+): mremap() through ctypes,
# /proc/self/maps for the VMAs; perfsim must give the same errno and the same VMAs. Needs no
# root. Skipped elsewhere.

import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402


def _live_kernel_ok():
    if platform.system() != "Linux":
        return False
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (6, 17) and os.sysconf("SC_PAGE_SIZE") == PAGE


live = pytest.mark.skipif(not _live_kernel_ok(), reason="needs a running Linux 6.17+ kernel "
                          "with 4 KiB pages")
_ERRNO = {22: "EINVAL", 14: "EFAULT", 12: "ENOMEM"}


class Live:
    """mmap/munmap/mremap in this process, inside a region far below the normal mmap area
    (where no allocator of the process maps anything): every mapping is placed with
    MAP_FIXED_NOREPLACE, and the whole region is unmapped at the end."""

    PROT_RW, PRIVATE_ANON, SHARED_ANON, FIXED_NOREPLACE = 3, 0x22, 0x21, 0x100000
    REGION = 0x600000000000
    SPAN = 64 * M

    def __init__(self, slot: int):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.libc.mmap.restype = self.libc.mremap.restype = ctypes.c_void_p
        self.libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                   ctypes.c_int, ctypes.c_int, ctypes.c_long]
        self.libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                                     ctypes.c_int, ctypes.c_void_p]
        self.libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.base = self.REGION + slot * self.SPAN
        self.libc.munmap(self.base, self.SPAN)  # nothing of ours is left from an earlier run

    def mmap(self, offset, length, flags=PRIVATE_ANON, *, replace=False):
        addr = self.base + offset
        fixed = 0x10 if replace else self.FIXED_NOREPLACE
        got = self.libc.mmap(addr, length, self.PROT_RW, flags | fixed, -1, 0)
        if got != addr:
            self.close()
            pytest.skip(f"cannot map at {addr:#x} (errno {ctypes.get_errno()})")
        return addr

    def munmap(self, addr, length):
        assert self.base <= addr and addr + length <= self.base + self.SPAN
        assert self.libc.munmap(addr, length) == 0

    def mremap(self, addr, old, new, flags, new_addr=0):
        r = self.libc.mremap(addr, old, new, flags, new_addr)
        if r == ctypes.c_void_p(-1).value:
            return _ERRNO.get(ctypes.get_errno(), str(ctypes.get_errno()))
        assert self.base <= r < self.base + self.SPAN, "the kernel placed it outside the region"
        return None

    def vmas(self, lo, hi):
        out = []
        with open("/proc/self/maps") as f:
            for line in f:
                s, e = (int(x, 16) for x in line.split()[0].split("-"))
                if e > lo and s < hi:
                    out.append(((max(s, lo) - lo) // PAGE, (min(e, hi) - max(s, lo)) // PAGE))
        return out

    def close(self):
        self.libc.munmap(self.base, self.SPAN)


def _flags(req):
    return (1 if req.maymove else 0) | (2 if req.fixed else 0) | (4 if req.dontunmap else 0)


def _agree(slot, pieces, req_of, *, backing="anon"):
    """Lay out ``pieces`` (first page, pages) of one mmap() on the live kernel and in
    perfsim, run the same call (its destination a hole 32 MiB above the source), and
    compare the errno and the VMAs around the source and the destination. Calls that let
    the kernel pick the place are not in this list: it would pick it outside the region."""
    lv = Live(slot)
    try:
        total = max(i + n for i, n in pieces)
        flags = Live.SHARED_ANON if backing == "shmem" else Live.PRIVATE_ANON
        ptr = lv.mmap(4 * M, total * PAGE, flags)
        keep = {i for p0, n in pieces for i in range(p0, p0 + n)}
        for i in range(total):
            if i not in keep:
                lv.munmap(ptr + i * PAGE, PAGE)
        tgt = ptr + 32 * M
        req = req_of(ptr, tgt)
        got = lv.mremap(req.old_addr, req.old_len, req.length, _flags(req), req.new_addr or 0)
        specs = [VmaSpec(ptr + i * PAGE, n * PAGE, backing=backing, file="buf",
                         pgoff=(ptr >> 12) + i if backing == "anon" else i) for i, n in pieces]
        p = plan_mremap(build_space(target(), specs), req, target())
        assert p.errno == got
        for base in (ptr, tgt):
            want = lv.vmas(base, base + 16 * PAGE)
            have = [((max(v.start, base) - base) // PAGE,
                     (min(v.end, base + 16 * PAGE) - max(v.start, base)) // PAGE)
                    for v in p.after.intersecting(base, base + 16 * PAGE)]
            assert have == want, (hex(base), have, want)
    finally:
        lv.close()


LIVE_CASES = {
    "shrink multiple vmas in place": (
        [(i, 1) for i in range(0, 10, 2)],
        lambda p, t: MoveRequest(p, 10 * PAGE, new_len=PAGE, maymove=False, fixed=False)),
    "shrink multiple vmas with a move": (
        [(i, 1) for i in range(0, 10, 2)],
        lambda p, t: MoveRequest(p, 10 * PAGE, new_len=PAGE, new_addr=t)),
    "move multiple vmas split": (
        [(0, 5), (6, 4)], lambda p, t: MoveRequest(p + 2 * PAGE, 7 * PAGE, new_addr=t)),
    "move multiple vmas split, dontunmap": (
        [(0, 5), (6, 4)],
        lambda p, t: MoveRequest(p + 2 * PAGE, 7 * PAGE, new_addr=t, dontunmap=True)),
    "expand merge": (
        [(0, 1), (2, 1)],
        lambda p, t: MoveRequest(p, PAGE, new_len=2 * PAGE, maymove=False, fixed=False)),
    "expand merge offset": (
        [(0, 2)],
        lambda p, t: MoveRequest(p + PAGE, PAGE, new_len=2 * PAGE, maymove=False, fixed=False)),
    "gap at the start of a multi-VMA move": (
        [(2, 2)], lambda p, t: MoveRequest(p, 4 * PAGE, new_addr=t)),
    "no resize without FIXED past the VMA end": (
        [(0, 2)], lambda p, t: MoveRequest(p + PAGE, 3 * PAGE, maymove=False, fixed=False)),
    "expand blocked without MAYMOVE": (
        [(0, 4), (5, 1)],
        lambda p, t: MoveRequest(p, 4 * PAGE, new_len=8 * PAGE, maymove=False, fixed=False)),
    "duplicate a private mapping": (
        [(0, 4)], lambda p, t: MoveRequest(p, 0, new_len=2 * PAGE, new_addr=t)),
}


@live
@pytest.mark.parametrize("case", sorted(LIVE_CASES))
def test_live_kernel_agrees(case):
    pieces, req_of = LIVE_CASES[case]
    _agree(sorted(LIVE_CASES).index(case), pieces, req_of)


@live
def test_live_kernel_agrees_duplicating_a_shared_mapping():
    _agree(len(LIVE_CASES), [(0, 4)],
           lambda p, t: MoveRequest(p, 0, new_len=2 * PAGE, new_addr=t), backing="shmem")


def _uffd_register_missing(libc, ranges):
    """A userfaultfd (x86-64 syscall 323) with each range registered in MISSING mode; the
    fd, or None where userfaultfd is not available to this process."""
    if platform.machine() != "x86_64":
        return None
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(323, os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    api = (ctypes.c_uint64 * 3)(0xAA, 0, 0)
    if libc.ioctl(fd, ctypes.c_ulong(0xC018AA3F), api) != 0:
        os.close(fd)
        return None
    for start, length in ranges:
        reg = (ctypes.c_uint64 * 4)(start, length, 1, 0)
        if libc.ioctl(fd, ctypes.c_ulong(0xC020AA00), reg) != 0:
            os.close(fd)
            return None
    return fd


@live
def test_live_kernel_agrees_on_uffd_armed_vmas():
    """mremap_test's "multiple invalid vmas", on this kernel: five uffd-armed one-page VMAs
    moved whole is EFAULT with nothing moved; with a plain VMA mapped again at the start it
    is EFAULT after moving that one. perfsim gives the same errno and the same VMAs."""
    lv = Live(len(LIVE_CASES) + 1)
    fd = None
    try:
        ptr = lv.mmap(4 * M, 10 * PAGE)
        for i in range(1, 10, 2):
            lv.munmap(ptr + i * PAGE, PAGE)
        fd = _uffd_register_missing(lv.libc, [(ptr + i * PAGE, PAGE) for i in range(0, 10, 2)])
        if fd is None:
            pytest.skip("userfaultfd is not available to this process")
        tgt = ptr + 32 * M
        sp = build_space(target(), anon_family([(i, 1) for i in range(0, 10, 2)], ptr,
                                               touched=False, uffd="missing"))
        whole = MoveRequest(ptr, 10 * PAGE, new_addr=tgt)
        for step in ("all armed", "plain first"):
            if step == "plain first":
                lv.mmap(4 * M, PAGE, replace=True)
                sp = mmap_fixed(sp, ptr, PAGE)
            got = lv.mremap(ptr, 10 * PAGE, 10 * PAGE, 3, tgt)
            p = plan_mremap(sp, whole, target())
            assert p.errno == got == "EFAULT", step
            for base in (ptr, tgt):
                have = [((v.start - base) // PAGE, v.length // PAGE)
                        for v in p.after.intersecting(base, base + 16 * PAGE)]
                assert have == lv.vmas(base, base + 16 * PAGE), (step, hex(base))
            sp = p.after
    finally:
        if fd is not None:
            os.close(fd)
        lv.close()
