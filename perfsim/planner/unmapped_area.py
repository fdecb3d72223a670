"""Where the kernel places a mapping whose address it chooses: ``get_unmapped_area``.

mremap() asks for a new range when it must move and the caller did not fix the address: a
growth that cannot happen in place (``MREMAP_MAYMOVE`` alone), or ``MREMAP_DONTUNMAP``
without ``MREMAP_FIXED`` (its ``new_addr`` is a hint, 0 for none). ``vrm_set_new_addr``
(6.15+; inline in ``mremap_to`` and ``do_mremap`` before) calls
``get_unmapped_area(vma->vm_file, hint, new_len, pgoff, MAP_SHARED if VM_MAYSHARE)`` with
``pgoff`` the file page of the moved range (``linear_page_index``; an anonymous VMA's
``vm_pgoff`` is its first address in pages). Which range comes back decides whether the
source and destination share their offset in a PMD, i.e. whether the move can take whole
page tables (and, from 6.7, be realigned) or copies every PTE. ``__get_unmapped_area``
dispatches on the mapping (read in Debian's 6.1.176, 6.12.117 and 7.3.4):

* a file with its own handler: ext4, xfs, btrfs (perfsim's ``file`` backing) use
  :func:`thp_get_unmapped_area`; hugetlbfs :func:`hugetlb_get_unmapped_area`; shmem and
  tmpfs :func:`shmem_get_unmapped_area`, which aligns only where the shmem superblock
  allows huge pages (``Vma.shmem_huge``);
* a private anonymous mapping (``Kernel.anon_thp_align``): before 6.7 the plain search;
  6.7's "mm: align larger anonymous mappings on THP boundaries" sends every one through
  :func:`thp_get_unmapped_area` with the ``pgoff`` mremap passed (``"any_length"``); 6.8
  to 6.10 every one with ``pgoff`` taken as 0, so a range of a PMD or more, whatever its
  length, starts on a PMD boundary (``"pmd_span"``); by 6.12 (and 6.11.7) only a length
  that is a whole number of PMDs, without a hint, with ``pgoff`` taken as 0, so the range
  starts on a PMD boundary (``"pmd_multiple"``).

The plain search is :func:`mm_get_unmapped_area`: the hint when it is free, else the highest
gap below ``mmap_base`` that fits (``arch_get_unmapped_area_topdown``,
``unmapped_area_topdown``). Pure functions of the address space.
"""

from __future__ import annotations

from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.profiles import Target

#: x86-64's ``stack_guard_gap`` (256 pages; a boot parameter)
STACK_GUARD_GAP = 256 << 12


