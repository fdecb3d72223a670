"""What ``mprotect()`` does to the VMAs a later mremap sees (and the flag change
``madvise`` makes the same way: :func:`vma_modify_flags`).

``mprotect(start, len, prot)`` (``do_mprotect_pkey``, mm/mprotect.c) changes the flags of
every VMA of ``[start, start + len)``, one after the other (``for_each_vma_range``):

* the range must start inside a VMA (``vma_find``: none, or one starting above
  ``start``: ENOMEM, nothing changed); a hole inside it stops the loop there with ENOMEM,
  the VMAs before the hole already changed;
* a VMA whose flags would not change is left alone (``mprotect_fixup``: ``newflags ==
  oldflags``), not split;
* otherwise ``vma_modify_flags`` → ``vma_modify``: the changed part merges with the VMA
  before it when it starts where that one ends and the two are now mergeable
  (``vma_merge_existing_range``: the same flags, file and userfaultfd context, compatible
  ``anon_vma``s, ``vm_pgoff`` continuing it), and with the VMA after it likewise; what
  does not merge is split off (``split_vma`` at ``start`` and at ``end``: the upper
  piece's ``vm_pgoff`` advanced by the pages below the cut).

That is why a program that makes one page of a mapping read-only (a guard page, a
sealed header) leaves three VMAs, and a later mremap of the whole mapping is a move of
three VMAs (6.17+ ``multi_vma_move``; EFAULT before), each realigned, moved and flushed
on its own; and why changing that page back merges them into one again.

The page tables are not changed in a way a move reads: ``change_protection`` rewrites
the present PTEs' permission bits (their flushes belong to the mprotect, not planned
here). A VMA that loses its write permission keeps its pages' dirty bits
(``change_pte_range`` write-protects, it does not clean): :attr:`perfsim.mm.vma.Vma.dirty`.

Not modelled: ``VM_ACCOUNT`` (a private writable mapping is charged; making a
``PROT_NONE`` or read-only private mapping writable sets it, taking write away keeps it,
so two pieces with the same protection but a different history do not merge in the
kernel and do here), ``PROT_GROWSDOWN``/``PROT_GROWSUP``, and pkeys.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner.checks import page_align
from perfsim.planner.syscall import _merged, can_vma_merge


@dataclass(frozen=True)
class MprotectResult:
    space: AddressSpace
    errno: str | None
    """``ENOMEM`` when the range is not mapped from ``start`` on (only the VMAs before
    the first hole changed), else None."""


def _with_prot(v: Vma, prot: str) -> Vma:
    """``v`` with ``prot`` (``vm_flags_reset``): write taken away keeps its pages dirty."""
    return v.replaced(prot=prot, dirty="w" not in prot and (v.dirty or "w" in v.prot))


def mprotect_fixup(space: AddressSpace, vma: Vma, start: int, end: int,
                   prot: str) -> AddressSpace:
    """``mprotect_fixup`` of ``[start, end)`` inside ``vma`` (module docstring)."""
    if vma.prot == prot:
        return space
    return vma_modify_flags(space, vma, start, end, lambda v: _with_prot(v, prot))


def vma_modify_flags(space: AddressSpace, vma: Vma, start: int, end: int,
                     change) -> AddressSpace:
    """``vma_modify_flags``: ``[start, end)`` of ``vma`` given the flags ``change(vma)``
    returns (a :class:`Vma` of the same range), split off from the rest of ``vma`` and
    merged with a neighbour it now continues (module docstring). The callers decide first
    that the flags change at all (``mprotect_fixup``, ``madvise_update_vma``)."""
    ps = space.arch.page_shift
    changed = change(vma.with_range(start, end, vma.pgoff + ((start - vma.start) >> ps)))
    removed = [vma]
    below = above = ()
    # (a part of ``vma`` left below or above the change is split off; else the changed
    # part may merge with the VMA that touches it there)
    prev, nxt = space.touching(start, end)
    if start > vma.start:
        below = (vma.with_range(vma.start, start),)
    elif prev is not None and can_vma_merge(prev, changed, ps):
        changed = _merged(prev, changed)
        removed.append(prev)
    if end < vma.end:
        above = (vma.with_range(end, vma.end, vma.pgoff + ((end - vma.start) >> ps)),)
    elif nxt is not None and can_vma_merge(changed, nxt, ps):
        changed = _merged(changed, nxt)
        removed.append(nxt)
    kept = [v for v in space.vmas if not any(v is r for r in removed)]
    return space.with_vmas([*kept, *below, changed, *above])


def do_mprotect(space: AddressSpace, start: int, length: int, prot: str) -> MprotectResult:
    """``do_mprotect_pkey(start, length, prot)`` on the VMAs of ``space``: the space after
    it (module docstring). ``start`` must be page aligned (ValueError otherwise: the
    kernel's EINVAL, which a recorded call that succeeded cannot have)."""
    ps = space.arch.page_size
    if start % ps:
        raise ValueError(f"mprotect: start {start:#x} is not page aligned")
    end = start + page_align(length, ps)
    if end <= start:
        return MprotectResult(space, None)
    at = start
    while at < end:
        vma = space.find_vma(at)
        if vma is None or vma.start > at:
            return MprotectResult(space, "ENOMEM")
        upto = min(vma.end, end)
        space = mprotect_fixup(space, vma, at, upto, prot)
        at = upto
    return MprotectResult(space, None)
