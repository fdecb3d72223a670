"""The ``mremap()`` syscall around ``move_page_tables`` (rule R22), and exec's
``relocate_vma_down`` (R21).

:func:`plan_mremap` is the planner's entry point: it checks the arguments like
``do_mremap``/``check_mremap_params``/``mremap_to`` (returning the kernel's errno name
instead of raising), unmaps a mapped ``MREMAP_FIXED`` destination, runs ``copy_vma``'s
merge logic (which decides ``need_rmap_locks``), realigns, moves, reverts a partial move,
and unmaps the source. It returns a :class:`~perfsim.planner.result.MovePlan` with the
step table, the counters and the address space after the call.
"""

from __future__ import annotations

from dataclasses import replace

from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import steps as S
from perfsim.planner.dispatch import run_move, run_stack_move
from perfsim.planner.options import DEFAULT, PlanOptions
from perfsim.planner.realign import PageTableMoveControl, try_realign_addr
from perfsim.planner.result import Counters, MovePlan, MoveRequest, phase_blocks
from perfsim.planner.unmap import UnmapRegion, unmap_region
from perfsim.profiles import Target


class _Errno(Exception):
    def __init__(self, name: str, why: str):
        super().__init__(why)
        self.name = name
        self.why = why


def _page_align(n: int, page: int) -> int:
    return (n + page - 1) // page * page


def _mergeable(a: Vma, b: Vma) -> bool:
    """Could two adjacent VMAs be one (``is_mergeable_vma`` + anon_vma compatibility)?"""
    if (a.backing, a.file_id, a.prot, a.thp, a.uffd_wp, a.stack, a.hugepage_size) != (
            b.backing, b.file_id, b.prot, b.thp, b.uffd_wp, b.stack, b.hugepage_size):
        return False
    if a.anon_vma and b.anon_vma and a.anon_id != b.anon_id:
        return False
    return True


def copy_vma(space: AddressSpace, vma: Vma, new_addr: int, new_len: int, pgoff: int):
    """``copy_vma``: the destination VMA, possibly merged with a neighbour, and
    ``need_rmap_locks`` (R18). Returns ``(new_vma, replaced_neighbours, need_rmap_locks)``."""
    ps = space.arch.page_shift
    new = replace(vma, start=new_addr, end=new_addr + new_len, pgoff=pgoff)
    prev = space.find_vma(new_addr - 1) if new_addr else None
    nxt = space.find_vma(new_addr + new_len)
    merged, absorbed = new, []
    if prev is not None and prev.end == new_addr and _mergeable(prev, new) and \
            prev.pgoff + (prev.length >> ps) == pgoff:
        merged = replace(merged, start=prev.start, pgoff=prev.pgoff,
                         anon_vma=prev.anon_vma or new.anon_vma,
                         anon_id=prev.anon_id if prev.anon_vma else new.anon_id)
        absorbed.append(prev)
    if nxt is not None and nxt.start == new_addr + new_len and _mergeable(nxt, new) and \
            pgoff + (new_len >> ps) == nxt.pgoff:
        merged = replace(merged, end=nxt.end)
        absorbed.append(nxt)
    if not absorbed:
        return new, absorbed, False
    return merged, absorbed, merged.pgoff <= vma.pgoff


def _carve(vmas: list[Vma], start: int, end: int, ps: int) -> list[Vma]:
    """Remove ``[start, end)`` from a VMA list, splitting VMAs that straddle it."""
    out = []
    for v in vmas:
        if v.end <= start or v.start >= end:
            out.append(v)
            continue
        if v.start < start:
            out.append(replace(v, end=start))
        if v.end > end:
            out.append(replace(v, start=end, pgoff=v.pgoff + ((end - v.start) >> ps)))
    return out


def do_munmap(target: Target, space: AddressSpace, start: int, length: int, log: S.StepLog,
              phase: int, options: PlanOptions = DEFAULT) -> AddressSpace:
    """``do_munmap``: zap, free page tables between the neighbours, flush, drop the VMAs."""
    end = start + length
    hit = space.intersecting(start, end)
    if not hit:
        return space
    vmas = _carve(list(space.vmas), start, end, space.arch.page_shift)
    rest = space.with_vmas(vmas)
    prev, nxt = rest.prev_vma(start), rest.next_vma(end)
    region = UnmapRegion(start, end, floor=prev.end if prev else 0,
                         ceiling=nxt.start if nxt else 0,
                         span=(min(start, hit[0].start), max(end, hit[-1].end)))
    pt = unmap_region(target, space.pt, region, log, phase, cpus=space.cpus,
                      lazy_cpus=space.lazy_cpus, options=options)
    return rest.with_pt(pt)


