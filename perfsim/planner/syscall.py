"""The ``mremap()`` syscall around ``move_page_tables`` (rule R22), and exec's
``relocate_vma_down`` (R21).

:func:`plan_mremap` is the planner's entry point. It builds the call state
(:class:`~perfsim.planner.vma_remap.VmaRemap`, the kernel's ``vma_remap_struct``) and runs
``do_mremap`` as the target kernel does:

* 6.17+ (``mm/mremap.c`` of 6.17/6.18): ``check_mremap_params``; a fixed move of unchanged
  length goes to ``remap_move`` (one ``mremap_to`` per VMA of the range, keeping the gaps
  between them; the first VMA that cannot move stops the call with its errno after the
  ones before it moved); otherwise ``vma_lookup`` + ``check_prep_vma`` and ``mremap_to``
  (FIXED/DONTUNMAP) or ``mremap_at`` (no resize, shrink in place, expand in place or move);
* before 6.17 (6.6's ``do_mremap``/``mremap_to``/``vma_to_resize``): the argument checks
  in their older order, one VMA per call.

The checks are the pure functions of :mod:`perfsim.planner.checks`; the page tables are
reached only through :mod:`perfsim.planner.dispatch` and :func:`~perfsim.planner.unmap.unmap_region`,
on the call's :class:`~perfsim.planner.tables.CallTables` (``VmaRemap.tables``): while the
call runs, the address spaces it derives keep the page tables it started with, and the
plan's ``after`` gets the tables' value once, at the end.
A refusal before anything changed is a plan with the errno, no steps and the space as it
was; a refusal after something changed (a multi-VMA move that fails part way, a reverted
partial move) keeps the steps and the space as the kernel leaves it.
"""

from __future__ import annotations

from dataclasses import replace
from numbers import Integral
from operator import attrgetter

from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import checks as C
from perfsim.planner import steps as S
from perfsim.planner.dispatch import run_move, run_stack_move
from perfsim.planner.explain import RealignReason
from perfsim.planner.options import DEFAULT, PlanOptions
from perfsim.planner.realign import PageTableMoveControl, try_realign_addr
from perfsim.planner.result import MovePlan, MoveRequest
from perfsim.planner.tables import CallTables
from perfsim.planner.unmap import UnmapRegion, large_folio_spans, unmap_region, zap_spans
from perfsim.planner.unmapped_area import get_unmapped_area, mremap_hint
from perfsim.planner.vma_remap import EXPAND, NO_RESIZE, SHRINK, MovedRange, VmaRemap
from perfsim.profiles import Target


class Refused(Exception):
    """Unwinds the syscall layer with the kernel's errno (a result, not an error)."""

    def __init__(self, refusal: C.Refusal, note: str = ""):
        super().__init__(refusal.why)
        self.refusal = refusal
        self.note = note


def _check(refusal: C.Refusal | None) -> None:
    if refusal is not None:
        raise Refused(refusal)


# ------------------------------------------------------------------------ VMA operations

# What two VMAs must share to be one, but for the access flags (``PROT_*``): the file and
# the other flags. ``anon_vma_compatible`` asks this much; a merge also asks the same prot.
_FLAGS_BUT_PROT = ("backing", "file_id", "thp", "nohugepage", "uffd_wp", "uffd_mode",
                   "stack", "hugepage_size", "shared", "noreserve", "account")
_MERGE_KEYS = attrgetter("prot", *_FLAGS_BUT_PROT)
_ANON_VMA_KEYS = attrgetter(*_FLAGS_BUT_PROT)


def is_mergeable_vma(a: Vma, b: Vma) -> bool:
    """Could two adjacent VMAs be one? ``is_mergeable_vma`` (same flags, file, uffd
    context) and ``is_mergeable_anon_vma`` (no two different ``anon_vma``s). The caller
    checks adjacency and ``vm_pgoff`` continuity. ``shared`` is VM_SHARED, ``noreserve``
    VM_NORESERVE and ``account`` VM_ACCOUNT, three of the flags.
    Versions: 6.6–6.18."""
    if _MERGE_KEYS(a) != _MERGE_KEYS(b):  # any of the flags, the file, the uffd context
        return False
    return not (a.anon_vma and b.anon_vma and a.anon_id != b.anon_id)


