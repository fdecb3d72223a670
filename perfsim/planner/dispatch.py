"""Choose how to run one ``move_page_tables``: the reference walk or the vectorised path.

Both work on the call's :class:`~perfsim.planner.tables.CallTables` (the walk in its open
window, the vectorised path on its value) and return the progress and the name of the
planner that ran, appending their rows to the same :class:`~perfsim.planner.steps.StepLog`.
"""

from __future__ import annotations

from perfsim.planner import fast
from perfsim.planner import steps as S
from perfsim.planner.gather import MmuGather, tlb_finish_mmu
from perfsim.planner.hugetlb import move_hugetlb_page_tables
from perfsim.planner.options import ARRAYS, DEFAULT, WALK, WALK_UNLESS_CLOSED, PlanOptions
from perfsim.planner.realign import PageTableMoveControl
from perfsim.planner.reference import MoveContext, move_page_tables
from perfsim.planner.tables import CallTables
from perfsim.planner.unmap import free_pgd_range
from perfsim.profiles import Target


def run_move(target: Target, tables: CallTables, pmc: PageTableMoveControl, log: S.StepLog, *,
             phase: int = S.MOVE, cpus: int = 1, lazy_cpus: int = 0,
             fail_alloc_at: int | None = None, allow_fast: bool = True,
             options: PlanOptions = DEFAULT) -> tuple[int, str]:
    """Run one move on ``tables``; return ``(progress, planner name)``.

    ``options`` chooses the implementation (``PlanOptions.route``: by default the walk for
    small moves, the fast path for larger ones where it applies, and for moves of a few
    dozen slots the fast path only in closed form, ``WALK_UNLESS_CLOSED``);
    tests pin one or the other to hold them to the same output.
    """
    if pmc.len_in == 0:
        return 0, "reference"
    shift = target.arch.pmd_shift
    # the larger route of the source and destination ranges decides
    route = options.route(shift, pmc.old_addr, pmc.old_end)
    if route != ARRAYS:
        new_route = options.route(shift, pmc.new_addr, pmc.new_addr + pmc.len_in)
        if new_route > route:
            route = new_route
    if route != WALK and allow_fast and not pmc.old.is_hugetlb:
        # a move of a few dozen slots is walked unless the closed form plans it
        out = fast.try_move_page_tables(target, tables.value(), pmc, log, phase=phase,
                                        cpus=cpus, lazy_cpus=lazy_cpus,
                                        fail_alloc_at=fail_alloc_at,
                                        force=options.implementation == "fast",
                                        closed_only=route == WALK_UNLESS_CLOSED)
        if out is not None:
            new_pt, progress = out
            tables.set_value(new_pt)
            return progress, "fast"
    win = tables.window(min(pmc.old_addr, pmc.new_addr),
                        max(pmc.old_end, pmc.new_addr + pmc.len_in))
    ctx = MoveContext(target, win, log, phase, cpus, lazy_cpus, fail_alloc_at)
    if pmc.old.is_hugetlb:
        progress = move_hugetlb_page_tables(ctx, pmc)
    else:
        progress = move_page_tables(ctx, pmc)
    return progress, "reference"


def run_stack_move(target: Target, tables: CallTables, pmc: PageTableMoveControl,
                   log: S.StepLog, *, ceiling: int, cpus: int = 1, lazy_cpus: int = 0,
                   fail_alloc_at: int | None = None) -> int:
    """exec's ``relocate_vma_down`` page-table work: ``move_page_tables`` of the whole stack
    (source and destination overlap, so only the reference walk applies), then, when it
    moved everything, ``free_pgd_range`` of what the stack no longer covers (the part above
    the new end, or all of the old range when the two do not overlap) and the flush.
    Returns the progress."""
    old_start, old_end = pmc.old_addr, pmc.old_end
    new_start = pmc.new_addr
    new_end = new_start + pmc.len_in
    win = tables.window(min(old_start, new_start), old_end)
    ctx = MoveContext(target, win, log, S.MOVE, cpus, lazy_cpus, fail_alloc_at)
    progress = move_page_tables(ctx, pmc)
    if progress == pmc.len_in:
        tlb = MmuGather()
        lo = new_end if new_end > old_start else old_start
        freed = free_pgd_range(target, win, lo, old_end, new_end, ceiling, tlb,
                               visible=(min(old_start, new_start), old_end))
        tlb_finish_mmu(target, tlb, log, S.UNMAP_SRC, old_start, old_end, 0, freed, cpus=cpus,
                       lazy_cpus=lazy_cpus)
    return progress