def _get_unmapped_area(space: AddressSpace, length: int, hint: int | None) -> int | None:
    """Top-down search for a free gap (``get_unmapped_area``), trying ``hint`` first."""
    a = space.arch
    if hint is not None and hint % a.page_size == 0 and hint + length <= a.user_va_top \
            and not space.intersecting(hint, hint + length):
        return hint
    top = space.mmap_base
    for v in reversed(space.vmas):
        if v.end <= top and top - v.end >= length:
            return top - length
        top = min(top, v.start)
    return top - length if top >= length + a.page_size else None


def _fail(req, target, space, name, why) -> MovePlan:
    steps = S.StepLog().freeze()
    zero = Counters.of(steps, ())
    return MovePlan(req, name, None, False, 0, False, steps, space, space, "reference", zero,
                    zero, why)


def plan_mremap(space: AddressSpace, req: MoveRequest, target: Target,
                options: PlanOptions = DEFAULT) -> MovePlan:
    """Plan one ``mremap()`` (or, with ``req.for_stack``, exec's stack relocation).

    ``options`` chooses how the plan is computed (see :class:`PlanOptions`), never what it is.
    """
    try:
        if req.for_stack:
            return _relocate_vma_down(space, req, target)
        return _do_mremap(space, req, target, options)
    except _Errno as e:
        return _fail(req, target, space, e.name, e.why)


def _check(req: MoveRequest, space: AddressSpace, target: Target):
    """``do_mremap``'s parameter checks, in the kernel's order."""
    a = target.arch
    page = a.page_size
    if req.extra_flags:
        raise _Errno("EINVAL", "unknown flags")
    if req.fixed and not req.maymove:
        raise _Errno("EINVAL", "MREMAP_FIXED requires MREMAP_MAYMOVE")
    if req.dontunmap and (not req.maymove or req.old_len != req.length):
        raise _Errno("EINVAL", "MREMAP_DONTUNMAP requires MREMAP_MAYMOVE and old_len == new_len")
    if req.old_addr % page:
        raise _Errno("EINVAL", "old_addr is not page aligned")
    old_len = _page_align(req.old_len, page)
    new_len = _page_align(req.length, page)
    if new_len == 0:
        raise _Errno("EINVAL", "new_len is 0")
    if old_len > a.user_va_top or req.old_addr > a.user_va_top - old_len:
        raise _Errno("EINVAL", "old range beyond TASK_SIZE")
    if req.fixed:
        if req.new_addr is None or req.new_addr % page:
            raise _Errno("EINVAL", "new_addr is not page aligned")
        if new_len > a.user_va_top or req.new_addr > a.user_va_top - new_len:
            raise _Errno("EINVAL", "new range beyond TASK_SIZE")
        if req.new_addr < req.old_addr + old_len and req.old_addr < req.new_addr + new_len:
            raise _Errno("EINVAL", "source and destination overlap")
    vma = space.find_vma(req.old_addr)
    if vma is None:
        raise _Errno("EFAULT", "no VMA at old_addr")
    if old_len == 0 and vma.backing == "anon":
        raise _Errno("EINVAL", "old_len 0 duplicates only shared mappings")
    if vma.is_hugetlb:
        h = vma.hugepage_size or a.pmd_size
        if req.old_addr % h or (req.fixed and req.new_addr % h):
            raise _Errno("EINVAL", "hugetlb addresses must be huge-page aligned")
        old_len, new_len = _page_align(old_len, h), _page_align(new_len, h)
        if new_len > old_len:
            raise _Errno("EINVAL", "hugetlb mappings cannot grow")
    if old_len > vma.end - req.old_addr and not _multi_vma(req, target, old_len, new_len):
        raise _Errno("EFAULT", "old range is not inside one VMA")
    if len(space.vmas) + 3 > space.map_count_limit:
        raise _Errno("ENOMEM", "vm.max_map_count would be exceeded")
    return vma, old_len, new_len


def _multi_vma(req: MoveRequest, target: Target, old_len: int, new_len: int) -> bool:
    """``remap_move`` applies (6.17+): a fixed move of unchanged length may span VMAs."""
    return target.kernel.multi_vma_move and req.fixed and old_len == new_len and not req.dontunmap