def anon_vma_prepare(space: AddressSpace, vma: Vma) -> AddressSpace:
    """``space`` with ``vma`` given an ``anon_vma`` at its first anonymous fault (a write
    to private memory: ``__anon_vma_prepare``), unchanged when it has one. It takes a
    neighbour's where ``find_mergeable_anon_vma`` finds one it may share, the VMA after it
    asked first, then the one before: a neighbour with an ``anon_vma`` that touches it,
    maps the same file, has the same flags but for the access ones (``PROT_*``: prot
    alone may differ, ``anon_vma_compatible``) and whose ``vm_pgoff`` it continues (or
    that continues its); ``reusable_anon_vma`` also asks that the neighbour's anon_vma be
    its own, not inherited through a fork, which perfsim's single process always has. Else
    a new one of its own. Sharing it is what lets two such VMAs merge later (an
    ``mprotect`` that makes their prot equal). Versions: 6.1–7.3."""
    if vma.anon_vma:
        return space
    ps = space.arch.page_shift
    prev, nxt = space.touching(vma.start, vma.end)
    for a, b, near in ((vma, nxt, nxt), (prev, vma, prev)):
        if near is not None and near.anon_vma and _ANON_VMA_KEYS(a) == _ANON_VMA_KEYS(b) \
                and _pgoff_follows(a, b, ps):
            anon_id = near.anon_id
            break
    else:  # (a new anon_vma: its own name unless another VMA's anon_vma has it)
        anon_id = vma.anon_id or vma.name or f"anon@{vma.start:#x}"
        if any(v.anon_vma and v.anon_id == anon_id for v in space.vmas):
            anon_id = f"{anon_id}@{vma.start:#x}"
    return space.with_vma_added(vma.replaced(anon_vma=True, anon_id=anon_id), without=[vma])


def _pgoff_follows(a: Vma, b: Vma, page_shift: int) -> bool:
    """``b`` continues ``a``'s file (or anon) offsets."""
    return a.pgoff + (a.length >> page_shift) == b.pgoff


def can_vma_merge(a: Vma, b: Vma, page_shift: int) -> bool:
    """May ``a`` and the VMA ``b`` that starts where it ends be one (``can_vma_merge_after``
    of ``a`` / ``can_vma_merge_before`` of ``b``): mergeable, ``b`` continuing ``a``'s
    offsets."""
    return is_mergeable_vma(a, b) and _pgoff_follows(a, b, page_shift)


def _merged(a: Vma, b: Vma) -> Vma:
    """``a`` and ``b`` (adjacent, ``a`` first) as one VMA. Its pages count as written back
    only if both VMAs' were (writeback is per page, not a VMA flag: the merge does not
    look at it, and a merged VMA with any dirty page zaps as dirty)."""
    return a.replaced(end=b.end, anon_vma=a.anon_vma or b.anon_vma,
                      anon_id=a.anon_id if a.anon_vma else b.anon_id,
                      written_back=a.written_back and b.written_back,
                      dirty=a.dirty or b.dirty)


def copy_vma(space: AddressSpace, vma: Vma, new_addr: int, new_len: int, pgoff: int):
    """``copy_vma``: the destination VMA, merged with a compatible neighbour where one
    touches it (``vma_merge_new_range``), and ``need_rmap_locks`` (R18): true only when the
    merged VMA's ``vm_pgoff`` is not above the source's, so rmap might walk the new PTEs
    before the old. Returns ``(new_vma, replaced_neighbours, need_rmap_locks)``.
    Versions: 6.6–6.18 (the merge is ``vma_merge_new_range`` from 6.12)."""
    new = vma.with_range(new_addr, new_addr + new_len, pgoff)
    prev, nxt = space.touching(new_addr, new_addr + new_len)  # (the neighbours that touch it)
    if prev is None and nxt is None:
        return new, [], False  # no neighbour touches it (the tests below need one that does)
    ps = space.arch.page_shift
    merged, absorbed = new, []
    if prev is not None and can_vma_merge(prev, new, ps):
        merged = _merged(prev, merged).replaced(pgoff=prev.pgoff)
        absorbed.append(prev)
    if nxt is not None and can_vma_merge(new, nxt, ps):
        merged = _merged(merged, nxt)
        absorbed.append(nxt)
    if not absorbed:
        return new, absorbed, False
    return merged, absorbed, merged.pgoff <= vma.pgoff


