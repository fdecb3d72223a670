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

``VM_ACCOUNT`` (:attr:`perfsim.mm.vma.Vma.account`) follows ``mprotect_fixup``: making
writable a mapping that has none of ``VM_ACCOUNT``, ``VM_WRITE``, ``VM_SHARED``,
``VM_NORESERVE`` or hugetlb charges it and sets the flag (a ``PROT_NONE`` reservation opened
for use); taking write away keeps it, except, from 6.7 ("mm/mprotect: allow unfaulted VMAs
to be unaccounted on mprotect()", in the 6.7 merge window), on an anonymous VMA that was
never faulted (no ``anon_vma``). So two pieces with the same protection but a different
history (a read-only mapping beside a written one made read-only) stay two VMAs, as in the
kernel; ``VM_NORESERVE`` (``MAP_NORESERVE``) never changes. Held against the running
kernel by ``scripts/vma_flags_merge.c`` (``tests/test_mm_calls.py``; on this project's 6.18
machine, 2026-12-03): a ``MAP_NORESERVE`` mapping made writable beside an ordinary one stays
apart; an unfaulted read-write mapping made read-only beside a read-only one merges, a
written one does not; a ``PROT_NONE`` reservation opened read-write beside a read-write
mapping merges.

Not modelled: ``PROT_GROWSDOWN``/``PROT_GROWSUP``, and pkeys.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma, vm_shared
from perfsim.planner.checks import page_align
from perfsim.planner.syscall import _merged, can_vma_merge


@dataclass(frozen=True)
class MprotectResult:
    space: AddressSpace
    errno: str | None
    """``ENOMEM`` when the range is not mapped from ``start`` on (only the VMAs before
    the first hole changed), else None."""


def accounted_after(v: Vma, prot: str, unaccount_unfaulted: bool) -> bool:
    """``VM_ACCOUNT`` after ``mprotect_fixup`` gives ``v`` the protection ``prot`` (module
    docstring): set when write is given to a VMA that is not accounted, writable, shared
    (VM_SHARED: a shared file or shmem mapping), ``VM_NORESERVE`` or hugetlb; cleared when
    write is not given, on a never-faulted anonymous VMA, where ``unaccount_unfaulted``
    (6.7+); else kept."""
    if "w" in prot:
        if not (v.account or "w" in v.prot or vm_shared(v.backing, v.shared) or v.noreserve
                or v.is_hugetlb):
            return True
        return v.account
    if v.account and unaccount_unfaulted and v.backing == "anon" and not v.anon_vma:
        return False
    return v.account


def _with_prot(v: Vma, prot: str, unaccount_unfaulted: bool) -> Vma:
    """``v`` with ``prot`` (``vm_flags_reset``): write taken away keeps its pages dirty;
    ``VM_ACCOUNT`` as :func:`accounted_after` says."""
    return v.replaced(prot=prot, dirty="w" not in prot and (v.dirty or "w" in v.prot),
                      account=accounted_after(v, prot, unaccount_unfaulted))


def mprotect_fixup(space: AddressSpace, vma: Vma, start: int, end: int, prot: str,
                   unaccount_unfaulted: bool = True) -> AddressSpace:
    """``mprotect_fixup`` of ``[start, end)`` inside ``vma`` (module docstring).
    ``unaccount_unfaulted``: the kernel is 6.7 or later (:func:`accounted_after`)."""
    if vma.prot == prot:
        return space
    return vma_modify_flags(space, vma, start, end,
                            lambda v: _with_prot(v, prot, unaccount_unfaulted))


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


def do_mprotect(space: AddressSpace, start: int, length: int, prot: str,
                kernel_version: tuple[int, int] = (6, 18)) -> MprotectResult:
    """``do_mprotect_pkey(start, length, prot)`` on the VMAs of ``space``: the space after
    it (module docstring), as the kernel ``kernel_version`` does it (``VM_ACCOUNT`` of a
    never-faulted VMA made read-only: kept before 6.7). ``start`` must be page aligned
    (ValueError otherwise: the kernel's EINVAL, which a recorded call that succeeded
    cannot have)."""
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
        space = mprotect_fixup(space, vma, at, upto, prot,
                               unaccount_unfaulted=tuple(kernel_version) >= (6, 7))
        at = upto
    return MprotectResult(space, None)