def _do_mremap(space: AddressSpace, req: MoveRequest, target: Target,
               options: PlanOptions) -> MovePlan:
    a = target.arch
    vma, old_len, new_len = _check(req, space, target)
    log = S.StepLog()
    log.add(S.SYSCALL, S.K_SYSCALL, req.old_addr, req.new_addr or 0, old_len)
    before = space
    if old_len > vma.end - req.old_addr:
        return _remap_move(space, req, target, old_len, log, options)
    old_addr = req.old_addr
    new_addr = req.new_addr
    if req.fixed:
        space = do_munmap(target, space, new_addr, new_len, log, S.UNMAP_DST, options=options)
        vma = space.find_vma(old_addr)
    if new_len < old_len:
        space = do_munmap(target, space, old_addr + new_len, old_len - new_len, log, S.UNMAP_DST,
                          options=options)
        old_len = new_len
        vma = space.find_vma(old_addr)
        if not req.fixed:
            return _done(req, before, space, log, old_addr, False, 0, False, "shrunk in place")
    if not req.fixed:
        if new_len == old_len:
            return _done(req, before, space, log, old_addr, False, 0, False, "nothing to do")
        # Grow in place when the range ends the VMA and the space after it is free.
        if old_addr + old_len == vma.end and not space.intersecting(vma.end, vma.end + new_len - old_len) \
                and vma.end + new_len - old_len <= a.user_va_top:
            grown = replace(vma, end=vma.end + new_len - old_len)
            space = space.with_vmas([grown if v == vma else v for v in space.vmas])
            return _done(req, before, space, log, old_addr, False, 0, False, "expanded in place")
        if not req.maymove:
            raise _Errno("ENOMEM", "cannot expand in place and MREMAP_MAYMOVE not given")
        new_addr = _get_unmapped_area(space, new_len, req.new_addr)
        if new_addr is None:
            raise _Errno("ENOMEM", "no free range for the new mapping")
    return _move_vma(space, before, req, target, vma, old_addr, old_len, new_addr, new_len, log,
                     options)


def _remap_move(space, req, target, length, log, options: PlanOptions) -> MovePlan:
    """``remap_move`` (R23): move each VMA piece of ``[old_addr, old_addr + length)`` to the
    same offset from ``new_addr``, each with its own ``move_vma`` and realignment check.
    Gaps between source VMAs stay gaps in the destination."""
    start, end = req.old_addr, req.old_addr + length
    pieces = space.intersecting(start, end)
    if any(v.uffd_wp for v in pieces) or any(v.backing == "file" for v in pieces):
        raise _Errno("EFAULT", "multi-VMA move over uffd-armed or file VMAs")
    before = space
    realigned_any, total, planner, need_any = False, 0, "reference", False
    for v in pieces:
        vma = space.find_vma(max(v.start, start))
        p_start, p_end = max(vma.start, start), min(vma.end, end)
        p_new = req.new_addr + (p_start - start)
        piece_req = MoveRequest(p_start, p_end - p_start, new_addr=p_new,
                                fail_alloc_at=req.fail_alloc_at)
        space = do_munmap(target, space, p_new, p_end - p_start, log, S.UNMAP_DST, options=options)
        vma = space.find_vma(p_start)
        sub = _move_vma(space, before, piece_req, target, vma, p_start, p_end - p_start, p_new,
                        p_end - p_start, log, options)
        if sub.errno:
            return _done(req, before, sub.after, log, req.new_addr, realigned_any, total, need_any,
                         f"piece at {p_start:#x} failed", errno=sub.errno, planner=sub.planner)
        space = sub.after
        realigned_any |= sub.realigned
        need_any |= sub.need_rmap_locks
        total += sub.progress_bytes
        planner = sub.planner
    return _done(req, before, space, log, req.new_addr, realigned_any, total, need_any,
                 f"multi-VMA move of {len(pieces)} pieces", planner=planner)


def _done(req, before, after, log, addr, realigned, progress, need_rmap, note, errno=None,
          planner="reference") -> MovePlan:
    steps = log.freeze()
    blocks = phase_blocks(steps)
    move = Counters.of(steps, (S.MOVE,), blocks)
    whole = Counters.of(steps, tuple(range(len(S.PHASE_NAMES))), blocks)
    return MovePlan(req, errno, None if errno else addr, realigned, progress, need_rmap, steps,
                    before, after, planner, move, whole, note)