def mmap_region(space: AddressSpace, new: Vma) -> AddressSpace:
    """``__mmap_region``'s merge (``vma_merge_new_range``, from 6.12; ``mmap_region``'s
    "expand an old mapping" before): ``space`` with the fresh mapping ``new`` (over a range
    nothing maps; no ``anon_vma`` yet: a mapping gets one at its first fault) added, as
    part of the VMA before it where it continues that one (``can_vma_merge_after``: the
    same flags and file, ``vm_pgoff`` following on), of the VMA after it likewise
    (``can_vma_merge_before``), or both, which needs the two neighbours' ``anon_vma``s to
    be compatible with each other (``can_vma_merge_right``), else it joins the one before
    only. The merged VMA keeps the neighbours' ``anon_vma``, so the program's faults in the
    new part use it. A hugetlb mapping never merges (its ``VM_DONTEXPAND`` is one of the
    special flags). Not modelled: a neighbour whose ``vm_ops`` has a ``close`` (a device
    mapping), which is never removed by a merge. Versions: 6.6–6.18."""
    new = new.replaced(anon_vma=False)
    prev, nxt = (None, None) if new.is_hugetlb else space.touching(new.start, new.end)
    ps = space.arch.page_shift
    left = prev is not None and can_vma_merge(prev, new, ps)
    right = nxt is not None and can_vma_merge(new, nxt, ps) and not (
        left and prev.anon_vma and nxt.anon_vma and prev.anon_id != nxt.anon_id)
    if not (left or right):
        return space.with_vma_added(new)
    if left:
        merged = _merged(prev, new)
        if right:
            merged = _merged(merged, nxt)
    else:  # (the VMA after it grows down over it: its fields, the new range's offset)
        merged = nxt.replaced(start=new.start, pgoff=new.pgoff, written_back=False)
    return space.with_vma_added(merged, without=[v for v, m in ((prev, left), (nxt, right))
                                                 if m])


def vma_merge_extend(space: AddressSpace, vma: Vma, delta: int) -> AddressSpace:
    """``vma_merge_extend``: grow ``vma`` by ``delta`` in place, merging it with the next
    VMA when the two now touch and are compatible (the selftest's "expand merge").
    Versions: 6.6–6.18 (``vma_merge`` before 6.12)."""
    ps = space.arch.page_shift
    grown = vma.replaced(end=vma.end + delta)
    nxt = space.next_vma(grown.end)
    replaced = [vma]
    if nxt is not None and nxt.start == grown.end and can_vma_merge(grown, nxt, ps):
        replaced.append(nxt)
        grown = _merged(grown, nxt)
    return space.with_vma_added(grown, without=replaced)


def _carved(hit, start: int, end: int, ps: int) -> tuple[Vma, ...]:
    """What is left of the VMAs ``hit`` (consecutive, the ones intersecting ``[start,
    end)``) when that range is removed: the part of the first below ``start`` and the part
    of the last above ``end`` (``split_vma`` at each end; the upper part's ``vm_pgoff``
    advanced by the pages below ``end``), in address order."""
    first, last = hit[0], hit[-1]
    left = (first.with_range(first.start, start),) if first.start < start else ()
    if last.end > end:
        left += (last.with_range(end, last.end, last.pgoff + ((end - last.start) >> ps)),)
    return left


def do_munmap(target: Target, space: AddressSpace, start: int, length: int, log: S.StepLog,
              phase: int, options: PlanOptions = DEFAULT) -> AddressSpace:
    """``do_munmap``: split the VMAs at the range's ends, zap, free page tables between
    the neighbours (``free_pgtables``), flush, drop the VMAs. Nothing mapped: nothing done.
    Versions: 6.6–6.18."""
    tables = CallTables(space.pt)
    rest = _do_munmap(target, space, tables, start, length, log, phase, options)
    return rest if rest is space else rest.with_pt(tables.value())


