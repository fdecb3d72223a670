"""The ``do_vmi_munmap`` row: the VMA work of unmapping a range that holds a mapping, one
row per unmap the call makes, charged ``unmap_ns`` (docs/calibration.md, *The source's
unmap*). A move that unmaps its source has one, a DONTUNMAP move and an in-place growth
none, a move onto a mapped destination two, a shrink one, and an unmap of a hole none."""

from __future__ import annotations

import pytest
from helpers import A, B

from perfsim import resolve_target
from perfsim.cost import load_cost_profile, predict
from perfsim.cost.model import param_counts
from perfsim.mm.build import Population, single_move_space
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner import steps as S

M = 1 << 20
T = resolve_target("6.18")


def _munmaps(plan) -> list[int]:
    st = plan.steps
    return st.phase[st.kind == S.K_MUNMAP].tolist()


def _plan(req, populate="full", **space):
    sp = single_move_space(T, src=A, length=req.old_len, populate=Population.parse(populate),
                           **space)
    p = plan_mremap(sp, req, T)
    assert p.errno is None
    return p


@pytest.mark.parametrize("populate", ["full", "none"])
def test_a_move_unmaps_its_source_once_whatever_it_held(populate):
    p = _plan(MoveRequest(A, 4 * M, new_addr=B), populate)
    assert _munmaps(p) == [S.UNMAP_SRC]


def test_dontunmap_keeps_the_source_and_unmaps_nothing():
    p = _plan(MoveRequest(A, 4 * M, new_addr=B, dontunmap=True))
    assert _munmaps(p) == []


def test_a_move_onto_a_mapping_unmaps_it_first():
    sp = single_move_space(T, src=A, length=4 * M, populate=Population.parse("full"))
    sp = AddressSpace((*sp.vmas, Vma(B, B + 2 * M)), sp.pt.populate(B, B + 2 * M))
    p = plan_mremap(sp, MoveRequest(A, 4 * M, new_addr=B), T)
    assert _munmaps(p) == [S.UNMAP_DST, S.UNMAP_SRC]
    assert p.steps.slots[p.steps.kind == S.K_MUNMAP].tolist() == [1, 1]


def test_a_shrink_unmaps_its_tail_and_a_growth_in_place_nothing():
    shrink = _plan(MoveRequest(A, 4 * M, new_len=2 * M, maymove=False, fixed=False))
    grow = _plan(MoveRequest(A, 4 * M, new_len=8 * M, maymove=False, fixed=False))
    assert _munmaps(shrink) == [S.UNMAP_DST] and _munmaps(grow) == []


def test_unmap_ns_is_paid_once_per_munmap_and_syscall_ns_once_per_call():
    prof = load_cost_profile("kvm-xeon")
    fixed = _plan(MoveRequest(A, 4 * M, new_addr=B), "none")
    kept = _plan(MoveRequest(A, 4 * M, new_addr=B, dontunmap=True), "none")
    for plan, unmaps in ((fixed, 1), (kept, 0)):
        counts = param_counts(plan.steps, plan.steps.ipis)
        assert int(counts["unmap_ns"].sum()) == unmaps
        assert int(counts["syscall_ns"].sum()) == 1
    # nothing populated: the two calls differ by the unmap alone
    gap = predict(fixed.steps, prof).predicted_ns - predict(kept.steps, prof).predicted_ns
    assert gap == prof.params.unmap_ns.ns == 1300