def x86_mmap_base(user_va_top: int, stack_rlimit: int) -> int:
    """``mmap_base()`` of arch/x86/mm/mmap.c for a process without randomisation (no
    ``PF_RANDOMIZE``: no random gap, no stack randomisation pad): the top of the mmap area is
    the stack rlimit plus ``stack_guard_gap`` below ``TASK_SIZE`` (``DEFAULT_MAP_WINDOW``),
    that gap clamped to at least 128 MiB and at most five sixths of it. ``stack_rlimit`` -1:
    unlimited (the pad would overflow: the gap is then the maximum). Where an mm's top-down
    search starts (``AddressSpace.mmap_base_addr``) when it is a real process's."""
    gap = (user_va_top // 6) * 5 if stack_rlimit < 0 else stack_rlimit + STACK_GUARD_GAP
    gap = min(max(gap, 128 << 20), (user_va_top // 6) * 5)
    return -(-(user_va_top - gap) // 4096) * 4096  # PAGE_ALIGN


def unmapped_area_topdown(space: AddressSpace, length: int, align_mask: int = 0) -> int | None:
    """``unmapped_area_topdown``: the end of the highest free gap below ``mmap_base`` that
    holds ``length + align_mask`` bytes, minus ``length``, rounded down to ``align_mask + 1``
    (``vm_unmapped_area``'s ``align_offset`` is 0 for every mapping modelled); None when no
    gap fits. The gap below the lowest VMA reaches down to address 0 plus a page."""
    need = length + align_mask
    top = space.mmap_base
    for v in reversed(space.vmas):
        if v.end <= top and top - v.end >= need:
            return (top - length) & ~align_mask
        top = min(top, v.start)
    if top >= need + space.arch.page_size:
        return (top - length) & ~align_mask
    return None


def hint_is_free(space: AddressSpace, hint: int | None, length: int) -> bool:
    """The hint test of ``arch_get_unmapped_area_topdown``: a page-aligned ``hint`` whose
    whole range is below the top of user space and mapped by nothing."""
    a = space.arch
    if hint is None or hint == 0 or hint % a.page_size or hint + length > a.user_va_top:
        return False
    i, j = space.intersecting_span(hint, hint + length)
    return i == j


def mm_get_unmapped_area(space: AddressSpace, length: int, hint: int | None) -> int | None:
    """``mm_get_unmapped_area`` (x86-64's ``arch_get_unmapped_area_topdown``; arm64 and riscv
    use the generic top-down one, the same search): the hint if free, else the top-down
    gap."""
    if hint_is_free(space, hint, length):
        return hint
    return unmapped_area_topdown(space, length)


def thp_get_unmapped_area(space: AddressSpace, length: int, hint: int | None, off: int,
                          target: Target) -> int | None:
    """``thp_get_unmapped_area``: a range whose address is congruent with the file offset
    ``off`` modulo the PMD size, so that PMD-size folios can be mapped by PMD, when
    ``[off, off + length)`` holds a whole PMD-aligned chunk; else, or when no gap holds
    ``length`` plus a PMD, the plain search.

    ``__thp_get_unmapped_area`` searches for ``length + PMD`` bytes (the hint is kept when
    that much is free there), then moves the start up to the next address congruent with
    ``off``. Where the found start is already congruent, a top-down mm then takes the start
    one PMD higher, so the padding lies below the range rather than above it
    (``Kernel.thp_honours_topdown``: 6.12.117 and 7.3.4 do, 6.1.176 does not)."""
    pmd = space.arch.pmd_size
    off_align = -(-off // pmd) * pmd
    if off + length > off_align and off + length - off_align >= pmd:
        padded = length + pmd
        ret = hint if hint_is_free(space, hint, padded) else unmapped_area_topdown(space, padded)
        if ret is not None:
            if ret == hint:
                return ret
            off_sub = (off - ret) % pmd
            if off_sub == 0 and target.kernel.thp_honours_topdown:
                return ret + pmd
            return ret + off_sub
    return mm_get_unmapped_area(space, length, hint)


def shmem_get_unmapped_area(space: AddressSpace, length: int, hint: int | None, off: int,
                            huge_sb: bool) -> int | None:
    """``shmem_get_unmapped_area``: the plain search's range, kept when the superblock has
    huge pages off (``huge_sb`` False: ``huge=never``, the default), when the range is
    shorter than a PMD, when the hint was free, when it is already congruent with the file
    offset ``off`` modulo the PMD size, or when ``off`` is not on a PMD boundary and the
    range does not reach past a second PMD of the file; otherwise the plain search for
    ``length + PMD - page`` bytes (no hint), its start moved up to the first address
    congruent with ``off``. (6.11+ also aligns anonymous shmem to its largest enabled mTHP
    size, ``hugepages-*kB/shmem_enabled``; not modelled: none is enabled by default.)"""
    addr = mm_get_unmapped_area(space, length, hint)
    pmd = space.arch.pmd_size
    if addr is None or not huge_sb or length < pmd or addr == hint:
        return addr
    offset = off % pmd
    if (offset and offset + length < 2 * pmd) or addr % pmd == offset:
        return addr
    inflated = mm_get_unmapped_area(space, length + pmd - space.arch.page_size, hint)
    if inflated is None:
        return addr
    inflated_offset = inflated % pmd
    inflated += offset - inflated_offset
    if inflated_offset > offset:
        inflated += pmd
    return addr if inflated + length > space.arch.user_va_top else inflated


def hugetlb_get_unmapped_area(space: AddressSpace, length: int, hugepage_size: int
                              ) -> int | None:
    """``hugetlb_get_unmapped_area`` without a hint (mremap never passes one for hugetlb:
    DONTUNMAP refuses a VM_DONTEXPAND VMA first): the top-down gap, aligned to the huge
    page size (``info.align_mask``)."""
    return unmapped_area_topdown(space, length, hugepage_size - 1)


def mremap_hint(call) -> int | None:
    """The hint mremap passes (``vrm_set_new_addr``): DONTUNMAP without MREMAP_FIXED takes
    ``new_addr`` as one (0: none); any other call that reaches the search has none.
    ``call``: a :class:`~perfsim.planner.result.MoveRequest` or the call's ``VmaRemap``."""
    return call.new_addr if call.dontunmap and call.new_addr else None


def handler(target: Target, space: AddressSpace, vma: Vma, length: int, hint: int | None
            ) -> str:
    """Which of ``__get_unmapped_area``'s paths places a range of ``vma``: ``"file"``
    (``thp_get_unmapped_area`` by file offset), ``"shmem"``, ``"hugetlb"``, ``"anon_pgoff"``
    (6.7: ``thp_get_unmapped_area`` with the VMA's own ``pgoff``), ``"anon_zero"`` (6.8 to
    6.10: ``thp_get_unmapped_area`` with ``pgoff`` 0, any length, the hint passed on),
    ``"anon_pmd"`` (6.12+: whole PMDs, no hint, a PMD boundary) or ``"plain"``."""
    if vma.backing in ("file", "shmem", "hugetlb"):
        return vma.backing
    mode = target.kernel.anon_thp_align
    if mode == "any_length":
        return "anon_pgoff"
    if mode == "pmd_span":
        return "anon_zero"
    if mode == "pmd_multiple" and not hint and length % space.arch.pmd_size == 0:
        return "anon_pmd"
    return "plain"


#: what :func:`placement` says for each :func:`handler`
_SAYS = {
    "file": "thp_get_unmapped_area: congruent with the file offset modulo the PMD size where "
            "the range holds a whole PMD of the file",
    "shmem": "shmem_get_unmapped_area: the plain search, aligned to the file offset only where "
             "the superblock allows huge pages",
    "hugetlb": "hugetlb_get_unmapped_area: aligned to the huge page",
    "anon_pgoff": "thp_get_unmapped_area with the VMA's pgoff (6.7): congruent with where the "
                  "range was, where it spans a whole PMD",
    "anon_zero": "thp_get_unmapped_area with pgoff 0 (6.8-6.10): an anonymous range of a PMD or "
                 "more starts on a PMD boundary, whatever its length",
    "anon_pmd": "thp_get_unmapped_area: an anonymous range of whole PMDs starts on a PMD "
                "boundary (6.12+)",
    "plain": "mm_get_unmapped_area: the hint where it is free, else the highest free gap "
             "below mmap_base that fits",
}


def placement(target: Target, space: AddressSpace, vma: Vma, length: int,
              hint: int | None) -> str:
    """Why a range of ``vma`` goes where :func:`get_unmapped_area` puts it, in words."""
    return _SAYS[handler(target, space, vma, length, hint)]


def get_unmapped_area(target: Target, space: AddressSpace, vma: Vma, length: int,
                      hint: int | None, pgoff: int) -> int | None:
    """``__get_unmapped_area`` for a range of ``vma`` moved by mremap: the new address, or
    None where the kernel answers ENOMEM. ``pgoff`` is the moved range's page offset
    (``linear_page_index``)."""
    off = pgoff << space.arch.page_shift
    how = handler(target, space, vma, length, hint)
    if how in ("file", "anon_pgoff"):
        return thp_get_unmapped_area(space, length, hint, off, target)
    if how == "anon_pmd":
        return thp_get_unmapped_area(space, length, None, 0, target)
    if how == "anon_zero":
        return thp_get_unmapped_area(space, length, hint, 0, target)
    if how == "shmem":
        return shmem_get_unmapped_area(space, length, hint, off, vma.shmem_huge)
    if how == "hugetlb":
        return hugetlb_get_unmapped_area(space, length, vma.hugepage_size or space.arch.pmd_size)
    return mm_get_unmapped_area(space, length, hint)