def _do_munmap(target: Target, space: AddressSpace, tables: CallTables, start: int,
               length: int, log: S.StepLog, phase: int, options: PlanOptions,
               closed_first: bool = False) -> AddressSpace:
    """:func:`do_munmap` on the call's ``tables``: returns the space with the VMAs after it
    (``space`` itself when nothing is mapped there) and the page tables it had.
    ``closed_first`` as for :func:`~perfsim.planner.unmap.unmap_region`."""
    end = start + length
    i, j = space.intersecting_span(start, end)
    if i == j:
        return space
    vmas = space.vmas
    hit = vmas[i:j]
    left = _carved(hit, start, end, target.arch.page_shift)  # (the call's arch)
    rest = space.with_span_replaced(i, j, left)
    # the neighbours the page tables are freed between: the VMA before the range (the
    # part of the first VMA below it, if any) and the one after (the part of the last above)
    first, last = hit[0], hit[-1]
    floor = start if first.start < start else (vmas[i - 1].end if i else 0)
    ceiling = end if last.end > end else (vmas[j].start if j < len(vmas) else 0)
    # do_vmi_munmap's VMA work (split, detach, the maple tree store): one row, whatever
    # the range held in page tables (unmap_ns; a DONTUNMAP move and an in-place growth have
    # none, docs/calibration.md "The source's unmap")
    log.add(phase, S.K_MUNMAP, start, 0, length, slots=j - i)
    forcing, not_anon = zap_spans(hit, start, end)
    region = UnmapRegion(start, end, floor, ceiling,
                         (min(start, first.start), max(end, last.end)), forcing, not_anon,
                         large_folio_spans(hit, start, end, target.arch.page_shift))
    unmap_region(target, tables, region, log, phase, cpus=space.cpus,
                 lazy_cpus=space.lazy_cpus, options=options, closed_first=closed_first)
    return rest


# ------------------------------------------------------------------------ the call

def _munmap(vrm: VmaRemap, start: int, length: int, phase: int,
            closed_first: bool = False) -> None:
    vrm.space = _do_munmap(vrm.target, vrm.space, vrm.tables, start, length, vrm.log, phase,
                           vrm.options, closed_first)


def shrink_vma(vrm: VmaRemap) -> None:
    """``shrink_vma``: unmap ``[addr + new_len, addr + old_len)`` (which may cross several
    VMAs and gaps), then look the VMA at ``addr`` up again (EFAULT if it went).
    Versions: 6.15+ (the same unmap is inline in ``do_mremap``/``mremap_to`` before)."""
    _munmap(vrm, vrm.addr + vrm.new_len, vrm.old_len - vrm.new_len, S.UNMAP_DST)
    vrm.vma = vrm.space.find_vma(vrm.addr)
    if vrm.vma is None:
        raise Refused(C.Refusal("EFAULT", "no VMA at old_addr after the shrink"))


def vrm_set_new_addr(vrm: VmaRemap) -> None:
    """``vrm_set_new_addr``: MREMAP_FIXED keeps ``new_addr``; DONTUNMAP alone uses it as a
    hint; otherwise the kernel picks a free range (ENOMEM when there is none) as
    :func:`perfsim.planner.unmapped_area.get_unmapped_area` says, with the moved range's
    page offset (``linear_page_index``).
    Versions: 6.15+ (inline in ``mremap_to``/``do_mremap`` before, same choice)."""
    if vrm.fixed:
        return
    hint = mremap_hint(vrm)
    vma = vrm.vma
    pgoff = vma.pgoff + ((vrm.addr - vma.start) >> vrm.target.arch.page_shift)
    addr = get_unmapped_area(vrm.target, vrm.space, vma, vrm.new_len, hint, pgoff)
    if addr is None:
        raise Refused(C.Refusal("ENOMEM", "no free range for the new mapping"))
    vrm.new_addr = addr


def _new_pgoff(vrm: VmaRemap) -> int:
    vma, ps = vrm.vma, vrm.target.arch.page_shift
    if vma.backing == "anon" and not vma.anon_vma:
        return vrm.new_addr >> ps  # copy_vma: an unfaulted anon VMA starts afresh
    return vma.pgoff + ((vrm.addr - vma.start) >> ps)


