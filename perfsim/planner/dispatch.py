"""Choose how to run one ``move_page_tables``: the reference walk or the vectorised path.

Both take the page tables as a value and return the new value, the progress and the name
of the planner that ran, appending their rows to the same :class:`~perfsim.planner.steps.StepLog`.
"""

from __future__ import annotations

from perfsim.mm.pagetable import PageTables
from perfsim.planner import fast
from perfsim.planner import steps as S
from perfsim.planner.hugetlb import move_hugetlb_page_tables
from perfsim.planner.options import DEFAULT, PlanOptions
from perfsim.planner.realign import PageTableMoveControl
from perfsim.planner.reference import MoveContext, move_page_tables
from perfsim.profiles import Target


def run_move(target: Target, pt: PageTables, pmc: PageTableMoveControl, log: S.StepLog, *,
             phase: int = S.MOVE, cpus: int = 1, lazy_cpus: int = 0,
             fail_alloc_at: int | None = None, allow_fast: bool = True,
             options: PlanOptions = DEFAULT) -> tuple[PageTables, int, str]:
    """Run one move; return ``(page tables after, progress, planner name)``.

    ``options.implementation`` pins the implementation for tests that hold the two to the
    same output; by default the fast path runs whenever it applies.
    """
    if pmc.len_in == 0:
        return pt, 0, "reference"
    if options.implementation != "reference" and allow_fast and not pmc.old.is_hugetlb:
        out = fast.try_move_page_tables(target, pt, pmc, log, phase=phase, cpus=cpus,
                                        lazy_cpus=lazy_cpus, fail_alloc_at=fail_alloc_at,
                                        force=options.implementation == "fast")
        if out is not None:
            new_pt, progress = out
            return new_pt, progress, "fast"
    win = pt.window(min(pmc.old_addr, pmc.new_addr), max(pmc.old_end, pmc.new_addr + pmc.len_in))
    ctx = MoveContext(target, win, log, phase, cpus, lazy_cpus, fail_alloc_at)
    if pmc.old.is_hugetlb:
        progress = move_hugetlb_page_tables(ctx, pmc)
    else:
        progress = move_page_tables(ctx, pmc)
    return pt.replace_window(win), progress, "reference"
