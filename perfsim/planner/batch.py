"""How many ``set_ptes`` batches ``move_ptes`` uses for one extent (R16g).

Before 6.17 every present PTE is its own batch. 6.17's ``mremap_folio_pte_batch`` batches
the PTEs of one large folio; with the ``pte_batch_hint`` gate (6.17-rc hot-fix) it only does
so where the architecture hints a contiguous block, i.e. arm64 contpte mappings. Batches
never cross a folio (or contpte block) boundary.
"""

from __future__ import annotations

from perfsim.mm.vma import Vma
from perfsim.profiles import Target


def pte_batches(target: Target, vma: Vma, bits: int, old_addr: int, n: int) -> int:
    """Number of batches for the present PTEs ``bits`` (bit i = slot ``old_addr`` + i pages)."""
    present = bits.bit_count()
    mode = target.kernel.pte_batching
    arch = target.arch
    if mode == "none" or present == 0:
        return present
    folio_pages = max(vma.folio_size >> arch.page_shift, 1)
    if mode == "hint":
        if arch.contpte_entries <= 1 or folio_pages < arch.contpte_entries:
            return present
        block = arch.contpte_entries
    else:
        if folio_pages <= 1:
            return present
        block = folio_pages
    first = (old_addr >> arch.page_shift) % block
    batches = 0
    i = 0
    while i < n:
        span = min(block - (first + i) % block, n - i)
        chunk = (bits >> i) & ((1 << span) - 1)
        if chunk:
            # Runs of present PTEs inside one block form one batch each.
            batches += _runs(chunk)
        i += span
    return batches


def _runs(x: int) -> int:
    """Number of maximal runs of set bits in ``x``."""
    return (x & ~(x << 1)).bit_count()
