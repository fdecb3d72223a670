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


def truncate_pagecache(target: Target, space: AddressSpace, file_id: str,
                       size: int) -> AddressSpace:
    """``truncate_pagecache``: ``space`` after the file ``file_id`` was truncated to
    ``size`` bytes, i.e. ``unmap_mapping_range`` over every VMA of that file
    (``Vma.file_id``), page tables kept (module docstring). ``space`` itself where nothing
    was mapped past the end."""
    ps = target.arch.page_size
    pt = space.pt
    for v in space.vmas:
        if v.file_id != file_id or v.backing == "anon":
            continue  # (only a VMA with a file is in the file's i_mmap tree)
        first = hole_start(target, v, size)
        pages = (v.end - v.start) // ps
        if first >= v.pgoff + pages:
            continue  # the hole starts past this VMA's part of the file
        lo = v.start + max(0, first - v.pgoff) * ps
        win = pt.window(lo, v.end)
        zap_range(target, win, lo, v.end, MmuGather(lo), not_anon=((lo, v.end),))
        pt = pt.replace_window(win)
    return space if pt is space.pt else replace(space, pt=pt)