def _move_vma(space, before, req, target, vma, old_addr, old_len, new_addr, new_len, log,
              options: PlanOptions):
    """``move_vma``: copy_vma, move_page_tables, revert on failure, unmap the source."""
    a = target.arch
    ps = a.page_shift
    if vma.backing == "anon" and not vma.anon_vma:
        pgoff = new_addr >> ps
    else:
        pgoff = vma.pgoff + ((old_addr - vma.start) >> ps)
    new_vma, absorbed, need_rmap = copy_vma(space, vma, new_addr, new_len, pgoff)
    during = space.with_vmas([v for v in space.vmas if v not in absorbed] + [new_vma])
    pmc = PageTableMoveControl(vma, new_vma, old_addr, new_addr, old_len, need_rmap_locks=need_rmap)
    realigned = False
    if not vma.is_hugetlb:
        realigned = try_realign_addr(during, pmc, target)
    pt, progress, planner = run_move(target, space.pt, pmc, log, cpus=space.cpus,
                                     lazy_cpus=space.lazy_cpus, fail_alloc_at=req.fail_alloc_at,
                                     options=options)
    if progress < old_len:
        # copy_vma_and_data's revert: move the moved prefix back with rmap locks (R17).
        back = PageTableMoveControl(new_vma, vma, new_addr, old_addr, progress, need_rmap_locks=True)
        if progress and not vma.is_hugetlb:
            try_realign_addr(during, back, target)
        pt, _, _ = run_move(target, pt, back, log, phase=S.REVERT, cpus=space.cpus,
                            lazy_cpus=space.lazy_cpus, allow_fast=False)
        after = do_munmap(target, during.with_pt(pt), new_addr, new_len, log, S.UNMAP_SRC,
                          options=options)
        after = after.with_vmas(list(after.vmas) + [
            v for v in absorbed if v.end <= new_addr or v.start >= new_addr + new_len])
        return _done(req, before, after, log, new_addr, realigned, progress, need_rmap,
                     "partial move reverted", errno="ENOMEM", planner=planner)
    after = during.with_pt(pt)
    if not req.dontunmap:
        after = do_munmap(target, after, old_addr, old_len, log, S.UNMAP_SRC, options=options)
    return _done(req, before, after, log, new_addr, realigned, progress, need_rmap, "",
                 planner=planner)


def _relocate_vma_down(space: AddressSpace, req: MoveRequest, target: Target) -> MovePlan:
    """``relocate_vma_down`` (exec's ``setup_arg_pages``): move the whole stack VMA down."""
    vma = space.find_vma(req.old_addr)
    if vma is None or vma.start != req.old_addr:
        raise _Errno("EFAULT", "for_stack: old_addr must be the start of a VMA")
    if req.new_addr is None or req.new_addr >= req.old_addr or req.new_addr % target.arch.page_size:
        raise _Errno("EINVAL", "for_stack: new_addr must be page aligned and below old_addr")
    length = vma.length
    old_start, old_end = vma.start, vma.end
    new_start, new_end = req.new_addr, req.new_addr + length
    if space.intersecting(new_start, old_start):
        raise _Errno("EFAULT", "for_stack: another VMA lies below the stack")
    log = S.StepLog()
    log.add(S.SYSCALL, S.K_SYSCALL, old_start, new_start, length)
    expanded = replace(vma, start=new_start)
    during = space.with_vmas([expanded if v == vma else v for v in space.vmas])
    pmc = PageTableMoveControl(expanded, expanded, old_start, new_start, length, for_stack=True)
    realigned = try_realign_addr(during, pmc, target)
    nxt = during.next_vma(old_end)
    pt, progress = run_stack_move(target, space.pt, pmc, log, ceiling=nxt.start if nxt else 0,
                                  cpus=space.cpus, lazy_cpus=space.lazy_cpus,
                                  fail_alloc_at=req.fail_alloc_at)
    if progress != length:
        return _done(req, space, during.with_pt(pt), log, new_start, realigned, progress, False,
                     "stack move incomplete: exec fails", errno="ENOMEM")
    shrunk = replace(vma, start=new_start, end=new_end)
    after = space.with_vmas([shrunk if v == vma else v for v in space.vmas]).with_pt(pt)
    return _done(req, space, after, log, new_start, realigned, progress, False, "")