def move_vma(vrm: VmaRemap) -> int:
    """``move_vma``: ``prep_move_vma``, ``copy_vma_and_data`` (copy_vma, realignment,
    ``move_page_tables``, the revert of a partial move), then ``unmap_source_vma`` or, with
    DONTUNMAP, ``dontunmap_complete``. Returns the new address. Versions: 6.6–6.18."""
    _check(C.prep_move_vma(vrm))
    t, space, vma = vrm.target, vrm.space, vrm.vma
    old_addr, old_len, new_addr, new_len = vrm.addr, vrm.old_len, vrm.new_addr, vrm.new_len
    new_vma, absorbed, need_rmap = copy_vma(space, vma, new_addr, new_len, _new_pgoff(vrm))
    during = space.with_vma_added(new_vma, without=absorbed)
    pmc = PageTableMoveControl(vma, new_vma, old_addr, new_addr, old_len, need_rmap_locks=need_rmap)
    why = RealignReason(during, pmc, t)  # (explain_realign, when read)
    realigned = False if vma.is_hugetlb else try_realign_addr(during, pmc, t)
    progress, planner = run_move(t, vrm.tables, pmc, vrm.log, cpus=space.cpus,
                                 lazy_cpus=space.lazy_cpus, fail_alloc_at=vrm.fail_alloc_at,
                                 options=vrm.options)
    record = MovedRange(old_addr, old_addr + old_len, new_addr, progress, realigned, why,
                        need_rmap, planner)
    if progress < old_len:
        # copy_vma_and_data's revert: move the moved prefix back with rmap locks (R17), then
        # unmap the new range instead of the old.
        back = PageTableMoveControl(new_vma, vma, new_addr, old_addr, progress, need_rmap_locks=True)
        if progress and not vma.is_hugetlb:
            try_realign_addr(during, back, t)
        run_move(t, vrm.tables, back, vrm.log, phase=S.REVERT, cpus=space.cpus,
                 lazy_cpus=space.lazy_cpus, allow_fast=False)
        after = _do_munmap(t, during, vrm.tables, new_addr, new_len, vrm.log, S.UNMAP_SRC,
                           vrm.options)
        vrm.space = after.with_vmas(list(after.vmas) + [
            v for v in absorbed if v.end <= new_addr or v.start >= new_addr + new_len])
        vrm.moved.append(replace(record, reverted=True))
        raise Refused(C.Refusal("ENOMEM", "page-table allocation failed"),
                      note="partial move reverted")
    vrm.moved.append(record)
    vrm.space = during
    if vrm.dontunmap:
        dontunmap_complete(vrm, new_vma)
    else:
        # (the source of a vectorised move: its unmap tries the closed form first)
        _munmap(vrm, old_addr, old_len, S.UNMAP_SRC, planner == "fast")
    return new_addr


def dontunmap_complete(vrm: VmaRemap, new_vma: Vma) -> None:
    """``dontunmap_complete``: the source VMA stays, empty; when the whole VMA moved it
    loses its ``anon_vma`` links (``unlink_anon_vmas``). Versions: 6.6–6.18."""
    vma = vrm.vma
    if new_vma != vma and vrm.addr == vma.start and vrm.addr + vrm.old_len == vma.end \
            and vma.anon_vma:
        vrm.space = vrm.space.with_vmas(
            [v.replaced(anon_vma=False) if v == vma else v for v in vrm.space.vmas])


def mremap_to(vrm: VmaRemap) -> int:
    """``mremap_to`` (6.17+): with FIXED, unmap the destination first and look the source
    up again; a shrink unmaps the tail; then pick the new address and ``move_vma``.
    (Before 6.17: :func:`_mremap_to_pre617`.)"""
    if vrm.fixed:
        before = vrm.space
        _munmap(vrm, vrm.new_addr, vrm.new_len, S.UNMAP_DST)
        # the source looked up again (``vma_lookup``); an unmap that found nothing mapped
        # left the same space (the same object), where the lookup finds ``vrm.vma`` again
        if vrm.space is not before:
            vrm.vma = vrm.space.find_vma(vrm.addr)
            if vrm.vma is None:
                raise Refused(C.Refusal("EFAULT", "no VMA at old_addr after unmapping new_addr"))
    if vrm.remap_type == SHRINK:
        shrink_vma(vrm)
        vrm.old_len = vrm.new_len
    vrm_set_new_addr(vrm)
    return move_vma(vrm)


def expand_vma(vrm: VmaRemap) -> int:
    """``expand_vma``: grow in place when the range ends the VMA and the space after it is
    free (``vma_merge_extend`` may merge with the next VMA); otherwise move, which needs
    MREMAP_MAYMOVE (ENOMEM without it). Versions: 6.6–6.18."""
    if C.vrm_can_expand_in_place(vrm):
        vrm.space = vma_merge_extend(vrm.space, vrm.vma, vrm.delta)
        return vrm.addr
    if not vrm.maymove:
        raise Refused(C.Refusal("ENOMEM", "cannot expand in place and MREMAP_MAYMOVE not given"))
    vrm_set_new_addr(vrm)
    return move_vma(vrm)


def mremap_at(vrm: VmaRemap) -> int:
    """``mremap_at``: resize without a caller-given address: no resize returns ``addr``, a
    shrink unmaps the tail in place, an expand is :func:`expand_vma`. Versions: 6.15+
    (the same branches inline in ``do_mremap`` before)."""
    if vrm.remap_type == NO_RESIZE:
        return vrm.addr
    if vrm.remap_type == SHRINK:
        shrink_vma(vrm)
        return vrm.addr
    return expand_vma(vrm)


