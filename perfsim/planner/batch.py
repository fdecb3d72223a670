"""How many ``set_ptes`` batches ``move_ptes`` uses for one extent (R16g).

Two pieces, as in the kernel: the gate (:func:`pte_batching_of`: may this VMA's PTEs be
batched at all, over folios of how many pages, behind which ``pte_batch_hint``) and the
count (:func:`mremap_folio_pte_batch`, applied batch after batch over an extent, with
:func:`pte_batch_hint` deciding where a folio is looked up at all). The reference planner
calls both per ``move_ptes``; the vectorised planner evaluates the gate once per move and
calls the count once per distinct (bitmap, cleared prefix, offset, length) it meets.

Kernel source read: mm/mremap.c ``mremap_folio_pte_batch`` and mm/internal.h
``folio_pte_batch_flags`` in Debian's 7.2.12 and 7.3.4 (identical), arm64's
``pte_batch_hint`` (arch/arm64/include/asm/pgtable.h, 6.12.117 and 7.3.4) and
``contpte_get_and_clear_full_ptes`` (arch/arm64/mm/contpte.c, 7.3.4); 6.1.176 and
6.12.117 ``move_ptes`` have no batching.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.mm.build import large_folio_bounds
from perfsim.mm.vma import Vma
from perfsim.profiles import Target


@dataclass(frozen=True)
class PteBatching:
    """What ``move_ptes`` may batch in one move: runs of PTEs inside one large folio of
    ``folio_pages`` pages (1: no batching, every present PTE is its own batch), looked up
    only where :func:`pte_batch_hint` over ``CONT_PTES`` = ``hint_entries`` says so
    (0: no hint gate, every present PTE of a large folio starts a lookup). Large folios
    map the pages ``[first_page, end_page)`` of the address space (page numbers): the
    aligned folios that fit inside the VMA; pages outside are small folios, as
    :func:`perfsim.mm.build.thp_suitable` left them."""

    folio_pages: int = 1
    hint_entries: int = 0
    first_page: int = 0
    end_page: int = 0

    def __post_init__(self) -> None:
        # ``batches``: may a run of PTEs be one batch at all (read per ``move_ptes``; not a
        # field: it follows from ``folio_pages``)
        object.__setattr__(self, "batches", self.folio_pages > 1)

    def window_in_table(self, table_first_page, ptrs: int):
        """The large-folio window as PTE indexes ``(lo, hi)`` of the PTE table whose
        first PTE maps page ``table_first_page`` (an int or an array of them), clipped
        to ``[0, ptrs]``."""
        lo = self.first_page - table_first_page
        hi = self.end_page - table_first_page
        if isinstance(lo, int):
            return min(max(lo, 0), ptrs), min(max(hi, 0), ptrs)
        return lo.clip(0, ptrs), hi.clip(0, ptrs)


NO_BATCHING = PteBatching()


def pte_batching_of(target: Target, vma: Vma) -> PteBatching:
    """The batching gate of ``move_ptes`` for ``vma``'s folios on ``target``:

    * before 6.17 (``pte_batching = "none"``): no batching, ``move_ptes`` moves one PTE at
      a time (6.1.176, 6.12.117);
    * 6.17 ``mremap_folio_pte_batch`` (f822a9a81a31, ``"folio"``): any large folio's PTEs
      are batched (``folio_pte_batch``);
    * with the ``pte_batch_hint`` gate (``"hint"``: the 6.17 release onwards; read in 7.2.12
      and 7.3.4) the folio is looked up only where ``pte_batch_hint`` is above 1, which
      takes an arm64 contpte mapping: a folio smaller than a ``CONT_PTES`` block is never
      contpte-mapped (no batching), and x86's generic hint is always 1 (no batching).
      Where the lookup happens the batch still runs to the folio's end
      (:func:`mremap_folio_pte_batch`), across contpte blocks.

    >>> from perfsim import resolve_target
    >>> from perfsim.mm.vma import Vma
    >>> vma = Vma(0x200000, 0x400000, folio_size=128 << 10)
    >>> pte_batching_of(resolve_target("7.3", "arm64-4k"), vma)
    PteBatching(folio_pages=32, hint_entries=16, first_page=512, end_page=1024)
    >>> pte_batching_of(resolve_target("7.3", "x86_64"), vma).batches
    False
    >>> pte_batching_of(resolve_target("6.12", "arm64-4k"), vma).batches
    False
    """
    mode = target.kernel.pte_batching
    arch = target.arch
    ps = arch.page_shift
    folio_pages = max(vma.folio_size >> ps, 1)
    if mode == "none" or folio_pages <= 1:
        return NO_BATCHING
    bounds = large_folio_bounds(vma, vma.folio_size, ps)
    if bounds is None:
        return NO_BATCHING
    cont = 0
    if mode == "hint":
        cont = arch.contpte_entries
        if cont <= 1 or folio_pages < cont:
            return NO_BATCHING
    return PteBatching(folio_pages, cont, bounds[0] >> ps, bounds[1] >> ps)


def pte_batch_hint(table_bits: int, idx: int, cont_entries: int) -> int:
    """arm64 ``pte_batch_hint`` for the PTE at index ``idx`` of a PTE table whose present
    entries are ``table_bits``: for a valid contiguous (contpte) PTE, the number of entries
    left in its ``CONT_PTES`` block; else 1.

    A block is contpte-mapped when all of its entries map one large folio (perfsim maps
    large folios whole and aligned) and none of them has been cleared since: clearing
    part of a block (``contpte_get_and_clear_full_ptes`` -> ``contpte_try_unfold_partial``,
    as an earlier extent of the same move does when it ends inside the block) unfolds it.
    So: the block is contpte iff every one of its entries is present in ``table_bits``,
    the table as ``move_ptes`` finds it.

    >>> pte_batch_hint(0xFFFF, 0, 16), pte_batch_hint(0xFFFF, 15, 16), pte_batch_hint(0xFFFE, 3, 16)
    (16, 1, 1)
    """
    offset = idx % cont_entries
    base = idx - offset
    whole = (1 << cont_entries) - 1
    if (table_bits >> base) & whole != whole:
        return 1
    return cont_entries - offset


def mremap_folio_pte_batch(batching: PteBatching, table_bits: int, lo: int, n: int,
                           window: tuple[int, int]) -> int:
    """Batches ``move_ptes`` uses for the extent of ``n`` PTEs from index ``lo`` of a PTE
    table whose present entries are ``table_bits`` (as the extent finds it: PTEs earlier
    extents of the move took are cleared) and whose large folios lie in the PTE indexes
    ``window`` (:meth:`PteBatching.window_in_table`). Each present PTE starts a batch
    (``mremap_folio_pte_batch``, ``max_nr`` = what is left of the extent): 1 for a small
    folio (``folio_test_large`` fails) or where the hint gate says so (:func:`pte_batch_hint`
    = 1), else ``folio_pte_batch_flags``: the consecutive present PTEs of the same folio, up
    to the folio's last page or the extent's end. (7.3 also stops where the write bit
    changes; every PTE of a perfsim VMA has the same protection.)

    >>> four, every = PteBatching(4, 0), (0, 512)
    >>> mremap_folio_pte_batch(NO_BATCHING, 0b1111, 0, 4, every)   # no batching: one per PTE
    4
    >>> mremap_folio_pte_batch(four, 0b1111, 0, 4, every)          # one folio
    1
    >>> mremap_folio_pte_batch(four, 0b1111 << 2, 2, 4, every)     # straddles two folios
    2
    >>> mremap_folio_pte_batch(four, 0b1011, 0, 4, every)          # a hole splits the run
    2
    >>> mremap_folio_pte_batch(four, 0b1111, 0, 4, (4, 512))       # small folios
    4
    >>> arm = PteBatching(32, 16)                                  # 128 KiB folios, contpte
    >>> mremap_folio_pte_batch(arm, (1 << 64) - 1, 0, 64, every)   # to each folio's end
    2
    >>> mremap_folio_pte_batch(arm, ((1 << 64) - 1) & ~(0xF << 16), 20, 44, every)  # unfolded
    13
    """
    bits = (table_bits >> lo) & ((1 << n) - 1)
    if not batching.batches or not bits:
        return bits.bit_count()
    folio, cont = batching.folio_pages, batching.hint_entries
    w_lo, w_hi = window
    count, i, end = 0, lo, lo + n
    while i < end:
        rest = (table_bits >> i) & ((1 << (end - i)) - 1)
        if not rest:
            break
        i += (rest & -rest).bit_length() - 1          # the next present PTE
        count += 1
        head = i - i % folio
        if head < w_lo or head + folio > w_hi or (cont and pte_batch_hint(table_bits, i, cont) == 1):
            i += 1
            continue
        stop = min(head + folio, end)
        run = (table_bits >> i) & ((1 << (stop - i)) - 1)
        i += (~run & (run + 1)).bit_length() - 1       # the present PTEs up to the folio end
    return count
