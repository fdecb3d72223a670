"""How the planner computes a plan, never what the plan is.

Every choice here yields the same :class:`~perfsim.planner.result.MovePlan`; the tests hold
the implementations to that. Library users leave it at the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Implementation = Literal["auto", "reference", "fast"]


@dataclass(frozen=True)
class PlanOptions:
    """``implementation``:

    ``"auto"``       the per-extent walk for a range of at most :data:`WALK_MAX_PMD_SLOTS`
                     PMD slots; up to :data:`WALK_UNLESS_CLOSED_MAX_PMD_SLOTS` the walk too
                     unless the vectorised move plans it in closed form (and then the
                     unmap of its source by the array driver's closed form where that
                     applies); the vectorised move (where it applies) and the array driver
                     of the unmap for larger ones (the default);
    ``"reference"``  the per-extent walk of ``move_page_tables`` and the per-slot unmap walk;
    ``"fast"``       the vectorised move and the array unmap at every size; a move the
                     vectorised path declines is an error (``AssertionError``): for tests
                     that must exercise that path.
    """

    implementation: Implementation = "auto"

    def __post_init__(self) -> None:
        if self.implementation not in ("auto", "reference", "fast"):
            raise ValueError(f"implementation must be auto, reference or fast, "
                             f"not {self.implementation!r}")

    def route(self, pmd_shift: int, start: int, end: int) -> int:
        """How ``[start, end)`` is planned: :data:`WALK` (one Python step per extent or
        slot), :data:`WALK_UNLESS_CLOSED` (the walk unless the vectorised path plans it in
        closed form) or :data:`ARRAYS` (the array code). For ``auto`` by the PMD slots the
        range spans: at most :data:`WALK_MAX_PMD_SLOTS`, at most
        :data:`WALK_UNLESS_CLOSED_MAX_PMD_SLOTS`, more; ``reference`` always walks,
        ``fast`` never does. Of two ranges a move reads, the larger route decides."""
        # (an empty range spans no slot: ``end <= start`` gives ``slots <= 0``)
        if self.implementation == "auto":
            slots = ((end - 1) >> pmd_shift) - (start >> pmd_shift)
            if slots < WALK_MAX_PMD_SLOTS:
                return WALK
            return WALK_UNLESS_CLOSED if slots < WALK_UNLESS_CLOSED_MAX_PMD_SLOTS else ARRAYS
        return WALK if self.implementation == "reference" else ARRAYS

    def walks(self, pmd_shift: int, start: int, end: int) -> bool:
        """Is ``[start, end)`` planned by the walk rather than by the array code
        (:meth:`route` is :data:`WALK`)?"""
        return self.route(pmd_shift, start, end) == WALK

    def walks_unless_closed(self, pmd_shift: int, start: int, end: int) -> bool:
        """Is a move over ``[start, end)`` that :meth:`walks` does not take planned by the
        walk unless the vectorised path plans it in closed form? For ``auto``: when
        :meth:`route` is not :data:`ARRAYS`; never for ``reference`` (it always walks) or
        ``fast`` (it never does)."""
        return self.implementation == "auto" and self.route(pmd_shift, start, end) != ARRAYS


WALK, WALK_UNLESS_CLOSED, ARRAYS = 0, 1, 2
""":meth:`PlanOptions.route`'s answers, in increasing order of range size."""


WALK_MAX_PMD_SLOTS = 16
"""Up to this many PMD slots the walk is the faster implementation: the array code pays a
fixed cost of numpy calls per move (~0.5 ms) that a walk of a few extents does not. Measured
2026-12-01 (x86-64 and arm64-4k, 6.18, fully populated, planned 20-200 times, CPU time):
moves of 16 KiB-8 MiB 0.22-0.37 ms walked vs 0.6-1.0 ms vectorised, 48 MiB (24 slots,
unaligned) 0.85 vs 0.99 ms, 64 MiB 1.1 vs 1.0 ms; munmaps of 16 KiB-32 MiB 0.12-0.23 ms
walked vs 0.25 ms with arrays. Both give the same plan (tests/test_fast_equivalence.py)."""


WALK_UNLESS_CLOSED_MAX_PMD_SLOTS = 64
"""Up to this many PMD slots a move the closed form (:mod:`perfsim.planner.fast_closed`)
does not plan is walked: the walk is then the faster implementation. Measured 2026-12-01
19:24 UTC (x86-64, 6.18, CPU time, best of 5, ``plan_mremap`` with ``PlanOptions("reference")``
against ``PlanOptions("fast")``; the shipped workloads' synthetic calls and hand-made moves):
moves of 17-64 slots the workloads make 170-330 us walked vs 400-500 us vectorised;
PMD-aligned, sparse or THP moves of 24-64 slots 150-280 us walked vs 440-530 us (THP
unaligned 400-800 vs 700-750 us), at 96-128 slots 330-440 vs 450-530 us; a fully populated
unaligned move (the closed form) 240-520 us walked vs 150-210 us vectorised, so it keeps
the vectorised path."""


DEFAULT = PlanOptions()
