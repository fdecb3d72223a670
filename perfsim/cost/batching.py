"""What ``move_ptes`` does per present PTE beyond the copy itself: the large-folio mechanisms.

The planner counts the ``set_ptes`` batches of each ``move_ptes`` extent (``batches``, see
``perfsim.planner.batch``). Three costs depend on more than that count — on the kernel's batch
gate, on the arch's contiguous-PTE support and on the folios of the source VMA — so they are
decided here, once per source VMA, by pure functions named after the kernel code they mirror
(read: mm/mremap.c of 6.15, 6.17 and 6.18; arch/arm64/include/asm/pgtable.h and
arch/arm64/mm/contpte.c of 6.9-6.18):

* **the folio lookup** (``mremap_folio_pte_batch`` → ``vm_normal_folio``): 6.17's first
  batching commit (f822a9a81a31, gate ``folio``) looks the folio up for every present PTE that
  starts a batch, which reads the folio's ``struct page`` in the vmemmap — memory a page-table
  move otherwise never touches, so typically a cache miss. The 6.17-rc hot-fix (gate
  ``hint``) first asks ``pte_batch_hint``, which is 1 everywhere except on arm64 for a PTE
  with the contiguous bit, and skips the lookup when it is 1.
* **the contpte unfold** (arm64, 6.9+, before 6.17's batching): ``ptep_get_and_clear`` on a
  PTE of a contiguous block calls ``contpte_try_unfold``, which repaints the whole block as
  ordinary PTEs and invalidates its range in the TLB; ``move_ptes`` clearing PTE by PTE pays
  that once per block. With batching, ``get_and_clear_full_ptes`` clears a whole block in one
  go without the unfold.
* **the contpte fold** (same kernels): ``set_ptes`` of a single PTE calls ``contpte_try_fold``
  when it writes the last entry of a block; if the block is foldable (virtually and
  physically aligned, one folio) it is repainted with the contiguous bit, again with a range
  invalidation. Batched ``set_ptes`` of a whole block paints the bit directly.

:class:`FolioBatching` carries the decision for one source VMA; ``perfsim.cost.model``
multiplies it out per row. ``None`` (the default everywhere) charges none of the three, which
is exact for small folios under gates ``none`` and ``hint`` and on every arch without
contiguous PTEs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

#: First kernel whose arm64 user mappings get the contiguous bit (contpte, 6.9).
CONTPTE_SINCE: tuple[int, int] = (6, 9)


@dataclass(frozen=True)
class FolioBatching:
    """The large-folio mechanisms ``move_ptes`` runs for one source VMA under one kernel.

    ``folio_pages``: pages per folio (1: small folios). ``contpte_pages``: PTEs per contiguous
    block when the source PTEs carry the contiguous bit, else 1. ``lookup``: a
    ``vm_normal_folio`` per batch. ``unfold`` / ``refold``: a ``contpte_try_unfold`` per source
    block / a ``contpte_try_fold`` per destination block (pre-batching kernels only).
    """

    folio_pages: int = 1
    contpte_pages: int = 1
    lookup: bool = False
    unfold: bool = False
    refold: bool = False

    @property
    def charges_anything(self) -> bool:
        return self.lookup or self.unfold or self.refold


def contpte_mapped(kernel_version: tuple[int, int], contpte_entries: int,
                   folio_pages: int) -> bool:
    """Whether a fully mapped large folio's PTEs carry the arm64 contiguous bit: the arch has
    contiguous blocks, the kernel paints them for user mappings (``contpte_set_ptes``, 6.9+),
    and the folio covers at least one whole block (naturally aligned folios, as mTHP are)."""
    return (contpte_entries > 1 and tuple(kernel_version) >= CONTPTE_SINCE
            and folio_pages >= contpte_entries)


def mremap_folio_pte_batch_looks_up(pte_batching: str, contpte: bool) -> bool:
    """Whether ``mremap_folio_pte_batch`` calls ``vm_normal_folio`` for a batch's first PTE:
    never before 6.17 (``none``); always with f822a9a81a31's gate (``folio``); with the
    6.17-rc hot-fix (``hint``) only when ``pte_batch_hint`` says the PTE starts a contiguous
    block (arm64 contpte), i.e. never on x86 or riscv."""
    if pte_batching == "folio":
        return True
    if pte_batching == "hint":
        return contpte
    return False


def ptep_get_and_clear_unfolds(pte_batching: str, contpte: bool) -> bool:
    """Whether clearing the source PTEs unfolds each contiguous block (``contpte_try_unfold``
    from ``ptep_get_and_clear``): only PTE-by-PTE clearing (before 6.17) of contpte-mapped
    PTEs. Batched clearing (``get_and_clear_full_ptes``) of whole blocks does not unfold."""
    return contpte and pte_batching == "none"


def set_ptes_refolds(pte_batching: str, contpte: bool, contpte_bytes: int,
                     shift_bytes: int) -> bool:
    """Whether writing the destination PTE by PTE re-folds each block (``contpte_try_fold`` on
    its last entry): before 6.17, for contpte-mapped folios, when the destination keeps the
    source's alignment inside a block (the fold needs the virtual and physical addresses
    aligned alike, i.e. ``(new_addr - old_addr) % block == 0``)."""
    return (contpte and pte_batching == "none" and contpte_bytes > 0
            and shift_bytes % contpte_bytes == 0)


def _mechanisms(target, folio_size_bytes: int, shift_bytes: int) -> tuple:
    """``(folio_pages, contpte_pages, lookup, unfold, refold)``: the decisions above for
    one source VMA under ``target`` (:func:`folio_batching`'s fields)."""
    arch, kernel = target.arch, target.kernel
    folio_pages = max(int(folio_size_bytes) >> arch.page_shift, 1)
    contpte = contpte_mapped(kernel.version, arch.contpte_entries, folio_pages)
    mode = kernel.pte_batching
    block_bytes = arch.contpte_entries << arch.page_shift if contpte else 0
    return (folio_pages, arch.contpte_entries if contpte else 1,
            mremap_folio_pte_batch_looks_up(mode, contpte),
            ptep_get_and_clear_unfolds(mode, contpte),
            set_ptes_refolds(mode, contpte, block_bytes, int(shift_bytes)))


def folio_batching(target, folio_size_bytes: int, *, shift_bytes: int = 0) -> FolioBatching:
    """The :class:`FolioBatching` of a source VMA whose folios are ``folio_size_bytes``
    (0 or a page: small folios) moved by ``shift_bytes`` (``new_addr - old_addr``) under
    ``target`` (a :class:`perfsim.profiles.Target`)."""
    return FolioBatching(*_mechanisms(target, folio_size_bytes, shift_bytes))


@lru_cache(maxsize=64)
def never_charged(kernel_version: tuple, contpte_entries: int, pte_batching: str) -> bool:
    """Whether no source VMA is charged any of the three mechanisms under this kernel and
    arch, whatever its folios and shift: no folio is contpte-mapped (not even one of every
    page of a 64-bit space: :func:`contpte_mapped` only grows with the folio), and with
    no contpte-mapped folio none of the three decisions charges (a per-target constant)."""
    if contpte_mapped(kernel_version, contpte_entries, 1 << 52):
        return False
    return not (mremap_folio_pte_batch_looks_up(pte_batching, False)
                or ptep_get_and_clear_unfolds(pte_batching, False)
                or set_ptes_refolds(pte_batching, False, 0, 0))


def folio_batching_of_plan(plan, target) -> FolioBatching | None:
    """The :class:`FolioBatching` of a planned call (a :class:`perfsim.planner.MovePlan`):
    its source VMA's folios, moved by ``result_addr - old_addr``. None when the call failed,
    moved nothing, or none of the three mechanisms is charged (small folios on most
    kernels), so that callers pricing many plans can key on it cheaply; then no
    :class:`FolioBatching` is built (this runs once per simulated call)."""
    if target is None or plan.errno is not None or plan.result_addr is None:
        return None
    kernel = target.kernel
    if never_charged(tuple(kernel.version), target.arch.contpte_entries, kernel.pte_batching):
        return None  # (what the decisions below give for any source VMA)
    old_addr = plan.request.old_addr
    src = plan.before.find_vma(old_addr)
    if src is None:
        return None
    m = _mechanisms(target, src.folio_size, plan.result_addr - old_addr)
    return FolioBatching(*m) if m[2] or m[3] or m[4] else None