def remap_move(vrm: VmaRemap) -> int:
    """``remap_move`` (6.17+, R23): move every VMA piece of ``[addr, addr + old_len)``, each
    with its own ``check_prep_vma`` + ``mremap_to``, keeping the gaps between source VMAs
    in the destination. A gap at the start of the range is EFAULT; so is a VMA that
    ``vma_multi_allowed`` refuses when it is not alone in the range (the first such VMA is
    refused before anything moves, a later one after the ones before it moved)."""
    start, end = vrm.addr, vrm.addr + vrm.old_len
    target_addr, cursor = vrm.new_addr, start
    result, last_end = None, 0
    while cursor < end:
        i, j = vrm.space.intersecting_span(cursor, end)
        if i == j:
            break
        vma = vrm.space.vmas[i]  # (the first VMA of the rest of the range)
        seen = result is not None
        if not seen and start < vma.start:
            raise Refused(C.Refusal("EFAULT", "no VMA at old_addr (gap at the range start)"))
        addr = max(vma.start, start)
        length = min(end, vma.end) - addr
        offset = vma.start - last_end if seen else 0
        last_end = vma.end
        vrm.vma, vrm.addr, vrm.new_addr = vma, addr, target_addr + offset
        vrm.old_len = vrm.new_len = length
        if (seen or vma.end < end) and not C.vma_multi_allowed(vma):
            raise Refused(C.Refusal("EFAULT", f"the VMA at {vma.start:#x} cannot be moved "
                                              f"with others (userfaultfd or file)"))
        _check(C.check_prep_vma(vrm))
        moved_to = mremap_to(vrm)
        if not seen:
            result = moved_to
        vrm.multi_vma = True
        target_addr = moved_to + length
        cursor = addr + length
    if result is None:
        raise Refused(C.Refusal("EFAULT", "no VMA in the range"))
    return result


def _do_mremap_617(vrm: VmaRemap) -> int:
    """``do_mremap`` of 6.17/6.18."""
    _check(C.check_mremap_params(vrm))
    if C.vrm_move_only(vrm):
        return remap_move(vrm)
    vrm.vma = vrm.space.find_vma(vrm.addr)
    _check(C.check_prep_vma(vrm))
    return mremap_to(vrm) if C.vrm_implies_new_addr(vrm) else mremap_at(vrm)


def _mremap_to_pre617(vrm: VmaRemap) -> int:
    """``mremap_to`` before 6.17: destination checks, the FIXED unmap, the shrink of the
    tail, then ``vma_to_resize``'s checks on the range kept."""
    _check(C.mremap_to_checks_pre617(vrm, vrm_checks=vrm.target.kernel.version >= (6, 15)))
    if vrm.fixed:
        _munmap(vrm, vrm.new_addr, vrm.new_len, S.UNMAP_DST)
    if vrm.old_len > vrm.new_len:
        _munmap(vrm, vrm.addr + vrm.new_len, vrm.old_len - vrm.new_len, S.UNMAP_DST)
        vrm.old_len = vrm.new_len
    vrm.vma = vrm.space.find_vma(vrm.addr)
    if vrm.vma is None:
        raise Refused(C.Refusal("EFAULT", "no VMA at old_addr"))
    vrm.delta, vrm.remap_type = abs(vrm.old_len - vrm.new_len), C.vrm_remap_type(vrm)
    _check(C.vma_range_checks(vrm))
    vrm_set_new_addr(vrm)
    return move_vma(vrm)


def _do_mremap_pre617(vrm: VmaRemap, raw_old_len: int, raw_new_len: int) -> int:
    """``do_mremap`` of 6.6–6.16: argument checks (6.15/6.16: ``check_mremap_params``),
    ``vma_lookup``, hugetlb alignment, then ``mremap_to``, an in-place shrink, or
    ``vma_to_resize`` + expand in place or move."""
    if vrm.target.kernel.version >= (6, 15):
        _check(C.check_mremap_params_615(vrm))
    else:
        _check(C.check_mremap_params_pre617(vrm, raw_old_len, raw_new_len))
    vrm.vma = vrm.space.find_vma(vrm.addr)
    if vrm.vma is None:
        raise Refused(C.Refusal("EFAULT", "no VMA at old_addr"))
    if vrm.vma.is_hugetlb:
        _check(C.align_hugetlb(vrm))
    if C.vrm_implies_new_addr(vrm):
        return _mremap_to_pre617(vrm)
    vrm.delta, vrm.remap_type = abs(vrm.old_len - vrm.new_len), C.vrm_remap_type(vrm)
    if vrm.remap_type != EXPAND:
        if vrm.remap_type == SHRINK:
            _munmap(vrm, vrm.addr + vrm.new_len, vrm.delta, S.UNMAP_DST)
        return vrm.addr
    _check(C.vma_range_checks(vrm))
    return expand_vma(vrm)


