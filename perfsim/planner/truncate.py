"""What truncating a file does to the page tables of the mappings of it.

``ftruncate(fd, size)`` of a file that is mapped ends, when it shrinks the file, in
``truncate_pagecache`` (mm/truncate.c), which calls ``unmap_mapping_range(mapping,
holebegin, 0, 1)`` with ``holebegin`` the new size rounded up to a page: every PTE (and
huge PMD) that maps a page of the file at or after that offset is zapped, in every VMA of
the file (``unmap_mapping_range_tree`` walks the file's ``i_mmap`` tree and calls
``zap_page_range_single`` for the part of each VMA the hole covers), the private
copy-on-write copies of those pages too (``even_cows``). Page-table pages are not freed
(no ``free_pgtables``): the VMAs stay. A later mremap of such a mapping finds the tail's
page tables empty; that is why a program that truncates a mapped file and then shrinks
the mapping with mremap (CPython's ``mmap.resize`` does: ``ftruncate`` first) flushes
once, not once per written PTE table (docs/real-programs.md).

Where the file's page cache is in large folios (R25a: ``Kernel.file_large_folios`` and a
``file`` VMA advised MADV_HUGEPAGE, ``Vma.thp``), the folio holding the new end is split
(``truncate_inode_partial_folio``), and splitting a file folio unmaps every PTE of it
(``unmap_folio``; only an anonymous folio is mapped again after a split): the zap starts
at that folio's first page, not at ``holebegin`` (:func:`split_folio_start`). So too
for a shmem VMA advised MADV_HUGEPAGE before 6.11 (``Kernel.shmem_huge_any_vma``), whose
folios are PMD-size even where the VMA cannot map them by PMD.

Only the state matters here: the flushes of the truncation belong to ``ftruncate``, not
to any mremap, and are not planned. A file that grows has nothing mapped past its old end
(a fault there is SIGBUS), so nothing changes.
"""

from __future__ import annotations

from dataclasses import replace

from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner.gather import MmuGather
from perfsim.planner.unmap import zap_range
from perfsim.profiles import Target


def hole_start(target: Target, vma: Vma, size: int) -> int:
    """``holebegin`` of a truncation to ``size`` bytes as a page offset in the file:
    ``round_up(size, PAGE_SIZE)``, or the huge page size for hugetlb (``hugetlb_vmtruncate``
    keeps whole huge pages)."""
    ps = target.arch.page_size
    unit = ps
    if vma.backing == "hugetlb":
        unit = vma.hugepage_size or target.arch.pmd_size
    return -(-size // unit) * unit // ps


def split_folio_start(index: int, file_pages: int, pmd_pages: int) -> int:
    """The first page of the page-cache folio holding page ``index`` of a file of
    ``file_pages`` pages read ahead in PMD-order folios: ``page_cache_ra_order`` takes
    ``pmd_pages``-page folios aligned in the file while they fit below the end, then ever
    smaller aligned powers of two up to the end. ``index`` itself past the end.

    >>> split_folio_start(700, 1100, 512), split_folio_start(1030, 1100, 512)
    (512, 1024)
    >>> split_folio_start(1097, 1100, 512), split_folio_start(1200, 1100, 512)
    (1096, 1200)
    """
    base = file_pages // pmd_pages * pmd_pages
    if index < base:
        return index // pmd_pages * pmd_pages
    size = pmd_pages >> 1
    while size:
        if base + size <= file_pages:
            if index < base + size:
                return base
            base += size
        size >>= 1
    return index


def _large_folio_start(target: Target, vma: Vma, size: int, file_pages: int) -> int | None:
    """R25a: the first page of the large folio holding byte ``size`` of the file, where
    ``vma``'s page cache is in large folios; None where it is not."""
    ptrs, index = target.arch.ptrs_per_pte, size // target.arch.page_size
    if vma.backing == "shmem" and vma.thp and target.kernel.shmem_huge_any_vma:
        return index // ptrs * ptrs  # (a PMD-size folio, whatever the file's size)
    if vma.backing == "file" and vma.thp and target.kernel.file_large_folios:
        return split_folio_start(index, file_pages, ptrs)
    return None


def truncate_pagecache(target: Target, space: AddressSpace, file_id: str,
                       size: int) -> AddressSpace:
    """``truncate_pagecache``: ``space`` after the file ``file_id`` was truncated to
    ``size`` bytes, i.e. ``unmap_mapping_range`` over every VMA of that file
    (``Vma.file_id``), page tables kept (module docstring). ``space`` itself where nothing
    was mapped past the end."""
    ps = target.arch.page_size
    pt = space.pt
    # (only a VMA with a file is in the file's i_mmap tree)
    mapped = [v for v in space.vmas if v.file_id == file_id and v.backing != "anon"]
    # the file's size: what its VMAs map (the probe's files are sized to their mapping)
    file_pages = max((v.pgoff + (v.end - v.start) // ps for v in mapped), default=0)
    for v in mapped:
        first = hole_start(target, v, size)
        folio = _large_folio_start(target, v, size, file_pages)
        if folio is not None and folio * ps < size:
            first = folio  # the split folio's pages below holebegin lose their PTEs too
        pages = (v.end - v.start) // ps
        if first >= v.pgoff + pages:
            continue  # the hole starts past this VMA's part of the file
        lo = v.start + max(0, first - v.pgoff) * ps
        win = pt.window(lo, v.end)
        zap_range(target, win, lo, v.end, MmuGather(lo), not_anon=((lo, v.end),))
        pt = pt.replace_window(win)
    return space if pt is space.pt else replace(space, pt=pt)
