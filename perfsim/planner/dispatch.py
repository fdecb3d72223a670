"""Choose how to run one ``move_page_tables``: the reference walk or the vectorised path."""

from __future__ import annotations

from perfsim.planner.hugetlb import move_hugetlb_page_tables
from perfsim.planner.realign import PageTableMoveControl
from perfsim.planner.reference import MoveContext, move_page_tables


def run_move(ctx: MoveContext, pmc: PageTableMoveControl, space, *, allow_fast: bool = True):
    """Run the move; return ``(progress, planner_name)``."""
    if pmc.len_in == 0:
        return 0, "reference"
    if pmc.old.is_hugetlb:
        return move_hugetlb_page_tables(ctx, pmc), "reference"
    return move_page_tables(ctx, pmc), "reference"