# ------------------------------------------------------------------------ entry point

def _note(vrm: VmaRemap) -> str:
    if len(vrm.moved) > 1:
        return f"multi-VMA move of {len(vrm.moved)} pieces"
    if vrm.moved:
        return ""
    if vrm.remap_type == SHRINK:
        return "shrunk in place"
    if vrm.remap_type == EXPAND:
        return "expanded in place"
    return "nothing to do"


class SpaceAfter:
    """``MovePlan.after_of`` of one call: the address space the call left (its VMAs) with
    the call's page tables written out (:meth:`CallTables.value`), or ``space`` itself when
    the tables did not change (``tables`` None: a refusal)."""

    __slots__ = ("space", "tables")

    def __init__(self, space: AddressSpace, tables: CallTables | None) -> None:
        self.space, self.tables = space, tables

    def __call__(self) -> AddressSpace:
        if self.tables is None:
            return self.space
        pt = self.tables.value()
        return self.space if self.space.pt is pt else self.space.with_pt(pt)


def _plan(req: MoveRequest, before: AddressSpace, vrm: VmaRemap, *, errno: str | None,
          result: int | None, note: str) -> MovePlan:
    steps = vrm.log.freeze()
    moved = tuple(vrm.moved)
    after = SpaceAfter(vrm.space, vrm.tables)
    realigned = need_rmap = False
    progress = 0
    for m in moved:
        realigned, need_rmap = realigned or m.realigned, need_rmap or m.need_rmap_locks
        progress += m.progress_bytes
    return MovePlan.of_fields(
        request=req, errno=errno, result_addr=result, realigned=realigned,
        progress_bytes=progress, need_rmap_locks=need_rmap,
        steps=steps, before=before, after_of=after,
        planner=moved[-1].planner if moved else "reference",
        note=note, moved=moved)


def _refused(req: MoveRequest, space: AddressSpace, errno: str, why: str) -> MovePlan:
    """A refusal before anything changed: no steps, the space as it was."""
    steps = S.StepLog().freeze()
    return MovePlan.of_fields(request=req, errno=errno, result_addr=None, realigned=False,
                              progress_bytes=0, need_rmap_locks=False, steps=steps,
                              before=space, after_of=SpaceAfter(space, None),
                              planner="reference", note=why, moved=())


def plan_mremap(space: AddressSpace, req: MoveRequest, target: Target,
                options: PlanOptions = DEFAULT) -> MovePlan:
    """Plan one ``mremap()`` (or, with ``req.for_stack``, exec's stack relocation).

    ``options`` chooses how the plan is computed (see :class:`PlanOptions`), never what it is.
    Arguments of the wrong type, or a negative address or length, raise a ``TypeError`` or
    ``ValueError`` naming the argument (:func:`check_plan_arguments`).
    """
    try:
        if req.old_addr < 0 or req.old_len < 0 or (req.new_len or 0) < 0 \
                or (req.new_addr or 0) < 0:
            check_plan_arguments(space, req, target, options)
        if req.for_stack:
            return _relocate_vma_down(space, req, target)
        page = target.arch.page_size
        log = S.StepLog()
        # (by position, in VmaRemap's field order: addr, old_len, new_len, new_addr, maymove,
        # fixed, dontunmap, extra_flags, target, space, log, options, fail_alloc_at, vma, delta,
        # remap_type, multi_vma, moved, tables)
        vrm = VmaRemap(req.old_addr, C.page_align(req.old_len, page), C.page_align(req.length, page),
                       req.new_addr or 0, req.maymove, req.fixed, req.dontunmap, req.extra_flags,
                       target, space, log, options, req.fail_alloc_at, None, 0, None, False, [],
                       CallTables(space.pt))
        log.add(S.SYSCALL, S.K_SYSCALL, req.old_addr, req.new_addr or 0, vrm.old_len)
        try:
            if target.kernel.version >= (6, 17):
                result = _do_mremap_617(vrm)
            else:
                result = _do_mremap_pre617(vrm, req.old_len, req.length)
        except Refused as e:
            r = e.refusal
            if vrm.space is space and not vrm.moved:
                return _refused(req, space, r.errno, r.why)
            note = e.note or r.why
            if vrm.multi_vma:
                done = sum(not m.reverted for m in vrm.moved)
                note = f"{note}; {done} VMA piece(s) moved before it"
            return _plan(req, space, vrm, errno=r.errno, result=None, note=note)
        return _plan(req, space, vrm, errno=None, result=result, note=_note(vrm))
    except (AttributeError, TypeError):
        check_plan_arguments(space, req, target, options)  # (a clearer error, if it finds one)
        raise


