"""Why a move was or was not realigned: which of rules R4 (a)–(e) decided.

``realign.try_realign_addr`` answers yes or no. :func:`explain_realign` says why, by asking
the same predicates in the same order (``can_realign_addr``'s tests, and
``can_align_down`` for (d) and (e)), so the explanation cannot disagree with the decision.
Call it before ``try_realign_addr``, which moves ``pmc``'s start addresses, or take a
:class:`RealignReason` there: the same explanation, worked out the first time it is read.
Versions: 6.7+ (``try_realign_addr`` exists; before it no move is realigned).
"""

from __future__ import annotations

from functools import lru_cache

from perfsim.mm.space import AddressSpace
from perfsim.planner.realign import PageTableMoveControl, can_align_down, can_realign_addr
from perfsim.profiles import Target
from perfsim.units import fmt_size

#: ``fmt_size`` of the realignment sizes (PMD, PUD), rendered once per size.
_unit_of = lru_cache(maxsize=64)(fmt_size)


def explain_size(space: AddressSpace, pmc: PageTableMoveControl, size: int, target: Target,
                 require_reach: bool) -> str:
    """The rule that decides a realignment to a multiple of ``size``, as one phrase."""
    old_off, new_off = pmc.old_addr % size, pmc.new_addr % size
    unit = _unit_of(size)
    if require_reach and pmc.len_in < size - old_off:
        return f"(a) refused: the range does not reach the next {unit} boundary"
    if old_off == 0:
        return f"(b) not needed: the source already starts on a {unit} boundary"
    if old_off != new_off:
        return (f"(c) refused: source and destination sit at different offsets in their "
                f"{unit} ({fmt_size(old_off)} vs {fmt_size(new_off)})")
    relax = target.kernel.realign_for_stack_relaxation
    if not can_align_down(space, pmc, pmc.old, pmc.old_addr, size, stack_relaxation=relax):
        return (f"(d) refused: the source start is not its VMA's start, or another VMA lies "
                f"between it and the {unit} boundary below")
    if not can_align_down(space, pmc, pmc.new, pmc.new_addr, size, stack_relaxation=relax):
        return (f"(e) refused: another VMA lies between the destination start and the {unit} "
                f"boundary below")
    assert can_realign_addr(space, pmc, size, target, require_reach=require_reach)
    return f"(a)–(e) hold: both starts move down to the {unit} boundary"


def explain_realign(space: AddressSpace, pmc: PageTableMoveControl, target: Target) -> str:
    """Why ``try_realign_addr`` will (or will not) realign ``pmc``: the same checks, PUD
    first when the what-if ``realign_pud`` is on, then PMD."""
    kern, arch = target.kernel, target.arch
    if pmc.old.is_hugetlb:
        return "hugetlb: never realigned"
    reasons = []
    for on, size in ((kern.realign_pud, arch.pud_size), (kern.realign_pmd, arch.pmd_size)):
        if not on:
            continue
        why = explain_size(space, pmc, size, target, kern.realign_reach_pmd)
        if why.startswith("(a)–(e)"):
            return why
        reasons.append(why)
    if not reasons:
        return f"kernel {kern.name} has no start-address realignment (6.7+)"
    return reasons[-1]


class RealignReason:
    """:func:`explain_realign` of one move, worked out the first time it is read (by
    :attr:`~perfsim.planner.vma_remap.MovedRange.realign`; a simulated call never reads it).
    It keeps the move's control block as it was when made, before ``try_realign_addr``
    moved its start addresses, and the (immutable) address space and target."""

    __slots__ = ("_space", "_pmc", "_target")

    def __init__(self, space: AddressSpace, pmc: PageTableMoveControl, target: Target) -> None:
        self._space, self._target = space, target
        self._pmc = (pmc.old, pmc.new, pmc.old_addr, pmc.new_addr, pmc.len_in,
                     pmc.need_rmap_locks, pmc.for_stack)

    def text(self) -> str:
        old, new, old_addr, new_addr, len_in, need_rmap_locks, for_stack = self._pmc
        pmc = PageTableMoveControl(old, new, old_addr, new_addr, len_in,
                                   need_rmap_locks=need_rmap_locks, for_stack=for_stack)
        return explain_realign(self._space, pmc, self._target)
