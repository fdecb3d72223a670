"""How many ``set_ptes`` batches ``move_ptes`` uses for one extent (R16g).

Two pieces, as in the kernel: the gate (:func:`pte_batch_block`: may this VMA's PTEs be
batched at all, and over how many PTEs at most) and the count
(:func:`mremap_folio_pte_batch`: runs of present PTEs that do not cross a block). The
reference planner calls both per ``move_ptes``; the vectorised planner evaluates the gate
once per move and calls the count once per distinct (bitmap, offset, length) it meets.
"""

from __future__ import annotations

from perfsim.mm.vma import Vma
from perfsim.profiles import Target


def pte_batch_block(target: Target, vma: Vma) -> int:
    """The batching gate of ``move_ptes``: how many consecutive PTEs one batch may cover
    (1: every present PTE is its own batch).

    * before 6.17 (``pte_batching = "none"``): no batching, ``move_ptes`` moves one PTE at
      a time;
    * 6.17 ``mremap_folio_pte_batch`` (f822a9a81a31, ``"folio"``): the PTEs of one large
      folio (``folio_pte_batch``), so a block is a folio;
    * with the ``pte_batch_hint`` gate (the 6.17-rc hot-fix that skips the folio lookup
      unless the architecture hints a contiguous block, ``"hint"``, 6.17 release onwards):
      only arm64 contpte mappings batch, a block being ``CONT_PTES`` entries, and only
      when the folio covers at least one such block.

    >>> from dataclasses import replace
    >>> from perfsim import resolve_target
    >>> from perfsim.mm.vma import Vma
    >>> vma = Vma(0x200000, 0x400000, folio_size=64 << 10)
    >>> pte_batch_block(resolve_target("6.18", "arm64-4k"), vma)
    16
    >>> pte_batch_block(resolve_target("6.18", "x86_64"), vma)
    1
    >>> pte_batch_block(resolve_target("6.6", "arm64-4k"), vma)
    1
    """
    mode = target.kernel.pte_batching
    arch = target.arch
    folio_pages = max(vma.folio_size >> arch.page_shift, 1)
    if mode == "hint":
        if arch.contpte_entries <= 1 or folio_pages < arch.contpte_entries:
            return 1
        return arch.contpte_entries
    if mode == "folio":
        return folio_pages
    return 1


def mremap_folio_pte_batch(bits: int, first: int, n: int, block: int) -> int:
    """Batches ``move_ptes`` uses for the present PTEs ``bits`` (bit i = the extent's i-th
    PTE) of an extent of ``n`` PTEs whose first PTE is PTE ``first`` of its block: each
    maximal run of present PTEs inside one block is one ``get_and_clear_full_ptes`` /
    ``set_ptes`` batch; a batch never crosses a block (folio, or contpte block) boundary.

    >>> mremap_folio_pte_batch(0b1111, 0, 4, 1)     # no batching: one per present PTE
    4
    >>> mremap_folio_pte_batch(0b1111, 0, 4, 4)     # one block
    1
    >>> mremap_folio_pte_batch(0b1111, 2, 4, 4)     # the extent straddles two blocks
    2
    >>> mremap_folio_pte_batch(0b1011, 0, 4, 4)     # a hole splits the run
    2
    """
    if block <= 1:
        return bits.bit_count()
    batches = 0
    i = 0
    while i < n:
        span = min(block - (first + i) % block, n - i)
        chunk = (bits >> i) & ((1 << span) - 1)
        if chunk:
            batches += (chunk & ~(chunk << 1)).bit_count()  # runs of set bits
        i += span
    return batches


def pte_batches(target: Target, vma: Vma, bits: int, old_addr: int, n: int) -> int:
    """Number of batches for the present PTEs ``bits`` (bit i = slot ``old_addr`` + i pages)."""
    block = pte_batch_block(target, vma)
    if block <= 1 or not bits:
        return bits.bit_count()
    return mremap_folio_pte_batch(bits, (old_addr >> target.arch.page_shift) % block, n, block)