def check_plan_arguments(space, req, target, options=DEFAULT) -> None:
    """Raise a ``TypeError`` naming the first of :func:`plan_mremap`'s arguments that has the
    wrong type, or a ``ValueError`` naming a negative address or length (an ``mremap()``'s
    arguments are unsigned); return when all are well formed. Called only when planning
    failed or a value is negative: the well-formed calls pay nothing for it."""
    for name, value, kind in (("space", space, AddressSpace), ("req", req, MoveRequest),
                              ("target", target, Target), ("options", options, PlanOptions)):
        if not isinstance(value, kind):
            raise TypeError(f"plan_mremap: {name} must be of type {kind.__name__}, not "
                            f"{type(value).__name__} ({value!r:.60})")
    for name in ("old_addr", "old_len", "new_len", "new_addr", "fail_alloc_at"):
        v = getattr(req, name)
        if v is None and name not in ("old_addr", "old_len"):
            continue
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise TypeError(f"MoveRequest.{name} must be an int (bytes), not "
                            f"{type(v).__name__} ({v!r:.60})")
        if v < 0:
            raise ValueError(f"MoveRequest.{name} = {v}: must be >= 0 (mremap's arguments "
                             "are unsigned)")


def _relocate_vma_down(space: AddressSpace, req: MoveRequest, target: Target) -> MovePlan:
    """``relocate_vma_down`` (exec's ``setup_arg_pages``): move the whole stack VMA down."""
    vma = space.find_vma(req.old_addr)
    if vma is None or vma.start != req.old_addr:
        return _refused(req, space, "EFAULT", "for_stack: old_addr must be the start of a VMA")
    if req.new_addr is None or req.new_addr >= req.old_addr or req.new_addr % target.arch.page_size:
        return _refused(req, space, "EINVAL",
                        "for_stack: new_addr must be page aligned and below old_addr")
    length = vma.length
    old_start, old_end = vma.start, vma.end
    new_start, new_end = req.new_addr, req.new_addr + length
    i, j = space.intersecting_span(new_start, old_start)
    if i != j:
        return _refused(req, space, "EFAULT", "for_stack: another VMA lies below the stack")
    # (VmaRemap by position, in its field order: see plan_mremap)
    vrm = VmaRemap(old_start, length, length, new_start, True, True, False, 0, target, space,
                   S.StepLog(), DEFAULT, req.fail_alloc_at, vma, 0, None, False, [],
                   CallTables(space.pt))
    vrm.log.add(S.SYSCALL, S.K_SYSCALL, old_start, new_start, length)
    expanded = vma.with_range(new_start, old_end)  # (vma.replaced(start=new_start))
    # the stack VMA replaced by its expansion (the others are apart from both already)
    during = space.with_vma_added(expanded, without=(vma,))
    pmc = PageTableMoveControl(expanded, expanded, old_start, new_start, length, for_stack=True)
    why = RealignReason(during, pmc, target)  # (explain_realign, when read)
    realigned = try_realign_addr(during, pmc, target)
    nxt = during.next_vma(old_end)
    progress = run_stack_move(target, vrm.tables, pmc, vrm.log, ceiling=nxt.start if nxt else 0,
                              cpus=space.cpus, lazy_cpus=space.lazy_cpus,
                              fail_alloc_at=req.fail_alloc_at)
    vrm.moved.append(MovedRange(old_start, old_end, new_start, progress, realigned, why,
                                False, "reference", reverted=progress != length))
    if progress != length:
        vrm.space = during
        return _plan(req, space, vrm, errno="ENOMEM", result=None,
                     note="stack move incomplete: exec fails")
    shrunk = vma.with_range(new_start, new_end)  # (vma.replaced(start=..., end=...))
    vrm.space = space.with_vma_added(shrunk, without=(vma,))
    return _plan(req, space, vrm, errno=None, result=new_start, note="")
